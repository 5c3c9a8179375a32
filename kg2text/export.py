"""Interop: write a kg2text prefix as a Hugging Face PEFT prefix-tuning adapter, and read PEFT's layout back.

PEFT's ``PrefixTuningConfig(prefix_projection=False)`` keeps the whole prefix in one embedding of
shape ``(P, layers * 2 * kv_heads * head_dim)`` and views it as ``(P, layers * 2, heads, head_dim)``;
our ``(layers, 2, kv_heads, P, head_dim)`` is the same numbers in another order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from kg2text.artifact import atomic_write, atomic_write_text, read_prefix
from kg2text.errors import UserError


def peft_prompt_embeddings(prefix: torch.Tensor) -> torch.Tensor:
    """``(L, 2, H, P, D)`` -> PEFT's ``(P, L * 2 * H * D)``."""
    layers, _, heads, length, head_dim = prefix.shape
    return prefix.permute(3, 0, 1, 2, 4).reshape(length, layers * 2 * heads * head_dim).contiguous()


def prefix_from_peft_embeddings(embeddings: torch.Tensor, layers: int, heads: int) -> torch.Tensor:
    """PEFT's ``(P, L * 2 * H * D)`` -> ``(L, 2, H, P, D)``: the inverse of ``peft_prompt_embeddings``."""
    length = embeddings.shape[0]
    return embeddings.reshape(length, layers, 2, heads, -1).permute(1, 2, 3, 0, 4).contiguous()


def export_peft(run: Path, out: Path, base_model: str | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` that ``PeftModel.from_pretrained`` loads."""
    prefix, header = read_prefix(run)
    if header.get("method", "prefix") == "prefix-hidden":
        raise UserError(f"{run} holds a prefix-hidden run, which keeps the real tokens' positions; PEFT shifts them "
                        "by the prefix length, so it would decode differently: only --method prefix runs export")
    if header.get("method", "prefix") != "prefix":
        raise UserError(f"{run} holds a {header['method']} run; only prefix-tuning runs export to PEFT prefix tuning")
    layers, _, heads, length, head_dim = prefix.shape
    config = {
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "inference_mode": True,
        "num_virtual_tokens": length, "num_layers": layers, "num_attention_heads": heads,
        "token_dim": heads * head_dim, "encoder_hidden_size": heads * head_dim, "num_transformer_submodules": 1,
        "prefix_projection": False, "base_model_name_or_path": base_model or header["backbone"],
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = peft_prompt_embeddings(prefix.float())
    atomic_write(out / "adapter_model.safetensors", lambda tmp: save_file({"prompt_embeddings": embeddings}, tmp))
    atomic_write_text(out / "adapter_config.json", json.dumps(config, indent=2) + "\n")
    return out
