import pytest
import torch

from kg2text.backbones import load_backbone
from kg2text.batching import collate, encode_examples, width_multiple
from kg2text.data import Record
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.linearize import FORMATS, model_prompt
from kg2text.model import IGNORE_INDEX, TunedLM
from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape

RECORDS = [
    Record((("Harry_Potter", "education", "Hogwarts"),), ("Harry Potter studied at Hogwarts.",)),
    Record((("Alan_Bean", "nationality", "United_States"),), ("Alan Bean is American.",)),
]


def test_prefix_overfits_a_handful_of_examples_and_greedy_reproduces_them():
    torch.manual_seed(0)
    backbone = load_backbone("tiny-gpt2")
    lm = TunedLM(backbone)
    examples = encode_examples([(r, r.references[0]) for r in RECORDS], FORMATS["webnlg"], backbone, 200)
    batch = collate(list(examples), backbone.tokenizer.pad_token_id)
    encoder = PrefixEncoder(PrefixConfig(8, 64), PrefixShape.of(backbone.model), 64)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        lm.use("prefix", encoder())
        loss, _ = lm.target_loss(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses[::20]
    with torch.no_grad():
        lm.use("prefix", encoder())
    prompts = [model_prompt(FORMATS["webnlg"].linearize(r.items), backbone.separator) for r in RECORDS]
    greedy = decode_prompts(lm, prompts, DecodeConfig(num_beams=1, max_new_tokens=20))
    beam = decode_prompts(lm, prompts, DecodeConfig(num_beams=3, max_new_tokens=20))
    assert greedy == ["Harry Potter studied at Hogwarts.", "Alan Bean is American."]
    assert beam == greedy


def test_bf16_batches_are_padded_to_a_multiple_of_8_and_the_padding_does_not_change_the_loss():
    backbone = load_backbone("tiny-gpt2")
    examples = list(encode_examples([(r, r.references[0]) for r in RECORDS], FORMATS["webnlg"], backbone, 200))
    longest = max(len(row["input_ids"]) for row in examples)
    plain = collate(examples, backbone.tokenizer.pad_token_id, width_multiple("float32"))
    rounded = collate(examples, backbone.tokenizer.pad_token_id, width_multiple("bfloat16"))
    assert plain["input_ids"].shape == (2, longest)
    assert rounded["input_ids"].shape == (2, -(-longest // 8) * 8) and rounded["input_ids"].shape[1] > longest
    assert rounded["attention_mask"].sum() == plain["attention_mask"].sum()
    assert (rounded["labels"][:, longest:] == IGNORE_INDEX).all()
    lm = TunedLM(backbone)
    with torch.no_grad():
        lm.use("prefix", PrefixEncoder(PrefixConfig(4, 32), PrefixShape.of(backbone.model), 64)())
        assert lm.target_loss(**rounded)[0].item() == pytest.approx(lm.target_loss(**plain)[0].item(), rel=1e-5)


def test_the_training_loop_pads_bf16_batches_to_multiples_of_8_and_logs_its_peak_memory(tmp_path, monkeypatch):
    import json

    import kg2text.training
    from kg2text.training import TrainConfig, train

    widths = {}
    real_collate = kg2text.training.collate

    def spy(rows, pad_id, multiple=1):
        batch = real_collate(rows, pad_id, multiple)
        widths.setdefault(run, []).append(batch["input_ids"].shape[1])
        return batch

    monkeypatch.setattr(kg2text.training, "collate", spy)
    for run, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        train(TrainConfig(output=str(tmp_path / run), backbone="tiny-gpt2", max_steps=6, batch_size=3, max_examples=30,
                          prefix_length=4, mlp_hidden=32, dtype=dtype, log_every=3, checkpoint_every=0))
    assert all(width % 8 == 0 for width in widths["bf16"]), widths["bf16"]
    assert any(width % 8 for width in widths["fp32"]), widths["fp32"]
    log = [json.loads(line) for line in (tmp_path / "bf16" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [3, 6] and all(entry["peak_rss_mb"] > 50 for entry in log)


def test_a_bf16_lm_head_runs_on_rows_padded_to_64_and_the_loss_is_the_unpadded_one():
    backbone = load_backbone("tiny-gpt2")
    backbone.model.to(torch.bfloat16)
    examples = list(encode_examples([(r, r.references[0]) for r in RECORDS], FORMATS["webnlg"], backbone, 200))
    batch = collate(examples, backbone.tokenizer.pad_token_id)
    lm = TunedLM(backbone)
    lm.use("prefix", None)
    head = backbone.model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        loss, count = lm.target_loss(**batch)
        hidden = lm.hidden_states(batch["input_ids"], batch["attention_mask"])[:, :-1]
        where = batch["labels"][:, 1:] != IGNORE_INDEX
        unpadded = torch.nn.functional.cross_entropy(head(hidden[where]).float(), batch["labels"][:, 1:][where])
    handle.remove()
    assert count == int(where.sum()) < 64 and seen == [64, count]
    assert loss.item() == pytest.approx(unpadded.item(), rel=1e-2)
