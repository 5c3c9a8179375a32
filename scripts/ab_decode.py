"""Decoding speed of two checkouts side by side, alternated per input in two long-lived processes (ab_decode.sh).

Why per input: on a shared VM the machine's speed moves by 2x within minutes, so whole runs one after another
compare machine states as much as code; two processes that keep their model loaded and take turns input by input
see the same states. They load one after the other, and must have chosen the same fp32 kernels (each measures
oneDNN against torch's matmul at load: two loads at once on 2 cores once had one side choose the slower). Each
side runs the speed benchmark's prompts (kg2text.speed) through its own checkout's kg2text (``PYTHONPATH``); a
digest of each run's sentences shows whether both decoded the same.

    python scripts/ab_decode.py OLD_DIR NEW_DIR DTYPE SETTING REPEATS RUN_DIR OLD_NAME NEW_NAME
    (each side's worker: python scripts/ab_decode.py --worker RUN_DIR DTYPE SETTING)
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import time


def worker(run_dir: str, dtype: str, setting: str) -> None:
    """Load once, then answer each ``decode I`` with one line: the seconds and the sentences of input group I."""
    from pathlib import Path

    import kg2text
    from kg2text import hardware
    from kg2text.generate import DecodeConfig, decode_prompts, load_for_generation
    from kg2text.speed import SETTINGS, _prompts

    loaded = load_for_generation(Path(run_dir), dtype=dtype)
    model = loaded.backbone.model
    onednn = hardware.onednn_is_faster(model.config, model.device)  # measured at load: cached, the choice it made
    batch, beams = SETTINGS[setting]
    prompts = _prompts(loaded.backbone, loaded.header, 32)[0][:16 if batch == 1 else 32]
    groups = [prompts[i: i + batch] for i in range(0, len(prompts), batch)]
    config = DecodeConfig(num_beams=beams, max_new_tokens=60, batch_size=batch)
    decode_prompts(loaded.lm, prompts[:2], DecodeConfig(num_beams=2, max_new_tokens=4, batch_size=2))  # warm-up
    print(f"ready {len(groups)} {len(prompts)} {Path(kg2text.__file__).parent} {onednn}", flush=True)
    for line in sys.stdin:
        group = groups[int(line.split()[1])]
        started = time.perf_counter()
        sentences = decode_prompts(loaded.lm, group, config)
        print(f"{time.perf_counter() - started:.6f} {sentences!r}", flush=True)


def main(old: str, new: str, dtype: str, setting: str, repeats: int, run_dir: str, names: tuple[str, str]) -> None:
    """One ``ab: repeat`` line per run and side, then the medians under the commits' ``names``."""
    checkouts, sides, kernels = {"old": os.path.realpath(old), "new": os.path.realpath(new)}, {}, {}
    for name, checkout in checkouts.items():  # one after the other: each measures its kernels at load (hardware.py)
        sides[name] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", run_dir, dtype, setting],
                                       cwd=checkout, env={**os.environ, "PYTHONPATH": checkout}, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _, groups, prompts, package, kernels[name] = _answer(name, sides[name]).split()
        if os.path.realpath(package) != os.path.join(checkouts[name], "kg2text"):
            raise SystemExit(f"ab: the {name} side imported kg2text from {package}, not from its checkout")
    if kernels["old"] != kernels["new"]:
        raise SystemExit(f"ab: the sides chose different fp32 kernels at load (oneDNN faster: {kernels}); run again")
    groups, prompts = int(groups), int(prompts)
    rates, digests = {"old": [], "new": []}, set()
    for repeat in range(1, repeats + 1):
        seconds, sentences = {"old": 0.0, "new": 0.0}, {"old": [], "new": []}
        for group in range(groups):
            order = ("old", "new") if (group + repeat) % 2 else ("new", "old")
            for name in order:
                process = sides[name]
                process.stdin.write(f"decode {group}\n")
                process.stdin.flush()
                took, text = _answer(name, process).split(" ", 1)
                seconds[name] += float(took)
                sentences[name].append(text)
        for name in ("old", "new"):
            digest = hashlib.sha256("".join(sentences[name]).encode()).hexdigest()[:12]
            rates[name].append(round(prompts / seconds[name], 3))
            digests.add(digest)
            print(f"ab: repeat {repeat} {name} {rates[name][-1]:.3f} sent/s sentences {digest}", flush=True)
    for process in sides.values():
        process.stdin.close()
        process.wait()
    old_rate, new_rate = statistics.median(rates["old"]), statistics.median(rates["new"])
    print(f"ab: {dtype} {setting} median sent/s {names[0]} {old_rate:.3f}, {names[1]} {new_rate:.3f} "
          f"({new_rate / old_rate:.2f}x); sentences {'the same' if len(digests) == 1 else 'DIFFER'} in every run")


def _answer(name: str, process: subprocess.Popen) -> str:
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"ab: the {name} side stopped (exit status {process.wait()}); run its worker alone to see why")
    return line.rstrip("\n")


if __name__ == "__main__":
    if sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main(*sys.argv[1:5], int(sys.argv[5]), sys.argv[6], (sys.argv[7], sys.argv[8]))
