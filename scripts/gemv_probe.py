"""One-row matmuls (batch-1 decoding) at SmolLM2-135M's linear shapes: time per layer and weight bytes streamed.

Batch-1 decoding multiplies one row by every weight matrix, so it is bound by how fast the weights stream from
memory. This measures that per dtype with 30 layers' weights of each shape, as kg2text decodes: fp32 ``linear``
(torch's: MKL), fp32 through oneDNN with weights reordered once (``OneDnnLinear``, fp32 decoding's where it is
measured faster), bf16 ``linear``, FBGEMM's fp16-weight matmul with fp32 rows (``Float16Linear.packed_mm``,
``--dtype float16``), the int8 kernel ``--dtype int8`` uses (``torch._weight_int8pack_mm``, bf16
activations, a scale per output channel) and the int4 kernel of ``--dtype int4`` (``Int4Linear.packed_mm``: 4-bit
weights, a scale and offset per group of 32). 30 layers of one shape can fit a large L3 (an Intel Xeon here had
260 MB), so the last row times one step's matmuls in decoding order over the whole model (210 layers and the LM
head; int4's head int8, as ``--dtype int4`` keeps it), whose weights do not. A last table times that step at
several row counts (a batch of rows, or beams): where the packed kernels stop beating a plain fp32 or bf16 matmul
of the same weights, which is what ``PACKED_KERNEL_MAX_ROWS`` (``kg2text/hardware.py``) decides. 2 threads.

    python scripts/gemv_probe.py
"""

from __future__ import annotations

import time

import torch

from kg2text.hardware import Float16Linear, Int4Linear, Int8Linear, OneDnnLinear, cpu_info

SHAPES = ((576, 576), (1536, 576), (576, 1536), (49152, 576))  # q/o, gate/up, down, the LM head (out, in)
LAYERS = 30
ROW_COUNTS = (1, 4, 8, 12, 16, 24, 32)
LAYER_SHAPES = ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536))  # q k v o g u d


def seconds_per_call(run, repeats: int = 200) -> float:
    for _ in range(10):
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def seconds_per_format(weights: list[torch.Tensor], head_int8: bool, repeats: int, batch: int = 1
                       ) -> dict[str, float]:
    """Seconds for one pass of ``batch``-row matmuls over ``weights`` in each format (``head_int8``: the last
    weight int8 in the int4 pass, as ``--dtype int4`` keeps the LM head); the packed formats always through their
    packed kernel."""
    rows = {w.shape[1]: torch.randn(batch, w.shape[1]) for w in weights}
    bf16_rows = {size: row.bfloat16() for size, row in rows.items()}
    bf16_weights = [w.bfloat16() for w in weights]
    onednn_layers = [OneDnnLinear(w, None) for w in weights]
    fp16_layers = [Float16Linear(w, None) for w in weights]
    int8_layers = [Int8Linear(w, None) for w in weights]
    four = len(weights) - 1 if head_int8 else len(weights)
    int4_layers = [Int4Linear(w, None) for w in weights[:four]] + int8_layers[four:]
    return {"fp32": seconds_per_call(lambda: [torch.nn.functional.linear(rows[w.shape[1]], w) for w in weights],
                                     repeats),
            "fp32 oneDNN": seconds_per_call(lambda: [m(rows[m.in_features]) for m in onednn_layers], repeats),
            "bf16": seconds_per_call(lambda: [torch.nn.functional.linear(bf16_rows[w.shape[1]], w)
                                              for w in bf16_weights], repeats),
            "fp16": seconds_per_call(lambda: [m.packed_mm(rows[m.in_features]) for m in fp16_layers], repeats),
            "int8": seconds_per_call(lambda: [m.packed_mm(bf16_rows[m.dequantized.shape[1]]) for m in int8_layers],
                                     repeats),
            "int4": seconds_per_call(lambda: [m.packed_mm(bf16_rows[m.dequantized.shape[1]]) for m in int4_layers],
                                     repeats)}


def probe(out_features: int, in_features: int) -> str:
    layers = 1 if out_features > 10_000 else LAYERS  # one LM head
    weights = [torch.randn(out_features, in_features) for _ in range(layers)]
    per_layer = {name: seconds / layers for name, seconds in seconds_per_format(weights, False, 200).items()}
    fp32, onednn, bf16, fp16, int8, int4 = per_layer.values()
    params = out_features * in_features
    return (f"| {out_features}x{in_features} | {fp32 * 1e6:.0f} us ({4 * params / fp32 / 1e9:.1f} GB/s) | "
            f"{onednn * 1e6:.0f} us ({4 * params / onednn / 1e9:.1f} GB/s) | "
            f"{bf16 * 1e6:.0f} us ({2 * params / bf16 / 1e9:.1f} GB/s) | "
            f"{fp16 * 1e6:.0f} us ({2 * params / fp16 / 1e9:.1f} GB/s) | {int8 * 1e6:.0f} us "
            f"({params / int8 / 1e9:.1f} GB/s) | {int4 * 1e6:.0f} us ({params / 2 / int4 / 1e9:.1f} GB/s) |")


def model_weights() -> list[torch.Tensor]:
    return [torch.randn(o, i) for _ in range(LAYERS) for o, i in LAYER_SHAPES] + [torch.randn(*SHAPES[-1])]


def whole_model(weights: list[torch.Tensor]) -> str:
    """One decoding step's matmuls over all of SmolLM2's weights, per format: milliseconds and weight bytes."""
    fp32, onednn, bf16, fp16, int8, int4 = seconds_per_format(weights, True, 10).values()
    params = sum(w.numel() for w in weights)
    int4_bytes = (params - weights[-1].numel()) / 2 + weights[-1].numel()
    return (f"| whole model, one step | {fp32 * 1e3:.1f} ms ({4 * params / fp32 / 1e9:.1f} GB/s) | "
            f"{onednn * 1e3:.1f} ms ({4 * params / onednn / 1e9:.1f} GB/s) | {bf16 * 1e3:.1f} ms "
            f"({2 * params / bf16 / 1e9:.1f} GB/s) | {fp16 * 1e3:.1f} ms ({2 * params / fp16 / 1e9:.1f} GB/s) | "
            f"{int8 * 1e3:.1f} ms ({params / int8 / 1e9:.1f} GB/s) | "
            f"{int4 * 1e3:.1f} ms ({int4_bytes / int4 / 1e9:.1f} GB/s) |")


def main() -> None:
    torch.set_num_threads(2)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), 2 threads\n")
    print("| weight (out x in) | fp32 | fp32 oneDNN | bf16 | fp16 | int8 | int4 |\n|---|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        print(probe(*shape))
    weights = model_weights()
    print(whole_model(weights))
    print("\nOne step over the whole model with several rows (milliseconds; fp16/int8/int4: their packed kernels):\n")
    print("| rows | fp32 | fp32 oneDNN | bf16 | fp16 | int8 | int4 |\n|---:|---:|---:|---:|---:|---:|---:|")
    for batch in ROW_COUNTS:
        times = seconds_per_format(weights, True, 5, batch).values()
        print(f"| {batch} | " + " | ".join(f"{seconds * 1e3:.1f}" for seconds in times) + " |")


if __name__ == "__main__":
    main()
