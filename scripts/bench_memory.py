"""Peak memory of generation at batch 1 vs batch N: the shared prefix must not grow with the batch.

Each measurement runs in a fresh subprocess and reports the growth of peak RSS over the RSS after
loading (CPU), or peak allocated memory (GPU). Usage:

    python scripts/bench_memory.py --backbone random-gpt2 --batches 1 64 --beams 5

The expected growth of a per-row prefix copy (what broadcasting avoids) is printed for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = r"""
import json, resource, sys, torch
from kg2text.backbones import load_backbone
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.methods import build_tuner
from kg2text.model import TunedLM
args = json.loads(sys.argv[1])
backbone = load_backbone(args["backbone"])
device = "cuda" if torch.cuda.is_available() else "cpu"
backbone.model.to(device)
tuner, _ = build_tuner("prefix", backbone, args["length"], 512, None, seed=0)
lm = TunedLM(backbone)
with torch.no_grad():
    lm.use("prefix", tuner().to(device))
del tuner
prompts = [" | Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor <|endoftext|>"] * args["batch"]
decode = DecodeConfig(num_beams=args["beams"], max_new_tokens=args["tokens"], batch_size=args["batch"])
decode_prompts(lm, prompts[:1], DecodeConfig(num_beams=1, max_new_tokens=2))  # warm up allocator and kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if device == "cuda":
    torch.cuda.reset_peak_memory_stats(); base_gpu = torch.cuda.memory_allocated()
decode_prompts(lm, prompts, decode)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tokens = len(backbone.tokenizer(prompts[0])["input_ids"]) + args["tokens"]
out = {"batch": args["batch"], "rss_growth_mb": (peak - base) / 2**20, "tokens_per_row": tokens}
if device == "cuda":
    out["gpu_growth_mb"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
print(json.dumps(out))
"""


def measure(backbone: str, batch: int, beams: int, length: int, tokens: int) -> dict:
    args = json.dumps({"backbone": backbone, "batch": batch, "beams": beams, "length": length, "tokens": tokens})
    result = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="random-gpt2")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--prefix-length", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    from kg2text.backbones import load_backbone
    from kg2text.prefix import PrefixShape

    shape = PrefixShape.of(load_backbone(args.backbone).model)
    per_row_mb = shape.layers * 2 * shape.kv_heads * args.prefix_length * shape.head_dim * 4 / 2**20
    print(f"backbone {args.backbone}, prefix length {args.prefix_length}, beams {args.beams}; "
          f"a per-row prefix copy would cost {per_row_mb:.2f} MB per row and beam")
    kv_per_token_mb = shape.layers * 2 * shape.kv_heads * shape.head_dim * 4 / 2**20
    for batch in args.batches:
        row = measure(args.backbone, batch, args.beams, args.prefix_length, args.new_tokens)
        rows = batch * args.beams
        cache = kv_per_token_mb * rows * row["tokens_per_row"]
        print(f"batch {batch:4d} x {args.beams} beams: peak RSS growth {row['rss_growth_mb']:8.1f} MB"
              + (f", GPU {row['gpu_growth_mb']:.1f} MB" if "gpu_growth_mb" in row else "")
              + f"; the inputs' own KV cache is {cache:.1f} MB; per-row prefix copies would add "
              f"{per_row_mb * rows:.1f} MB")
    print(f"peak RSS of this parent process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
