"""Prompt tuning (Lester et al. 2021): a learned soft prompt on the input embeddings only.

The soft prompt ``(P, d)`` is placed right before each row's first real token, i.e. after any left
padding (PEFT puts it in front of the padding, so a padded row differs from the same row alone).
Positions then come from the extended mask, so the prompt takes positions 0..P-1 in every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PromptConfig:
    """Prompt-tuning hyper-parameters: how many virtual tokens the soft prompt has."""

    num_virtual_tokens: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


class SoftPrompt(nn.Module):
    """The trainable soft prompt; starts from given embeddings (text or sampled vocabulary)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.embedding = nn.Parameter(init.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.embedding


def prompt_init(embeddings: torch.Tensor, length: int, token_ids: list[int] | None, seed: int) -> torch.Tensor:
    """Initial soft prompt: the embeddings of ``token_ids`` (repeated/cut to ``length``), else of
    ``length`` vocabulary entries sampled with ``seed`` (Lester et al.'s "sampled vocab")."""
    ids = (token_ids * length)[:length] if token_ids else sampled_token_ids(embeddings.shape[0], length, seed)
    return embeddings[torch.tensor(ids)].detach().clone()


def sampled_token_ids(vocab_size: int, length: int, seed: int) -> list[int]:
    """``length`` distinct vocabulary ids drawn with ``seed``: the start of a prompt or hidden prefix without text."""
    return torch.randperm(vocab_size, generator=torch.Generator().manual_seed(seed))[:length].tolist()


def first_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first attended token (0 for right padding or none)."""
    return attention_mask.long().argmax(dim=-1)


def insert_soft_prompt(embeds: torch.Tensor, attention_mask: torch.Tensor,
                       prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``prompt`` (P, d) before each row's first real token; returns embeds and mask, both P longer."""
    batch, width, _ = embeds.shape
    length = prompt.shape[0]
    start = first_real_token(attention_mask)[:, None]  # (B, 1)
    new_index = torch.arange(width + length, device=embeds.device)[None]  # (1, T+P)
    in_prompt = (new_index >= start) & (new_index < start + length)
    source = torch.where(new_index < start, new_index, new_index - length).clamp(min=0)  # token index per slot
    tokens = embeds.gather(1, source[..., None].expand(batch, -1, embeds.shape[-1]))
    prompt_rows = prompt[(new_index - start).clamp(0, length - 1)]  # (B, T+P, d), a gather, not a copy per row
    merged = torch.where(in_prompt[..., None], prompt_rows.to(embeds.dtype), tokens)
    mask = torch.where(in_prompt, torch.ones_like(source), attention_mask.gather(1, source))
    return merged, mask


def drop_soft_prompt(hidden: torch.Tensor, attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """Undo ``insert_soft_prompt`` on hidden states, so they line up with the original tokens again."""
    width = attention_mask.shape[1]
    start = first_real_token(attention_mask)[:, None]
    index = torch.arange(width, device=hidden.device)[None]
    source = torch.where(index < start, index, index + length)
    return hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
