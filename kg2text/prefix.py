"""Prefix tuning (Li & Liang 2021): learned key/value vectors prepended in every attention layer.

Two pieces, PEFT-style (a config + a module), plus the hook that makes a frozen model use them:

* ``PrefixEncoder`` is what trains: ``Embedding(P, d) -> Linear(d, hidden) -> tanh ->
  Linear(hidden, 2 * L * kv_dim)`` (the paper's MLP reparametrization, which makes optimisation
  stable). Calling it once per step gives the whole prefix ``(L, 2, kv_heads, P, head_dim)``.
  What gets saved is only that final tensor: the MLP is folded away.
* ``PrefixInjector`` registers an attention function with transformers that concatenates the
  prefix keys/values in front of each layer's own keys/values and opens the mask for them. The
  prefix never enters the KV cache, so caching, beam search and gradient checkpointing work as
  usual, and one prefix is broadcast (``expand``, no copy) to every row and beam.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "kg2text_prefix"


@dataclass(frozen=True)
class PrefixShape:
    """The per-layer key/value geometry of a backbone, which a prefix must match."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, model: PreTrainedModel) -> PrefixShape:
        config = model.config
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.num_hidden_layers, kv_heads, head_dim)


@dataclass(frozen=True)
class PrefixConfig:
    """Prefix-tuning hyper-parameters (Li & Liang use P=10 and an MLP of width 512 for table-to-text)."""

    num_virtual_tokens: int = 10
    hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class PrefixEncoder(nn.Module):
    """The trainable reparametrization; its output is the prefix of every layer at once.

    With ``init`` (the backbone's own keys/values for a text, Li & Liang's low-data trick) the
    MLP learns a residual on top of it: its last layer starts at zero, so training starts exactly
    at the initialisation.
    """

    def __init__(self, config: PrefixConfig, shape: PrefixShape, embed_dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.config, self.shape = config, shape
        self.embedding = nn.Embedding(config.num_virtual_tokens, embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, config.hidden),
            nn.Tanh(),
            nn.Linear(config.hidden, 2 * shape.layers * shape.kv_heads * shape.head_dim),
        )
        self.register_buffer("init", init, persistent=False)
        if init is not None:
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self) -> torch.Tensor:
        """The full prefix, shape ``(layers, 2, kv_heads, P, head_dim)`` (2 = key, value)."""
        s, length = self.shape, self.config.num_virtual_tokens
        flat = self.mlp(self.embedding.weight)  # (P, 2 * L * kv_dim)
        prefix = flat.view(length, s.layers, 2, s.kv_heads, s.head_dim).permute(1, 2, 3, 0, 4)
        return prefix if self.init is None else prefix + self.init


@torch.no_grad()
def text_activations(model: PreTrainedModel, token_ids: list[int], length: int) -> torch.Tensor:
    """The backbone's own keys/values for ``token_ids`` (repeated or cut to ``length``), as a prefix."""
    ids = torch.tensor([(token_ids * length)[:length]], device=model.device)
    injector = getattr(model, "_kg2text_injector", None)
    if injector is not None:
        injector.set(None)  # the plain backbone's activations, whatever prefix was in use
    cache = model(input_ids=ids, use_cache=True).past_key_values
    layers = [torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers]
    return torch.stack(layers).float()  # (L, 2, kv_heads, P, head_dim)


def expected_prefix_shape(shape: PrefixShape, length: int) -> tuple[int, ...]:
    return (shape.layers, 2, shape.kv_heads, length, shape.head_dim)


class PrefixInjector:
    """Makes a frozen model's attention layers prepend the prefix that is currently set.

    ``set(prefix)`` with one prefix ``(L, 2, H, P, D)`` broadcasts it to the batch. With a stack of
    task prefixes ``(T, L, 2, H, P, D)`` and ``rows`` (the task index of each batch row), each row
    attends to its own task's prefix; rows are repeated to cover beams.
    """

    def __init__(self, model: PreTrainedModel):
        _register_attention()
        self.prefix: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        self.cache = None  # a kg2text.decoding.KVCache while kg2text's own decoding loop runs
        self.capture: dict | None = None  # layer -> (keys, values) while prefix_hidden.py projects its states
        model.set_attn_implementation(ATTENTION_NAME)
        for module in model.modules():
            if hasattr(module, "layer_idx") and type(module).__name__.endswith("Attention"):
                module._kg2text_injector = self

    @classmethod
    def of(cls, model: PreTrainedModel) -> PrefixInjector:
        """The model's one injector (attention layers can only point at one), created on first use."""
        if getattr(model, "_kg2text_injector", None) is None:
            model._kg2text_injector = cls(model)
        return model._kg2text_injector

    @property
    def length(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[-2]

    def set(self, prefix: torch.Tensor | None, rows: torch.Tensor | None = None) -> None:
        if prefix is not None and (prefix.dim() == 6) != (rows is not None):
            raise ValueError("a stack of task prefixes needs rows, and rows need a stack")
        self.prefix, self.rows = prefix, rows

    def keys_values(self, layer: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's prefix keys and values for ``batch`` rows, shape ``(batch, H, P, D)``."""
        if self.rows is None:
            key, value = self.prefix[layer]
            return key.expand(batch, *key.shape), value.expand(batch, *value.shape)
        rows = self.rows.repeat_interleave(batch // len(self.rows))  # beams follow their row
        per_row = self.prefix[rows, layer]  # (batch, 2, H, P, D)
        return per_row[:, 0], per_row[:, 1]

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, q_len: int):
        """Prepend the prefix to ``key``/``value`` and open the mask for it."""
        prefix_key, prefix_value = self.keys_values(layer, key.shape[0])
        key = torch.cat([prefix_key.to(key.dtype), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
        kv_len = key.shape[2] - self.length
        if mask is None:  # transformers skipped the mask (pure causal): build it, the prefix breaks the shortcut
            mask = causal_mask(q_len, kv_len, key.device)
        opened = torch.ones(1, 1, 1, 1, dtype=mask.dtype, device=mask.device) if mask.dtype == torch.bool \
            else torch.zeros(1, 1, 1, 1, dtype=mask.dtype, device=mask.device)
        opened = opened.expand(mask.shape[0], 1, mask.shape[2], self.length)
        return key, value, torch.cat([opened, mask], dim=-1)


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention over ``[prefix; keys]`` when a prefix is set, plain SDPA otherwise (bf16 training on a CPU:
    eager bf16 attention); inside kg2text's decoding loop the loop's cache (which holds the prefix in its first
    slots) does the attention."""
    injector: PrefixInjector | None = getattr(module, "_kg2text_injector", None)
    if injector is not None and injector.capture is not None:  # keys/values wanted, not attention
        injector.capture[module.layer_idx] = (key, value)
        return torch.zeros_like(query).transpose(1, 2), None
    if injector is not None and injector.cache is not None:
        return injector.cache.attend(module, query, key, value, **kwargs)
    if injector is not None and injector.prefix is not None:
        key, value, attention_mask = injector.extend(module.layer_idx, key, value, attention_mask, query.shape[2])
    if query.dtype == torch.bfloat16 and query.device.type == "cpu" and torch.is_grad_enabled():
        return _bf16_training_attention(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def grouped_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                      scaling: float) -> torch.Tensor:
    """softmax(q k^T * scaling, masked) v as two batched matmuls, query heads grouped by their key/value head.

    Why not SDPA: torch's CPU flash-attention kernel costs about 0.8 ms for one decoding query against 120 keys
    (SmolLM2's shapes, 2 threads, torch 2.13) where these two matmuls take 0.05 ms; over 30 layers that was most
    of a batch-1 decoding step. ``query`` ``(B, H, Q, D)``, ``keys``/``values`` ``(B, KV, T, D)`` (views of the
    cache: never copied or repeated per group), ``mask`` ``(B, 1, Q, T)`` bool (``None``: every key); returns
    ``(B, Q, H, D)`` as transformers' attention functions do.
    """
    batch, heads, length, dim = query.shape
    kv_heads, total = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    # 3-d batched matmuls: torch.matmul's broadcasting of 4-d operands cost more than the product at one row
    scores = torch.bmm(query.reshape(batch * kv_heads, group * length, dim),
                       keys.reshape(batch * kv_heads, total, dim).transpose(1, 2)).mul_(scaling)
    if mask is not None:
        lowest = torch.finfo(scores.dtype).min
        scores.view(batch, kv_heads, group, length, total).masked_fill_(~mask[:, :, None], lowest)
    out = torch.bmm(scores.softmax(-1), values.reshape(batch * kv_heads, total, dim))
    return out.view(batch, heads, length, dim).transpose(1, 2).contiguous()


def _bf16_training_attention(module, query, key, value, attention_mask, **kwargs):
    """Training with a bf16 backbone on a CPU: ``grouped_attention`` in bf16 (eager matmuls and softmax, as
    transformers' eager attention). torch's CPU flash-attention backward is about 2.5x slower in bf16 than in
    fp32, and at training lengths (tens of tokens) these two matmuls are faster than even the fp32 kernel with
    its upcasts (``kg2text benchmark --speed`` measures the training loop)."""
    if attention_mask is None:  # pure causal: transformers skipped the mask
        attention_mask = causal_mask(query.shape[2], key.shape[2], query.device)
    elif attention_mask.is_floating_point():  # additive: 0 where attended
        attention_mask = attention_mask == 0
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    return grouped_attention(query, key, value, attention_mask, scaling), None


def causal_mask(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """``(1, 1, q_len, kv_len)`` bool: the queries are the last ``q_len`` positions."""
    return torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(kv_len - q_len)[None, None]


def _register_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, prefix_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
