"""What this CPU can do, read at run time, and the numeric format of the frozen backbone.

The machine kind varies (AVX2 Zen 3, AVX-512 + BF16 Zen 4, Intel with AMX), and the fastest format
depends on it and on the shape: one-row decoding is bound by reading the weights (540 MB in fp32 for
SmolLM2-135M each token), so fewer bytes per weight pay even without bf16 hardware. Offered, never
switched on by itself, each with its BLEU change measured beside its speed (``kg2text benchmark --speed``):

* ``float32`` (the reference): its matmuls through oneDNN with weights reordered once where that is measured
  faster than torch's own (MKL's sgemm is slow at a few rows on AMD): ``OneDnnLinear`` in decoding,
  ``TrainingOneDnnLinear`` (the input's gradient too) for the frozen layers in training;
* ``bfloat16``: the backbone's weights and activations in bf16 (decoding and training);
* ``float16`` (decoding only, x86 CPUs): every linear layer's weights rounded to fp16, activations and sums in
  fp32, so it computes fp32's function with fp16-rounded weights. Below ``PACKED_KERNEL_MAX_ROWS`` rows through
  FBGEMM's fp16-weight matmul, which reads half of fp32's bytes and widens them in registers (on an AMD EPYC,
  Zen 1: a one-row step over SmolLM2's weights 26 ms against oneDNN fp32's 44, 32 against 47 at 4 rows, a tie at
  16: results/speed/gemv_probe.md); from there on fp32 of the same rounded weights.
* ``int8`` (decoding only): weight-only int8 for every linear layer and the LM head (one scale per output
  channel), activations in bf16. One-row decoding reads a quarter of fp32's bytes, through torch's int8
  weight-packed matmul (from ``PACKED_KERNEL_MAX_ROWS`` rows on, a GEMM of the dequantized weights in bf16 or
  fp32, whichever this CPU multiplies faster: see ``PackedLinear``).
  Activations are never quantized, so outliers in them cost nothing (torch's dynamic activation
  quantization, kg2text's first int8, lost about 9 BLEU on SmolLM2's ``down_proj``).
* ``int4`` (decoding only): weight-only 4-bit for every linear layer (a bf16 scale and offset per group of 32
  inputs; the LM head stays int8), activations in bf16, through torch's int4 weight-packed matmul: half of
  int8's bytes. Why 4 bits lose little here: SmolLM2 comes as a GGUF file whose linear layers are Q4_1, which is
  exactly this grid (``w = d * q + m``, q in 0..15, per block of 32 inputs), so the quantizer recovers those
  weights up to the bf16 rounding of ``d`` and ``m``; on other backbones it is ordinary 4-bit rounding.

In every format, the sibling linear layers of a Llama-family backbone (q/k/v; gate/up) decode as one matmul each
(``StackedLinear``): at a few rows a matmul's fixed cost is much of its time (5% of a float16 step here).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from kg2text.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DECODE_DTYPES = (*DTYPES, "float16", "int8", "int4")
PACKED_KERNEL_MAX_ROWS = 16  # from here on a plain GEMM by the dequantized weight (see PackedLinear)
INT4_GROUP = 32
SIBLING_LINEARS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # Llama family: each on one input
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


def weight_out_in(module: torch.nn.Module) -> torch.Tensor:
    """The weight as ``(out, in)``: an ``nn.Linear``'s own, GPT-2's ``Conv1D``'s (stored ``(in, out)``) transposed."""
    return module.weight if isinstance(module, torch.nn.Linear) else module.weight.t()


def linear_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of a transformer layer's linear shapes: attention's square one and the MLP's two."""
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    return [(hidden, hidden), (hidden, inner), (inner, hidden)]


def gemm_gflops(shapes: list[tuple[int, int]], dtype: torch.dtype, rows: int, trials: int = 3, kernel: str = "mm",
                flops_per_shape: float = 2e9) -> float:
    """GFLOP/s of ``rows`` rows by each ``(in, out)`` weight shape (weighted by FLOPs), about ``flops_per_shape``
    each, through ``kernel``: ``mm``, ``torch.mm`` by an ``(in, out)`` matrix (the ceiling: torch's fastest
    layout); ``linear``, ``F.linear`` by an ``(out, in)`` weight, as ``nn.Linear`` runs (MKL is slower at it than
    at ``mm`` for a few rows on an AMD EPYC); ``onednn``, ``OneDnnLinear`` (fp32 only).

    A ceiling is the best the machine does: the best of ``trials``, so a moment of other load does not lower it."""
    best = 0.0
    for _ in range(trials):
        flops, seconds = 0.0, 0.0
        for k, n in shapes:
            a, multiply = torch.randn(rows, k, dtype=dtype), _multiply_by(torch.randn(k, n, dtype=dtype), kernel)
            repeats = max(3, min(1000, int(flops_per_shape / (2 * rows * k * n))))
            multiply(a)
            started = time.perf_counter()
            for _ in range(repeats):
                multiply(a)
            seconds += time.perf_counter() - started
            flops += 2 * rows * k * n * repeats
        best = max(best, flops / seconds / 1e9)
    return best


def memory_read_gbps(megabytes: int = 512, trials: int = 3) -> float:
    """GB/s at which this machine reads memory (``torch.sum`` over ``megabytes`` of fp32, far beyond any cache; the
    best of ``trials``): the ceiling of one-row decoding, which streams every weight from memory once per forward."""
    data = torch.ones(megabytes * 2**20 // 4)
    data.sum()
    best = float("inf")
    for _ in range(trials):
        started = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - started)
    return data.numel() * 4 / best / 1e9


def _multiply_by(b: torch.Tensor, kernel: str):
    """``a -> a @ b`` through ``kernel`` (``gemm_gflops``)."""
    if kernel == "mm":
        return functools.partial(torch.mm, mat2=b)
    weight = b.t().contiguous()
    return OneDnnLinear(weight, None) if kernel == "onednn" else functools.partial(torch.nn.functional.linear,
                                                                                  weight=weight)


def training_dtype(name: str, config, device: torch.device) -> torch.dtype:
    """``backbone_dtype`` for training; a bf16 backbone on a CPU also warns where it is the slower there: a BF16
    flag is not enough (an Intel Xeon whose AMX was not exposed, AVX512-BF16 only, measured a bf16 GEMM ceiling of
    161-164 GFLOP/s against fp32's 304-307 and trained at 0.69-0.92x fp32 in two runs: the README's speed rows)."""
    dtype = backbone_dtype(name)
    if dtype == torch.bfloat16 and device.type == "cpu" and native_bf16():
        bf16, fp32 = cpu_gemm_gflops(config)
        if bf16 < fp32:
            print(f"kg2text: warning: on this CPU bf16 matrix multiplies are slower than fp32 ({bf16:.0f} vs "
                  f"{fp32:.0f} GFLOP/s at training shapes): --dtype float32 will train faster", file=sys.stderr)
    return dtype


def faster_training_dtype(config, device: torch.device, rows: int = 640) -> tuple[str, str]:
    """``--dtype auto``: the backbone dtype that trains faster here, and why: bf16 on a GPU that supports it; on a
    CPU, bf16 where it has BF16 hardware and its bf16 GEMMs at the backbone's shapes and ``rows`` rows (a training
    batch's) beat its fp32 ones."""
    if device.type != "cpu":
        supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return ("bfloat16", "the GPU has bf16") if supported else ("float32", f"no bf16 on {device.type}")
    if not native_bf16():
        return "float32", "this CPU has no AVX512-BF16 or AMX"
    bf16, fp32 = cpu_gemm_gflops(config, rows)
    return ("bfloat16" if bf16 > fp32 else "float32"), f"bf16 {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s at training shapes"


def cpu_gemm_gflops(config, rows: int = 640) -> tuple[float, float]:
    """bf16 and fp32 GEMM GFLOP/s at the backbone's linear shapes and ``rows`` rows (a training batch's by default:
    about a second)."""
    shapes = linear_shapes(config)
    return gemm_gflops(shapes, torch.bfloat16, rows, 1), gemm_gflops(shapes, torch.float32, rows, 1)


def onednn_is_faster(config, device: torch.device, rows: int = 8) -> bool:
    """Whether ``OneDnnLinear`` multiplies fp32 faster than torch's own matmul here, at the backbone's shapes and
    ``rows`` rows (a beam's step, or a few rows'), best of 3 each; measured once per process and shapes (a few
    tenths of a second), so every model a process loads decodes with the same kernels."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return _onednn_is_faster(tuple(linear_shapes(config)), rows)


@functools.cache
def _onednn_is_faster(shapes: tuple[tuple[int, int], ...], rows: int) -> bool:
    """The best of 3 trials each, taken in turns: a VM's speed can move 2x within seconds, and all of one kernel's
    trials before the other's once had a process on an AMD EPYC choose torch's matmul, half as fast at 8 rows."""
    best = {"onednn": 0.0, "linear": 0.0}
    for _ in range(3):
        for kernel in best:
            best[kernel] = max(best[kernel], gemm_gflops(list(shapes), torch.float32, rows, trials=1, kernel=kernel,
                                                         flops_per_shape=5e8))
    return best["onednn"] > best["linear"]


class OneDnnLinear(torch.nn.Module):
    """A frozen fp32 linear layer whose weight oneDNN reordered once into its own blocked layout (decoding only).

    Why: torch multiplies fp32 through MKL, whose sgemm at a few rows is slow on AMD: on an AMD EPYC (Zen 1, AVX2)
    one decoding step over SmolLM2's weights took 103 ms at 4 rows and 240 at 32 through MKL, 47 and 139 through
    this (results/speed/gemv_probe.md), the same numbers up to rounding. Used where ``onednn_is_faster`` measures
    it so."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features = weight.shape[1]
        # plain attributes, not buffers: an opaque oneDNN tensor cannot follow ``Module.to``
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().contiguous(), None)
        self.bias = None if bias is None else bias.detach().float()

    @classmethod
    def of(cls, module: torch.nn.Module) -> OneDnnLinear:
        return cls(weight_out_in(module), module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.packed, self.bias)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T (+ bias)`` by a weight that ``mkldnn._reorder_linear_weight`` packed."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class _ThroughPacked(torch.autograd.Function):
    """``x @ W.T`` by a packed ``W`` whose backward gives the input's gradient by a packed ``W.T`` (``W`` frozen)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: TrainingOneDnnLinear) -> torch.Tensor:
        ctx.layer = layer
        return OneDnnLinear.forward(layer, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return onednn_linear(grad.contiguous(), ctx.layer.packed_t), None


class TrainingOneDnnLinear(OneDnnLinear):
    """``OneDnnLinear`` for training past a frozen layer: the input's gradient (``grad @ W``) also through oneDNN, by
    a second reordered copy of the weight, transposed.

    Why: with frozen weights a training step's matmuls are these two products per layer, about two thirds of an fp32
    step on an AMD EPYC (Zen 4; ``python scripts/train_profile.py``), and oneDNN multiplies them faster than torch's
    own there at training batches' rows (``onednn_is_faster`` at 640 rows decides)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__(weight, bias)
        self.packed_t = torch.ops.mkldnn._reorder_linear_weight(weight.detach().float().t().contiguous(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ThroughPacked.apply(x, self) if x.requires_grad and torch.is_grad_enabled() else super().forward(x)


@contextlib.contextmanager
def onednn_training_linears(model: torch.nn.Module) -> Iterator[int]:
    """While it lasts, the transformer layers' frozen fp32 linear layers are ``TrainingOneDnnLinear``s (not the LM
    head, which the loss multiplies by its weight); the model's own modules come back at the end. Yields how many."""
    head = model.get_output_embeddings()
    swapped = [(parent, name, layer) for parent, name, layer in _linear_layers(model) if layer is not head]
    for parent, name, layer in swapped:
        setattr(parent, name, TrainingOneDnnLinear.of(layer))
    try:
        yield len(swapped)
    finally:
        for parent, name, layer in swapped:
            setattr(parent, name, layer)


class PackedLinear(torch.nn.Module):
    """A frozen linear layer with packed low-bit weights; takes and returns ``activations`` (bf16 by default).

    Below ``PACKED_KERNEL_MAX_ROWS`` rows it calls the packed kernel (``packed_mm``); from there on, where that
    kernel is slower than a GEMM (int8, measured on a Zen 4: 105 vs 199 GFLOP/s at 32 rows), it multiplies by
    the dequantized weight, kept in ``many_rows_dtype`` (the same values; dequantizing per call cost the LM head
    10-20 ms a step): bf16 where the CPU multiplies bf16 faster, fp32 where not (``decoding_gemm_dtype``: an
    Intel Xeon with AVX512-BF16 but no AMX took 85-102 ms for one 32-row step of SmolLM2 through the packed
    kernels or bf16, 67 ms in fp32: results/speed/gemv_probe.md), and in fp32 through ``OneDnnLinear`` with
    ``onednn``."""

    activations = torch.bfloat16

    def __init__(self, dequantized: torch.Tensor, bias: torch.Tensor | None,
                 many_rows_dtype: torch.dtype = torch.bfloat16, onednn: bool = False):
        super().__init__()
        self.in_features = dequantized.shape[1]
        self.onednn = OneDnnLinear(dequantized, None) if onednn else None  # fp32 only
        many_rows = None if self.onednn else dequantized.to(many_rows_dtype)
        self.register_buffer("dequantized", many_rows)  # (out, in), for many rows
        self.register_buffer("bias", None if bias is None else bias.detach().to(self.activations))

    @classmethod
    def of(cls, module: torch.nn.Module, many_rows_dtype: torch.dtype = torch.bfloat16,
           onednn: bool = False) -> PackedLinear:
        return cls(weight_out_in(module).detach().float(), module.bias, many_rows_dtype, onednn)

    def packed_mm(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def many_rows_mm(self, rows: torch.Tensor) -> torch.Tensor:
        if self.onednn is not None:
            return self.onednn(rows.float())
        return torch.nn.functional.linear(rows.to(self.dequantized.dtype), self.dequantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] < PACKED_KERNEL_MAX_ROWS:
            out = self.packed_mm(rows.to(self.activations).contiguous())
        else:
            out = self.many_rows_mm(rows).to(self.activations)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], out.shape[-1])


class Float16Linear(PackedLinear):
    """fp16 weights, fp32 activations and sums: below ``PACKED_KERNEL_MAX_ROWS`` rows FBGEMM's fp16-weight matmul,
    from there on fp32 of the same rounded weights."""

    activations = torch.float32

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, many_rows_dtype: torch.dtype = torch.float32,
                 onednn: bool = False):
        rounded = weight.to(torch.float16).float()
        super().__init__(rounded, bias, many_rows_dtype, onednn)
        # an opaque FBGEMM object (not a tensor): a plain attribute, as OneDnnLinear's
        self.packed = torch.ops.quantized.linear_prepack_fp16(rounded, None)

    @staticmethod
    def available() -> bool:
        """FBGEMM, whose fp16-weight matmul this calls, is in torch's x86 builds."""
        return "fbgemm" in torch.backends.quantized.supported_engines

    def packed_mm(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(rows, self.packed)


class Float16Product(torch.nn.Module):
    """FBGEMM's fp16-weight product (``linear_dynamic_fp16``): fp32 rows in and out, the weight rounded to fp16 and
    widened in registers, so it reads half of fp32's bytes."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.float(), None)  # opaque (see Float16Linear)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(rows.contiguous(), self.packed)


class ScreenedHead(torch.nn.Module):
    """An fp32 LM head (``head``: full logits, as before) that also finds greedy's token without reading all of its
    fp32 weights (``argmax``).

    Why: one-row decoding is bound by reading weights, and the head is a fifth of SmolLM2's; through oneDNN its fp32
    product took 5.6 ms at one row on an AMD EPYC Zen 4, FBGEMM's fp16-weight product 1.8 (results/speed/gemv_probe.md).
    The fp16 logits (``screen``) screen the vocabulary: a token is a candidate unless its fp16 logit plus its error
    bound is below another token's fp16 logit minus that one's bound; the candidates (one to a few) then get fp32
    logits from the fp32 weights, whose largest is greedy's token. The bound for token ``j`` and row ``x`` is
    ``|x| * (|W_j - fp16(W_j)| + 2**-10 * |W_j|)`` (Cauchy-Schwarz over the weight's rounding, plus the rounding of
    ``x`` to fp16 and both sums' fp32 rounding, with room to spare), so the token is fp32's: up to the rounding of a
    product over the candidates against one over the whole vocabulary, as between a one-row and a many-row matmul.
    The screen (half the head's bytes again) is made at its first use, so a process that only runs beam search
    never pays for it."""

    def __init__(self, head: torch.nn.Module, weight: torch.Tensor):
        super().__init__()
        self.head = head
        # (vocab, d): the model's own fp32 weight (the input embedding where tied: one parameter, no copy)
        self.weight = weight if weight.dtype == torch.float32 else weight.detach().float()
        self._screen: Float16Product | None = None
        self._slack: torch.Tensor | None = None

    @property
    def screen(self) -> Float16Product:
        """The fp16 product that screens the vocabulary (made here at its first use)."""
        if self._screen is None:
            weight = self.weight.detach()
            rounded = weight.to(torch.float16).float()
            self._slack = (weight - rounded).norm(dim=1) + 2.0**-10 * weight.norm(dim=1)
            self._screen = Float16Product(rounded)
        return self._screen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def candidates(self, x: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
        """``(rows, vocab)``, True where the fp16 logits and their bounds leave a token in the running for a row
        of ``x`` ``(rows, d)``, fp32; ``banned`` tokens never."""
        screened = self.screen(x)
        screened[:, banned] = -float("inf")
        bound = x.norm(dim=1, keepdim=True) * self._slack
        return screened + bound >= (screened - bound).amax(1, keepdim=True)

    def argmax(self, x: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
        """Greedy's token for each row of ``x`` ``(rows, d)``, fp32, ``banned`` tokens never chosen."""
        candidate = self.candidates(x, banned)
        columns = candidate.any(0).nonzero().squeeze(1)
        exact = x @ self.weight[columns].T
        exact[~candidate[:, columns]] = -float("inf")
        return columns[exact.argmax(1)]


class Int8Linear(PackedLinear):
    """int8 weights with a bf16 scale per output channel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, many_rows_dtype: torch.dtype = torch.bfloat16,
                 onednn: bool = False):
        scale = weight.abs().amax(1).clamp(min=1e-12) / 127
        quantized = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        scale = scale.to(torch.bfloat16)
        super().__init__(quantized.to(torch.bfloat16) * scale[:, None], bias, many_rows_dtype, onednn)
        self.register_buffer("weight_int8", quantized.contiguous())  # the int8 kernel wants it contiguous
        self.register_buffer("scale", scale)

    def packed_mm(self, rows: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(rows, self.weight_int8, self.scale)


class Int4Linear(PackedLinear):
    """4-bit weights, a bf16 scale and offset per group of ``INT4_GROUP`` inputs (``w = scale * q + low``, q in
    0..15: GGUF's Q4_1 grid)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, many_rows_dtype: torch.dtype = torch.bfloat16,
                 onednn: bool = False):
        out_features, in_features = weight.shape
        groups = weight.view(out_features, in_features // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-12)
        codes = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15)
        scale, low = scale.to(torch.bfloat16).float(), low.to(torch.bfloat16).float()  # what the kernel gets
        super().__init__((codes * scale[..., None] + low[..., None]).view(out_features, in_features), bias,
                         many_rows_dtype, onednn)
        codes = codes.view(out_features, in_features).to(torch.int32)
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        offset = low + 8 * scale  # the kernel computes (q - 8) * scale + offset
        self.register_buffer("scales_and_offsets", torch.stack([scale, offset], -1).transpose(0, 1).contiguous()
                             .to(torch.bfloat16))  # (in / group, out, 2)

    @staticmethod
    def fits(module: torch.nn.Module) -> bool:
        """The kernel's shape rules: inputs a multiple of the group, outputs of 16."""
        out_features, in_features = weight_out_in(module).shape
        return in_features % INT4_GROUP == 0 and out_features % 16 == 0

    def packed_mm(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.weight_int4, INT4_GROUP, self.scales_and_offsets)


class StackedLinear(torch.nn.Module):
    """Sibling linear layers that a model calls one after another on the same input (``SIBLING_LINEARS``: Llama's
    q/k/v projections, its MLP's gate and up) as one matmul: their weights stacked into one plain linear layer
    (``stacked``, which each decoding format converts as any other), multiplied at the first sibling's call, each
    sibling handed its slice.

    Why: at decoding's few rows a matmul's fixed cost is much of its time: on an AMD EPYC (Zen 1) a one-row step of
    SmolLM2 took 71.8 ms stacked and 75.7 apart in float16, 89.6 and 93.5 in fp32; int8 gained nothing (65.3 and
    64.2: results/speed/stack_probe.md, ``python scripts/stack_probe.py``). The product is reused only for the very
    tensor it was computed from, unchanged since (same object, same version counter); any other input is multiplied
    afresh, so the result is always the siblings' own. Tensors made under ``torch.inference_mode`` (decoding's) count no
    versions: there the same object is taken as unchanged, as it is in the models whose siblings this stacks (they read
    one input one after another)."""

    def __init__(self, layers: list[torch.nn.Module]):
        super().__init__()
        weights = [layer.weight.detach() for layer in layers]
        self.widths = [len(weight) for weight in weights]
        has_bias = any(layer.bias is not None for layer in layers)
        self.stacked = torch.nn.utils.skip_init(torch.nn.Linear, weights[0].shape[1], sum(self.widths), bias=has_bias,
                                                device=weights[0].device, dtype=weights[0].dtype).requires_grad_(False)
        with torch.no_grad():
            self.stacked.weight.copy_(torch.cat(weights))
            if has_bias:
                self.stacked.bias.copy_(torch.cat([torch.zeros_like(layer.weight[:, 0]) if layer.bias is None
                                                   else layer.bias for layer in layers]))
        self._input: tuple[torch.Tensor, int] | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        version = -1 if x.is_inference() else x._version  # decoding's tensors have none (see decoding.py)
        if self._input is None or self._input[0] is not x or self._input[1] != version:
            self._input, self._outputs = (x, version), self.stacked(x).split(self.widths, -1)
        out = self._outputs[index]
        if index == len(self.widths) - 1:  # the last sibling: let the input and product go
            self._input, self._outputs = None, ()
        return out


class SiblingLinear(torch.nn.Module):
    """One of a ``StackedLinear``'s layers, in its place in the model."""

    def __init__(self, shared: StackedLinear, index: int):
        super().__init__()
        self.shared, self.index = shared, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.output(self.index, x)


def stack_siblings(model: torch.nn.Module) -> None:
    """Replace each group of ``SIBLING_LINEARS`` by one ``StackedLinear`` (decoding only: frozen weights)."""
    groups = [(parent, names) for parent in model.modules() for names in SIBLING_LINEARS
              if all(isinstance(getattr(parent, name, None), torch.nn.Linear) for name in names)]
    for parent, names in groups:
        shared = StackedLinear([getattr(parent, name) for name in names])
        for index, name in enumerate(names):
            setattr(parent, name, SiblingLinear(shared, index))


def _linear_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """(parent, attribute, layer) of every ``nn.Linear`` and GPT-2 ``Conv1D`` in ``model``."""
    from transformers.pytorch_utils import Conv1D

    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, torch.nn.Linear | Conv1D)]


def prepare_for_decoding(model: torch.nn.Module, name: str, onednn: bool | None = None, stack: bool = True) -> None:
    """Put a frozen backbone into ``name`` (float32, bfloat16, float16, int8 or int4) for decoding, in place; its
    fp32 matmuls through ``OneDnnLinear`` if ``onednn`` (by default where ``onednn_is_faster``), its sibling
    linear layers stacked (``stack_siblings``) if ``stack``."""
    if name not in DECODE_DTYPES:
        raise UserError(f"unknown --dtype {name!r}; choose one of: {', '.join(DECODE_DTYPES)}")
    if name == "float16" and (model.device.type != "cpu" or not Float16Linear.available()):
        raise UserError("--dtype float16 runs on x86 CPUs only (FBGEMM's fp16-weight matmul, in torch's x86 builds); "
                        "use float32 or bfloat16 here")
    fp32_activations = name in ("float32", "float16")  # int8/int4 compute in bf16: the same warning as bfloat16
    model.to(backbone_dtype("float32" if fp32_activations else "bfloat16"))
    if stack:
        stack_siblings(model)
    if name == "bfloat16":
        return

    def fast_fp32() -> bool:
        return onednn_is_faster(model.config, model.device) if onednn is None else onednn

    if name == "float32":
        head, onednn = model.get_output_embeddings(), fast_fp32()
        for parent, attribute, layer in _linear_layers(model):
            fp32 = OneDnnLinear.of(layer) if onednn else layer
            if layer is head and model.device.type == "cpu" and Float16Linear.available():
                fp32 = ScreenedHead(fp32, weight_out_in(layer))
            setattr(parent, attribute, fp32)
        return
    if name == "float16":
        onednn = fast_fp32()  # for its many-row matmuls
        for parent, attribute, layer in _linear_layers(model):
            setattr(parent, attribute, Float16Linear.of(layer, torch.float32, onednn))
        return
    head, many_rows = model.get_output_embeddings(), decoding_gemm_dtype(model.config, model.device)
    onednn = many_rows == torch.float32 and fast_fp32()
    for parent, attribute, layer in _linear_layers(model):
        four_bits = name == "int4" and layer is not head and Int4Linear.fits(layer)  # the head: GGUF keeps it 8-bit
        setattr(parent, attribute, (Int4Linear if four_bits else Int8Linear).of(layer, many_rows, onednn))


def decoding_gemm_dtype(config, device: torch.device) -> torch.dtype:
    """The dtype of the packed formats' many-row matmuls: the faster one here, chosen as ``--dtype auto`` chooses
    for training but at a decoding batch's 32 rows (a few tenths of a second)."""
    return DTYPES[faster_training_dtype(config, device, rows=32)[0]]
