"""The lean Llama forward of the decoding loop (kg2text/llama_forward.py) against transformers' own forward."""

import pytest
import torch
from test_decoding import PROMPTS, tuned
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from kg2text import llama_forward
from kg2text.backbones import load_backbone
from kg2text.decoding import _forward, _logits, _new_cache
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.hardware import PACKED_KERNEL_MAX_ROWS, Float16Linear, OneDnnLinear, prepare_for_decoding
from kg2text.model import TunedLM


def test_rotation_matrix_turns_queries_as_transformers_rotary_embedding_does():
    model = load_backbone("tiny-llama").model
    torch.manual_seed(0)
    positions = torch.tensor([[3, 4, 5], [0, 1, 7]])
    query = torch.randn(2, 3, 4, model.config.head_dim)  # (B, n, heads, D)
    cos, sin = model.model.rotary_emb(query, positions)
    expected, _ = apply_rotary_pos_emb(query.transpose(1, 2), query.transpose(1, 2), cos, sin)
    turned = torch.matmul(query, llama_forward.rotation(cos, sin))
    torch.testing.assert_close(turned.transpose(1, 2), expected, rtol=0, atol=1e-6)


def test_supports_only_transformers_llama_with_fp32_activations():
    assert llama_forward.supports(load_backbone("tiny-llama").model)
    assert not llama_forward.supports(load_backbone("tiny-gpt2").model)
    assert not llama_forward.supports(load_backbone("tiny-llama").model.to(torch.bfloat16))


def _logits_both_ways(lm: TunedLM, monkeypatch, rows: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits of a prefill of ``rows`` rows (the second left-padded) and of one step after it, by the lean forward
    and by transformers'."""
    tokenizer = lm.backbone.tokenizer
    ids = torch.tensor([tokenizer(" | A : b : c", add_special_tokens=False)["input_ids"][-4:],
                        [tokenizer.pad_token_id] + tokenizer(" | X : y", add_special_tokens=False)["input_ids"][-3:]])
    ids = ids[:rows]
    mask = (ids != tokenizer.pad_token_id).long()
    results = []
    for lean in (True, False):
        monkeypatch.setattr(llama_forward, "supports", lambda _model, lean=lean: lean)
        inputs = lm.model_inputs(ids, mask)
        prefill_mask = inputs.pop("attention_mask")
        cache = _new_cache(lm, rows, rows, ids.shape[1], 1, None)  # with the prefix in its first slots
        prefill = _logits(lm, _forward(lm, cache, inputs, prefill_mask, every_position=True))
        step_inputs = {"input_ids": torch.tensor([[7], [9]])[:rows], "position_ids": inputs["position_ids"][:, -1:] + 1}
        step = _forward(lm, cache, step_inputs, torch.ones(rows, 1, dtype=torch.long))
        results.append([prefill, _logits(lm, step)])
    return results[0], results[1]


@pytest.mark.parametrize("rows", [1, 2])  # 1: the step attends with no mask at all (every slot open)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_lean_forward_gives_transformers_logits_through_the_cache(dtype, rows, monkeypatch):
    backbone = load_backbone("tiny-llama")
    prepare_for_decoding(backbone.model, dtype)  # siblings stacked; float16: FBGEMM's fp16-weight matmuls
    lm = tuned(backbone, "prefix")
    lean, reference = _logits_both_ways(lm, monkeypatch, rows)
    real = torch.tensor([[True] * 4, [False] + [True] * 3])[:rows]  # the padding position's logits mean nothing
    torch.testing.assert_close(lean[0][real], reference[0][real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lean[1], reference[1], rtol=1e-5, atol=1e-5)
    assert lean[1].shape == (rows, backbone.model.config.vocab_size)


def test_the_lean_forward_calls_a_packed_kernel_or_onednn_directly_below_the_packed_kernels_rows():
    backbone = load_backbone("tiny-llama")
    prepare_for_decoding(backbone.model, "float16")
    layer = backbone.model.model.layers[0].mlp.down_proj
    assert isinstance(layer, Float16Linear)
    assert llama_forward._multiplier(layer, 1) == layer.packed_mm
    assert llama_forward._multiplier(layer, PACKED_KERNEL_MAX_ROWS - 1) == layer.packed_mm
    assert llama_forward._multiplier(layer, PACKED_KERNEL_MAX_ROWS) is layer  # fp32 of the rounded weights
    onednn = OneDnnLinear(torch.randn(8, 4), None)
    assert llama_forward._multiplier(onednn, 1) == onednn.forward
    plain = torch.nn.Linear(4, 8)
    assert llama_forward._multiplier(plain, 1) is plain


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("beams", [1, 3])
def test_decoding_with_the_lean_forward_gives_the_same_tokens_as_without(method, beams, monkeypatch):
    backbone = load_backbone("tiny-llama")
    prepare_for_decoding(backbone.model, "float32")
    lm = tuned(backbone, method)
    decode = DecodeConfig(num_beams=beams, max_new_tokens=10, batch_size=3)
    calls = []
    lean_hidden_states = llama_forward.hidden_states
    monkeypatch.setattr(llama_forward, "hidden_states", lambda *a, **k: calls.append(1) or lean_hidden_states(*a, **k))
    lean = decode_prompts(lm, PROMPTS, decode)
    assert calls  # the lean forward ran
    monkeypatch.setattr(llama_forward, "supports", lambda _model: False)
    assert decode_prompts(lm, PROMPTS, decode) == lean
    assert len(set(lean)) == len(PROMPTS)


def test_greedy_through_the_heads_fp16_screen_gives_the_tokens_of_all_fp32_logits(monkeypatch):
    from kg2text.hardware import ScreenedHead

    backbone = load_backbone("tiny-llama")
    prepare_for_decoding(backbone.model, "float32")
    head = backbone.model.get_output_embeddings()
    assert isinstance(head, ScreenedHead)
    lm = tuned(backbone, "prefix")
    decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=3, max_new_tokens=4, batch_size=3))
    assert head._screen is None  # beam search needs every logit: the fp16 copy is never made
    screened_calls = []
    real_argmax = ScreenedHead.argmax
    monkeypatch.setattr(ScreenedHead, "argmax", lambda *a: screened_calls.append(1) or real_argmax(*a))
    configs = [DecodeConfig(num_beams=1, max_new_tokens=12, batch_size=b) for b in (1, 3)]  # 1: prompt lookup
    screened = [decode_prompts(lm, PROMPTS, config) for config in configs]
    assert len(screened_calls) > 2 * len(PROMPTS)
    backbone.model.lm_head = head.head  # the fp32 head alone: every step's full logits
    assert [decode_prompts(lm, PROMPTS, config) for config in configs] == screened
    assert len({s for run in screened for s in run}) == len(PROMPTS)
