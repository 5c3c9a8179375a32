"""kg2text's own decoding loop (kg2text/decoding.py) against transformers' generate, the reference."""

import pytest
import torch

from kg2text.backbones import load_backbone
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.methods import build_tuner
from kg2text.model import TunedLM

PROMPTS = [" | Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor <|endoftext|>",
           " | Alan Bean : nationality : United States <|endoftext|>",
           " | A : b : c <|endoftext|>",
           " | Hogwarts : location : Scotland | Hogwarts : founder : Godric Gryffindor <|endoftext|>",
           " | Ron Weasley : house : Gryffindor <|endoftext|>"]


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-llama"])
def backbone(request):
    return load_backbone(request.param)


def tuned(backbone, method, seed=0):
    tuner, _ = build_tuner(method, backbone, 5, 32, None, seed=seed)
    with torch.no_grad():
        tensor = tuner() * (20 if method == "prefix" else 1)
    lm = TunedLM(backbone)
    lm.use(method, tensor)
    return lm


@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("beams", [1, 3, 5])
def test_own_loop_gives_exactly_what_generate_gives(backbone, method, beams):
    lm = tuned(backbone, method)
    ours = decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=12, batch_size=3))
    reference = decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=12, batch_size=3,
                                                         engine="hf"))
    assert ours == reference
    assert len(set(ours)) == len(PROMPTS)  # every row says something of its own


@pytest.mark.parametrize("beams", [1, 4])
def test_length_penalty_and_short_budget_match_generate(backbone, beams):
    lm = tuned(backbone, "prefix", seed=1)
    for penalty, budget in ((0.0, 3), (2.0, 9)):
        decode = DecodeConfig(num_beams=beams, max_new_tokens=budget, length_penalty=penalty, batch_size=5)
        hf = DecodeConfig(num_beams=beams, max_new_tokens=budget, length_penalty=penalty, batch_size=5, engine="hf")
        assert decode_prompts(lm, PROMPTS, decode) == decode_prompts(lm, PROMPTS, hf)


@pytest.mark.parametrize("beams", [1, 3])
def test_mixed_task_batch_decodes_each_row_as_its_task_alone(backbone, beams):
    first, second = tuned(backbone, "prefix", seed=0), tuned(backbone, "prefix", seed=7)
    mixed = TunedLM(backbone)
    mixed.use("prefix", torch.stack([first.prefix, second.prefix]), rows=torch.zeros(1, dtype=torch.long))
    tasks = [0, 1, 1, 0, 1]
    decode = DecodeConfig(num_beams=beams, max_new_tokens=10, batch_size=5)
    together = decode_prompts(mixed, PROMPTS, decode, tasks=tasks)
    alone = [decode_prompts((first, second)[t], [p], decode)[0] for p, t in zip(PROMPTS, tasks, strict=True)]
    assert together == alone
    assert together != decode_prompts(first, PROMPTS, decode)  # the second task really says something else


def test_grouped_attention_equals_sdpa_with_repeated_key_value_heads():
    from kg2text.decoding import grouped_attention

    torch.manual_seed(0)
    query, keys, values = torch.randn(3, 6, 4, 8), torch.randn(3, 2, 9, 8), torch.randn(3, 2, 9, 8)
    mask = torch.rand(3, 1, 4, 9) > 0.3
    mask[..., 0] = True  # every query attends to something
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, keys.repeat_interleave(3, 1), values.repeat_interleave(3, 1), attn_mask=mask, scale=0.3)
    assert torch.allclose(grouped_attention(query, keys, values, mask, 0.3), expected.transpose(1, 2), atol=1e-6)
