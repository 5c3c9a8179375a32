"""The instruct backbone's own chat format as the model input: does a prefix then learn faster or generalise better?

SmolLM2-135M-Instruct was tuned on ``<|im_start|>user ... <|im_end|> <|im_start|>assistant`` turns; kg2text's
input is Li & Liang's `` | s : p : o <|im_start|>`` and the target `` sentence <|im_end|>``. This wraps the same
linearized source in a user turn with a one-line instruction and trains the sentence as the assistant's reply
(about 12 more tokens an example), with the shipped prefix's recipe (40 positions, bf16 backbone, ``--compile``,
lr 5e-4, 50 warmup steps) for ``--minutes``, kept in ``runs/probe/``, and scores it on the exploration's slice of
WebNLG test (400 evenly spaced entries, beam 5) beside the same recipe and budget in Li & Liang's format
(``results/release/explore/p40-MINUTESmin`` and its other seeds, ``bash scripts/release.sh explore``).
A probe, not a feature: nothing here is in the package.

    python scripts/chat_probe.py --minutes 10
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from slice_probe import anchor_rows, last_step, row, scored, train_shipped_recipe, write_table

import kg2text.batching as batching
import kg2text.generate as generate
from kg2text.backbones import load_backbone
from kg2text.data import read_webnlg, training_pairs
from kg2text.linearize import get_format, model_prompt, model_target

OUT = Path("results/release/chat")
INSTRUCTION = "Write a text that states these facts:"


def chat_prompt(source: str, separator: str) -> str:
    """A user turn holding the instruction and the linearized source, then the assistant's turn opened."""
    return f"{separator}user\n{INSTRUCTION} {source.strip()}<|im_end|>\n{separator}assistant\n"


def chat_target(sentence: str, end: str) -> str:
    return f"{sentence.strip()}{end}"


@contextmanager
def chat_format():
    """kg2text's prompt and target builders swapped for the chat ones, where training and decoding call them."""
    saved = batching.model_prompt, batching.model_target, generate.model_prompt
    batching.model_prompt, batching.model_target, generate.model_prompt = chat_prompt, chat_target, chat_prompt
    try:
        yield
    finally:
        batching.model_prompt, batching.model_target, generate.model_prompt = saved


def mean_tokens(*builders) -> list[float]:
    """Tokens of an average WebNLG training example (prompt and target) as each (prompt, target) builder pair makes
    it: one backbone load and one read of the training set for all of them."""
    backbone, fmt = load_backbone("smollm2-135m"), get_format("webnlg")
    pairs = [(fmt.linearize(record.items), sentence) for record, sentence in training_pairs(read_webnlg("train"))]
    means = []
    for prompt, target in builders:
        texts = [prompt(source, backbone.separator) + target(sentence, backbone.end) for source, sentence in pairs]
        means.append(sum(map(len, backbone.tokenizer(texts, add_special_tokens=False)["input_ids"])) / len(texts))
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    name = f"chat-{args.minutes:g}min"
    run = Path("runs/probe") / name
    command = f"python scripts/chat_probe.py --minutes {args.minutes:g}"
    with chat_format():
        train_shipped_recipe(run, args.minutes)
        ours = scored(run, OUT / name, command)
    plain, chat = mean_tokens((model_prompt, model_target), (chat_prompt, chat_target))
    write_table(OUT / f"{name}.md", f"The backbone's chat format as the model input, {args.minutes:g} minutes", command,
                "The shipped prefix's recipe; WebNLG test, 400 evenly spaced entries, beam 5. Chat prompt: "
                f"`{chat_prompt(' | s : p : o', '<|im_start|>')!r}`. Tokens of an average training example: "
                f"{plain:.1f} in Li & Liang's format, {chat:.1f} in the chat format.", "model input",
                [*anchor_rows(args.minutes, "Li & Liang's"), row("the chat format", ours, last_step(run))])


if __name__ == "__main__":
    main()
