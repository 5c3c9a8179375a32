"""Training on each entry's most faithful references only: does a prefix then name more entities, and score higher?

WebNLG's training references often leave out or paraphrase an input entity: only 44% of the 18,102 name every
subject and object verbatim (``metrics.mentions_found``), and the model learns to leave them out too (the shipped
prefix names 84% of them; choosing, among beam search's finished sentences, the one naming most, ``--rerank``,
gains 0.7 BLEU-A). This trains the shipped prefix's recipe (40 positions, bf16 backbone, ``--compile``, lr 5e-4,
50 warmup steps) for ``--minutes`` on the references that name as many of their entry's entities as its best
reference does (13,169 of 18,102: every entry keeps at least one), kept in ``runs/probe/``, and scores it on the
exploration's slice of WebNLG test (400 evenly spaced entries, beam 5), beside the same recipe and budget on all
references (``results/release/explore/p40-MINUTESmin`` and its other seeds, ``bash scripts/release.sh explore``).
A probe, not a feature: nothing here is in the package.

    python scripts/coverage_probe.py --minutes 30
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from slice_probe import anchor_rows, last_step, row, scored, train_shipped_recipe, write_table

import kg2text.batching as batching
from kg2text.data import read_webnlg, training_pairs
from kg2text.metrics import mentions_found

OUT = Path("results/release/coverage")


def most_faithful(pairs: list) -> list:
    """The (record, reference) pairs whose reference names as many of the record's entities as any of its own."""
    found = [mentions_found(record.items, text)[0] for record, text in pairs]
    best: dict[int, int] = defaultdict(int)
    for (record, _), count in zip(pairs, found, strict=True):
        best[id(record)] = max(best[id(record)], count)
    return [pair for pair, count in zip(pairs, found, strict=True) if count == best[id(pair[0])]]


def train_filtered(output: Path, minutes: float) -> None:
    """The shipped prefix's recipe on ``most_faithful`` pairs; resumes an interrupted run."""
    pairs_of = batching.training_pairs
    batching.training_pairs = lambda records: most_faithful(pairs_of(records))
    try:
        train_shipped_recipe(output, minutes)
    finally:
        batching.training_pairs = pairs_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    args = parser.parse_args()
    name = f"coverage-{args.minutes:g}min"
    run = Path("runs/probe") / name
    train_filtered(run, args.minutes)
    kept = len(most_faithful(training_pairs(read_webnlg("train"))))
    ours = scored(run, OUT / name)
    write_table(OUT / f"{name}.md", f"Training on each entry's most faithful references, {args.minutes:g} minutes",
                f"python scripts/coverage_probe.py --minutes {args.minutes:g}",
                f"The shipped prefix's recipe; {kept:,} training references; WebNLG test, 400 evenly spaced entries, "
                "beam 5.", "training references",
                [*anchor_rows(args.minutes, "all 18,102"), row("each entry's most faithful", ours, last_step(run))])


if __name__ == "__main__":
    main()
