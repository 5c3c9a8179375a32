"""Wall time of the first command a new user types: `kg2text generate "Harry_Potter | education | Hogwarts"`.

The quality issue promises that the shipped prefix decodes the Harry Potter example in under 10 s on
2 cores, model load included once the backbone is cached. This times that command end to end, as a
user would (a fresh process each run: interpreter start, imports, backbone load, beam-5 decoding),
after one untimed run that fetches and caches the backbone, and records the CPU it ran on:

    python scripts/time_generate.py                       # -> results/shipped/generate_time.json
    python scripts/time_generate.py --runs 5 --output /tmp/t.json

Run it alone: a second job on 2 cores doubles the figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from kg2text.artifact import atomic_write_text
from kg2text.hardware import cpu_info

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "Harry_Potter | education | Hogwarts"


def timed_run(command: list[str]) -> tuple[float, str]:
    """Seconds one fresh process takes, and the sentence it printed."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the untimed warm-up (default: 3)")
    parser.add_argument("--output", type=Path, default=ROOT / "results/shipped/generate_time.json")
    args = parser.parse_args()
    executable = shutil.which("kg2text")
    if executable is None:
        raise SystemExit("kg2text is not on PATH: install it first (see the README)")
    command = [executable, "generate", EXAMPLE]
    timed_run(command)  # fetches and caches the backbone on a new machine: not what the promise times
    runs = [timed_run(command) for _ in range(args.runs)]
    seconds = [round(s, 2) for s, _ in runs]
    result = {"command": f'kg2text generate "{EXAMPLE}"', "sentences": sorted({s for _, s in runs}),
              "seconds": seconds, "median_seconds": statistics.median(seconds), "cpu": cpu_info(),
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "script": "python scripts/time_generate.py"}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    print(f"{result['sentences']}: {seconds} s (median {result['median_seconds']} s) -> {args.output}")


if __name__ == "__main__":
    main()
