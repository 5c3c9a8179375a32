"""Prefix and prompt tuning done right: padding, positions, sharing, initialisation, checkpointing."""

import pytest
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from kg2text.backbones import load_backbone
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.methods import build_tuner
from kg2text.model import TunedLM, check_fits, compile_elementwise_blocks
from kg2text.prefix import text_activations

BACKBONES = ["tiny-gpt2", "tiny-llama"]
METHODS = ["prefix", "prompt"]
PROMPTS = [" | Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor <|endoftext|>",
           " | Alan Bean : nationality : United States <|endoftext|>",
           " | A : b : c <|endoftext|>"]


@pytest.fixture(scope="module", params=BACKBONES)
def backbone(request):
    return load_backbone(request.param)


def tuned(backbone, method, length=5, init_text=None):
    tuner, _ = build_tuner(method, backbone, length, 32, init_text, seed=0)
    with torch.no_grad():
        out = tuner()
    if method == "prefix":
        out = out * 20  # large enough to change what the model says, so the checks below mean something
    lm = TunedLM(backbone)
    lm.use(method, out)
    return lm


def left_padded(backbone, texts):
    tok = backbone.tokenizer
    encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(texts), width), tok.pad_token_id)
    mask = torch.zeros((len(texts), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):], mask[i, width - len(e):] = torch.tensor(e), 1
    return ids, mask, [len(e) for e in encoded]


@pytest.mark.parametrize("method", METHODS)
def test_left_padded_batch_gives_each_row_its_own_logits(backbone, method):
    lm = tuned(backbone, method)
    ids, mask, lengths = left_padded(backbone, PROMPTS)
    with torch.no_grad():
        batched = lm.logits(ids, mask)
        for row, n in enumerate(lengths):
            alone = lm.logits(ids[row:row + 1, -n:], mask[row:row + 1, -n:])
            assert (batched[row, -n:] - alone[0]).abs().max() < 1e-4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("beams", [1, 3])
def test_batched_generation_equals_one_by_one(backbone, method, beams):
    lm = tuned(backbone, method)
    decode = DecodeConfig(num_beams=beams, max_new_tokens=8, batch_size=8)
    batched = decode_prompts(lm, PROMPTS, decode)
    alone = [decode_prompts(lm, [p], decode)[0] for p in PROMPTS]
    assert batched == alone
    assert len(set(batched)) > 1  # the rows really are decoded differently


def test_prefix_changes_the_output(backbone):
    lm = tuned(backbone, "prefix")
    ids, mask, _ = left_padded(backbone, PROMPTS[:1])
    with torch.no_grad():
        with_prefix = lm.logits(ids, mask)
        lm.use("prefix", None)
        without = lm.logits(ids, mask)
    assert (with_prefix - without).abs().max() > 1e-2


def test_prompt_sits_after_the_padding(backbone):
    lm = tuned(backbone, "prompt", length=3)
    ids, mask, _ = left_padded(backbone, PROMPTS[:2])
    inputs = lm.model_inputs(ids, mask)
    pad = int((mask[1] == 0).sum())
    assert inputs["attention_mask"][1].tolist() == [0] * pad + [1] * (ids.shape[1] - pad + 3)
    assert inputs["position_ids"][1, pad:].tolist() == list(range(ids.shape[1] - pad + 3))
    prompt_rows = inputs["inputs_embeds"][1, pad:pad + 3]
    assert torch.equal(prompt_rows, lm.soft_prompt)


def test_too_long_for_gpt2_positions_is_a_clear_error():
    backbone = load_backbone("tiny-gpt2")  # 256 positions
    check_fits(backbone, 10, 246)
    with pytest.raises(UserError, match="more than tiny-gpt2's 256"):
        check_fits(backbone, 10, 247)
    lm = tuned(backbone, "prefix", length=10)
    with pytest.raises(UserError, match="shorten the input"):
        decode_prompts(lm, [" x" * 200], DecodeConfig(num_beams=1, max_new_tokens=50))


def test_one_prefix_is_broadcast_not_copied(backbone):
    lm = tuned(backbone, "prefix")
    key, value = lm.injector.keys_values(0, batch=64)
    assert key.shape[0] == 64 and key.stride(0) == 0 and value.stride(0) == 0
    assert key.data_ptr() == lm.injector.prefix[0, 0].data_ptr()


def test_prefix_from_text_starts_at_the_backbones_own_activations(backbone):
    tuner, _ = build_tuner("prefix", backbone, 4, 32, "table-to-text:", seed=0)
    ids = backbone.tokenizer("table-to-text:", add_special_tokens=False)["input_ids"]
    expected = text_activations(backbone.model, ids, 4)
    with torch.no_grad():
        assert torch.equal(tuner(), expected)
    assert expected.abs().sum() > 0


def test_prompt_init_from_text_and_vocabulary(backbone):
    embeddings = backbone.model.get_input_embeddings().weight
    tuner, _ = build_tuner("prompt", backbone, 4, 32, "table-to-text:", seed=0)
    ids = backbone.tokenizer("table-to-text:", add_special_tokens=False)["input_ids"]
    assert torch.equal(tuner().detach(), embeddings[torch.tensor((ids * 4)[:4])])
    sampled, _ = build_tuner("prompt", backbone, 4, 32, None, seed=0)
    rows = [int((embeddings == row).all(dim=1).nonzero()[0]) for row in sampled().detach()]
    assert len(set(rows)) == 4  # four distinct real vocabulary vectors


def test_compiled_blocks_give_the_same_bf16_loss_and_gradients_as_eager():
    """--compile: inductor fuses the MLPs' and RMSNorms' elementwise ops; the step must compute the same thing."""
    from torch._dynamo.utils import counters

    results = []
    for compiled in (False, True):
        backbone = load_backbone("tiny-llama")  # a fresh model: compiling changes the modules in place
        backbone.model.to(torch.bfloat16)
        ids, mask, _ = left_padded(backbone, PROMPTS)
        labels = ids.masked_fill(mask == 0, -100)
        lm = TunedLM(backbone)
        if compiled:
            assert compile_elementwise_blocks(backbone.model) == 2 * 3 + 1  # per layer an MLP, two norms; final norm
        tuner, _ = build_tuner("prefix", backbone, 4, 32, None, seed=0)
        lm.use("prefix", tuner())
        graphs = counters["stats"]["unique_graphs"]
        loss, _ = lm.target_loss(ids, mask, labels)
        loss.backward()
        assert (counters["stats"]["unique_graphs"] > graphs) == compiled  # inductor really ran the compiled blocks
        results.append((loss.item(), tuner.embedding.weight.grad.clone()))
    (eager_loss, eager_grad), (compiled_loss, compiled_grad) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=2e-2)
    assert eager_grad.abs().sum() > 0
    assert torch.allclose(compiled_grad, eager_grad, rtol=0.1, atol=0.05 * eager_grad.abs().max().item())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(backbone):
    ids, mask, _ = left_padded(backbone, PROMPTS)
    labels = ids.masked_fill(mask == 0, -100)
    results, layer_calls = [], []
    first_layer = next(m for m in backbone.model.modules() if isinstance(m, GradientCheckpointingLayer))
    # recomputation calls the layer's forward directly, so count calls of a module inside the layer
    next(first_layer.children()).register_forward_hook(lambda *_: layer_calls.append(1))
    for checkpointing in (False, True):
        tuner, _ = build_tuner("prefix", backbone, 4, 32, None, seed=0)
        lm = TunedLM(backbone)
        if checkpointing:
            lm.enable_gradient_checkpointing()
        lm.use("prefix", tuner())
        layer_calls.clear()
        loss, _ = lm.target_loss(ids, mask, labels)
        loss.backward()
        results.append((loss.item(), tuner.embedding.weight.grad.clone(), len(layer_calls)))
    backbone.model.activation_checkpointing_disable()
    for module in backbone.model.modules():
        module.training = False
    assert [calls for *_, calls in results] == [1, 2]  # checkpointing recomputes the layer in backward
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    assert results[0][1].abs().sum() > 0


def test_mixed_task_batch_matches_each_task_alone(backbone):
    first, second = tuned(backbone, "prefix"), tuned(backbone, "prefix")
    second.use("prefix", first.prefix.flip(0))  # a different "task"
    ids, mask, lengths = left_padded(backbone, PROMPTS)
    mixed = TunedLM(backbone)
    rows = torch.tensor([0, 1, 0])
    mixed.use("prefix", torch.stack([first.prefix, second.prefix]), rows=rows)
    with torch.no_grad():
        together = mixed.logits(ids, mask)
        for row, task in enumerate(rows.tolist()):
            alone = (first, second)[task].logits(ids[row:row + 1], mask[row:row + 1])
            assert (together[row] - alone[0]).abs().max() < 1e-4
