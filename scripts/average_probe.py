"""Does averaging the prefix over the end of a run beat its last step? (issue 16; weight averaging, SWA-style)

The shipped prefix is the last step of a 60-minute run whose learning rate decays linearly to 0. Averaging the
trained tensor over the run's last part is free at training time and often smooths out batch noise; one run gives
both the last step and its averages, so they compare without a second seed's noise.

    python scripts/average_probe.py train runs/average/webnlg          # the shipped recipe, every checkpoint kept
    python scripts/average_probe.py average runs/average/webnlg --last 0.1 0.2 0.3 0.5

``train`` runs ``bash scripts/release.sh p40``'s training command (``--resume`` when a checkpoint is there) but keeps
all checkpoints (one each 50 steps) instead of the last two, and keeps them after the final save. ``average`` writes,
for each fraction F, a run folder ``RUN-avgF`` whose prefix (float16, like the shipped one) is the mean of the
trained tensors at the checkpoints in the last F of the training time: what ``kg2text train --average-last F`` saves
(a tensor every 50th step there; the final step, which no checkpoint holds, is not one of them unless it is a 50th),
with the header and config.json it would write; score them like any run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPE = ["--backbone", "smollm2-135m", "--max-minutes", "60", "--batch-size", "8", "--lr", "5e-4",
          "--save-dtype", "float16", "--checkpoint-every", "50", "--log-every", "10", "--dataset", "webnlg",
          "--warmup-steps", "50", "--dtype", "bfloat16", "--compile", "--prefix-length", "40"]


def train(run: Path) -> int:
    import kg2text.checkpoint
    import kg2text.training
    from kg2text.cli import main

    kg2text.checkpoint.KEEP = 10**6  # every checkpoint stays: each is a point the average can take
    kg2text.training.remove_checkpoints = lambda run_dir: None
    if (run / "prefix.safetensors").is_file():
        print(f"{run}: trained already")
        return 0
    resume = (run / "latest_checkpoint").is_file()
    return main(["train", "--output", str(run), "--resume"] if resume else ["train", *RECIPE, "--output", str(run)])


def checkpoint_tensors(run: Path) -> list[tuple[int, float, torch.Tensor]]:
    """(step, elapsed seconds, trained tensor) of every checkpoint of ``run``, by step."""
    from kg2text.backbones import load_backbone
    from kg2text.methods import build_tuner
    from kg2text.training import TrainConfig

    config = TrainConfig.from_run(run)
    backbone = load_backbone(config.backbone)
    tuner, _ = build_tuner(config.method, backbone, config.prefix_length, config.mlp_hidden, None, config.seed)
    found = []
    for folder in run.glob("checkpoint-*"):
        state = json.loads((folder / "state.json").read_text())
        tuner.load_state_dict(load_file(folder / "module.safetensors"))
        with torch.no_grad():
            found.append((state["step"], state["elapsed_s"], tuner().float().clone()))
    return sorted(found, key=lambda item: item[0])


def average(run: Path, fractions: list[float]) -> None:
    from kg2text.artifact import read_prefix, save_prefix
    from kg2text.backbones import load_backbone
    from kg2text.training import AVERAGE_EVERY

    last, header = read_prefix(run)
    if header["train_config"]["checkpoint_every"] != AVERAGE_EVERY:
        raise SystemExit(f"{run}: checkpoints every {header['train_config']['checkpoint_every']} steps; "
                         f"--average-last takes a tensor every {AVERAGE_EVERY}")
    backbone = load_backbone(header["backbone"])
    points = checkpoint_tensors(run)
    budget = header["train_config"]["max_minutes"] * 60
    for fraction in fractions:
        chosen = [(step, tensor) for step, elapsed, tensor in points if elapsed >= (1 - fraction) * budget]
        if not chosen:  # where --average-last saves the last step's tensor, which is the run itself
            print(f"{run}: no checkpoint in the last {fraction:g} of the run; nothing to average")
            continue
        mean = torch.stack([tensor for _, tensor in chosen]).mean(0).to(last.dtype)
        out = run.with_name(f"{run.name}-avg{fraction:g}")
        # the header and config.json that `kg2text train --average-last F` would have written with this prefix
        config = header["train_config"] | {"average_last": fraction}
        kept = {k: v for k, v in header.items() if k in ("method", "format", "dataset", "method_config",
                                                          "trainable_params")}
        save_prefix(out, mean, backbone, kept | {"train_config": config,
                                                 "averaged": {"every": AVERAGE_EVERY, "tensors": len(chosen)}})
        (out / "config.json").write_text(json.dumps(config | {"output": str(out)}, indent=2))
        (out / "train_log.jsonl").write_text((run / "train_log.jsonl").read_text())  # release.sh's score copies it
        change = (mean.float() - last.float()).norm() / last.float().norm()
        print(f"{out}: mean of {len(chosen)} checkpoints (steps {chosen[0][0]}-{chosen[-1][0]}), "
              f"{change:.4f} of the last step's norm away from it")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train").add_argument("run", type=Path)
    averaging = sub.add_parser("average")
    averaging.add_argument("run", type=Path)
    averaging.add_argument("--last", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5],
                           help="fractions of the training time at the end whose checkpoints are averaged")
    args = parser.parse_args()
    if args.command == "train":
        return train(args.run)
    average(args.run, args.last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
