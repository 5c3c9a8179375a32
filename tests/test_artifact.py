import json

import pytest
import torch
from safetensors import safe_open

from kg2text.artifact import ARTIFACT_RANK, PREFIX_FILE, check_compatible, read_header, read_prefix
from kg2text.backbones import load_backbone
from kg2text.errors import UserError
from kg2text.generate import load_for_generation
from kg2text.model import METHODS


def test_saved_file_holds_only_the_final_prefix(trained_run):
    path = trained_run / PREFIX_FILE
    with safe_open(path, "pt") as handle:
        assert list(handle.keys()) == ["prefix"]
        assert tuple(handle.get_tensor("prefix").shape) == (2, 2, 4, 4, 16)
        header = json.loads(handle.metadata()["kg2text"])
    assert header["backbone"] == "tiny-gpt2" and header["format"] == "webnlg"
    assert header["method"] == "prefix" and header["method_config"] == {"num_virtual_tokens": 4, "hidden": 32}
    tensor_bytes = 2 * 2 * 4 * 4 * 16 * 4  # fp32: no MLP, no backbone, only the final prefix
    assert tensor_bytes < path.stat().st_size < tensor_bytes + len(json.dumps(header)) + 512
    assert {p.name for p in trained_run.iterdir()} >= {"prefix.safetensors", "config.json", "train_log.jsonl"}


def test_round_trip_gives_identical_logits(trained_run):
    first = load_for_generation(trained_run)
    second = load_for_generation(trained_run)
    ids = torch.tensor([[91, 5850, 14179, 1058, 3707, 1058, 37332, 50256]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(first.lm.logits(ids, mask), second.lm.logits(ids, mask))
        first.lm.use("prefix", None)
        assert not torch.allclose(first.lm.logits(ids, mask), second.lm.logits(ids, mask))


def test_prefix_for_another_backbone_is_refused(trained_run):
    _, header = read_prefix(trained_run)
    with pytest.raises(UserError, match="trained for backbone 'tiny-gpt2'.*not 'tiny-llama'"):
        check_compatible(header, load_backbone("tiny-llama"), trained_run)


def test_edited_or_truncated_file_is_refused(trained_run, tmp_path):
    data = (trained_run / PREFIX_FILE).read_bytes()
    (tmp_path / PREFIX_FILE).write_bytes(data[:-7])
    with pytest.raises(UserError, match="truncated|does not match"):
        read_prefix(tmp_path)
    edited = bytearray(data)
    edited[-3] ^= 0xFF
    (tmp_path / PREFIX_FILE).write_bytes(bytes(edited))
    with pytest.raises(UserError, match="does not match its own header"):
        read_prefix(tmp_path)


def test_the_header_alone_reads_as_with_the_prefix_and_a_damaged_file_is_refused(trained_run, tmp_path):
    assert read_header(trained_run) == read_prefix(trained_run)[1]
    (tmp_path / PREFIX_FILE).write_bytes((trained_run / PREFIX_FILE).read_bytes()[:40])
    with pytest.raises(UserError, match="is not a readable safetensors prefix"):
        read_header(tmp_path)
    assert set(ARTIFACT_RANK) == set(METHODS)  # the header check knows a method by its artifact's rank
