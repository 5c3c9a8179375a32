"""A frozen backbone driven by a prefix: positions, length checks and the target-only loss.

Kept apart from the prefix itself so that training, generation and evaluation share one forward.
Positions come from the attention mask and start after the prefix (as when the prefix sits in
the KV cache in Li & Liang's code and in PEFT), so left padding does not shift a row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kg2text.backbones import Backbone
from kg2text.errors import UserError
from kg2text.prefix import PrefixInjector

IGNORE_INDEX = -100


def position_ids(attention_mask: torch.Tensor, offset: int) -> torch.Tensor:
    """Each real token's position counted from its row's first real token, plus ``offset``."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0) + offset


def check_fits(backbone: Backbone, prefix_length: int, tokens: int) -> None:
    """Refuse inputs that would run past the backbone's position table (GPT-2: 1024) once the prefix counts."""
    if prefix_length + tokens > backbone.max_positions:
        raise UserError(f"input of {tokens} tokens plus a prefix of {prefix_length} exceeds {backbone.name}'s "
                        f"{backbone.max_positions} positions; shorten the input (fewer triples)")


class PrefixedLM:
    """A frozen backbone plus the injector that feeds it a prefix."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.injector = PrefixInjector(backbone.model)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states with the current prefix, no cache."""
        body = self.backbone.model.base_model
        out = body(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids(attention_mask, self.injector.length), use_cache=False)
        return out.last_hidden_state

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        head = self.backbone.model.get_output_embeddings()
        return head(self.hidden_states(input_ids, attention_mask))

    def target_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over target tokens; the LM head runs only where a label exists."""
        hidden = self.hidden_states(input_ids, attention_mask)[:, :-1]
        targets = labels[:, 1:]
        where = targets != IGNORE_INDEX
        head = self.backbone.model.get_output_embeddings()
        logits = head(hidden[where])
        return F.cross_entropy(logits.float(), targets[where]), int(where.sum())
