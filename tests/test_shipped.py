"""Prefixes shipped inside the package (kg2text/prefixes/): found by task name, the default of generate."""

import shutil

import pytest

from kg2text import artifact
from kg2text.cli import main

HARRY = "Harry_Potter | education | Hogwarts"


@pytest.fixture
def shipped(trained_run, tmp_path, monkeypatch):
    """A package folder whose shipped 'webnlg' prefix is the tiny test run's."""
    folder = tmp_path / "prefixes"
    folder.mkdir()
    shutil.copy(trained_run / artifact.PREFIX_FILE, folder / "webnlg.safetensors")
    monkeypatch.setattr(artifact, "SHIPPED_DIR", folder)
    monkeypatch.chdir(tmp_path)
    return folder


def test_generate_without_prefix_uses_the_shipped_webnlg_prefix(shipped, trained_run, capsys):
    decode = ["--num-beams", "1", "--max-new-tokens", "6"]
    assert main(["generate", "--prefix", str(trained_run), *decode, HARRY]) == 0
    from_run = capsys.readouterr().out
    assert main(["generate", *decode, HARRY]) == 0
    assert capsys.readouterr().out == from_run and from_run.strip()
    assert main(["generate", "--prefix", "webnlg", *decode, HARRY]) == 0
    assert capsys.readouterr().out == from_run


def test_an_unknown_name_lists_the_shipped_prefixes(shipped, capsys):
    assert main(["generate", "--prefix", "dart", HARRY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no trained prefix at dart" in err and "shipped prefix name (webnlg)" in err


def test_a_folder_of_the_same_name_wins_over_the_shipped_prefix(shipped, tmp_path, capsys):
    (tmp_path / "webnlg").mkdir()
    assert main(["generate", "--prefix", "webnlg", HARRY]) == 2
    assert "no trained prefix at webnlg" in capsys.readouterr().err


def test_evaluate_with_a_shipped_prefix_writes_under_eval(shipped, tmp_path, capsys):
    assert main(["evaluate", "--dataset", "webnlg", "--split", "test", "--limit", "3", "--num-beams", "1",
                 "--max-new-tokens", "4"]) == 0
    assert (tmp_path / "eval" / "webnlg-webnlg-test-3" / "scores.json").is_file()
    assert not (tmp_path / "webnlg").exists()  # which would shadow the shipped prefix next time


@pytest.mark.parametrize("name", sorted(artifact.shipped_prefixes()))
def test_each_shipped_prefix_is_a_small_fp16_smollm2_prefix(name):
    tensor, header = artifact.read_prefix(artifact.shipped_prefixes()[name])
    assert header["backbone"] == "smollm2-135m" and tensor.dtype.is_floating_point
    assert str(tensor.dtype) == "torch.float16" and tuple(tensor.shape) == (30, 2, 3, 10, 64)
    assert artifact.shipped_prefixes()[name].stat().st_size < 300_000
    assert header["format"] == name  # webnlg / e2e linearization
