"""Prompt-lookup greedy at batch 1 against plain greedy: forwards, tokens and identical outputs.

The speed benchmark's batch-1 prompts (16 WebNLG test entries spread over the split, at most 60 new tokens) on a
run's prefix, fp32, int8 and int4, decoded with ``draft_tokens`` 0 (plain greedy) and 3 (the default). Writes
results/speed/lookup.json.

    python scripts/lookup_probe.py [RUN]   (default RUN: results/main-job)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kg2text import decoding
from kg2text.artifact import atomic_write_text
from kg2text.generate import DecodeConfig, decode_prompts, load_for_generation
from kg2text.hardware import cpu_info
from kg2text.speed import _prompts

RUN = Path(sys.argv[1] if len(sys.argv) > 1 else "results/main-job")
forwards: list[int] = []
plain_forward = decoding._forward
decoding._forward = lambda *args, **kwargs: forwards.append(1) or plain_forward(*args, **kwargs)  # counted

report = {"run": str(RUN), "machine": cpu_info(), "command": "python " + " ".join(sys.argv)}
for dtype in ("float32", "int8", "int4"):
    loaded = load_for_generation(RUN, dtype=dtype)
    prompts, _ = _prompts(loaded.backbone, loaded.header, 16)
    outputs, counts = {}, {}
    for draft_tokens in (0, 3):
        forwards.clear()
        config = DecodeConfig(num_beams=1, max_new_tokens=60, batch_size=1, draft_tokens=draft_tokens)
        outputs[draft_tokens] = decode_prompts(loaded.lm, prompts, config)
        counts[draft_tokens] = len(forwards)
    tokens = sum(len(loaded.backbone.tokenizer(s)["input_ids"]) + 1 for s in outputs[0])  # re-tokenized, + end
    identical = sum(a == b for a, b in zip(outputs[0], outputs[3], strict=True))
    report[dtype] = {"prompts": len(prompts), "tokens_plain": tokens, "forwards_plain": counts[0],
                     "forwards_lookup": counts[3], "identical": identical}
    print(dtype, report[dtype], flush=True)
atomic_write_text(Path("results/speed/lookup.json"), json.dumps(report, indent=1) + "\n")
