import json

import pytest
import torch

from kg2text.anchors import require_adapter_effect
from kg2text.artifact import save_prefix
from kg2text.backbones import load_backbone
from kg2text.cli import main
from kg2text.generate import DecodeConfig, decode_prompts, load_for_generation
from kg2text.methods import build_tuner

peft = pytest.importorskip("peft")

PROMPTS = [" | Harry Potter : education : Hogwarts <|endoftext|>",
           " | Alan Bean : nationality : United States <|endoftext|>"]


@pytest.mark.anchor
def test_peft_export_loads_and_decodes_like_kg2text(tmp_path, capsys):
    backbone = load_backbone("tiny-gpt2")
    tuner, config = build_tuner("prefix", backbone, 4, 32, None, seed=0)
    with torch.no_grad():
        prefix = tuner() * 20  # strong enough that the prefix decides what is said
    save_prefix(tmp_path / "run", prefix, backbone, {"method": "prefix", "format": "webnlg", "method_config": config})
    assert main(["export", "--format", "peft", str(tmp_path / "run"), str(tmp_path / "peft")]) == 0
    adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PREFIX_TUNING" and adapter["prefix_projection"] is False

    ours = decode_prompts(load_for_generation(tmp_path / "run").lm, PROMPTS,
                          DecodeConfig(num_beams=1, max_new_tokens=8))
    plain = load_backbone("tiny-gpt2")
    model = peft.PeftModel.from_pretrained(plain.model, str(tmp_path / "peft"))
    require_adapter_effect(model, plain)  # an upstream break that drops the prefix stops here, by name

    theirs, without_prefix = peft_greedy(model, plain)
    assert theirs == ours
    assert ours != without_prefix


def peft_greedy(model, backbone) -> tuple[list[str], list[str]]:
    """PEFT's own greedy outputs for PROMPTS, with and without its adapter."""
    def decode(text: str) -> str:
        ids = backbone.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=backbone.tokenizer.eos_token_id,
                             eos_token_id=backbone.tokenizer.eos_token_id)
        return " ".join(backbone.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).split())

    with_adapter = [decode(text) for text in PROMPTS]
    with model.disable_adapter():
        return with_adapter, [decode(text) for text in PROMPTS]


@pytest.mark.anchor
def test_peft_trained_prefix_reads_back_and_decodes_as_in_peft(tmp_path):
    """``kg2text train --trainer peft``: PEFT's MLP output, saved in kg2text's layout (grouped-query heads
    included), decodes in kg2text exactly as PEFT's own generate decodes its adapter."""
    run = tmp_path / "run"
    assert main(["train", "--trainer", "peft", "--backbone", "tiny-llama", "--max-steps", "6", "--batch-size", "4",
                 "--max-examples", "24", "--lr", "0.3", "--prefix-length", "4", "--mlp-hidden", "32",
                 "--log-every", "2", "--output", str(run)]) == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4, 6] and log[-1]["lr"] == 0.0
    loaded = load_for_generation(run)
    assert tuple(loaded.lm.prefix.shape) == (2, 2, 2, 4, 16)  # (layers, key/value, kv heads, P, head dim)
    ours = decode_prompts(loaded.lm, PROMPTS, DecodeConfig(num_beams=1, max_new_tokens=8))
    plain = load_backbone("tiny-llama")
    model = peft.PeftModel.from_pretrained(plain.model, str(run / "adapter"))
    ids = plain.tokenizer(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        their_logits = model(**ids).logits
        our_logits = loaded.lm.logits(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(our_logits, their_logits, rtol=0, atol=1e-4)
    theirs, without_prefix = peft_greedy(model, plain)
    assert theirs == ours
    assert ours != without_prefix


def test_peft_trainer_trains_with_the_backbone_in_the_asked_dtype(tmp_path):
    """``--trainer peft --dtype bfloat16`` compares like with like: PEFT's frozen weights are bf16 (its prefix
    MLP stays fp32), as kg2text's are with the same option."""
    from kg2text.anchors import train_peft_prefix
    from kg2text.training import TrainConfig

    backbone = load_backbone("tiny-llama")
    config = TrainConfig(output=str(tmp_path / "run"), backbone="tiny-llama", max_steps=2, batch_size=4,
                         max_examples=8, prefix_length=4, mlp_hidden=32, dtype="bfloat16", log_every=1)
    train_peft_prefix(config, backbone)
    assert backbone.model.get_input_embeddings().weight.dtype == torch.bfloat16
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    assert len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()) == 2
