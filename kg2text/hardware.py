"""What this CPU can do, read at run time: the machine kind varies (AVX2 Zen 3, AVX-512 + BF16 Zen 4,
Intel with AMX), and the fastest dtype depends on it, so kg2text detects rather than assumes.

bf16 is offered for the frozen backbone (``--dtype bfloat16``), never switched on by itself: it changes
the numbers a little, so its BLEU change is measured beside its speed (``kg2text benchmark --speed``).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu_info() -> dict:
    """CPU model, the SIMD/matrix flags that matter for GEMM speed, cores and torch threads."""
    model, flags = platform.processor(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {"model": model, "flags": [f for f in FLAGS_OF_INTEREST if f in flags], "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def native_bf16() -> bool:
    """True where bf16 matrix multiplies run in hardware (AVX512-BF16 or AMX-BF16), or on a GPU."""
    return torch.cuda.is_available() or bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]))


def backbone_dtype(name: str) -> torch.dtype:
    """The dtype for ``--dtype NAME``; warns where bf16 would be emulated (slower than fp32)."""
    if name not in DTYPES:
        from kg2text.errors import UserError

        raise UserError(f"unknown --dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    if name == "bfloat16" and not native_bf16():
        print("kg2text: warning: this CPU has no AVX512-BF16 or AMX: bfloat16 will be slower than float32",
              file=sys.stderr)
    return DTYPES[name]
