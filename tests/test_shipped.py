"""Prefixes shipped inside the package (kg2text/prefixes/): found by task name, the default of generate."""

import json
import shutil
from pathlib import Path

import pytest

from kg2text import artifact
from kg2text.cli import main

HARRY = "Harry_Potter | education | Hogwarts"
ROOT = Path(__file__).resolve().parent.parent


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
    length = header["train_config"]["prefix_length"]  # WebNLG's 40 (scored best), E2E's 10
    assert str(tensor.dtype) == "torch.float16" and tuple(tensor.shape) == (30, 2, 3, length, 64)
    assert artifact.shipped_prefixes()[name].stat().st_size < 2 * tensor.numel() + 4096  # fp16 and a small header
    assert (name, length) in (("webnlg", 40), ("e2e", 10))
    assert header["format"] == name  # webnlg / e2e linearization


@pytest.mark.parametrize(("name", "run", "minutes", "length"),
                         [("webnlg", "p40/webnlg", 60, 40), ("e2e", "e2e-average/e2e", 8, 10)])
def test_each_shipped_prefix_is_its_release_run(name, run, minutes, length):
    """The README's shipped-prefix figures are those of the release run in results/release/RUN: the prefix must be
    that run's, byte for byte."""
    shipped = artifact.shipped_prefixes()[name]
    _, header = artifact.read_prefix(shipped)
    config = json.loads((ROOT / f"results/release/{run}/config.json").read_text())
    trained = header["train_config"]
    assert {k: v for k, v in trained.items() if k != "output"} == {k: v for k, v in config.items() if k != "output"}
    assert trained["max_minutes"] == minutes and trained["prefix_length"] == length
    assert shipped.read_bytes() == (ROOT / f"results/release/{run}/prefix.safetensors").read_bytes()


def _scored_run(folder, dataset: str, bleu: float, minutes: float, hypotheses: list[str] | None = None,
                dtype: str = "bfloat16") -> None:
    """A run folder as scripts/release.sh leaves it: scores.json, config.json, train_log.jsonl."""
    import json

    folder.mkdir(parents=True)
    groups = ("all", "seen", "unseen") if dataset == "webnlg" else ("all",)
    scores = {"dataset": dataset, "entries": 1862 if dataset == "webnlg" else 630,
              "scores": {g: {"bleu": bleu - i} for i, g in enumerate(groups)},
              "scores_challenge": {g: {"bleu": bleu + 2 - i} for i, g in enumerate(groups)},
              "chrf++": 60.0, "entity_coverage": 80.0, "slot_error_rate": 20.0, "nist": 7.5, "rouge_l": 60.0,
              "cider": 1.5, "decode": {"num_beams": 5}, "decode_seconds": 600, "command": "kg2text evaluate",
              "machine": {"model": "test CPU", "cores": 2, "flags": ["avx2"]}}
    (folder / "scores.json").write_text(json.dumps(scores))
    (folder / "config.json").write_text(json.dumps({"max_minutes": minutes, "lr": 5e-4, "format": None,
                                                    "dtype": dtype}))
    (folder / "train_log.jsonl").write_text(json.dumps({"step": 100, "tokens": 5000, "tokens_per_s": 250.0,
                                                        "loss": 0.9}) + "\n")
    if hypotheses:
        (folder / "hypotheses.txt").write_text("\n".join(hypotheses) + "\n")


def test_release_report_has_the_issues_schema_and_says_which_targets_are_met(tmp_path):
    """report.json holds webnlg/e2e/peft/train_minutes in the agreed shape; the release runs are re-scored on
    the exploration's slice from their own sentences (here: the first reference, so BLEU near 100)."""
    import json

    from kg2text.data import read_records
    from kg2text.report import reference_slot_error_rate, write_release_report

    references = [r.references[0] for r in read_records("webnlg", "test")]
    _scored_run(tmp_path / "webnlg", "webnlg", 50.0, 60, references)
    _scored_run(tmp_path / "e2e", "e2e", 62.0, 8)
    _scored_run(tmp_path / "peft-webnlg", "webnlg", 47.0, 60, ["x"] * len(references))
    _scored_run(tmp_path / "40min" / "webnlg", "webnlg", 53.0, 40, references[:-2] + ["x", "x"])
    _scored_run(tmp_path / "peft-e2e", "e2e", 60.0, 8)
    for trainer, bleu in (("e2e", 64.0), ("peft-e2e", 61.0)):  # the shipped WebNLG prefix's recipe on E2E (e2e40)
        _scored_run(tmp_path / "e2e40" / trainer, "e2e", bleu, 8)
    _scored_run(tmp_path / "fp32" / "webnlg", "webnlg", 44.0, 40, references[:-1] + ["x"], dtype="float32")
    _scored_run(tmp_path / "fp32" / "peft-webnlg", "webnlg", 43.0, 40, ["x"] * len(references), dtype="float32")

    def reranked(folder, bleu, length_penalty=1.0):
        _scored_run(tmp_path / folder, "webnlg", bleu, 60, references)
        scores = json.loads((tmp_path / folder / "scores.json").read_text())
        scores["decode"] |= {"rerank": True, "length_penalty": length_penalty}
        (tmp_path / folder / "scores.json").write_text(json.dumps(scores))

    def compiled(folder, minutes=60, **changes):
        (tmp_path / folder / "config.json").write_text(json.dumps(
            {"max_minutes": minutes, "lr": 5e-4, "format": None, "dtype": "bfloat16", "compile": True} | changes))

    for trainer, bleu in (("webnlg", 54.0), ("peft-webnlg", 51.0)):  # the main pair decoded with --rerank
        reranked(f"rerank/{trainer}", bleu)
    for trainer, bleu in (("webnlg", 55.0), ("peft-webnlg", 52.5)):  # the shipped prefix's pair, with --compile
        _scored_run(tmp_path / "amx60" / trainer, "webnlg", bleu, 60, references)
        compiled(f"amx60/{trainer}")
    reranked("rerank/amx60/webnlg", 56.5)  # the shipped prefix decoded with --rerank; its PEFT anchor not
    compiled("rerank/amx60/webnlg")
    reranked("dev-chosen/webnlg", 57.0, length_penalty=1.5)  # scripts/dev_decoding.sh's test decode
    compiled("dev-chosen/webnlg")
    for trainer, bleu in (("webnlg", 56.0), ("peft-webnlg", 55.0)):  # the prefix of length 40 and its anchor
        _scored_run(tmp_path / "p40" / trainer, "webnlg", bleu, 60, references[:-3] + ["x"] * 3)
        compiled(f"p40/{trainer}", prefix_length=40)
    _scored_run(tmp_path / "explore" / "p40-10min", "webnlg", 46.0, 10)  # its recipe at 10 minutes: the curve
    compiled("explore/p40-10min", minutes=10, prefix_length=40)
    _scored_run(tmp_path / "explore" / "words-10min", "webnlg", 45.0, 10)
    (tmp_path / "explore" / "words-10min" / "config.json").write_text(
        json.dumps({"max_minutes": 10, "lr": 5e-4, "format": "webnlg-words", "dtype": "bfloat16"}))
    for name in ("p40-10min", "words-10min"):  # the exploration's slice: 40 entries
        scores = json.loads((tmp_path / "explore" / name / "scores.json").read_text())
        scores["entries"] = 40
        (tmp_path / "explore" / name / "scores.json").write_text(json.dumps(scores))

    for name, penalty, bleu in (("base", 1.0, 60.0), ("lp1.5", 1.5, 61.5)):  # scripts/dev_decoding.sh's settings
        scores = {"entries": 300, "decode": {"length_penalty": penalty, "rerank": False, "no_repeat_ngram_size": 0},
                  "scores": {"all": {"bleu": bleu - 2}}, "scores_challenge": {"all": {"bleu": bleu}},
                  "entity_coverage": 85.0}
        (tmp_path / "dev-decoding" / name).mkdir(parents=True)
        (tmp_path / "dev-decoding" / name / "scores.json").write_text(json.dumps(scores))

    for name, bleu, steps, length in (("recipe", 57.5, 2008, 10), ("p40", 60.6, 1981, 40)):  # gpu_sweep.sh's runs
        folder = tmp_path / "gpu-sweep" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"max_minutes": 7, "max_steps": 3000, "lr": 5e-4,
                                                        "batch_size": 8, "prefix_length": length}))
        (folder / "train_log.jsonl").write_text(json.dumps({"step": steps, "tokens": 9, "tokens_per_s": 9.0,
                                                            "loss": 0.8}) + "\n")
        (folder / "scores.json").write_text(json.dumps({"entries": 300, "decode": {"num_beams": 5},
                                                        "scores": {"all": {"bleu": bleu - 2}},
                                                        "scores_challenge": {"all": {"bleu": bleu}},
                                                        "entity_coverage": 85.0}))

    report = write_release_report(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [(r["name"], r["changes"], r["sentences"]) for r in saved["gpu_sweep"]] == [
        ("p40", "prefix_length 40", 15848), ("recipe", "the recipe", 16064)]  # best on dev first
    assert [r["name"] for r in saved["dev_decoding"]] == ["lp1.5", "base"]  # best first
    assert saved["webnlg"]["entries"] == 1862 and saved["webnlg"]["num_beams"] == 5
    assert saved["webnlg"]["bleu"] == {"all": 50.0, "seen": 49.0, "unseen": 48.0}
    assert saved["webnlg"]["bleu_challenge"] == {"all": 52.0, "seen": 51.0, "unseen": 50.0}
    assert saved["webnlg"]["chrf"] == 60.0 and saved["webnlg"]["coverage"] == 80.0
    assert saved["e2e"]["bleu"] == 62.0 and saved["e2e"]["ser"] == 20.0 and saved["e2e"]["cider"] == 1.5
    assert saved["peft"]["webnlg"]["bleu_challenge"]["all"] == 49.0 and saved["peft"]["e2e"]["bleu"] == 60.0
    assert saved["train_minutes"] == 60 and saved["dtype"] == "bfloat16"
    assert saved["e2e_prefix_40"]["kg2text"]["bleu"] == 64.0 and saved["e2e_prefix_40"]["peft"]["bleu"] == 61.0
    assert saved["fp32_backbone"]["kg2text"]["bleu_challenge"]["all"] == 46.0
    assert saved["fp32_backbone"]["peft"]["bleu"]["unseen"] == 41.0
    assert list(saved["forty_minutes"]) == ["kg2text"]  # no PEFT 40-minute run in this folder
    assert saved["forty_minutes"]["kg2text"]["bleu_challenge"] == {"all": 55.0, "seen": 54.0, "unseen": 53.0}
    reranked = saved["reranked"]
    assert reranked["kg2text"]["bleu_challenge"]["all"] == 56.0 and reranked["peft"]["bleu"]["all"] == 51.0
    rows = {r["name"]: r for r in report["exploration"]}
    assert rows["words-10min"]["changes"] == "format webnlg-words"
    assert rows["rerank/webnlg"]["changes"] == "decoded with --rerank"  # so not a point of the curve below
    assert rows["webnlg"]["entries"] == 40 and rows["webnlg"]["bleu"] > 95  # its first references, on the slice
    assert rows["peft-webnlg"]["bleu"] < 1 and rows["fp32/peft-webnlg"]["changes"] == "dtype float32"
    assert rows["fp32/webnlg"]["bleu"] > 95 and rows["fp32/webnlg"]["changes"] == "dtype float32"
    assert rows["40min/webnlg"]["changes"] == "the recipe" and rows["40min/webnlg"]["bleu"] > 90
    p40 = "prefix length 40, --compile, bfloat16 backbone"
    assert rows["p40/webnlg"]["changes"] == "prefix_length 40, compile True"
    assert rows["p40/peft-webnlg"]["trainer"] == "peft"  # so not a point of the curve
    assert [(p["minutes"], p["series"], p["all"]) for p in report["curve"]] == [
        (10, p40, 48.0),  # explore/p40-10min's own scores: 46 + 2
        (40, "bfloat16 backbone", rows["40min/webnlg"]["bleu_challenge"]["all"]),
        (40, "float32 backbone", rows["fp32/webnlg"]["bleu_challenge"]["all"]),
        (60, p40, rows["p40/webnlg"]["bleu_challenge"]["all"]),
        (60, "bfloat16 backbone", rows["webnlg"]["bleu_challenge"]["all"])]
    md = (tmp_path / "report.md").read_text()
    assert ("- +2 BLEU-A over PEFT at the same budget (the shipped prefix: length 40, ranked first on dev by the GPU "
            "sweep; 60 minutes with --compile): 58.00 vs 57.00 (+1.00), **not met**") in md
    assert "- WebNLG challenge BLEU-A >= 55: 52.00, **not met**" in md
    assert "- +2 BLEU-A over PEFT at the same budget: 52.00 vs 49.00 (+3.00), **met**" in md
    assert "- WebNLG challenge BLEU-A >= 55 (both decoded with --rerank): 56.00, **met**" in md
    assert "- +2 BLEU-A over PEFT at the same budget (both decoded with --rerank): 56.00 vs 53.00 (+3.00)" in md
    assert ("- +2 BLEU-A over PEFT at the same budget (the AMX prefix: 60 minutes with --compile on an AMX Xeon, "
            "PEFT trained the same way there): 57.00 vs 54.50 (+2.50), **met**") in md
    assert rows["amx60/peft-webnlg"]["changes"] == "compile True" and rows["amx60/peft-webnlg"]["trainer"] == "peft"
    assert rows["rerank/amx60/webnlg"]["changes"] == "compile True, decoded with --rerank"
    assert list(saved["amx_compiled_reranked"]) == ["kg2text"]
    assert rows["dev-chosen/webnlg"]["changes"] == "compile True, length penalty 1.5, decoded with --rerank"
    assert "| kg2text, 60 minutes, AMX Xeon, --compile, decoding chosen on dev | webnlg | 1,862 | 57.00 /" in md
    assert "- WebNLG challenge BLEU-A >= 55 (the AMX prefix decoded with the settings best on dev): 59.00" in md
    assert "| kg2text, 60 minutes, AMX Xeon, --compile, --rerank | webnlg | 1,862 | 56.50 / 55.50 / 54.50 |" in md
    assert "- WebNLG challenge BLEU-A >= 55 (the AMX prefix decoded with --rerank): 58.50, **met**" in md
    assert "over PEFT at the same budget (the AMX prefix decoded with --rerank)" not in md  # no PEFT run to compare
    assert "| kg2text, --rerank | webnlg | 1,862 | 54.00 / 53.00 / 52.00 |" in md
    assert "| kg2text, 40 minutes | webnlg | 1,862 | 53.00 / 52.00 / 51.00 |" in md
    assert "| PEFT, 40 minutes |" not in md
    assert "| kg2text, 8 minutes, prefix length 40, --compile | e2e | 630 | 64.00 | – |" in md
    assert "| PEFT, 8 minutes, prefix length 40, --compile | e2e | 630 | 61.00 | – |" in md
    assert not any(name.startswith("e2e40") for name in rows)  # E2E runs are not scored on WebNLG's slice
    assert "| kg2text, fp32 backbone | webnlg | 1,862 | 44.00 / 43.00 / 42.00 | 46.00 / 45.00 / 44.00 |" in md
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert "Machine: test CPU, 2 cores (avx2)." in md
    assert "| lp1.5 | 1.5 | no | 0 | 61.50 | 59.50 | 85.00% | 300 |\n| base | 1 | no | 0 | 60.00 |" in md
    assert "| p40 | prefix_length 40 | 1,981 | 15,848 | 0.800 | 60.60 | 58.60 | 85.00% | 300 |\n| recipe |" in md
    assert f"first references, scored the same way, miss {reference_slot_error_rate():.2f}% of their slots" in md
