"""Prefix tuning as our design pictures it: learned hidden states prepended inside every attention layer.

Each layer holds P learned hidden states that enter its attention after the layer's input norm, in
front of the real tokens; the frozen query/key/value projections process them like any token, the
real tokens attend to them, and the P extra outputs are dropped before the residual stream.

What the prefix positions do themselves: nothing we compute. Their outputs are dropped, so what they
would attend to cannot reach the real tokens; only their keys and values matter, and those are what
we compute, with the layer's own frozen attention module (called on the hidden states through the same
registered attention function as ``prefix.py``, which captures the keys/values instead of attending).
Positions: the real tokens keep exactly the positions they have without a prefix (0..T-1), so padding,
batching and caching work as for ``prefix``; on rotary models (Llama, SmolLM2) the prefix keys are
rotated to positions -P..-1, right in front of the real tokens. GPT-2's absolute positions are added to
the embeddings before the first layer, so its prefix hidden states carry no position.

The trainable part is PEFT-style: ``Embedding(P, d) -> Linear(d, hidden) -> tanh -> Linear(hidden, L*d)``
(the reparametrization of ``prefix``; ``hidden=0`` learns the states directly), learned as a residual on
top of real hidden states: what enters each attention layer for P tokens of text (``--init-text``, or P
tokens sampled from the vocabulary), so training starts from states the layers know. Random states of
the MLP's scale instead start SmolLM2-135M at a loss of 12.6 where the prefix method starts at 3.1
(``results/methods-webnlg``): they are nothing like what the frozen norms and projections were trained
on. The saved artifact is
the keys/values they produce, ``(layers, 2, kv_heads, P, head_dim)``, not the hidden states: decoding
then needs no projection at all and reuses the prefix path unchanged (one broadcast prefix, mixed-task
batches, the decoding loop), and on grouped-query models it is smaller (SmolLM2: 3 kv heads x 64 = 192
per key or value vs 576 per hidden state). It does not export to PEFT: PEFT shifts the real tokens'
positions by P, which this method by design does not.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from kg2text.prefix import PrefixInjector, PrefixShape


@dataclass(frozen=True)
class PrefixHiddenConfig:
    """P hidden states per layer; ``hidden`` is the reparametrization MLP's width (0: none)."""

    num_virtual_tokens: int = 10
    hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


def attention_layers(model: PreTrainedModel) -> list[nn.Module]:
    """The model's self-attention modules, in layer order."""
    found = [m for m in model.modules() if hasattr(m, "layer_idx") and type(m).__name__.endswith("Attention")]
    return sorted(found, key=lambda m: m.layer_idx)


@torch.no_grad()
def attention_inputs(model: PreTrainedModel, token_ids: list[int]) -> torch.Tensor:
    """What enters each attention layer (after its input norm) when the backbone reads ``token_ids``: ``(L, P, d)``."""
    captured: dict[int, torch.Tensor] = {}

    def keep(module, args, kwargs):
        captured[module.layer_idx] = (args[0] if args else kwargs["hidden_states"])[0].float()

    hooks = [m.register_forward_pre_hook(keep, with_kwargs=True) for m in attention_layers(model)]
    injector = getattr(model, "_kg2text_injector", None)
    if injector is not None:
        injector.set(None)  # the plain backbone's states, whatever prefix was in use
    try:
        model(input_ids=torch.tensor([token_ids], device=model.device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([captured[i] for i in sorted(captured)])


def keys_values(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """What each frozen attention layer makes of ``hidden`` ``(L, P, d)``: keys/values ``(L, 2, H, P, D)``."""
    layers, length, _ = hidden.shape
    injector = PrefixInjector.of(model)
    extra = {}
    rotary = getattr(model.base_model, "rotary_emb", None)
    modules = attention_layers(model)
    if rotary is not None and "position_embeddings" in inspect.signature(modules[0].forward).parameters:
        positions = torch.arange(-length, 0, device=hidden.device)[None]
        extra["position_embeddings"] = rotary(hidden[:1].to(model.dtype), position_ids=positions)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    injector.capture = captured
    try:
        for module in modules:
            module(hidden_states=hidden[module.layer_idx][None].to(model.dtype), attention_mask=None, **extra)
    finally:
        injector.capture = None
    keys_and_values = [torch.stack([captured[i][0][0], captured[i][1][0]]) for i in range(layers)]
    return torch.stack(keys_and_values).float()


class HiddenPrefixEncoder(nn.Module):
    """The trainable hidden states; ``forward()`` returns the keys/values the frozen layers make of them.

    ``init`` ``(L, P, d)``: the states training starts from (``attention_inputs`` of a text); the trained part
    is a residual on top, zero at step 0.
    """

    def __init__(self, config: PrefixHiddenConfig, model: PreTrainedModel, init: torch.Tensor):
        super().__init__()
        shape, width = PrefixShape.of(model), model.config.hidden_size
        self.config, self.layers, self.width = config, shape.layers, width
        self.embedding = nn.Embedding(config.num_virtual_tokens, width)
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden), nn.Tanh(),
                                 nn.Linear(config.hidden, shape.layers * width)) if config.hidden else None
        if self.mlp is None:  # learned directly: one embedding row per (layer, position)
            self.embedding = nn.Embedding(shape.layers * config.num_virtual_tokens, width)
            nn.init.zeros_(self.embedding.weight)
        else:
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        self.register_buffer("init", init, persistent=False)
        self._model = (model,)  # frozen, shared, not a submodule: never trained or saved with the prefix

    def hidden_states(self) -> torch.Tensor:
        """The prefix hidden states of every layer, ``(L, P, d)``."""
        length = self.config.num_virtual_tokens
        if self.mlp is None:
            return self.embedding.weight.view(self.layers, length, self.width) + self.init
        return self.mlp(self.embedding.weight).view(length, self.layers, self.width).transpose(0, 1) + self.init

    def forward(self) -> torch.Tensor:
        return keys_values(self._model[0], self.hidden_states())
