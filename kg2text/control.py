"""Control prefixes (Clive et al. 2021): one shared prefix plus a short prefix per input category.

WebNLG's inputs come from DBpedia categories (Astronaut, Food, ...), and sentences about an airport are
phrased unlike sentences about a comic character. A control prefix gives each category a few key/value
positions of its own behind the shared prefix, chosen by the input's category, so the shared prefix
need not serve every category at once. Category ``""`` (``GENERAL``) is a control prefix of its own,
trained on every ``GENERAL_EVERY``-th example whatever its category; it serves inputs whose category
was never trained (WebNLG's unseen test categories) or is not known (your own triples).

Training goes through the same ``PrefixEncoder`` (one MLP over shared + control positions). What a
``TunedLM`` uses is the stack of full prefixes, one per category, ``(C, L, 2, kv_heads, P + Pc, head_dim)``,
which the attention hook and the decoding loop already know how to apply row by row; what the file stores
is the encoder's own layout, ``(L, 2, kv_heads, P + C * Pc, head_dim)``, the shared prefix once (WebNLG's
stack at P = 40 is 10 MB in fp16, its compact form 1.4 MB): ``compact_controls`` and ``expand_controls``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape

GENERAL = ""  # the control prefix of any category not trained, always index 0
GENERAL_EVERY = 5  # every 5th training example (examples are shuffled) teaches the general control prefix


@dataclass(frozen=True)
class ControlConfig:
    """Shared prefix length, control prefix length, MLP width and the categories, ``GENERAL`` first."""

    num_virtual_tokens: int = 10
    control_tokens: int = 2
    hidden: int = 512
    categories: tuple[str, ...] = (GENERAL,)

    def to_dict(self) -> dict:
        return {**asdict(self), "categories": list(self.categories)}

    @property
    def encoder_positions(self) -> int:
        """Positions the encoder makes: the shared prefix, then each category's control prefix."""
        return self.num_virtual_tokens + len(self.categories) * self.control_tokens


def control_categories(example_categories: list[str]) -> tuple[str, ...]:
    """``GENERAL``, then the categories that occur in the training examples, sorted."""
    return (GENERAL, *sorted(set(example_categories) - {GENERAL}))


def category_rows(categories: tuple[str, ...] | list[str], wanted: list[str]) -> list[int]:
    """Each input's control index: its category's, or ``GENERAL``'s (0) when that category was not trained."""
    index = {name: i for i, name in enumerate(categories)}
    return [index.get(name, 0) for name in wanted]


def training_rows(categories: tuple[str, ...], example_categories: list[str]) -> list[int]:
    """Each training example's control index; every ``GENERAL_EVERY``-th example teaches ``GENERAL``."""
    rows = category_rows(categories, example_categories)
    return [0 if i % GENERAL_EVERY == 0 else row for i, row in enumerate(rows)]


class ControlPrefixEncoder(nn.Module):
    """One ``PrefixEncoder`` over ``P + C * Pc`` positions, returned as one full prefix per category."""

    def __init__(self, config: ControlConfig, shape: PrefixShape, embed_dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.encoder = PrefixEncoder(PrefixConfig(config.encoder_positions, config.hidden), shape, embed_dim, init)

    def forward(self) -> torch.Tensor:
        """The stack ``(C, layers, 2, kv_heads, P + Pc, head_dim)``: the shared prefix, then category c's."""
        return expand_controls(self.encoder(), self.config.num_virtual_tokens, len(self.config.categories))


def expand_controls(compact: torch.Tensor, shared_length: int, categories: int) -> torch.Tensor:
    """``(L, 2, H, P + C * Pc, D)`` -> the stack ``(C, L, 2, H, P + Pc, D)``: the shared prefix before each
    category's own positions."""
    shared = compact[..., :shared_length, :]
    controls = compact[..., shared_length:, :].unflatten(-2, (categories, -1)).permute(3, 0, 1, 2, 4, 5)
    return torch.cat([shared.expand(categories, *shared.shape), controls], dim=-2)


def compact_controls(stack: torch.Tensor, shared_length: int) -> torch.Tensor:
    """The stack ``(C, L, 2, H, P + Pc, D)`` -> ``(L, 2, H, P + C * Pc, D)``, the inverse of ``expand_controls``:
    every category's copy of the shared prefix is the same, so it is stored once (category 0's)."""
    controls = stack[..., shared_length:, :].permute(1, 2, 3, 0, 4, 5).flatten(3, 4)
    return torch.cat([stack[0, ..., :shared_length, :], controls], dim=-2).contiguous()
