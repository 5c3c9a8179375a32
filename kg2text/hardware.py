"""What this CPU can do, read at run time, and the numeric format of the frozen backbone.

The machine kind varies (AVX2 Zen 3, AVX-512 + BF16 Zen 4, Intel with AMX), and the fastest format
depends on it and on the shape: one-row decoding is bound by reading the weights (540 MB in fp32 for
SmolLM2-135M each token), so fewer bytes per weight pay even without bf16 hardware. Offered, never
switched on by itself, each with its BLEU change measured beside its speed (``kg2text benchmark --speed``):

* ``bfloat16``: the backbone's weights and activations in bf16 (decoding and training);
* ``int8`` (decoding only): torch's dynamic quantization of the ``nn.Linear`` layers (weights int8 per
  output channel, activations quantized per batch on the fly; VNNI/AMX-INT8 where present), except the
  MLP's ``down_proj``, whose inputs carry outliers: quantizing it too cost SmolLM2 about 9 BLEU on 64
  WebNLG entries, keeping it fp32 about 1. GPT-2's ``Conv1D`` layers are not ``nn.Linear`` and stay fp32.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DECODE_DTYPES = (*DTYPES, "int8")
INT8_KEEP_FP32 = ("down_proj",)
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


def prepare_for_decoding(model: torch.nn.Module, name: str) -> None:
    """Put a frozen backbone into ``name`` (float32, bfloat16 or int8) for decoding, in place."""
    if name != "int8":
        model.to(backbone_dtype(name))
        return
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.to(torch.float32)
    chosen = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and not name.endswith(INT8_KEEP_FP32)}
    with warnings.catch_warnings():  # torch points eager quantization users at torchao; the API still works
        warnings.simplefilter("ignore")
        quantize_dynamic(model, chosen, dtype=torch.qint8, inplace=True)
