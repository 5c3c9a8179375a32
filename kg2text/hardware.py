"""What this CPU can do, read at run time, and the numeric format of the frozen backbone.

The machine kind varies (AVX2 Zen 3, AVX-512 + BF16 Zen 4, Intel with AMX), and the fastest format
depends on it and on the shape: one-row decoding is bound by reading the weights (540 MB in fp32 for
SmolLM2-135M each token), so fewer bytes per weight pay even without bf16 hardware. Offered, never
switched on by itself, each with its BLEU change measured beside its speed (``kg2text benchmark --speed``):

* ``bfloat16``: the backbone's weights and activations in bf16 (decoding and training);
* ``int8`` (decoding only): weight-only int8 for every linear layer and the LM head (one scale per output
  channel), activations in bf16. One-row decoding reads a quarter of fp32's bytes, through torch's int8
  weight-packed matmul; from ``INT8_KERNEL_MAX_ROWS`` rows on, where that kernel is slower than a bf16
  GEMM (measured on a Zen 4: 105 vs 199 GFLOP/s at 32 rows), the layer multiplies by its dequantized weight,
  kept in bf16 (the same values, so the same numbers; dequantizing per call cost the LM head 10-20 ms a
  step). Activations are never quantized, so outliers in them cost nothing (torch's dynamic activation
  quantization, kg2text's first int8, lost about 9 BLEU on SmolLM2's ``down_proj``).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from kg2text.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DECODE_DTYPES = (*DTYPES, "int8")
INT8_KERNEL_MAX_ROWS = 16
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
        raise UserError(f"unknown --dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    if name == "bfloat16" and not native_bf16():
        print("kg2text: warning: this CPU has no AVX512-BF16 or AMX: bfloat16 will be slower than float32",
              file=sys.stderr)
    return DTYPES[name]


class Int8Linear(torch.nn.Module):
    """A frozen linear layer as int8 weights with a bf16 scale per output channel; computes in bf16."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(1).clamp(min=1e-12) / 127
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized.contiguous())  # the int8 kernel wants it contiguous
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.register_buffer("dequantized", quantized.to(torch.bfloat16) * self.scale[:, None])  # for many rows
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    @classmethod
    def of(cls, module: torch.nn.Module) -> Int8Linear:
        """From an ``nn.Linear`` (weight ``(out, in)``) or GPT-2's ``Conv1D`` (weight ``(in, out)``)."""
        weight = module.weight if isinstance(module, torch.nn.Linear) else module.weight.t()
        return cls(weight, module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if rows.shape[0] < INT8_KERNEL_MAX_ROWS:
            out = torch._weight_int8pack_mm(rows.contiguous(), self.weight_int8, self.scale)
        else:
            out = torch.nn.functional.linear(rows, self.dequantized)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], out.shape[-1])


def _linear_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """(parent, attribute, layer) of every ``nn.Linear`` and GPT-2 ``Conv1D`` in ``model``."""
    from transformers.pytorch_utils import Conv1D

    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, torch.nn.Linear | Conv1D)]


def prepare_for_decoding(model: torch.nn.Module, name: str) -> None:
    """Put a frozen backbone into ``name`` (float32, bfloat16 or int8) for decoding, in place."""
    if name not in DECODE_DTYPES:
        raise UserError(f"unknown --dtype {name!r}; choose one of: {', '.join(DECODE_DTYPES)}")
    model.to(backbone_dtype("bfloat16" if name == "int8" else name))  # int8 computes in bf16: same warning
    if name == "int8":
        for parent, attribute, layer in _linear_layers(model):
            setattr(parent, attribute, Int8Linear.of(layer))
