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

    def peft_greedy(text: str) -> str:
        ids = plain.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=plain.tokenizer.eos_token_id,
                             eos_token_id=plain.tokenizer.eos_token_id)
        return " ".join(plain.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).split())

    theirs = [peft_greedy(text) for text in PROMPTS]
    with model.disable_adapter():
        without_prefix = [peft_greedy(text) for text in PROMPTS]
    assert theirs == ours
    assert ours != without_prefix
