"""One-row matmuls (batch-1 decoding) at SmolLM2-135M's linear shapes: time per layer and weight bytes streamed.

Batch-1 decoding multiplies one row by every weight matrix, so it is bound by how fast the weights stream from
memory. This measures that per dtype with 30 layers' weights of each shape, as kg2text decodes: fp32 ``linear``,
bf16 ``linear``, the int8 kernel ``--dtype int8`` uses (``torch._weight_int8pack_mm``, bf16 activations, a scale
per output channel) and the int4 kernel of ``--dtype int4`` (``Int4Linear.packed_mm``: 4-bit weights, a scale and
offset per group of 32). 30 layers of one shape can fit a large L3 (an Intel Xeon here had 260 MB), so the last
row times one step's matmuls in decoding order over the whole model (210 layers and the LM head; int4's head
int8, as ``--dtype int4`` keeps it), whose weights do not. 2 threads.

    python scripts/gemv_probe.py
"""

from __future__ import annotations

import time

import torch

from kg2text.hardware import Int4Linear, Int8Linear, cpu_info

SHAPES = ((576, 576), (1536, 576), (576, 1536), (49152, 576))  # q/o, gate/up, down, the LM head (out, in)
LAYERS = 30
LAYER_SHAPES = ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536))  # q k v o g u d


def seconds_per_call(run, repeats: int = 200) -> float:
    for _ in range(10):
        run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def probe(out_features: int, in_features: int) -> str:
    layers = 1 if out_features > 10_000 else LAYERS  # one LM head
    weights = [torch.randn(out_features, in_features) for _ in range(layers)]
    row = torch.randn(1, in_features)
    bf16_weights, bf16_row = [w.bfloat16() for w in weights], row.bfloat16()
    scales = [w.abs().amax(1) / 127 for w in weights]
    int8_weights = [(w / s[:, None]).round().to(torch.int8).contiguous() for w, s in zip(weights, scales, strict=True)]
    bf16_scales = [s.bfloat16() for s in scales]
    fp32 = seconds_per_call(lambda: [torch.nn.functional.linear(row, w) for w in weights]) / layers
    bf16 = seconds_per_call(lambda: [torch.nn.functional.linear(bf16_row, w) for w in bf16_weights]) / layers
    int8 = seconds_per_call(lambda: [torch._weight_int8pack_mm(bf16_row, q, s)
                                     for q, s in zip(int8_weights, bf16_scales, strict=True)]) / layers
    int4_layers = [Int4Linear(w, None) for w in weights]
    int4 = seconds_per_call(lambda: [layer.packed_mm(bf16_row) for layer in int4_layers]) / layers
    params = out_features * in_features
    return (f"| {out_features}x{in_features} | {fp32 * 1e6:.0f} us ({4 * params / fp32 / 1e9:.1f} GB/s) | "
            f"{bf16 * 1e6:.0f} us ({2 * params / bf16 / 1e9:.1f} GB/s) | {int8 * 1e6:.0f} us "
            f"({params / int8 / 1e9:.1f} GB/s) | {int4 * 1e6:.0f} us ({params / 2 / int4 / 1e9:.1f} GB/s) |")


def whole_model() -> str:
    """One decoding step's matmuls over all of SmolLM2's weights, per format: milliseconds and weight bytes."""
    weights = [torch.randn(o, i) for _ in range(LAYERS) for o, i in LAYER_SHAPES] + [torch.randn(*SHAPES[-1])]
    rows = {i: torch.randn(1, i) for i in (576, 1536)}
    bf16_rows = {i: r.bfloat16() for i, r in rows.items()}
    fp32 = seconds_per_call(lambda: [torch.nn.functional.linear(rows[w.shape[1]], w) for w in weights], 10)
    bf16_weights = [w.bfloat16() for w in weights]
    bf16 = seconds_per_call(lambda: [torch.nn.functional.linear(bf16_rows[w.shape[1]], w) for w in bf16_weights], 10)
    int8_layers = [Int8Linear(w, None) for w in weights]
    int8 = seconds_per_call(lambda: [m.packed_mm(bf16_rows[m.weight_int8.shape[1]]) for m in int8_layers], 10)
    int4_layers = [Int4Linear(w, None) for w in weights[:-1]] + int8_layers[-1:]
    int4 = seconds_per_call(lambda: [m.packed_mm(bf16_rows[m.dequantized.shape[1]]) for m in int4_layers], 10)
    params = sum(w.numel() for w in weights)
    int4_bytes = (params - weights[-1].numel()) / 2 + weights[-1].numel()
    return (f"| whole model, one step | {fp32 * 1e3:.1f} ms ({4 * params / fp32 / 1e9:.1f} GB/s) | {bf16 * 1e3:.1f} ms "
            f"({2 * params / bf16 / 1e9:.1f} GB/s) | {int8 * 1e3:.1f} ms ({params / int8 / 1e9:.1f} GB/s) | "
            f"{int4 * 1e3:.1f} ms ({int4_bytes / int4 / 1e9:.1f} GB/s) |")


def main() -> None:
    torch.set_num_threads(2)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), 2 threads\n")
    print("| weight (out x in) | fp32 | bf16 | int8 | int4 |\n|---|---:|---:|---:|---:|")
    for shape in SHAPES:
        print(probe(*shape))
    print(whole_model())


if __name__ == "__main__":
    main()
