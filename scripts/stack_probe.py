"""One decoding step of SmolLM2-135M with its sibling linear layers stacked (``StackedLinear``) and apart.

Llama's attention multiplies one input by its q, k and v weights and its MLP by gate and up: 5 matmuls that
``kg2text.hardware.stack_siblings`` turns into 2. This times kg2text's own decoding loop (``decoding.greedy`` for one
row, ``decoding.beam_search`` for 5 beams) on one WebNLG input with the committed prefix (results/main-job), per
step (a run of 41 steps minus a run of 1, so the prompt's prefill cancels; no end token, so every run takes its
steps), in each decoding format, stacked and apart alternated; the best of ``--repeats`` (noise only adds time).
Prints a markdown table (results/speed/stack_probe.md). 2 threads, about 3 minutes.

    python scripts/stack_probe.py [--repeats 4] [--dtypes float32,float16,int8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from kg2text.decoding import beam_search, greedy
from kg2text.generate import load_for_generation
from kg2text.hardware import cpu_info

INPUT = " | Alan_Bean : occupation : Test_pilot | Alan_Bean : birthPlace : Wheeler,_Texas <|endoftext|>"


def seconds(lm, ids: torch.Tensor, beams: int, steps: int) -> float:
    mask, banned = torch.ones_like(ids), torch.zeros(0, dtype=torch.long)
    lm.model_inputs(ids, mask)  # sets this model's prefix on its injector
    started = time.perf_counter()
    if beams == 1:
        greedy(lm, ids, mask, steps, -1, banned)
    else:
        beam_search(lm, ids, mask, beams, steps, -1, banned, 1.0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--dtypes", default="float32,float16,int8")
    parser.add_argument("--run", default="results/main-job")
    args = parser.parse_args()
    models = {(dtype, stack): load_for_generation(Path(args.run), dtype=dtype, stack=stack)
              for dtype in args.dtypes.split(",") for stack in (False, True)}
    first = next(iter(models.values()))
    ids = torch.tensor([first.backbone.tokenizer(INPUT, add_special_tokens=False)["input_ids"]])
    best: dict[tuple, float] = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for beams in (1, 5):
                for (dtype, stack), loaded in models.items():
                    step = (seconds(loaded.lm, ids, beams, 41) - seconds(loaded.lm, ids, beams, 1)) / 40
                    best[beams, dtype, stack] = min(best.get((beams, dtype, stack), float("inf")), step)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), {cpu['torch_threads']} threads; "
          f"best of {args.repeats}, ms per step\n")
    print("| rows | format | apart | stacked | stacked / apart |\n|---:|---|---:|---:|---:|")
    for (beams, dtype, stack), value in best.items():
        if stack:
            apart = best[beams, dtype, False]
            print(f"| {beams} | {dtype} | {1e3 * apart:.1f} | {1e3 * value:.1f} | {value / apart:.2f} |")


if __name__ == "__main__":
    main()
