"""The tuning methods, PEFT-style: each is a config plus a trainable module (see prefix.py, prompt.py,
prefix_hidden.py, control.py).

``build_tuner`` makes the module whose ``forward()`` returns the tensor a ``TunedLM`` uses; the saved
artifact is that tensor alone, whose shape ``artifact_shape`` predicts for a backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from kg2text.backbones import Backbone
from kg2text.control import ControlConfig, ControlPrefixEncoder
from kg2text.errors import UserError
from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape, expected_prefix_shape, text_activations
from kg2text.prefix_hidden import HiddenPrefixEncoder, PrefixHiddenConfig, attention_inputs
from kg2text.prompt import PromptConfig, SoftPrompt, prompt_init, sampled_token_ids


def _init_ids(backbone: Backbone, init_text: str | None) -> list[int] | None:
    if not init_text:
        return None
    ids = backbone.tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("--init-text has no tokens")
    return ids


def build_tuner(method: str, backbone: Backbone, length: int, mlp_hidden: int, init_text: str | None,
                seed: int, trained: torch.Tensor | None = None, control_length: int = 2,
                categories: tuple[str, ...] = ()) -> tuple[nn.Module, dict]:
    """The trainable module for ``method`` and its config (saved in the artifact header).

    ``trained`` (a run's saved tensor, ``--init-from``) is where training starts: a prefix's MLP then learns
    a residual on top of it, a prompt starts as it. ``control_length`` and ``categories`` are a control
    prefix's (one of ``control_length`` positions per category).
    """
    torch.manual_seed(seed)
    ids = _init_ids(backbone, init_text)
    hidden_size = backbone.model.config.hidden_size
    if method == "prefix":
        config = PrefixConfig(length, mlp_hidden)
        init = text_activations(backbone.model, ids, length) if ids else trained
        return PrefixEncoder(config, PrefixShape.of(backbone.model), hidden_size, init), config.to_dict()
    if method == "control":
        control = ControlConfig(length, control_length, mlp_hidden, categories)
        init = text_activations(backbone.model, ids, control.encoder_positions) if ids else None
        return ControlPrefixEncoder(control, PrefixShape.of(backbone.model), hidden_size, init), control.to_dict()
    if method == "prefix-hidden":
        if trained is not None:
            raise UserError("--init-from is not available for --method prefix-hidden (its saved keys/values cannot be "
                            "turned back into hidden states); use prefix or prompt")
        config = PrefixHiddenConfig(length, mlp_hidden)
        vocab = backbone.model.get_input_embeddings().weight.shape[0]
        text = (ids * length)[:length] if ids else sampled_token_ids(vocab, length, seed)
        return HiddenPrefixEncoder(config, backbone.model, attention_inputs(backbone.model, text)), config.to_dict()
    config = PromptConfig(length)
    embeddings = backbone.model.get_input_embeddings().weight
    start = trained.clone() if trained is not None else prompt_init(embeddings, length, ids, seed)
    return SoftPrompt(start), config.to_dict()


def artifact_shape(method: str, backbone: Backbone, length: int) -> tuple[int, ...]:
    """Shape of the saved tensor: ``(L, 2, kv_heads, P, head_dim)`` for a prefix (a control prefix: ``P`` is its
    shared and all categories' positions, control.py), ``(P, d)`` for a prompt."""
    if method in ("prefix", "prefix-hidden", "control"):
        return expected_prefix_shape(PrefixShape.of(backbone.model), length)
    return (length, backbone.model.config.hidden_size)


def virtual_length(method: str, shape: tuple[int, ...]) -> int:
    return shape[0] if method == "prompt" else shape[-2]
