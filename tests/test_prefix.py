import hashlib

import pytest
import torch
from transformers import DynamicCache

from kg2text.backbones import load_backbone
from kg2text.generate import DecodeConfig, decode_prompts, newline_token_ids
from kg2text.model import TunedLM
from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape
from kg2text.training import TrainConfig, train


@pytest.mark.parametrize("name, shape", [
    ("tiny-gpt2", (2, 2, 4, 6, 16)),   # 2 layers, key+value, 4 heads, P=6, head dim 64/4
    ("tiny-llama", (2, 2, 2, 6, 16)),  # grouped-query attention: 2 key/value heads of 4
])
def test_prefix_shape_per_layer(name, shape):
    backbone = load_backbone(name)
    encoder = PrefixEncoder(PrefixConfig(6, 32), PrefixShape.of(backbone.model), backbone.model.config.hidden_size)
    prefix = encoder()
    assert tuple(prefix.shape) == shape
    # The MLP reparametrization of the paper: Embedding(P, d) -> Linear(d, 32) -> tanh -> Linear(32, 2*L*kv_dim)
    assert encoder.embedding.weight.shape == (6, 64)
    assert encoder.mlp[2].out_features == 2 * shape[0] * shape[2] * shape[4]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_prefix_reaches_every_layer_and_only_prefix_gets_gradients(name):
    backbone = load_backbone(name)
    lm = TunedLM(backbone)
    encoder = PrefixEncoder(PrefixConfig(4, 32), PrefixShape.of(backbone.model), 64)
    ids = torch.tensor([[464, 3797, 3332, 319, 262]])
    mask = torch.ones_like(ids)
    lm.use("prefix", encoder())
    labels = ids.clone()
    loss, count = lm.target_loss(ids, mask, labels)
    loss.backward()
    assert count == 4
    assert all(p.grad is None for p in backbone.model.parameters())
    assert encoder.embedding.weight.grad.abs().sum() > 0
    # every layer attends to its own slice of the prefix, so every slice receives gradient
    prefix = encoder().detach().requires_grad_(True)
    lm.use("prefix", prefix)
    lm.target_loss(ids, mask, labels)[0].backward()
    per_layer = prefix.grad.abs().sum(dim=(1, 2, 3, 4))
    assert per_layer.shape == (2,) and bool((per_layer > 0).all())


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_base_weights_bit_identical_after_training(tmp_path):
    backbone = load_backbone("tiny-gpt2")
    before = _weights_digest(backbone.model)
    train(TrainConfig(output=str(tmp_path / "run"), backbone="tiny-gpt2", max_steps=3, max_examples=24,
                      prefix_length=4, mlp_hidden=16, lr=1e-2), backbone=backbone)
    assert _weights_digest(backbone.model) == before
    assert not any(p.requires_grad for p in backbone.model.parameters())


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_prefix_hook_equals_the_prefix_given_as_past_key_values(name):
    """Our attention hook gives what the textbook form gives: the prefix as a KV cache in front of the input,
    with positions after it. The reference does not use the hook, so a transformers release that changes how
    attention functions are called, masked or positioned shows up here."""
    backbone = load_backbone(name)
    encoder = PrefixEncoder(PrefixConfig(4, 32), PrefixShape.of(backbone.model), 64)
    with torch.no_grad():
        prefix = encoder() * 20
    ids = torch.tensor([[464, 3797, 3332, 319, 262]])
    lm = TunedLM(backbone)
    with torch.no_grad():
        lm.use("prefix", prefix)
        ours = lm.logits(ids, torch.ones_like(ids))
        lm.use("prefix", None)
        plain = lm.logits(ids, torch.ones_like(ids))
        cache = DynamicCache(ddp_cache_data=[(layer[0][None], layer[1][None]) for layer in prefix],
                             config=backbone.model.config)
        reference = backbone.model(input_ids=ids, attention_mask=torch.ones(1, 4 + 5, dtype=torch.long),
                                   position_ids=torch.arange(4, 9)[None], past_key_values=cache).logits
    assert (ours - reference).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-1  # the prefix matters, so the comparison means something


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_cached_greedy_decoding_equals_argmax_of_full_forwards(name):
    """Decoding reuses the KV cache; recomputing everything at each step must pick the same tokens."""
    backbone = load_backbone(name)
    encoder = PrefixEncoder(PrefixConfig(4, 32), PrefixShape.of(backbone.model), 64)
    lm = TunedLM(backbone)
    with torch.no_grad():
        lm.use("prefix", encoder() * 20)
    prompt = " | Harry Potter : education : Hogwarts <|endoftext|>"
    decoded = decode_prompts(lm, [prompt], DecodeConfig(num_beams=1, max_new_tokens=8))[0]
    ids = torch.tensor([backbone.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    banned = list(newline_token_ids(backbone.tokenizer))
    with torch.no_grad():
        for _ in range(8):
            logits = lm.logits(ids, torch.ones_like(ids))[0, -1]
            logits[banned] = -float("inf")
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    naive = backbone.tokenizer.decode(ids[0, -8:], skip_special_tokens=True)
    assert decoded == " ".join(naive.split()) and decoded
