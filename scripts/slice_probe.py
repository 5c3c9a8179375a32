"""What the probes of the shipped prefix's recipe share: its training run, and scoring on the exploration's slice.

A probe changes one thing of the shipped WebNLG prefix's recipe (40 positions, bf16 backbone, ``--compile``, lr 5e-4,
50 warmup steps), trains it for some minutes into ``runs/probe/`` and scores it on the 400 evenly spaced WebNLG test
entries of ``bash scripts/release.sh explore`` (beam 5), beside that stage's runs of the recipe itself.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

from kg2text.artifact import atomic_write_text
from kg2text.hardware import cpu_info
from kg2text.training import TrainConfig, train

EXPLORE = Path("results/release/explore")


def train_shipped_recipe(output: Path, minutes: float) -> None:
    """The shipped prefix's recipe for ``minutes`` (whatever the caller has patched); resumes an interrupted run."""
    if (output / "prefix.safetensors").exists():
        return
    resume = (output / "latest_checkpoint").exists()
    train(TrainConfig(output=str(output), backbone="smollm2-135m", dataset="webnlg", max_minutes=minutes,
                      batch_size=8, lr=5e-4, warmup_steps=50, dtype="bfloat16", compile=True, prefix_length=40,
                      save_dtype="float16", checkpoint_every=50, log_every=10), resume=resume)


def scored(run: Path, out: Path, probe_command: str | None = None) -> dict:
    """``run`` on the slice (once; kept in ``out``). By ``kg2text evaluate`` in a process of its own, or with
    ``probe_command`` in this one, so that a probe's patches apply, its scores then naming the probe's command."""
    if not (out / "scores.json").exists():
        args = ["evaluate", "--prefix", str(run), "--dataset", "webnlg", "--split", "test", "--limit", "400",
                "--num-beams", "5", "--batch-size", "32", "--output", str(out)]
        if probe_command is None:
            subprocess.run(["kg2text", *args], check=True)
        else:
            from kg2text.cli import main

            with mock.patch.object(sys, "argv", ["kg2text", *args]):
                main(args)
            for name in ("scores.json", "scores.md"):  # they would name a plain evaluate, which lacks the patches
                text = (out / name).read_text()
                atomic_write_text(out / name, text.replace(f"kg2text {shlex.join(args)}", probe_command))
    return json.loads((out / "scores.json").read_text())


def last_step(run: Path) -> int:
    return json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])["step"]


def row(name: str, scores: dict, steps: int) -> str:
    """A table row: steps, challenge BLEU all / seen / unseen, sacrebleu BLEU, entity coverage."""
    challenge = " / ".join(f"{scores['scores_challenge'][group]['bleu']:.2f}" for group in ("all", "seen", "unseen"))
    return (f"| {name} | {steps:,} | {challenge} | {scores['scores']['all']['bleu']:.2f} | "
            f"{scores['entity_coverage']:.2f}% |")


def anchor_rows(minutes: float, name: str) -> list[str]:
    """The recipe's own runs at this budget (``p40-MINUTESmin`` and its other seeds) as rows named ``name (run)``."""
    return [row(f"{name} (explore/{anchor.name})", json.loads((anchor / "scores.json").read_text()), last_step(anchor))
            for anchor in sorted(EXPLORE.glob(f"p40-{minutes:g}min*"))]


def write_table(path: Path, title: str, command: str, facts: str, column: str, rows: list[str]) -> None:
    """A probe's findings as markdown (and on stdout): what ran where, then its rows beside the recipe's own."""
    cpu = cpu_info()
    table = "\n".join([
        f"# {title}", "",
        f"Command: `{command}`. CPU: {cpu['model']} ({', '.join(cpu['flags'])}), 2 cores. {facts}", "",
        f"| {column} | steps | challenge BLEU all / seen / unseen | BLEU (sacrebleu) | coverage |",
        "|---|---:|---|---:|---:|", *rows, ""])
    atomic_write_text(path, table)
    print(table)
