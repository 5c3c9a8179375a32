"""The design's own prefix (--method prefix-hidden): hidden states prepended inside every attention layer."""

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from kg2text.artifact import read_prefix
from kg2text.backbones import load_backbone
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, decode_prompts, load_for_generation
from kg2text.methods import build_tuner
from kg2text.model import TunedLM
from kg2text.training import TrainConfig, train

PROMPTS = [" | Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor <|endoftext|>",
           " | Alan Bean : nationality : United States <|endoftext|>",
           " | A : b : c <|endoftext|>"]


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def backbone(request):
    return load_backbone(request.param)


def tuned(backbone, length=4):
    tuner, _ = build_tuner("prefix-hidden", backbone, length, 32, None, seed=0)
    with torch.no_grad():
        tuner.embedding.weight.mul_(8)  # strong enough to change what the model says
        keys_values = tuner()
    lm = TunedLM(backbone)
    lm.use("prefix-hidden", keys_values)
    return lm, tuner, keys_values


def test_keys_values_are_the_frozen_projections_of_the_hidden_states(backbone):
    _, tuner, keys_values = tuned(backbone)
    hidden = tuner.hidden_states().detach()
    for layer, attention in enumerate(backbone.model.base_model.layers if hasattr(backbone.model.base_model, "layers")
                                      else backbone.model.base_model.h):
        block = attention.self_attn if hasattr(attention, "self_attn") else attention.attn
        if hasattr(block, "c_attn"):  # GPT-2: one fused projection, no rotation
            _, key, value = block.c_attn(hidden[layer]).split(block.split_size, dim=-1)
        else:  # Llama: separate projections, keys rotated to positions -P..-1
            key, value = block.k_proj(hidden[layer]), block.v_proj(hidden[layer])
            positions = torch.arange(-hidden.shape[1], 0)[None]
            cos, sin = backbone.model.base_model.rotary_emb(hidden[:1], position_ids=positions)
            heads = key.view(1, -1, keys_values.shape[2], keys_values.shape[4]).transpose(1, 2)
            key = apply_rotary_pos_emb(heads, heads, cos, sin)[1][0].transpose(0, 1).reshape(key.shape)
        shape = (-1, keys_values.shape[2], keys_values.shape[4])
        assert torch.allclose(keys_values[layer, 0], key.view(shape).transpose(0, 1), atol=1e-5)
        assert torch.allclose(keys_values[layer, 1], value.view(shape).transpose(0, 1), atol=1e-5)


def test_an_empty_prefix_gives_exactly_the_backbones_logits_and_positions_stay(backbone):
    lm, _, keys_values = tuned(backbone)
    ids = torch.tensor([[464, 3797, 3332, 319, 262]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        lm.use("prefix-hidden", keys_values[:, :, :, :0])
        empty = lm.logits(ids, mask)
        lm.injector.set(None)  # the bare backbone
        plain = backbone.model(input_ids=ids).logits
        lm.use("prefix-hidden", keys_values)
        prefixed = lm.logits(ids, mask)
    assert torch.equal(empty, plain)
    assert (prefixed - plain).abs().max() > 1e-1
    assert lm.model_inputs(ids, mask)["position_ids"].tolist() == [[0, 1, 2, 3, 4]]  # unlike prefix: 4..8


@pytest.mark.parametrize("beams", [1, 3])
def test_batch_of_n_equals_one_by_one(backbone, beams):
    lm, _, _ = tuned(backbone)
    decode = DecodeConfig(num_beams=beams, max_new_tokens=8, batch_size=3)
    batched = decode_prompts(lm, PROMPTS, decode)
    assert batched == [decode_prompts(lm, [p], decode)[0] for p in PROMPTS]
    assert batched == decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=8, engine="hf"))
    assert len(set(batched)) > 1


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch, name):
    import kg2text.training as training

    def config(out):
        return TrainConfig(output=str(tmp_path / out), backbone=name, method="prefix-hidden", max_steps=6,
                           max_examples=48, batch_size=4, prefix_length=3, mlp_hidden=16, lr=1e-2,
                           checkpoint_every=2, log_every=1)

    train(config("straight"))
    real_log = training._log

    def interrupt_at_step_5(path, progress, *args):
        real_log(path, progress, *args)
        if progress["step"] == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_log", interrupt_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config("resumed"))
    monkeypatch.setattr(training, "_log", real_log)
    train(TrainConfig.from_run(tmp_path / "resumed"), resume=True)
    straight, header = read_prefix(tmp_path / "straight")
    assert torch.equal(read_prefix(tmp_path / "resumed")[0], straight)
    assert header["method"] == "prefix-hidden" and tuple(straight.shape)[3] == 3
    loaded = load_for_generation(tmp_path / "straight")
    assert loaded.lm.method == "prefix-hidden" and loaded.lm.virtual_tokens == 0


def test_prefix_hidden_does_not_export_to_peft(tmp_path):
    from kg2text.export import export_peft

    train(TrainConfig(output=str(tmp_path / "r"), backbone="tiny-gpt2", method="prefix-hidden", max_steps=1,
                      max_examples=4, batch_size=4, prefix_length=2, mlp_hidden=8, lr=1e-3))
    with pytest.raises(UserError, match="keeps the real tokens' positions"):
        export_peft(tmp_path / "r", tmp_path / "peft")
