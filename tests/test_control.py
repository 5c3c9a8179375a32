"""Control prefixes: a shared prefix plus one short prefix per category, chosen by each input's category."""

import json
import runpy
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kg2text.artifact import header_digest, read_prefix, tensor_digest
from kg2text.control import (
    GENERAL,
    ControlConfig,
    ControlPrefixEncoder,
    category_rows,
    compact_controls,
    control_categories,
    expand_controls,
    training_rows,
)
from kg2text.data import read_records
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, decode_prompts, generate_sentences, load_for_generation
from kg2text.linearize import get_format, model_prompt
from kg2text.model import TunedLM
from kg2text.prefix import PrefixShape
from kg2text.training import TrainConfig, check_config_unchanged, train


def test_categories_general_first_and_unknown_ones_fall_back_to_it():
    categories = control_categories(["Food", "", "Airport", "Food"])
    assert categories == (GENERAL, "Airport", "Food")
    assert category_rows(categories, ["Food", "Politician", "", "Airport"]) == [2, 0, 0, 1]
    assert training_rows(categories, ["Food"] * 6 + ["Airport"] * 4) == [0, 2, 2, 2, 2, 0, 1, 1, 1, 1]


def test_every_category_prefix_starts_with_the_same_shared_prefix(tiny_gpt2):
    shape = PrefixShape.of(tiny_gpt2.model)
    encoder = ControlPrefixEncoder(ControlConfig(4, 3, 16, ("", "A", "B")), shape, tiny_gpt2.model.config.hidden_size)
    stack = encoder()
    assert stack.shape == (3, shape.layers, 2, shape.kv_heads, 7, shape.head_dim)
    assert torch.equal(stack[0, ..., :4, :], stack[2, ..., :4, :])
    assert not torch.allclose(stack[1, ..., 4:, :], stack[2, ..., 4:, :])
    flat = encoder.encoder()  # positions: 4 shared, then 3 for each category in order
    assert torch.equal(stack[2, ..., 4:, :], flat[..., 4 + 2 * 3: 4 + 3 * 3, :])


def test_a_control_run_saves_one_prefix_per_training_category(control_run, tiny_gpt2):
    tensor, header = read_prefix(control_run)
    trained = {r.category for r in read_records("webnlg", "train")}
    categories = header["method_config"]["categories"]
    assert header["method"] == "control" and categories[0] == GENERAL and set(categories[1:]) <= trained
    shape = PrefixShape.of(tiny_gpt2.model)
    assert tuple(tensor.shape) == (len(categories), shape.layers, 2, shape.kv_heads, 6, shape.head_dim)
    log = [json.loads(line) for line in (control_run / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3]


def test_each_input_decodes_with_its_categorys_prefix(control_run):
    loaded = load_for_generation(control_run)
    categories = loaded.categories
    stack = loaded.lm.prefix * 20  # large enough that the categories' prefixes say different things
    loaded.lm.use("control", stack, torch.zeros(1, dtype=torch.long))
    record = read_records("webnlg", "test")[0]
    wanted = [categories[1], "NoSuchCategory", categories[-1]]
    decode = DecodeConfig(num_beams=2, max_new_tokens=8)
    sentences = generate_sentences(loaded, [record.items] * 3, decode, categories=wanted)
    assert loaded.lm.rows.tolist() == [1, 0, len(categories) - 1]
    prompt = model_prompt(get_format(loaded.header["format"]).linearize(record.items), loaded.backbone.separator)
    alone = TunedLM(loaded.backbone)
    for row, sentence in zip(loaded.lm.rows.tolist(), sentences, strict=True):
        alone.use("prefix", stack[row])  # the category's full prefix as a plain prefix decodes the same
        assert decode_prompts(alone, [prompt], decode) == [sentence]
    assert len({sentences[0], sentences[1], sentences[2]}) > 1


def test_evaluate_passes_each_records_category(control_run, tmp_path):
    from kg2text.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--prefix", str(control_run), "--dataset", "webnlg", "--split", "test", "--limit", "4",
                 "--num-beams", "1", "--max-new-tokens", "4", "--output", str(out)]) == 0
    assert len((out / "hypotheses.txt").read_text().splitlines()) == 4


def test_control_needs_categories_and_refuses_init_from(tmp_path):
    with pytest.raises(UserError, match="needs inputs of several categories .* have restaurant"):
        train(TrainConfig(output=str(tmp_path / "e2e"), backbone="tiny-gpt2", method="control", dataset="e2e",
                          split="dev", max_steps=1, max_examples=8, prefix_length=2, mlp_hidden=16))
    with pytest.raises(UserError, match="--init-from is not available for --method control"):
        TrainConfig(output=str(tmp_path / "x"), method="control", init_from=str(tmp_path)).validate()


def test_a_checkpoint_from_before_control_length_existed_still_resumes(tmp_path):
    config = TrainConfig(output=str(tmp_path))
    older = {k: v for k, v in asdict(config).items() if k != "control_length"}
    check_config_unchanged(config, older, Path("config.json"))
    with pytest.raises(UserError, match="lr: 5e-05 -> 0.001"):
        check_config_unchanged(TrainConfig(output=str(tmp_path), lr=1e-3), older, Path("config.json"))


def test_the_file_stores_the_shared_prefix_once_and_loads_the_full_stack(control_run, tiny_gpt2):
    tensor, header = read_prefix(control_run)
    config = header["method_config"]
    count, shared, own = len(config["categories"]), config["num_virtual_tokens"], config["control_tokens"]
    shape = PrefixShape.of(tiny_gpt2.model)
    assert header["format_version"] == 3
    assert header["shape"] == [shape.layers, 2, shape.kv_heads, shared + count * own, shape.head_dim]
    stored = load_file(control_run / "prefix.safetensors")["prefix"]
    assert torch.equal(expand_controls(stored, shared, count), tensor)
    assert torch.equal(compact_controls(tensor, shared), stored)
    assert torch.equal(tensor[0, ..., :shared, :], tensor[-1, ..., :shared, :])


def test_a_format_2_control_file_with_one_full_prefix_per_category_still_loads(control_run, tmp_path):
    tensor, header = read_prefix(control_run)
    old = {**header, "format_version": 2, "shape": list(tensor.shape), "sha256": tensor_digest(tensor)}
    old["header_sha256"] = header_digest(old)
    (tmp_path / "old").mkdir()
    save_file({"prefix": tensor.contiguous()}, tmp_path / "old" / "prefix.safetensors",
              metadata={"kg2text": json.dumps(old)})
    again, _ = read_prefix(tmp_path / "old")
    assert torch.equal(again, tensor)
    loaded = load_for_generation(tmp_path / "old")
    assert torch.equal(loaded.lm.prefix, tensor.to(loaded.lm.prefix.dtype))
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "compact_control.py"), run_name="compact")
    (tmp_path / "new").mkdir()
    shutil.copy(tmp_path / "old" / "prefix.safetensors", tmp_path / "new")
    assert "-> [" in script["compact"](tmp_path / "new")
    rewritten, new_header = read_prefix(tmp_path / "new")
    assert new_header == header and torch.equal(rewritten, tensor)  # what training saves now, digests included
    assert "left as it is" in script["compact"](tmp_path / "new")
    old["shape"][-2] += 1  # a stack whose positions do not fit the header's lengths
    old["header_sha256"] = header_digest(old)
    save_file({"prefix": tensor.contiguous()}, tmp_path / "old" / "prefix.safetensors",
              metadata={"kg2text": json.dumps(old)})
    with pytest.raises(UserError, match="does not list one category per control prefix"):
        read_prefix(tmp_path / "old")


def test_generate_category_picks_that_control_prefix_and_is_refused_without_one(control_run, capsys, tmp_path):
    from kg2text.cli import main

    loaded = load_for_generation(control_run)
    record = read_records("webnlg", "test")[0]
    trained = loaded.categories[-1]
    text = " ; ".join(" | ".join(triple) for triple in record.items)
    args = ["generate", "--prefix", str(control_run), "--num-beams", "1", "--max-new-tokens", "6", text]
    assert main([*args, "--category", trained]) == 0
    assert capsys.readouterr().out.splitlines() == generate_sentences(
        loaded, [record.items], DecodeConfig(num_beams=1, max_new_tokens=6), categories=[trained])
    assert main([*args, "--category", "Politician"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == generate_sentences(loaded, [record.items],
                                                           DecodeConfig(num_beams=1, max_new_tokens=6))
    assert f"not trained on category 'Politician', so its general control prefix serves it (trained: " \
           f"{', '.join(loaded.categories[1:])})" in captured.err
    assert main(["generate", "--prefix", "webnlg", "--category", "Food", text]) == 2
    assert "--category chooses a control prefix of one --method control run, not of webnlg, a prefix run" \
        in capsys.readouterr().err


def test_verbalizer_category_picks_that_control_prefix_and_is_refused_without_one(control_run):
    from kg2text import Verbalizer

    verbalizer = Verbalizer.load(control_run, num_beams=1, max_new_tokens=6)
    record = read_records("webnlg", "test")[0]
    trained = verbalizer.loaded.categories[-1]
    decode = DecodeConfig(num_beams=1, max_new_tokens=6)
    assert verbalizer.generate([record.items], category=trained) == generate_sentences(
        verbalizer.loaded, [record.items], decode, categories=[trained])
    assert verbalizer(record.items) == generate_sentences(verbalizer.loaded, [record.items], decode)[0]
    assert verbalizer.loaded.lm.rows.tolist() == [0]  # no category: the general control prefix
    plain = Verbalizer(replace(verbalizer.loaded, headers={"x": {**verbalizer.loaded.header, "method": "prefix"}}),
                       decode)  # the same tensors, a header without categories
    with pytest.raises(UserError, match=r"category: 'Food' chooses a control prefix; the loaded prefix has none "
                                        r"\(only a --method control run has them\)"):
        plain.generate([record.items], category="Food")


def test_serve_decodes_each_requests_category_with_its_control_prefix(control_run):
    from fastapi.testclient import TestClient

    from kg2text import Verbalizer
    from kg2text.serve import ServeLimits, create_app

    verbalizer = Verbalizer.load(control_run, num_beams=1, max_new_tokens=8)
    stack = verbalizer.loaded.lm.prefix * 20  # large enough that the categories' prefixes say different things
    verbalizer.loaded.lm.use("control", stack, torch.zeros(1, dtype=torch.long))
    trained = verbalizer.loaded.categories[1:]
    line = "Harry_Potter | education | Hogwarts"
    with TestClient(create_app(verbalizer, ServeLimits(batch_window_s=0.2))) as client:
        assert client.get("/info").json()["categories"] == trained
        answers = {category: client.post("/generate", json={"inputs": [line, line], "category": category}).json()
                   for category in (trained[0], trained[-1], "NoSuchCategory", "")}
    for category, body in answers.items():
        assert body["sentences"] == verbalizer.generate([line, line], category=category)
    assert answers["NoSuchCategory"] == answers[""]  # a category the run did not train: the general prefix
    assert answers[trained[0]] != answers[trained[-1]]
