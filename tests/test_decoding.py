"""kg2text's own decoding loop (kg2text/decoding.py) against transformers' generate, the reference."""

import pytest
import torch

import kg2text.decoding
from kg2text.backbones import load_backbone
from kg2text.decoding import CacheMemory, KVCache, compaction_order, prefill_chunks, stay_put_order
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


def test_beam_search_returns_every_finished_beam_in_generates_order(backbone):
    from kg2text.decoding import beam_search
    from kg2text.generate import _generation_config, newline_token_ids

    lm, decode = tuned(backbone, "prefix", seed=3), DecodeConfig(num_beams=4, max_new_tokens=9, rerank=True)
    tokenizer = backbone.tokenizer
    batch = tokenizer(PROMPTS[:3], add_special_tokens=False, padding=True, return_tensors="pt", padding_side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    inputs = lm.model_inputs(ids, mask)
    theirs = backbone.model.generate(**inputs, generation_config=_generation_config(backbone, decode))
    banned = torch.tensor(newline_token_ids(tokenizer))
    ours = beam_search(lm, ids, mask, 4, 9, tokenizer.eos_token_id, banned)
    assert [len(hypotheses) for hypotheses in ours] == [4, 4, 4]
    flat = [tokens for hypotheses in ours for tokens in hypotheses]
    clean = tokenizer.batch_decode(theirs[:, ids.shape[1]:], skip_special_tokens=True)
    assert tokenizer.batch_decode(flat, skip_special_tokens=True) == clean
    assert len(set(clean[:4])) == 4  # four different beams, not one repeated


def test_rerank_outputs_the_candidate_that_mentions_most_entities(backbone):
    from kg2text.generate import decode_batched

    candidates = [" He was born.", " Alan Bean was born.", " Alan Bean was born in Texas."]
    tokenizer = backbone.tokenizer

    def generate_batch(batch, ids, mask, config):
        assert config.num_return_sequences == len(candidates)
        return [tokenizer(text)["input_ids"] for _ in batch for text in candidates]

    items = [(("Alan_Bean", "birthPlace", "Texas"),), (("Alan_Bean", "occupation", "Test_pilot"),),
             (("Elliot_See", "occupation", "Test_pilot"),)]
    decode = DecodeConfig(num_beams=3, rerank=True)
    chosen = decode_batched(backbone, PROMPTS[:3], decode, generate_batch, items=items)
    assert chosen == ["Alan Bean was born in Texas.", "Alan Bean was born.", "He was born."]  # ties: the best beam
    with pytest.raises(ValueError, match="needs each prompt's items"):
        decode_batched(backbone, PROMPTS[:3], decode, generate_batch)
    seen = {}  # a pick of one's own gets each input's candidates, by input index, and its choice is the output
    last = decode_batched(backbone, PROMPTS[:3], decode, generate_batch,
                          pick=lambda row, texts: seen.setdefault(row, texts)[-1])
    assert last == ["Alan Bean was born in Texas."] * 3
    assert seen == {row: ["He was born.", "Alan Bean was born.", "Alan Bean was born in Texas."] for row in range(3)}


def test_grouped_attention_equals_sdpa_with_repeated_key_value_heads():
    from kg2text.prefix import grouped_attention

    torch.manual_seed(0)
    query, keys, values = torch.randn(3, 6, 4, 8), torch.randn(3, 2, 9, 8), torch.randn(3, 2, 9, 8)
    mask = torch.rand(3, 1, 4, 9) > 0.3
    mask[..., 0] = True  # every query attends to something
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, keys.repeat_interleave(3, 1), values.repeat_interleave(3, 1), attn_mask=mask, scale=0.3)
    assert torch.allclose(grouped_attention(query, keys, values, mask, 0.3), expected.transpose(1, 2), atol=1e-6)
    every_key = torch.ones_like(mask)
    assert torch.equal(grouped_attention(query, keys, values, None, 0.3),
                       grouped_attention(query, keys, values, every_key, 0.3))


def test_a_one_token_forward_with_every_slot_open_attends_without_a_mask():
    cache = KVCache((2, 3, 1, 8, 4), prefix_length=2, rows=2, dtype=torch.float32, device=torch.device("cpu"))
    cache.begin(torch.tensor([[1, 1, 1], [0, 1, 1]]))  # a prompt, the second row left-padded
    cache.end()
    cache.begin(torch.ones(2, 1, dtype=torch.long))
    assert cache.mask.shape == (2, 1, 1, 6) and cache.mask[1, 0, 0].tolist() == [True, True, False, True, True, True]
    assert cache.written[0].shape == (2, 2, 1, 1, 4) and cache.visible[0].shape == (2, 2, 1, 6, 4)
    cache.end()
    cache.select(torch.tensor([0]))  # the padded row leaves: every slot of the one left is a token or the prefix
    cache.begin(torch.ones(1, 1, dtype=torch.long))
    assert cache.mask is None and cache.used == 6
    cache.end()
    assert cache.used == 7 and cache.written is None and cache.visible is None


def test_prefill_chunks_pad_each_chunk_to_its_own_longest_prompt_where_that_saves_tokens():
    left_padded = torch.tensor([[0] * (9 - n) + [1] * n for n in (2, 3, 9, 9)])
    assert prefill_chunks(left_padded, 2) == [(slice(0, 2), 3), (slice(2, 4), 9)]
    assert prefill_chunks(left_padded, 4) == [(slice(0, 4), 9)]
    nearly_even = torch.tensor([[0] * (9 - n) + [1] * n for n in (8, 9, 9, 9)])  # chunks would save 1 token in 36
    assert prefill_chunks(nearly_even, 2) == [(slice(0, 4), 9)]


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_chunked_prefill_decodes_exactly_as_one_padded_prefill(backbone, method, monkeypatch):
    lm = tuned(backbone, method)
    chunkings = []
    monkeypatch.setattr(kg2text.decoding, "prefill_chunks", lambda mask, rows: chunkings.append(
        prefill_chunks(mask, rows)) or chunkings[-1])
    for beams in (1, 3):
        decode = DecodeConfig(num_beams=beams, max_new_tokens=10, batch_size=5, draft_tokens=0)
        whole = decode_prompts(lm, PROMPTS, decode)
        monkeypatch.setattr(kg2text.decoding, "PREFILL_CHUNK_ROWS", 2)
        chunked = decode_prompts(lm, PROMPTS, decode)
        monkeypatch.setattr(kg2text.decoding, "PREFILL_CHUNK_ROWS", 8)
        assert chunked == whole
    assert [len(c) for c in chunkings] == [1, 3, 1, 3]  # the chunked runs really ran in 3 chunks


def test_compaction_order_fills_the_dropped_rows_with_the_last_kept_ones():
    keep = torch.tensor([False, True, True, False, True, True])
    assert compaction_order(keep).tolist() == [4, 1, 2, 5]
    assert compaction_order(torch.tensor([True, True, False])).tolist() == [0, 1]  # nothing moves
    assert compaction_order(torch.tensor([False, False])).tolist() == []


def test_stay_put_order_keeps_each_beam_in_its_sources_row_and_puts_forks_in_the_free_rows():
    # new beams 0..4 come from beams 0, 0, 1, 2, 0: beam 0 stays in row 0, beam 2 in row 1, beam 3 in row 2;
    # the forks (beams 1 and 4) take the free rows 3 and 4
    assert stay_put_order(torch.tensor([[0, 0, 1, 2, 0], [4, 3, 2, 1, 0]]), 5).tolist() == [[0, 2, 3, 1, 4],
                                                                                              [4, 3, 2, 1, 0]]


@pytest.mark.parametrize("shared_until", [0, 4])
def test_cache_select_moves_rows_as_indexing_would_with_swaps_and_repeats(shared_until):
    """Rows are copied one by one; a row that is both read and overwritten (a swap) must still be read first."""
    cache = KVCache((2, 6, 1, 8, 3), prefix_length=2, rows=5, dtype=torch.float32, device=torch.device("cpu"))
    cache.keys.copy_(torch.randn(cache.keys.shape))
    cache.values.copy_(torch.randn(cache.values.shape))
    cache.valid[:5, 2:7] = torch.rand(5, 5) > 0.5
    cache.used = 7
    before = cache.keys.clone(), cache.values.clone(), cache.valid.clone()
    source = torch.tensor([1, 0, 0, 3, 2, 4])  # rows 0 and 1 swap, row 0 repeats, rows 2..4 shift up
    cache.select(source, shared_until=shared_until)
    first = max(shared_until, 2)
    for moved, original in zip((cache.keys, cache.values), before[:2], strict=True):
        assert torch.equal(moved[:, :, :, first:7], original[:, source, :, first:7])
        assert torch.equal(moved[:, :, :, :first], original[:, :, :, :first])  # shared slots are not copied
    assert torch.equal(cache.valid[:6, first:7], before[2][source, first:7])
    assert cache.rows == 6


def test_cache_memory_reuses_its_block_for_caches_that_fit_and_grows_for_larger_ones():
    memory = CacheMemory()
    first = KVCache((2, 4, 1, 8, 3), 0, 4, torch.float32, torch.device("cpu"), memory)
    smaller = KVCache((2, 2, 1, 8, 3), 0, 2, torch.float32, torch.device("cpu"), memory)
    assert smaller.keys.data_ptr() == first.keys.data_ptr()
    assert smaller.values.data_ptr() == first.keys.data_ptr() + smaller.keys.numel() * 4  # values follow keys
    larger = KVCache((2, 8, 1, 8, 3), 0, 8, torch.float32, torch.device("cpu"), memory)
    assert memory.block.numel() == 2 * larger.keys.numel()
    assert larger.keys.shape == (2, 8, 1, 8, 3)


def test_lookup_draft_continues_the_latest_match_of_the_longest_tail():
    from kg2text.decoding import lookup_draft

    assert lookup_draft([5, 6, 7, 8, 9, 1, 6, 7], 3) == [8, 9, 1]  # tail (6, 7) seen at 1: what followed it
    assert lookup_draft([5, 6, 9, 5, 6, 7, 2, 6], 2) == [7, 2]  # the latest 1-gram match, not the first
    assert lookup_draft([1, 2, 3], 4) == [] and lookup_draft([4], 2) == []


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_lookup_greedy_gives_plain_greedys_tokens_in_fewer_forwards(backbone, method, monkeypatch):
    from kg2text import decoding
    from kg2text.decoding import greedy

    forwards = []
    real_forward = decoding._forward
    monkeypatch.setattr(decoding, "_forward", lambda *a, **k: forwards.append(1) or real_forward(*a, **k))

    lm = tuned(backbone, method, seed=4)
    tokenizer = backbone.tokenizer
    banned = torch.tensor([tokenizer.convert_tokens_to_ids("Ċ")])
    copying = [*PROMPTS, " | Harry Potter : Harry Potter : Harry Potter Harry Potter Harry Potter <|endoftext|>"]
    counts = {0: 0, 1: 0, 3: 0, 8: 0}
    for prompt in copying:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        mask = torch.ones_like(ids)
        plain = greedy(lm, ids, mask, 40, tokenizer.eos_token_id, banned)
        for draft_tokens in counts:
            forwards.clear()
            assert greedy(lm, ids, mask, 40, tokenizer.eos_token_id, banned, draft_tokens) == plain
            counts[draft_tokens] += len(forwards)
    assert counts[0] == 40 * len(copying) and (counts[8] < counts[0] or method == "prompt"), counts
    # a random model under its strong (x20) prefix falls into loops, where drafts from its own output are accepted
    decode = DecodeConfig(num_beams=1, max_new_tokens=16, batch_size=1)
    assert decode_prompts(lm, copying, decode) == decode_prompts(lm, copying, DecodeConfig(
        num_beams=1, max_new_tokens=16, batch_size=1, engine="hf"))


def test_no_repeat_ngram_bans_the_outputs_own_ngrams_not_the_prompts():
    from transformers import NoRepeatNGramLogitsProcessor

    from kg2text.generate import OutputNoRepeatNGram

    prompt = torch.tensor([[5, 6, 9, 5]])  # the prompt ends in 5 and holds "5 6": copying 6 next is allowed
    ours, scores = OutputNoRepeatNGram(2), torch.zeros(1, 12)
    assert torch.isinf(NoRepeatNGramLogitsProcessor(2)(prompt, scores.clone())[0, 6])  # transformers bans it
    assert not torch.isinf(ours(prompt, scores.clone())).any()
    banned = ours(torch.tensor([[5, 6, 9, 5, 7, 8, 7]]), scores.clone())  # output 7 8 7: 8 would repeat "7 8"
    assert torch.isinf(banned[0]).nonzero().flatten().tolist() == [8]


def test_no_repeat_ngram_leaves_no_repeated_bigram_in_the_output(backbone):
    """Greedy: a random tiny model loops, so its plain output repeats bigrams (beam search shares the processor)."""
    beams = 1
    lm = tuned(backbone, "prefix", seed=2)
    tokenizer = backbone.tokenizer

    def repeats(sentences):
        ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sentences]
        return sum(len(t) - 1 - len(set(zip(t, t[1:], strict=False))) for t in ids)

    plain = decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=40, batch_size=5))
    banned = decode_prompts(lm, PROMPTS, DecodeConfig(num_beams=beams, max_new_tokens=40, batch_size=5,
                                                      no_repeat_ngram_size=2))
    assert repeats(plain) > 0 and repeats(banned) == 0
