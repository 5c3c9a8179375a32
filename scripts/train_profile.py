"""Where a training step's time goes: kg2text's own loop (``kg2text.training.train``) under torch's profiler.

The speed benchmark says how far training runs below this CPU's GEMM ceiling; this says where the rest goes. It
trains SmolLM2-135M's prefix for ``--steps`` steps of batch 8 on WebNLG (as ``kg2text benchmark --speed`` does)
under torch's profiler and prints a markdown table: the share of the time in matmuls (torch's and oneDNN's) and in
attention, and the ops that take the most time (results/speed/train_profile_*.md). The first steps are counted
too (they warm up the allocator), so use enough steps; 2 threads, about a minute.

    python scripts/train_profile.py [--steps 20] [--dtype float32]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.profiler import profile

from kg2text.backbones import load_backbone
from kg2text.hardware import cpu_info
from kg2text.training import TrainConfig, train

MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "mkldnn::_linear_pointwise")
ATTENTION = "scaled_dot_product"


def profiled_training(backbone_name: str, steps: int, dtype: str) -> profile:
    with tempfile.TemporaryDirectory() as tmp, profile() as prof:
        train(TrainConfig(output=f"{tmp}/run", backbone=backbone_name, max_steps=steps, batch_size=8, lr=5e-4,
                          checkpoint_every=0, log_every=steps, dtype=dtype), backbone=load_backbone(backbone_name))
    return prof


def table(prof: profile, dtype: str, steps: int, rows: int = 12) -> str:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)

    def share(keep) -> float:
        return 100 * sum(e.self_cpu_time_total for e in events if keep(e.key)) / total

    cpu = cpu_info()
    lines = [f"# A training step's time, by op ({dtype} backbone, {steps} steps of batch 8)", "",
             f"CPU: {cpu['model']} ({cpu['cores']} cores; flags: {', '.join(cpu['flags'])}).", "",
             f"Matmuls **{share(lambda key: key in MATMULS):.0f}%** of the ops' time, attention "
             f"{share(lambda key: ATTENTION in key):.0f}%, the rest (elementwise ops, the LM head's softmax, copies) "
             f"{share(lambda key: key not in MATMULS and ATTENTION not in key):.0f}%.", "",
             "| op | share of time | calls |", "|---|---:|---:|"]
    lines += [f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f}% | {e.count:,} |" for e in events[:rows]]
    return "\n".join(lines) + f"\n\nCommand: `python scripts/train_profile.py --steps {steps} --dtype {dtype}`\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--backbone", default="smollm2-135m")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(table(profiled_training(args.backbone, args.steps, args.dtype), args.dtype, args.steps))


if __name__ == "__main__":
    main()
