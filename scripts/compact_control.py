"""Rewrite control-prefix files saved before kg2text's format 3 (one full prefix per category) in the compact form
kg2text saves now (the shared prefix once, then each category's own positions): the same numbers, about a seventh of
the bytes for WebNLG at 40 + 11 x 2 positions. Each file is replaced atomically; other files are left as they are.

    python scripts/compact_control.py runs/release/ctlavg/webnlg [RUN ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kg2text.artifact import PREFIX_FILE, control_stack_stored, read_prefix, write_prefix


def compact(run: Path) -> str:
    """Rewrite a run folder's prefix if it is an old control file; says what it did."""
    tensor, header = read_prefix(run)
    path = run / PREFIX_FILE
    if not control_stack_stored(header):
        return f"{path}: left as it is ({header['method']}, shape {header['shape']})"
    before = path.stat().st_size
    write_prefix(run, tensor, header)
    return f"{path}: {before:,} -> {path.stat().st_size:,} bytes, shape {header['shape']} -> " \
           f"{read_prefix(run)[1]['shape']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a prefix.safetensors)")
    for run in parser.parse_args().runs:
        print(compact(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
