"""Training examples: encoding (input, sentence) pairs, padding them into batches, and the batch order.

Kept apart from the loop (``training.py``) so that the loop reads as a loop. The batch order is a pure
function of (seed, epoch), which is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from kg2text.backbones import Backbone
from kg2text.data import Record, training_pairs
from kg2text.errors import UserError
from kg2text.linearize import Format, model_prompt, model_target
from kg2text.model import IGNORE_INDEX

if TYPE_CHECKING:
    import datasets


def encode_examples(pairs: list[tuple[Record, str]], fmt: Format, backbone: Backbone,
                    max_tokens: int) -> datasets.Dataset:
    """Tokenize (source, sentence) pairs with ``datasets.map``; labels mask the prompt out."""
    import datasets  # here, not at the top: about a second of import that decoding (kg2text generate) never needs

    tokenizer = backbone.tokenizer
    table = datasets.Dataset.from_dict({
        "prompt": [model_prompt(fmt.linearize(record.items), backbone.separator) for record, _ in pairs],
        "target": [model_target(sentence, backbone.end) for _, sentence in pairs],
        "category": [record.category for record, _ in pairs],  # a control prefix's choice (control.py)
    })

    def tokenize(batch: dict) -> dict:
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [p + t for p, t in zip(prompts, targets, strict=True)],
                "labels": [[IGNORE_INDEX] * len(p) + t for p, t in zip(prompts, targets, strict=True)]}

    encoded = table.map(tokenize, batched=True, remove_columns=["prompt", "target"], desc="tokenizing")
    return encoded.filter(lambda row: len(row["input_ids"]) <= max_tokens, desc="dropping over-long")


def width_multiple(dtype: str) -> int:
    """What batch widths are rounded up to for a backbone in ``dtype``.

    Under bf16, oneDNN builds one matmul primitive per distinct shape and keeps a bounded cache of them
    (1,024 by default); WebNLG's ~140 distinct lengths (and as many target-token counts, for which
    ``TunedLM.target_loss`` runs the LM head in fixed chunks of rows) overflow it, the lead for bf16 training
    slowing from ~400 to ~310 tokens/s over a 40-minute run while fp32 held level. Widths in steps of 8 leave ~18
    shapes, for a few % more padding.
    """
    return 8 if dtype == "bfloat16" else 1


def collate(rows: list[dict], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples to the longest, rounded up to ``multiple``; positions come from the mask,
    so padding side is free."""
    width = -(-max(len(row["input_ids"]) for row in rows) // multiple) * multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "control" in rows[0]:  # each row's control prefix (--method control)
        batch["control"] = torch.tensor([row["control"] for row in rows], dtype=torch.long)
    return batch


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 50) -> list[list[int]]:
    """One epoch of shuffled batches of similar-length examples, so little compute goes to padding.

    Shuffle, cut into groups of ``group`` batches, sort each group by length, cut into batches and
    shuffle the batch order (HF's ``group_by_length`` idea). A pure function of (seed, epoch), which
    is what makes resuming exact.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = group * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start: start + span], key=lengths.__getitem__, reverse=True)
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def training_examples(records: list[Record], fmt: Format, backbone: Backbone, virtual_tokens: int, seed: int,
                      max_examples: int | None = None, what: str = "training") -> datasets.Dataset:
    """One shuffled example per (record, reference), encoded; those too long for the backbone are dropped."""
    pairs = training_pairs(records)
    random.Random(seed).shuffle(pairs)
    if max_examples:
        pairs = pairs[:max_examples]
    max_tokens = backbone.max_positions - virtual_tokens
    encoded = encode_examples(pairs, fmt, backbone, max_tokens)
    if len(encoded) < len(pairs):
        print(f"kg2text: dropped {len(pairs) - len(encoded)} {what} examples longer than {max_tokens} tokens")
    if len(encoded) == 0:
        raise UserError(f"no {what} examples left (all longer than the backbone's context?)")
    return encoded
