"""Where a training step's time goes: kg2text's own loop (``kg2text.training.train``) under torch's profiler.

The speed benchmark says how far training runs below this CPU's GEMM ceiling; this says why. It trains SmolLM2-135M's
prefix for ``--steps`` steps of batch 8 on WebNLG (as ``kg2text benchmark --speed`` does) with the profiler counting
matmul FLOPs, and prints a markdown table: the ops that take the most time, the share of the matmuls, and their
GFLOP/s against ``torch.mm``'s at the backbone's shapes measured in the same run (results/speed/train_profile.md).
The first steps are counted too (they warm up the allocator), so use enough steps; 2 threads, about a minute.

    python scripts/train_profile.py [--steps 20] [--dtype float32]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.profiler import profile

from kg2text.backbones import load_backbone
from kg2text.hardware import cpu_info
from kg2text.speed import gemm_ceiling
from kg2text.training import TrainConfig, train

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::linear", "aten::matmul")


def profiled_training(backbone_name: str, steps: int, dtype: str) -> profile:
    with tempfile.TemporaryDirectory() as tmp, profile(with_flops=True) as prof:
        train(TrainConfig(output=f"{tmp}/run", backbone=backbone_name, max_steps=steps, batch_size=8, lr=5e-4,
                          checkpoint_every=0, log_every=steps, dtype=dtype), backbone=load_backbone(backbone_name))
    return prof


def table(prof: profile, ceiling: float, dtype: str, steps: int, rows: int = 12) -> str:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    matmul = [e for e in events if e.key in MATMULS]
    matmul_us, matmul_flops = sum(e.self_cpu_time_total for e in matmul), sum(e.flops for e in matmul)
    rate = matmul_flops / matmul_us / 1e3 if matmul_us else 0.0
    cpu = cpu_info()
    lines = [f"# A training step's time, by op ({dtype} backbone, {steps} steps of batch 8)", "",
             f"CPU: {cpu['model']} ({cpu['cores']} cores; flags: {', '.join(cpu['flags'])}).", "",
             f"Matmuls: **{100 * matmul_us / total:.0f}%** of the ops' time, at **{rate:.0f} GFLOP/s** "
             f"(torch.mm at the backbone's shapes, M=640, in this run: {ceiling:.0f} GFLOP/s, "
             f"so {100 * rate / ceiling:.0f}% of it).", "",
             "| op | share of time | calls |", "|---|---:|---:|"]
    lines += [f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f}% | {e.count:,} |" for e in events[:rows]]
    return "\n".join(lines) + "\n\nCommand: `python scripts/train_profile.py " \
        f"--steps {steps} --dtype {dtype}`\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--backbone", default="smollm2-135m")
    args = parser.parse_args()
    torch.set_num_threads(2)
    prof = profiled_training(args.backbone, args.steps, args.dtype)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    ceiling = gemm_ceiling(load_backbone(args.backbone), dtype, rows=(640,))[640]
    print(table(prof, ceiling, args.dtype, args.steps))


if __name__ == "__main__":
    main()
