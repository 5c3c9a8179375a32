"""kg2text's own CPU kernels (kg2text/kernels.py, kernels.cpp) against the torch code they replace."""

import pytest
import torch
from test_decoding import PROMPTS, tuned

from kg2text import kernels
from kg2text.backbones import load_backbone
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.prefix import grouped_attention


@pytest.fixture
def built(monkeypatch):
    """The kernels as this machine builds them (the switch set here, whatever the shell says)."""
    monkeypatch.setenv("KG2TEXT_KERNELS", "1")
    kernels.available.cache_clear()
    assert kernels.available(), "the kernels did not build: is g++ installed?"
    yield
    kernels.available.cache_clear()


@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 4, 12), (6, 2, 20)])
def test_decode_attention_equals_grouped_attention_on_cache_views(built, heads, kv_heads, dim):
    torch.manual_seed(0)
    rows, length = 5, 11
    cache = torch.randn(2, rows + 2, kv_heads, length + 4, dim)  # (layers, capacity, kv heads, slots, dim)
    keys, values = cache[1, :rows, :, :length], torch.randn_like(cache)[1, :rows, :, :length]
    valid = torch.rand(rows + 2, length + 4) > 0.3
    valid[:, length - 1] = True  # the new token sees itself
    valid[2, : length - 1] = False  # a row whose only key is its own
    valid = valid[:rows, :length]
    query = torch.randn(rows, heads, 1, dim)
    expected = grouped_attention(query, keys, values, valid[:, None, None, :], dim ** -0.5)
    got = kernels.decode_attention(query[:, :, 0], keys, values, valid, dim ** -0.5)
    assert got.shape == expected.shape == (rows, 1, heads, dim)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2, 0], values[2, :, length - 1].repeat_interleave(heads // kv_heads, 0))


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_decoding_gives_the_same_tokens_with_and_without_the_kernels(built, method, monkeypatch):
    lm = tuned(load_backbone("tiny-llama"), method)
    calls = []
    attention = kernels.decode_attention
    monkeypatch.setattr(kernels, "decode_attention", lambda *args: calls.append(1) or attention(*args))
    outputs = {}
    for on in (True, False):
        monkeypatch.setenv("KG2TEXT_KERNELS", "1" if on else "0")
        kernels.available.cache_clear()
        outputs[on] = [decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=10, batch_size=5))
                       for beams in (1, 3)]
        if on:
            assert len(calls) > 0
            calls.clear()
    assert not calls  # switched off: never called
    assert outputs[True] == outputs[False]


def test_kernels_off_by_switch_or_without_a_compiler_and_said_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KG2TEXT_KERNELS", "0")
    kernels.available.cache_clear()
    assert not kernels.available()
    monkeypatch.setenv("KG2TEXT_KERNELS", "1")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("KG2TEXT_CACHE", str(tmp_path / "cache"))  # nothing built there yet
    kernels.available.cache_clear()
    try:
        assert not kernels.available() and not kernels.available()
    finally:
        kernels.available.cache_clear()
    assert capsys.readouterr().err.count("own CPU kernels unavailable, using torch's ops instead (no C++ compiler") == 1
