"""What --share-prompts saves on a data set, before any timing: sentences an input, prompt and example tokens, and
the padded tokens of one epoch's batches without and with shared prompts (the recipe's batch 8, bf16 widths).

    python scripts/shared_prompt_tokens.py [--dataset webnlg|e2e] [--split train|dev]
"""

from __future__ import annotations

import argparse

from kg2text.backbones import load_backbone
from kg2text.batching import (
    collate,
    collate_shared,
    epoch_batches,
    prompt_length,
    shared_prompt_batches,
    width_multiple,
)
from kg2text.training import TrainConfig, load_training_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="webnlg")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    backbone = load_backbone("smollm2-135m")
    config = TrainConfig(output="", backbone=backbone.name, dataset=args.dataset, split=args.split, prefix_length=40)
    examples = load_training_set(config, backbone)
    rows = list(examples)
    lengths = [len(row["input_ids"]) for row in rows]
    pad, multiple = backbone.tokenizer.pad_token_id, width_multiple("bfloat16")

    def padded(batches: list[list[int]], shared: bool) -> int:
        return sum((collate_shared if shared else collate)([rows[i] for i in batch], pad, multiple)["input_ids"].numel()
                   for batch in batches)

    plain = padded(epoch_batches(lengths, args.batch_size, config.seed, 0), False)
    shared = padded(shared_prompt_batches(examples["input"], lengths, args.batch_size, config.seed, 0), True)
    inputs = len(set(examples["input"]))
    prompts = sum(prompt_length(row["labels"]) for row in rows)
    print(f"{args.dataset} {args.split}: {len(rows)} examples, {inputs} inputs, {len(rows) / inputs:.2f} sentences an "
          f"input; an example's tokens {sum(lengths) / len(rows):.1f}, its prompt's {prompts / len(rows):.1f}")
    print(f"one epoch, batch {args.batch_size}, widths in steps of {multiple}: padded tokens {plain:,} plain, "
          f"{shared:,} with shared prompts (1/{plain / shared:.2f})")


if __name__ == "__main__":
    main()
