"""A lean forward of a Llama-family backbone (SmolLM2) for kg2text's decoding loop.

Why: decoding one row is bound by per-op cost, not by the weights: on an AMD EPYC (Zen 1) a one-row greedy
decode through transformers' forward streamed SmolLM2's weights at 12-21% of the machine's memory read rate
(results/speed/speed.md, ``bash scripts/speed.sh``, stop 32); the rest was a hundred-odd small ops per layer
and the Python around them. This runs the same layers with fewer ops: q and k rotated together by one batched
matmul (the rotary embedding as a per-position rotation matrix), sibling projections as one product
(``hardware.StackedLinear``), each layer's calls resolved once per decode (``Plan``), no masks or keyword
arguments built per layer. The model's own modules and weights compute everything else (embedding, rotary angles,
norms, every linear layer), and the attention is the decoding loop's own (``KVCache.attend_layer``; transformers'
forward reaches the same through ``prefix.py``'s registered attention function): this only orders the calls. It
covers what ``supports`` checks, transformers' own Llama classes with fp32 activations (``--dtype float32`` and
``float16``); anything else (GPT-2, bf16 activations, other Llama variants) runs through transformers' forward.
Tests hold its logits to transformers' on a tiny Llama, and its greedy and beam output token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kg2text.hardware import PACKED_KERNEL_MAX_ROWS, OneDnnLinear, PackedLinear, SiblingLinear


def supports(model: torch.nn.Module) -> bool:
    """Transformers' own Llama (whose layers are its own Llama classes: kg2text swaps only linear layers), SiLU MLP,
    fp32 activations: the model this forward reproduces."""
    from transformers.models.llama.modeling_llama import LlamaForCausalLM

    return type(model) is LlamaForCausalLM and model.config.hidden_act == "silu" and model.dtype == torch.float32


def rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Per position, the matrix ``R`` with ``x @ R == x * cos + rotate_half(x) * sin`` (transformers' rotary
    embedding): ``cos``/``sin`` ``(B, n, D)`` -> ``(B, n, D, D)``, one matmul for all heads of q and k."""
    dim = cos.shape[-1]
    half = torch.arange(dim // 2, device=cos.device)
    rotate_half = torch.zeros(dim, dim, dtype=cos.dtype, device=cos.device)  # x @ rotate_half == rotate_half(x)
    rotate_half[half + dim // 2, half] = -1
    rotate_half[half, half + dim // 2] = 1
    eye = torch.eye(dim, dtype=cos.dtype, device=cos.device)
    return eye * cos[..., None, :] + rotate_half * sin[..., None, :]


def _multiplier(linear: torch.nn.Module, rows: int):
    """The call that multiplies ``rows`` contiguous fp32 rows ``(rows, in)`` by ``linear``: a packed layer's kernel or
    oneDNN's op itself where the module would only check shapes and dtypes around it (at one row, a few
    microseconds each over 120 layers a step), the module otherwise."""
    if isinstance(linear, PackedLinear) and linear.activations == torch.float32 and linear.bias is None \
            and rows < PACKED_KERNEL_MAX_ROWS:
        return linear.packed_mm
    return linear.forward if isinstance(linear, OneDnnLinear) else linear


def _product(layers: tuple[torch.nn.Module, ...], rows: int):
    """The siblings' outputs side by side: their stacked layer where ``stack_siblings`` made one, else each."""
    first = layers[0]
    if isinstance(first, SiblingLinear) and all(isinstance(m, SiblingLinear) and m.shared is first.shared
                                                for m in layers):
        return _multiplier(first.shared.stacked, rows)
    return lambda x: torch.cat([layer(x) for layer in layers], -1)


class LayerCalls(NamedTuple):
    """One decoder layer as the lean forward runs it at some row count: its norms' weights and epsilons and the
    calls that multiply by its linear layers (``_multiplier``, ``_product``)."""

    input_norm: tuple[torch.Tensor, float]
    qkv: Callable[[torch.Tensor], torch.Tensor]
    o: Callable[[torch.Tensor], torch.Tensor]
    post_norm: tuple[torch.Tensor, float]
    gate_up: Callable[[torch.Tensor], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]
    scaling: float

    @classmethod
    def of(cls, layer: torch.nn.Module, rows: int) -> LayerCalls:
        attention, mlp = layer.self_attn, layer.mlp
        return cls(_norm(layer.input_layernorm), _product((attention.q_proj, attention.k_proj, attention.v_proj), rows),
                   _multiplier(attention.o_proj, rows), _norm(layer.post_attention_layernorm),
                   _product((mlp.gate_proj, mlp.up_proj), rows), _multiplier(mlp.down_proj, rows), attention.scaling)


def _norm(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return norm.weight, norm.variance_epsilon


class Plan:
    """Every layer's calls, resolved once per decode (``KVCache.lean``) for a few rows (the packed kernels) and for
    many: at one row, looking the modules up and checking their types in every layer of every forward was a share
    of a step."""

    def __init__(self, model: torch.nn.Module):
        layers = model.model.layers
        self.few_rows = [LayerCalls.of(layer, 1) for layer in layers]
        self.many_rows = [LayerCalls.of(layer, PACKED_KERNEL_MAX_ROWS) for layer in layers]
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads

    def layers(self, rows: int) -> list[LayerCalls]:
        return self.few_rows if rows < PACKED_KERNEL_MAX_ROWS else self.many_rows


def hidden_states(model: torch.nn.Module, cache, position_ids: torch.Tensor, input_ids: torch.Tensor | None = None,
                  inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The last layer's normed hidden states ``(B, n, d)`` of new tokens, through ``cache`` (``KVCache.begin``
    done: its mask and the rows and slots they are written to; ``cache.lean``: the model's ``Plan``)."""
    plan, body = cache.lean, model.model
    x = body.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    batch, n, width = x.shape
    cos, sin = body.rotary_emb(x, position_ids)
    rows, dim = batch * n, cos.shape[-1]
    turn = rotation(cos, sin).view(rows, dim, dim)
    x = x.reshape(rows, width)
    for index, layer in enumerate(plan.layers(rows)):
        x = x + _attention(plan, layer, index, F.rms_norm(x, (width,), *layer.input_norm), turn, batch, cache)
        gate, up = layer.gate_up(F.rms_norm(x, (width,), *layer.post_norm)).chunk(2, -1)
        x = x + layer.down(F.silu(gate).mul_(up))
    return body.norm(x).view(batch, n, width)  # the module itself: the speed benchmark counts tokens there


def _attention(plan: Plan, layer: LayerCalls, index: int, h: torch.Tensor, turn: torch.Tensor, batch: int,
               cache) -> torch.Tensor:
    """``LlamaAttention`` over the cache for the rows of ``h`` ``(B * n, d)``; ``turn``: ``rotation``'s, one
    ``(D, D)`` per row. q and k are rotated by one batched matmul, the cache's own attention does the rest."""
    rows, dim = len(h), turn.shape[-1]
    heads, kv_heads = plan.heads, plan.kv_heads
    qkv = layer.qkv(h)
    rotated = torch.bmm(qkv[:, : (heads + kv_heads) * dim].view(rows, heads + kv_heads, dim), turn)
    rotated = rotated.view(batch, rows // batch, heads + kv_heads, dim).transpose(1, 2)  # (B, heads + kv_heads, n, D)
    values = qkv[:, (heads + kv_heads) * dim:].view(batch, rows // batch, kv_heads, dim).transpose(1, 2)
    out = cache.attend_layer(index, rotated[:, :heads], rotated[:, heads:], values, layer.scaling)
    return layer.o(out.view(rows, heads * dim))
