"""The speed benchmark (kg2text benchmark --speed) and the bf16 backbone option, on tiny models."""

import json

import pytest
import torch

from kg2text.generate import DecodeConfig, decode_prompts, load_for_generation
from kg2text.hardware import DTYPES, cpu_info, native_bf16

PROMPT = " | Harry Potter : education : Hogwarts <|endoftext|>"


def test_cpu_info_names_the_model_and_only_known_flags():
    info = cpu_info()
    assert info["model"] and info["cores"] >= 1 and info["torch_threads"] >= 1
    assert set(info["flags"]) <= {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8",
                                  "amx_tile"}


def _next_token_logits(loaded) -> torch.Tensor:
    ids = torch.tensor([loaded.backbone.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return loaded.lm.logits(ids, torch.ones_like(ids))[0, -1].float()


def test_bf16_backbone_decodes_close_to_fp32(trained_run):
    fp32 = load_for_generation(trained_run)
    bf16 = load_for_generation(trained_run, dtype="bfloat16")
    assert bf16.backbone.model.dtype == torch.bfloat16 and fp32.backbone.model.dtype == torch.float32
    reference = _next_token_logits(fp32)
    assert (_next_token_logits(bf16) - reference).abs().max() < 0.05 * reference.abs().max()
    assert decode_prompts(bf16.lm, [PROMPT], DecodeConfig(num_beams=2, max_new_tokens=6))[0]


@pytest.mark.anchor
def test_speed_benchmark_writes_every_figure_the_issue_asks_for(trained_run, tmp_path):
    pytest.importorskip("peft")
    from kg2text.speed import SETTINGS, run_speed

    run_speed(trained_run, tmp_path, "kg2text benchmark --speed RUN", repeats=1, inputs=4, batch1_inputs=1,
              max_new_tokens=4, train_steps=1)
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["cpu"]["model"] == cpu_info()["model"]
    for setting in SETTINGS:
        assert {"kg2text", "baseline", "peft"} <= set(data[setting]) and min(data[setting].values()) > 0
    train = data["train"]
    assert train["kg2text"] > 0 and train["peft"] > 0 and train["gflops"] > 0 and train["ceiling_gflops"] > 0
    assert train["kg2text_compiled"] > 0 and train["compiled_gflops"] > 0
    assert train["baseline"] > 0 and train["baseline_gflops"] > 0
    assert f"baseline {train['baseline']:.1f} (the loop with torch's matmuls;" in (tmp_path / "speed.md").read_text()
    assert set(train["mean_loss"]) == {"kg2text", "baseline", "kg2text_compiled"} | (
        {"kg2text_bf16", "kg2text_bf16_compiled"} if native_bf16() else set())
    for name in ("kg2text_bf16", "kg2text_bf16_compiled", "bf16_ceiling_gflops"):
        assert (train[name] is None) == (not native_bf16())
    assert data["full_test_beam5_minutes"] == pytest.approx(1862 / data["b32-beam5"]["kg2text"] / 60)
    ceilings = data["gemm_ceiling_gflops"]
    assert set(ceilings) == {"float32", "float32_onednn"} | ({"bfloat16"} if native_bf16() else set())
    assert train["ceiling_gflops"] == max(ceilings["float32"]["640"], ceilings["float32_onednn"]["640"])
    assert data["fp32_linear"] in ("onednn", "torch")
    work, bandwidth = data["decoding_work"], data["memory_read_gbps"]
    assert set(work) == set(SETTINGS) and bandwidth > 0
    for setting in SETTINGS:
        assert set(work[setting]) == set(data[setting])
        inputs = 1 if setting.startswith("b1-") else 4
        for name, done in work[setting].items():  # one repeat: its time is the one behind the median
            assert done["forwards"] > 0 and done["tokens"] >= done["head_rows"] >= done["forwards"]
            assert done["gflops"] > 0 and done["weights_gbps"] > 0
            assert done["seconds"] == pytest.approx(inputs / data[setting][name])
    b1 = work["b1-greedy"]["kg2text"]
    table = (tmp_path / "speed.md").read_text()
    assert "| b32-beam5 |" in table and "Command: `kg2text benchmark --speed RUN`" in table
    assert f"| b1-greedy | {b1['weights_gbps']:.1f} GB/s ({100 * b1['weights_gbps'] / bandwidth:.0f}%) |" in table
    beam = work["b32-beam5"]["baseline"]["gflops"]
    assert f"{beam:.0f} GFLOP/s ({100 * beam / train['ceiling_gflops']:.0f}%)" in table
    assert set(DTYPES) == {"float32", "bfloat16"} and {"kg2text_fp16", "kg2text_int8", "kg2text_int4"} <= set(
        data["b1-greedy"])  # fp16 on x86 (FBGEMM), which this suite runs on


@pytest.mark.parametrize("rows", [1, 5, 40])  # the int8 kernel below PACKED_KERNEL_MAX_ROWS, dequantized bf16 above
def test_int8_linear_is_within_a_percent_of_the_fp32_layer(rows):
    from transformers.pytorch_utils import Conv1D

    from kg2text.hardware import Int8Linear

    torch.manual_seed(0)
    linear, conv = torch.nn.Linear(96, 48), Conv1D(48, 96)
    x = torch.randn(rows, 3, 96)
    for layer in (linear, conv):
        quantized = Int8Linear.of(layer)
        assert quantized.weight_int8.dtype == torch.int8 and quantized.weight_int8.shape == (48, 96)
        reference, out = layer(x), quantized(x)
        assert out.shape == reference.shape and out.dtype == torch.bfloat16
        assert (out.float() - reference).norm() < 0.01 * reference.norm()


def test_int8_backbone_replaces_every_linear_layer_and_decodes_close_to_fp32(trained_run):
    from kg2text.hardware import Int8Linear

    fp32, int8 = load_for_generation(trained_run), load_for_generation(trained_run, dtype="int8")
    model = int8.backbone.model
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 1 + 4 * model.config.n_layer  # the LM head + c_attn, c_proj, c_fc, mlp c_proj per layer
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    reference = _next_token_logits(fp32)
    assert (_next_token_logits(int8) - reference).abs().max() < 0.05 * reference.abs().max()
    assert decode_prompts(int8.lm, [PROMPT], DecodeConfig(num_beams=2, max_new_tokens=6))[0]


def _q4_1_weight(out_features: int, in_features: int) -> torch.Tensor:
    """A weight on GGUF's Q4_1 grid, as SmolLM2's linear layers are: ``d * q + m`` per block of 32 inputs, q in
    0..15, d and m fp16, centred as llama.cpp's quantizer leaves real weights (m about -7.5 d)."""
    blocks = in_features // 32
    d = (torch.rand(out_features, blocks) * 0.02 + 0.001).half().float()
    m = (-7.5 * d + torch.randn(out_features, blocks) * d).half().float()
    q = torch.randint(0, 16, (out_features, in_features)).float()
    q[:, ::32], q[:, 1::32] = 0, 15  # every block spans its grid, as a quantized block of real weights does
    return q * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)


@pytest.mark.parametrize("onednn", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 40])  # FBGEMM's fp16 kernel below PACKED_KERNEL_MAX_ROWS, fp32 above
def test_float16_linear_multiplies_fp32_rows_by_its_fp16_rounded_weights(rows, onednn):
    from transformers.pytorch_utils import Conv1D

    from kg2text.hardware import Float16Linear, weight_out_in

    torch.manual_seed(0)
    x = torch.randn(rows, 3, 96)
    for layer in (torch.nn.Linear(96, 48), Conv1D(48, 96)):
        torch.nn.init.normal_(layer.bias)
        rounded = weight_out_in(layer).detach().half().float()
        assert not torch.equal(rounded, weight_out_in(layer))  # the test can tell the two apart
        out = Float16Linear.of(layer, torch.float32, onednn)(x)
        assert out.shape == (rows, 3, 48) and out.dtype == torch.float32
        assert torch.allclose(out, torch.nn.functional.linear(x, rounded, layer.bias), atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4])
def test_screened_head_picks_fp32s_greedy_token_from_few_fp32_rows(rows):
    """The fp16 screen leaves a handful of candidates, and the token is full fp32 logits' argmax, near ties too."""
    from kg2text.hardware import ScreenedHead

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 5000, bias=False).requires_grad_(False)
    screened = ScreenedHead(head, head.weight)
    assert screened.weight is head.weight  # no copy of the fp32 weights
    x = torch.randn(rows, 64) * 3
    logits = head(x)
    top2 = logits.topk(2).indices
    x_tie = x.clone()  # a near tie: the best two tokens' fp32 logits 1e-4 apart, far inside fp16's error
    banned = torch.tensor([int(top2[0, 0])])
    for probe, ban in ((x, torch.tensor([], dtype=torch.long)), (x, banned)):
        full = head(probe)
        full[:, ban] = -float("inf")
        assert screened.argmax(probe, ban).tolist() == full.argmax(1).tolist()
        left = screened.candidates(probe, ban)
        assert (left.sum(1) >= 1).all() and left.sum() <= 10 * rows  # a few fp32 rows to read, not 5,000
        assert not left[:, ban].any()
    w = head.weight
    for row in range(rows):  # move x along (w_a - w_b) until the two logits differ by 1e-4
        a, b = top2[row].tolist()
        d = w[a] - w[b]
        x_tie[row] -= d * ((logits[row, a] - logits[row, b] - 1e-4) / d.dot(d))
    full = head(x_tie)
    assert (full.topk(2).values[:, 0] - full.topk(2).values[:, 1]).max() < 1e-3
    assert screened.candidates(x_tie, torch.tensor([], dtype=torch.long)).gather(1, top2).all()  # both kept
    assert screened.argmax(x_tie, torch.tensor([], dtype=torch.long)).tolist() == full.argmax(1).tolist()
    assert screened(x).equal(logits)  # its forward: the fp32 head's full logits, as before


def test_float16_backbone_decodes_as_fp32_with_its_weights_rounded_to_fp16(trained_run, monkeypatch):
    from kg2text.errors import UserError
    from kg2text.hardware import Float16Linear, _linear_layers

    fp16 = load_for_generation(trained_run, dtype="float16")
    model = fp16.backbone.model
    assert model.dtype == torch.float32
    assert len([m for m in model.modules() if isinstance(m, Float16Linear)]) == 4 * model.config.n_layer + 1
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    rounded = load_for_generation(trained_run, onednn=False)  # fp32, torch's matmuls, weights rounded by hand
    for _, _, layer in _linear_layers(rounded.backbone.model):  # the LM head's weight untied from the embedding's
        layer.weight = torch.nn.Parameter(layer.weight.detach().half().float(), requires_grad=False)
    assert torch.allclose(_next_token_logits(fp16), _next_token_logits(rounded), atol=1e-4)
    for beams in (1, 3):
        one, many = (decode_prompts(fp16.lm, [PROMPT] * n, DecodeConfig(num_beams=beams, max_new_tokens=6,
                                                                         batch_size=n)) for n in (1, 20))
        assert one[0] and one[0] == many[0] == decode_prompts(rounded.lm, [PROMPT], DecodeConfig(
            num_beams=beams, max_new_tokens=6))[0]  # FBGEMM's kernel, then fp32 of the same weights
    monkeypatch.setattr(Float16Linear, "available", staticmethod(lambda: False))
    with pytest.raises(UserError, match="--dtype float16 runs on x86 CPUs only"):
        load_for_generation(trained_run, dtype="float16")


@pytest.mark.parametrize("rows", [1, 5, 40])  # the int4 kernel below PACKED_KERNEL_MAX_ROWS, dequantized bf16 above
def test_int4_linear_recovers_a_q4_1_weight_and_rounds_any_other_to_4_bits(rows):
    from transformers.pytorch_utils import Conv1D

    from kg2text.hardware import Int4Linear

    torch.manual_seed(0)
    grid = torch.nn.Linear(96, 48)
    grid.weight.data = _q4_1_weight(48, 96)
    x = torch.randn(rows, 3, 96)
    quantized = Int4Linear.of(grid)
    assert quantized.weight_int4.dtype == torch.uint8 and quantized.weight_int4.shape == (48, 48)  # 2 per byte
    assert quantized.scales_and_offsets.shape == (3, 48, 2)  # (groups, outputs, scale and offset)
    # on its grid: the weights come back to the bf16 rounding of d and m, the output to bf16 activations'
    assert (quantized.dequantized.float() - grid.weight).abs().max() < 0.01 * grid.weight.abs().max()
    reference, out = grid(x), quantized(x)
    assert out.shape == reference.shape and out.dtype == torch.bfloat16
    assert (out.float() - reference).norm() < 0.01 * reference.norm()
    for layer in (torch.nn.Linear(96, 48), Conv1D(48, 96)):  # random weights: 16 levels per group of 32
        reference = layer(x)
        error = (Int4Linear.of(layer)(x).float() - reference).norm() / reference.norm()
        assert 0.02 < error < 0.15


def test_int4_backbone_keeps_the_lm_head_int8_and_decodes_close_to_fp32(trained_run):
    from kg2text.hardware import Int4Linear, Int8Linear

    fp32, int4 = load_for_generation(trained_run), load_for_generation(trained_run, dtype="int4")
    model = int4.backbone.model
    assert len([m for m in model.modules() if isinstance(m, Int4Linear)]) == 4 * model.config.n_layer
    assert isinstance(model.get_output_embeddings(), Int8Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    reference = _next_token_logits(fp32)
    # the tiny model's random weights are on no 4-bit grid: about 12% here (1% on a Q4_1 grid: test above)
    assert (_next_token_logits(int4) - reference).abs().max() < 0.2 * reference.abs().max()
    one, many = (decode_prompts(int4.lm, [PROMPT] * n, DecodeConfig(num_beams=1, max_new_tokens=6, batch_size=n))
                 for n in (1, 20))  # the int4 kernel, then the dequantized weights: the same greedy tokens
    assert one[0] and one[0] == many[0]


@pytest.mark.parametrize("bf16_gflops, warned", [(100.0, True), (300.0, False)])
def test_bf16_training_on_a_cpu_warns_where_bf16_gemms_are_the_slower(monkeypatch, capsys, bf16_gflops, warned):
    from transformers import LlamaConfig

    from kg2text import hardware

    measured = []

    def gflops(shapes, dtype, rows, trials=3):
        measured.append((tuple(shapes), dtype, rows))
        return bf16_gflops if dtype == torch.bfloat16 else 200.0

    monkeypatch.setattr(hardware, "gemm_gflops", gflops)
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4)
    assert hardware.training_dtype("bfloat16", config, torch.device("cpu")) == torch.bfloat16
    assert {m[0] for m in measured} == {((64, 64), (64, 128), (128, 64))} and {m[2] for m in measured} == {640}
    warning = "kg2text: warning: on this CPU bf16 matrix multiplies are slower than fp32 (100 vs 200 GFLOP/s"
    assert (warning in capsys.readouterr().err) == warned
    measured.clear()
    assert hardware.training_dtype("float32", config, torch.device("cpu")) == torch.float32 and not measured
    chosen, why = hardware.faster_training_dtype(config, torch.device("cpu"))  # --dtype auto takes the faster
    assert chosen == ("float32" if warned else "bfloat16")
    assert why == f"bf16 {bf16_gflops:.0f} vs fp32 200 GFLOP/s at training shapes"
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    measured.clear()
    assert hardware.faster_training_dtype(config, torch.device("cpu")) == (
        "float32", "this CPU has no AVX512-BF16 or AMX") and not measured


@pytest.mark.parametrize("trainer", ["kg2text", "peft"])
def test_dtype_auto_trains_in_the_measured_faster_dtype_and_records_it(monkeypatch, capsys, tmp_path, trainer):
    from kg2text import hardware
    from kg2text.backbones import load_backbone
    from kg2text.training import TrainConfig, train

    if trainer == "peft":
        pytest.importorskip("peft")
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    monkeypatch.setattr(hardware, "gemm_gflops", lambda shapes, dtype, rows, trials=3: 300.0 if dtype == torch.bfloat16
                        else 200.0)
    backbone = load_backbone("tiny-llama")
    config = TrainConfig(output=str(tmp_path / "run"), backbone="tiny-llama", max_steps=2, batch_size=4,
                         max_examples=8, prefix_length=4, mlp_hidden=32, dtype="auto", log_every=1)
    if trainer == "peft":
        from kg2text.anchors import train_peft_prefix

        train_peft_prefix(config, backbone)
    else:
        train(config, backbone)
    assert backbone.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dtype"] == "bfloat16"  # what resume reads
    said = capsys.readouterr().err
    assert "kg2text: --dtype auto: bfloat16 (bf16 300 vs fp32 200 GFLOP/s at training shapes)" in said


@pytest.fixture
def measured_kernels(monkeypatch):
    """Stub GEMM timings: ``speeds[(dtype, kernel)]`` GFLOP/s; every measurement made is listed as (dtype, rows,
    kernel). The once-per-process oneDNN choice is forgotten before and after."""
    from kg2text import hardware

    measured, speeds = [], {}

    def gflops(shapes, dtype, rows, trials=3, kernel="mm", flops_per_shape=2e9):
        measured.append((dtype, rows, kernel))
        return speeds[dtype, kernel]

    monkeypatch.setattr(hardware, "gemm_gflops", gflops)
    hardware._onednn_is_faster.cache_clear()
    yield measured, speeds
    hardware._onednn_is_faster.cache_clear()


def test_the_onednn_choice_takes_its_trials_in_turns_so_a_change_of_machine_speed_does_not_decide_it(monkeypatch):
    """A machine that doubles its speed after the first measurement: oneDNN (20 GFLOP/s, then 40) still beats torch's
    matmul (12, then 24); measuring one kernel's trials all before the other's chose the matmul."""
    from kg2text import hardware

    calls = []

    def gflops(shapes, dtype, rows, trials=3, kernel="mm", flops_per_shape=2e9):
        calls.append((kernel, trials))
        return {"onednn": 20.0, "linear": 12.0}[kernel] * (1 if len(calls) == 1 else 2)

    monkeypatch.setattr(hardware, "gemm_gflops", gflops)
    hardware._onednn_is_faster.cache_clear()
    try:
        assert hardware._onednn_is_faster(((64, 64),), 8)
    finally:
        hardware._onednn_is_faster.cache_clear()
    assert calls == [("onednn", 1), ("linear", 1)] * 3


@pytest.mark.parametrize("bf16_gflops, onednn_gflops, expected", [(100.0, 100.0, torch.float32),
                                                                   (100.0, 300.0, "onednn"),
                                                                   (300.0, 300.0, torch.bfloat16)])
def test_packed_formats_multiply_many_rows_in_the_dtype_this_cpu_multiplies_faster(monkeypatch, trained_run,
                                                                                   measured_kernels, bf16_gflops,
                                                                                   onednn_gflops, expected):
    """From PACKED_KERNEL_MAX_ROWS rows on, int8/int4 layers multiply by their dequantized weights: in fp32 where the
    CPU's bf16 GEMM at 32 rows is the slower (measured), through oneDNN where that is the faster fp32 (measured
    at 8 rows), in bf16 where bf16 is the faster; the same greedy tokens as the packed kernel either way."""
    from kg2text import hardware

    measured, speeds = measured_kernels
    speeds.update({(torch.bfloat16, "mm"): bf16_gflops, (torch.float32, "mm"): 200.0,
                   (torch.float32, "linear"): 200.0, (torch.float32, "onednn"): onednn_gflops})
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    int4 = load_for_generation(trained_run, dtype="int4")
    fp32_choice = [(torch.float32, 8, "linear"), (torch.float32, 8, "onednn")] * 3 if bf16_gflops < 200 else []
    assert sorted(measured, key=str) == sorted([(torch.bfloat16, 32, "mm"), (torch.float32, 32, "mm"),
                                                *fp32_choice], key=str)
    packed = [m for m in int4.backbone.model.modules() if isinstance(m, hardware.PackedLinear)]
    layer, x = packed[0], torch.randn(40, packed[0].in_features)
    if expected == "onednn":
        assert all(m.dequantized is None and isinstance(m.onednn, hardware.OneDnnLinear) for m in packed)
        reference = layer.onednn(x).to(torch.bfloat16)
    else:
        assert packed and {m.dequantized.dtype for m in packed} == {expected} and {m.onednn for m in packed} == {None}
        reference = torch.nn.functional.linear(x.to(expected), layer.dequantized).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16  # the rest of the model runs in bf16 either way
    assert torch.equal(out, reference)
    one, many = (decode_prompts(int4.lm, [PROMPT] * n, DecodeConfig(num_beams=1, max_new_tokens=6, batch_size=n))
                 for n in (1, 20))
    assert one[0] and one[0] == many[0]
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)  # bf16 emulated: fp32 without measuring
    measured.clear()
    assert hardware.decoding_gemm_dtype(int4.backbone.model.config, torch.device("cpu")) == torch.float32
    assert not measured


def test_onednn_linear_multiplies_as_torch_does():
    from transformers.pytorch_utils import Conv1D

    from kg2text.hardware import OneDnnLinear

    torch.manual_seed(0)
    x = torch.randn(3, 5, 96)
    for layer in (torch.nn.Linear(96, 48), Conv1D(48, 96)):  # GPT-2's Conv1D stores its weight (in, out)
        torch.nn.init.normal_(layer.bias)
        reordered = OneDnnLinear.of(layer)
        out = reordered(x)
        assert out.shape == (3, 5, 48) and torch.allclose(out, layer(x), atol=1e-5)
        last = x[:, -1]  # a strided view, as the LM head gets it
        assert torch.allclose(reordered(last), layer(last), atol=1e-5)


@pytest.mark.parametrize("onednn_faster", [True, False])
def test_fp32_decoding_multiplies_through_onednn_where_measured_faster(trained_run, measured_kernels, onednn_faster):
    """fp32 decoding replaces every linear layer (the LM head too, inside its ``ScreenedHead``) by ``OneDnnLinear``
    where oneDNN's matmul was measured faster at 8 rows, once per process; the sentences are those of torch's
    matmuls."""
    from kg2text.hardware import OneDnnLinear

    measured, speeds = measured_kernels
    speeds.update({(torch.float32, "onednn"): 300.0 if onednn_faster else 100.0, (torch.float32, "linear"): 200.0})
    chosen = load_for_generation(trained_run)
    again = load_for_generation(trained_run)
    assert measured == [(torch.float32, 8, "onednn"), (torch.float32, 8, "linear")] * 3  # once, trials in turns
    for loaded in (chosen, again):
        model = loaded.backbone.model
        replaced = [m for m in model.modules() if isinstance(m, OneDnnLinear)]
        assert len(replaced) == (4 * model.config.n_layer + 1 if onednn_faster else 0)
        assert isinstance(model.get_output_embeddings().head, OneDnnLinear) == onednn_faster  # under its fp16 screen
    plain = load_for_generation(trained_run, onednn=False)
    assert not any(isinstance(m, OneDnnLinear) for m in plain.backbone.model.modules())
    assert len(measured) == 6  # nothing measured for it
    prompts = [PROMPT, " | Alimentum : area : city centre <|endoftext|>", " | A : b : c <|endoftext|>"]
    for beams, batch in ((1, 1), (1, 3), (3, 3)):
        config = DecodeConfig(num_beams=beams, max_new_tokens=8, batch_size=batch)
        sentences = decode_prompts(chosen.lm, prompts, config)
        assert all(sentences) and sentences == decode_prompts(plain.lm, prompts, config)


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_stacked_siblings_give_each_layers_own_output_and_reuse_only_an_unchanged_input(rows):
    from kg2text.hardware import SiblingLinear, StackedLinear

    torch.manual_seed(0)
    layers = [torch.nn.Linear(32, 16), torch.nn.Linear(32, 8, bias=False), torch.nn.Linear(32, 24)]
    stacked = StackedLinear(layers)
    siblings = [SiblingLinear(stacked, i) for i in range(3)]
    assert stacked.widths == [16, 8, 24] and stacked.stacked.weight.shape == (48, 32)
    x = torch.randn(rows, 3, 32)
    with torch.no_grad():
        for sibling, layer in zip(siblings, layers, strict=True):
            assert torch.allclose(sibling(x), layer(x), atol=1e-6)
        first = siblings[0](x)
        x.mul_(2)  # changed in place between two siblings' calls: multiplied afresh
        assert torch.allclose(siblings[1](x), layers[1](x), atol=1e-6)
        assert not torch.allclose(siblings[1](x), layers[1](x / 2), atol=1e-3)
        other = torch.randn(rows, 3, 32)  # another tensor: its own product
        siblings[0](x)
        assert torch.allclose(siblings[1](other), layers[1](other), atol=1e-6)
    assert first.shape == (rows, 3, 16)
    with torch.inference_mode():  # as decoding runs: tensors without a version counter
        y = torch.randn(rows, 3, 32)
        for sibling, layer in zip(siblings, layers, strict=True):
            assert torch.allclose(sibling(y), layer(y), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int4"])
def test_llama_siblings_decode_stacked_as_they_do_apart(dtype):
    from kg2text.backbones import load_backbone
    from kg2text.hardware import PackedLinear, SiblingLinear, StackedLinear, prepare_for_decoding
    from kg2text.methods import build_tuner
    from kg2text.model import TunedLM

    if dtype == "float16" and "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("float16 needs FBGEMM (x86)")
    lms = []
    for stack in (False, True):
        backbone = load_backbone("tiny-llama")
        prepare_for_decoding(backbone.model, dtype, onednn=False, stack=stack)
        tuner, _ = build_tuner("prefix", backbone, 5, 32, None, seed=0)
        lm = TunedLM(backbone)
        with torch.no_grad():
            lm.use("prefix", (tuner() * 20).to(backbone.model.dtype))
        lms.append(lm)
    apart, stacked = (lm.backbone.model for lm in lms)
    layers = apart.config.num_hidden_layers
    assert not any(isinstance(m, SiblingLinear | StackedLinear) for m in apart.modules())
    assert len([m for m in stacked.modules() if isinstance(m, SiblingLinear)]) == 5 * layers
    assert len([m for m in stacked.modules() if isinstance(m, StackedLinear)]) == 2 * layers
    if dtype != "float32":  # each stack converted once, as one layer: (q, k, v), (gate, up), o, down, the head
        assert len([m for m in stacked.modules() if isinstance(m, PackedLinear)]) == 4 * layers + 1
    prompts = [PROMPT, " | Alimentum : area : city centre <|endoftext|>", " | A : b : c <|endoftext|>"]
    for beams in (1, 3):
        config = DecodeConfig(num_beams=beams, max_new_tokens=8, batch_size=3)
        sentences = decode_prompts(lms[1], prompts, config)
        assert all(sentences) and sentences == decode_prompts(lms[0], prompts, config)


@pytest.mark.parametrize("backbone", ["tiny-gpt2", "tiny-llama"])  # tiny-llama: kg2text's loop runs llama_forward
@pytest.mark.parametrize("engine", ["kg2text", "hf"])
def test_counting_work_counts_the_tokens_head_rows_and_forwards_of_a_decode(backbone, engine):
    from kg2text import llama_forward
    from kg2text.backbones import load_backbone
    from kg2text.decoding import greedy
    from kg2text.methods import build_tuner
    from kg2text.model import TunedLM
    from kg2text.speed import counting_work

    lm = TunedLM(load_backbone(backbone))
    tuner, _ = build_tuner("prefix", lm.backbone, 5, 32, None, seed=0)
    with torch.no_grad():
        lm.use("prefix", tuner())
    model = lm.backbone.model
    assert llama_forward.supports(model) == (backbone == "tiny-llama")
    ids = torch.tensor([lm.backbone.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]] * 3)
    mask = torch.ones_like(ids)
    with counting_work(model) as work, torch.no_grad():
        if engine == "kg2text":  # no end token (-1): every row takes all 5 tokens, 4 of them after the prefill
            greedy(lm, ids, mask, 5, -1, torch.zeros(0, dtype=torch.long))
        else:
            model.generate(**lm.model_inputs(ids, mask), max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert (work.forwards, work.tokens, work.head_rows) == (5, 3 * ids.shape[1] + 3 * 4, 3 * 5)
    model(input_ids=ids)  # the hooks are gone
    assert work.forwards == 5


def test_decoding_rates_count_two_flops_per_weight_and_the_bytes_of_each_format(tiny_gpt2):
    from kg2text.speed import decoding_rates

    model = tiny_gpt2.model
    head = model.get_output_embeddings().weight.numel()
    layers = sum(p.numel() for p in model.parameters()) - head  # GPT-2 ties its head to the input embedding
    done = {"tokens": 100, "head_rows": 10, "forwards": 4, "screened": 0, "seconds": 0.5}
    screened = {**done, "screened": 3}  # 3 of the 4 forwards through the fp16 screen: 2 bytes a head weight
    rates = decoding_rates({"b1-greedy": {"kg2text": done, "kg2text_int4": done, "baseline": screened}},
                           tiny_gpt2)["b1-greedy"]
    assert rates["kg2text"]["gflops"] == pytest.approx((2 * layers * 100 + 2 * head * 10) / 0.5 / 1e9)
    assert rates["kg2text"]["weights_gbps"] == pytest.approx(4 * 4 * (layers + head) / 0.5 / 1e9)
    assert rates["kg2text_int4"]["weights_gbps"] == pytest.approx(4 * (0.625 * layers + head) / 0.5 / 1e9)
    assert rates["baseline"]["weights_gbps"] == pytest.approx((4 * 4 * layers + 4 * head + 3 * 2 * head) / 0.5 / 1e9)
    assert rates["baseline"]["gflops"] == rates["kg2text"]["gflops"]
    assert rates["kg2text_int4"]["tokens"] == 100


def test_layer_weights_leave_out_the_embedding_and_the_lm_head_tied_or_not():
    from transformers import LlamaConfig, LlamaForCausalLM

    from kg2text.speed import layer_weights

    def model(tied: bool):
        return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, tie_word_embeddings=tied))

    per_layer = 4 * 16 * 16 + 3 * 16 * 32 + 2 * 16  # q, k, v, o; gate, up, down; two norms
    assert layer_weights(model(True)) == layer_weights(model(False)) == 2 * per_layer + 16  # and the final norm
