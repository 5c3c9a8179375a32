"""Does bf16 training slow down once it has seen many distinct batch lengths (oneDNN's primitive cache)?

A lead for the speed issue: kg2text's bf16 training ran ~400 tokens/s early in a 40-minute run and ~310 at its
end, while fp32 stayed level. This times forward + backward through SmolLM2's first 2 layers (bf16, batch 8)
over 137 distinct lengths, three passes in shuffled order: a cache that holds every shape keeps later passes as
fast as the first; one that overflows (1,024 primitives by default) makes them slower.

    python scripts/bf16_shape_cache_probe.py                     # as kg2text trains now
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=16384 python scripts/bf16_shape_cache_probe.py
    python scripts/bf16_shape_cache_probe.py --round-to 8        # lengths rounded up to a multiple of 8
"""

import argparse
import os
import random
import time

import torch

from kg2text.backbones import load_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-to", type=int, default=1, help="round each batch length up to a multiple of this")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_backbone("smollm2-135m").model.to(torch.bfloat16).requires_grad_(False)
    model.model.layers = model.model.layers[:2]
    embed = model.get_input_embeddings()
    lengths = list(range(24, 161))
    for run in range(3):
        random.Random(run).shuffle(lengths)
        started = time.perf_counter()
        for length in lengths:
            length = -(-length // args.round_to) * args.round_to
            inputs = embed(torch.randint(0, embed.num_embeddings, (8, length))).detach().requires_grad_(True)
            model.model(inputs_embeds=inputs).last_hidden_state.float().square().mean().backward()
        per_step = (time.perf_counter() - started) / len(lengths) * 1000
        cache = os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "default")
        print(f"cache {cache}, round to {args.round_to}, pass {run}: {per_step:.1f} ms/step", flush=True)


if __name__ == "__main__":
    main()
