from dataclasses import replace

import pytest
import torch

from kg2text.backbones import load_backbone
from kg2text.batching import collate, encode_examples, width_multiple
from kg2text.data import Record
from kg2text.generate import DecodeConfig, decode_prompts
from kg2text.linearize import FORMATS, model_prompt
from kg2text.model import HEAD_CHUNK_ROWS, IGNORE_INDEX, ChunkedHeadLoss, TunedLM
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


def test_the_chunked_lm_head_loss_gives_cross_entropy_and_its_gradient_without_the_whole_logits():
    torch.manual_seed(0)
    weight, bias = torch.randn(300, 16), torch.randn(300)
    rows = torch.randn(150, 16, requires_grad=True)  # two full chunks of 64 and a padded one of 22
    targets = torch.randint(0, 300, (150,))
    chunked = ChunkedHeadLoss.apply(rows, weight, bias, targets, True)
    (grad,) = torch.autograd.grad(3 * chunked, rows)
    plain = torch.nn.functional.cross_entropy(torch.nn.functional.linear(rows, weight, bias), targets,
                                              reduction="sum")
    (expected,) = torch.autograd.grad(3 * plain, rows)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(grad, expected, atol=1e-5)
    with torch.no_grad():
        assert ChunkedHeadLoss.apply(rows, weight, bias, targets, False).item() == pytest.approx(plain.item(), rel=1e-6)


def test_bf16_training_takes_the_chunked_head_and_eager_attention_and_matches_the_plain_loss_and_gradient():
    backbone = load_backbone("tiny-gpt2")
    backbone.model.to(torch.bfloat16)
    examples = list(encode_examples([(r, r.references[0]) for r in RECORDS * 12], FORMATS["webnlg"], backbone, 200))
    batch = collate(examples, backbone.tokenizer.pad_token_id)
    lm = TunedLM(backbone)
    shape = PrefixShape.of(backbone.model)
    prefix = (torch.randn(shape.layers, 2, shape.kv_heads, 3, shape.head_dim) * 0.5).requires_grad_()
    lm.use("prefix", prefix)
    head = backbone.model.get_output_embeddings()
    calls = []
    handle = head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    loss, count = lm.target_loss(**batch)
    (grad,) = torch.autograd.grad(loss, prefix)
    handle.remove()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        lm.use("prefix", prefix.float())
        backbone.model.float()
        hidden = lm.hidden_states(batch["input_ids"], batch["attention_mask"])[:, :-1]
    where = batch["labels"][:, 1:] != IGNORE_INDEX
    plain = torch.nn.functional.cross_entropy(head(hidden[where]), batch["labels"][:, 1:][where])
    (expected,) = torch.autograd.grad(plain, prefix)
    assert count == int(where.sum()) > 2 * HEAD_CHUNK_ROWS and calls == []  # the head module itself never ran
    assert loss.item() == pytest.approx(plain.item(), rel=2e-2)
    assert torch.nn.functional.cosine_similarity(grad.flatten().float(), expected.flatten(), dim=0) > 0.98


@pytest.mark.parametrize("kind", ["linear", "conv1d"])
def test_the_training_onednn_linear_gives_the_product_and_the_inputs_gradient_and_leaves_the_weight_frozen(kind):
    from transformers.pytorch_utils import Conv1D

    from kg2text.hardware import TrainingOneDnnLinear

    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40) if kind == "linear" else Conv1D(40, 24)
    torch.nn.init.normal_(layer.bias)
    layer.requires_grad_(False)
    x = torch.randn(3, 7, 24, requires_grad=True)
    weights = torch.randn(3, 7, 40)
    (layer(x) * weights).sum().backward()
    expected, x.grad = x.grad, None
    through = TrainingOneDnnLinear.of(layer)
    out = through(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    (out * weights).sum().backward()
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)
    assert layer.weight.grad is None
    with torch.no_grad():
        torch.testing.assert_close(through(x), layer(x), rtol=1e-5, atol=1e-5)


def test_fp32_training_through_onednn_swaps_the_layers_linears_for_the_run_and_trains_the_same_prefix(tmp_path,
                                                                                                     monkeypatch):
    import kg2text.training
    from kg2text.artifact import read_prefix
    from kg2text.hardware import onednn_training_linears
    from kg2text.training import TrainConfig, train

    backbone = load_backbone("tiny-llama")
    modules = dict(backbone.model.named_modules())
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):  # what the model's layers are while the loop runs
        seen.append(sorted({type(m).__name__ for n, m in backbone.model.named_modules() if n.endswith("_proj")}))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    prefixes = {}
    for faster in (False, True):
        monkeypatch.setattr(kg2text.training, "onednn_is_faster", lambda *args, faster=faster, **kwargs: faster)
        run = tmp_path / str(faster)
        train(TrainConfig(output=str(run), backbone="tiny-llama", max_steps=4, batch_size=3, max_examples=12,
                          prefix_length=4, mlp_hidden=32, checkpoint_every=0), backbone=backbone)
        prefixes[faster] = read_prefix(run)[0]
    assert seen == [["Linear"]] * 4 + [["TrainingOneDnnLinear"]] * 4
    assert dict(backbone.model.named_modules()) == modules  # the model's own modules back, the same objects
    torch.testing.assert_close(prefixes[True], prefixes[False], rtol=1e-4, atol=1e-5)
    with onednn_training_linears(backbone.model) as swapped:
        assert swapped == 7 * backbone.model.config.num_hidden_layers
        assert backbone.model.get_output_embeddings() is modules["lm_head"]


def test_the_fp32_matmuls_choice_is_made_once_recorded_in_the_run_and_kept_by_a_resume(tmp_path, monkeypatch):
    """A resumed run must multiply as it began (bit for bit), whatever a new measurement would say; a run written
    before the choice existed trained through torch's matmuls and resumes so."""
    import json

    import kg2text.training
    from kg2text.errors import UserError
    from kg2text.training import TrainConfig, fp32_matmuls_here, train

    backbone = load_backbone("tiny-llama")
    monkeypatch.setattr(kg2text.training, "onednn_is_faster", lambda *args, **kwargs: True)
    run = tmp_path / "run"
    train(TrainConfig(output=str(run), backbone="tiny-llama", max_steps=2, batch_size=3, max_examples=12,
                      prefix_length=4, mlp_hidden=32, checkpoint_every=1), backbone=backbone)
    assert json.loads((run / "config.json").read_text())["fp32_matmuls"] == "onednn"
    monkeypatch.setattr(kg2text.training, "onednn_is_faster", lambda *args, **kwargs: False)
    assert TrainConfig.from_run(run).fp32_matmuls == "onednn"
    config = TrainConfig(output="", backbone="tiny-llama")
    assert fp32_matmuls_here(config, backbone, torch.device("cpu")) == "torch"
    assert fp32_matmuls_here(replace(config, fp32_matmuls="onednn"), backbone, torch.device("cpu")) == "onednn"
    assert fp32_matmuls_here(replace(config, dtype="bfloat16"), backbone, torch.device("cpu")) == "torch"
    saved = json.loads((run / "config.json").read_text())
    del saved["fp32_matmuls"]
    (run / "config.json").write_text(json.dumps(saved))
    assert TrainConfig.from_run(run).fp32_matmuls == "torch"
    for bad in (replace(config, fp32_matmuls="onednn", compile=True), replace(config, fp32_matmuls="mkl")):
        with pytest.raises(UserError, match="--fp32-matmuls"):
            bad.validate()
