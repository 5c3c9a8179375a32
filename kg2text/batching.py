"""Training examples: encoding (input, sentence) pairs, padding them into batches, and the batch order.

Kept apart from the loop (``training.py``) so that the loop reads as a loop. The batch order is a pure
function of (seed, epoch), which is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, NamedTuple

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
    prompts = [model_prompt(fmt.linearize(record.items), backbone.separator) for record, _ in pairs]
    categories = [record.category for record, _ in pairs]  # a control prefix's choice (control.py)
    inputs: dict[tuple[str, str], int] = {}  # --share-prompts: examples of one input (and category) share a pass
    table = datasets.Dataset.from_dict({
        "prompt": prompts,
        "target": [model_target(sentence, backbone.end) for _, sentence in pairs],
        "category": categories,
        "input": [inputs.setdefault(key, len(inputs)) for key in zip(prompts, categories, strict=True)],
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


def prompt_length(labels: list[int]) -> int:
    """Tokens of an example's prompt: the labels mask exactly those."""
    return next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


class Block(NamedTuple):
    """One input's examples as ``collate_shared`` lays them out; segment 0 is the shared prompt."""

    ids: list[int]
    labels: list[int]
    positions: list[int]
    segments: list[int]
    control: int | None


def collate_shared(rows: list[dict], pad_id: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Pad examples into rows in which the sentences of one input share a single pass over its prompt.

    ``rows`` come with the examples of one input next to each other (``shared_prompt_batches``). Each input
    becomes a block: its prompt but the last token, then one segment per sentence, each the prompt's last token
    (so the first word is predicted from there, as without sharing) and the sentence; a segment attends to the
    block's shared tokens and to itself, at the positions it would have alone. Blocks are packed into rows
    (``_first_fit``). The attention mask is 4-d ``(rows, 1, width, width)``, bool; labels shift within a row as
    usual (a segment's first token has no label), so the loss is the same sum of per-sentence cross-entropies as
    ``collate``'s, over about 1/1.4 of the padded tokens on WebNLG (scripts/shared_prompt_tokens.py). ``tokens``
    counts the examples' own tokens.
    """
    blocks = [_block(rows[start:end]) for start, end in _runs([row["input"] for row in rows])]
    packed = [[block] for block in blocks] if "control" in rows[0] else _first_fit(blocks, multiple)
    width = _width(packed, multiple)
    ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    labels = torch.full((len(packed), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(packed), width), dtype=torch.long)
    owner = torch.full((len(packed), width), -1, dtype=torch.long)  # block number in the row; -1: padding
    segment = torch.zeros((len(packed), width), dtype=torch.long)
    for r, row in enumerate(packed):
        at = 0
        for b, block in enumerate(row):
            span = slice(at, at + len(block.ids))
            ids[r, span], labels[r, span] = torch.tensor(block.ids), torch.tensor(block.labels)
            positions[r, span], segment[r, span] = torch.tensor(block.positions), torch.tensor(block.segments)
            owner[r, span] = b
            at += len(block.ids)
    same_block = (owner[:, :, None] == owner[:, None, :]) & (owner[:, :, None] >= 0)
    same_segment = (segment[:, None, :] == 0) | (segment[:, :, None] == segment[:, None, :])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = (same_block & same_segment & causal) | torch.eye(width, dtype=torch.bool)  # padding sees itself: no NaN
    batch = {"input_ids": ids, "attention_mask": mask[:, None], "labels": labels, "position_ids": positions,
             "tokens": torch.tensor(sum(len(row["input_ids"]) for row in rows))}
    if "control" in rows[0]:  # a control prefix is chosen per row: one block (one input, one category) a row
        batch["control"] = torch.tensor([row[0].control for row in packed], dtype=torch.long)
    return batch


def _block(same: list[dict]) -> Block:
    """The examples of one input as a block: the shared prompt, then a segment per sentence."""
    cut = prompt_length(same[0]["labels"]) - 1
    block = Block(list(same[0]["input_ids"][:cut]), [IGNORE_INDEX] * cut, list(range(cut)), [0] * cut,
                  same[0].get("control"))
    for number, row in enumerate(same, start=1):
        block.ids.extend(row["input_ids"][cut:])
        block.labels.extend(row["labels"][cut:])
        block.positions.extend(range(cut, len(row["input_ids"])))
        block.segments.extend([number] * (len(row["input_ids"]) - cut))
    return block


def _runs(keys: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal consecutive keys."""
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
    return list(zip(starts, starts[1:] + [len(keys)], strict=True))


ATTENTION_TOKENS = 3_100  # SmolLM2: a token's attention costs about width / 3,100 of its matrix multiplies


def _first_fit(blocks: list[Block], multiple: int) -> list[list[Block]]:
    """Blocks packed into rows, widest first (first-fit decreasing), at the row width that costs least: wider rows
    waste fewer padding tokens but attend over more masked-out keys (``ATTENTION_TOKENS``)."""
    widest = max(len(block.ids) for block in blocks)
    total = sum(len(block.ids) for block in blocks)
    options = [_pack(blocks, width) for width in range(widest, min(total, 2 * widest) + 1, multiple)]
    return min(options, key=lambda rows: _cost(len(rows), _width(rows, multiple)))


def _cost(rows: int, width: int) -> float:
    """A padded batch's matrix-multiply tokens plus its attention's share (``ATTENTION_TOKENS``)."""
    return rows * width * (1 + width / ATTENTION_TOKENS)


def _width(rows: list[list[Block]], multiple: int) -> int:
    return -(-max(sum(len(block.ids) for block in row) for row in rows) // multiple) * multiple


def _pack(blocks: list[Block], capacity: int) -> list[list[Block]]:
    rows: list[list[Block]] = []
    free: list[int] = []
    for block in sorted(blocks, key=lambda block: -len(block.ids)):
        fits = next((i for i, room in enumerate(free) if room >= len(block.ids)), len(rows))
        if fits == len(rows):
            rows.append([])
            free.append(capacity)
        rows[fits].append(block)
        free[fits] -= len(block.ids)
    return rows


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


def shared_prompt_batches(inputs: list[int], lengths: list[int], batch_size: int, seed: int, epoch: int,
                          group: int = 50) -> list[list[int]]:
    """``epoch_batches`` for ``--share-prompts``: the examples of one input next to each other.

    Inputs, not examples, are shuffled and sorted by length within groups of ``group * batch_size``, then the run
    of their examples is cut into batches of ``batch_size`` examples, so a step still teaches ``batch_size``
    sentences (an input whose sentences straddle two batches shares its prompt within each). A pure function of
    (seed, epoch), as there.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    examples: dict[int, list[int]] = {}
    for index, key in enumerate(inputs):
        examples.setdefault(key, []).append(index)
    order = list(examples.values())
    rng.shuffle(order)
    span, run = group * batch_size, []
    for start in range(0, len(order), span):
        chunk = sorted(order[start: start + span], key=lambda same: -sum(lengths[i] for i in same))
        run += [i for same in chunk for i in same]
    batches = [run[i: i + batch_size] for i in range(0, len(run), batch_size)]
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
