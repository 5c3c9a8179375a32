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
    assert set(train["mean_loss"]) == {"kg2text", "kg2text_compiled"} | (
        {"kg2text_bf16", "kg2text_bf16_compiled"} if native_bf16() else set())
    for name in ("kg2text_bf16", "kg2text_bf16_compiled", "bf16_ceiling_gflops"):
        assert (train[name] is None) == (not native_bf16())
    assert data["full_test_beam5_minutes"] == pytest.approx(1862 / data["b32-beam5"]["kg2text"] / 60)
    assert set(data["gemm_ceiling_gflops"]) == ({"float32", "bfloat16"} if native_bf16() else {"float32"})
    table = (tmp_path / "speed.md").read_text()
    assert "| b32-beam5 |" in table and "Command: `kg2text benchmark --speed RUN`" in table
    assert set(DTYPES) == {"float32", "bfloat16"} and "kg2text_int8" in data["b1-greedy"]


@pytest.mark.parametrize("rows", [1, 5, 40])  # the int8 kernel below INT8_KERNEL_MAX_ROWS, dequantized bf16 above
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
