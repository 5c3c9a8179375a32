"""A lean forward of a Llama-family backbone (SmolLM2) for kg2text's decoding loop.

Why: decoding one row is bound by per-op cost, not by the weights: on an AMD EPYC (Zen 1) a one-row greedy
decode through transformers' forward streamed SmolLM2's weights at 12-21% of the machine's memory read rate
(results/speed/speed.md, ``bash scripts/speed.sh``, stop 32); the rest was a hundred-odd small ops per layer
and the Python around them. This runs the same layers with fewer ops: q and k rotated together by one batched
matmul (the rotary embedding as a per-position rotation matrix), sibling projections as one product
(``hardware.StackedLinear``), no masks or keyword arguments built per layer. The model's own modules compute
everything else (embedding, rotary angles, every linear layer), and the attention is the decoding loop's own
(``KVCache.attend``, which transformers' forward reaches through ``prefix.py``'s registered attention function):
this only orders the calls. It covers what ``supports`` checks, transformers' own Llama classes with fp32
activations (``--dtype float32`` and ``float16``); anything else (GPT-2, bf16 activations, other Llama variants)
runs through transformers' forward. Tests hold its logits to transformers' on a tiny Llama, and its greedy and
beam output token for token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kg2text.hardware import PACKED_KERNEL_MAX_ROWS, OneDnnLinear, PackedLinear, SiblingLinear


def supports(model: torch.nn.Module) -> bool:
    """Transformers' own Llama (whose layers are its own Llama classes: kg2text swaps only linear layers), SiLU MLP,
    fp32 activations: the model this forward reproduces. Checked at every forward, so kept cheap."""
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


def _rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """``LlamaRMSNorm`` without its up- and down-casts (no-ops in fp32, but two more dispatches per norm)."""
    return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))


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


def hidden_states(model: torch.nn.Module, cache, position_ids: torch.Tensor, input_ids: torch.Tensor | None = None,
                  inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The last layer's normed hidden states ``(B, n, d)`` of new tokens, through ``cache`` (``KVCache.begin``
    done: its mask and the rows and slots they are written to)."""
    body = model.model
    x = body.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
    batch, n, width = x.shape
    cos, sin = body.rotary_emb(x, position_ids)
    turn = rotation(cos, sin)
    rows = batch * n
    x = x.reshape(rows, width)
    for layer in body.layers:
        x = x + _attention(layer.self_attn, _rms_norm(x, layer.input_layernorm), turn, cache)
        mlp = layer.mlp
        normed = _rms_norm(x, layer.post_attention_layernorm)
        gate, up = _product((mlp.gate_proj, mlp.up_proj), rows)(normed).chunk(2, -1)
        x = x + _multiplier(mlp.down_proj, rows)(F.silu(gate).mul_(up))
    return body.norm(x).view(batch, n, width)  # the module itself: the speed benchmark counts tokens there


def _attention(attention: torch.nn.Module, h: torch.Tensor, turn: torch.Tensor, cache) -> torch.Tensor:
    """``LlamaAttention`` over the cache for the rows of ``h`` ``(B * n, d)``; ``turn``: ``rotation``'s."""
    batch, n, dim, _ = turn.shape
    config = attention.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    qkv = _product((attention.q_proj, attention.k_proj, attention.v_proj), len(h))(h)
    rotated = torch.matmul(qkv[:, : (heads + kv_heads) * dim].view(batch, n, heads + kv_heads, dim), turn)
    rotated = rotated.transpose(1, 2)  # (B, heads + kv_heads, n, D)
    values = qkv[:, (heads + kv_heads) * dim:].view(batch, n, kv_heads, dim).transpose(1, 2)
    out, _ = cache.attend(attention, rotated[:, :heads], rotated[:, heads:], values, scaling=attention.scaling)
    return _multiplier(attention.o_proj, len(h))(out.view(batch * n, heads * dim))
