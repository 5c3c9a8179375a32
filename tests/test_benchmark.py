import json
from dataclasses import replace

import pytest

from kg2text.benchmark import PRESETS, run_benchmark, run_method
from kg2text.errors import UserError
from kg2text.report import targets

pytest.importorskip("peft")
pytest.importorskip("matplotlib")
pytestmark = pytest.mark.anchor


def test_tiny_benchmark_writes_report_tables_and_plots(tmp_path, capsys):
    preset = replace(PRESETS["tiny"], methods=("kg2text-prefix", "peft-prefix"), steps=2)
    data = run_benchmark("tiny", preset, tmp_path, "kg2text benchmark --preset tiny")
    out = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [r["method"] for r in saved["results"]] == ["kg2text-prefix", "peft-prefix"]
    for result in saved["results"]:
        assert set(result["quality"]["bleu"]) == {"all", "seen", "unseen"}
        assert result["quality"]["bleu"]["all"]["entries"] == 4
        assert result["train_tokens"] > 0 and result["train_tokens_per_s"] > 0 and result["peak_rss_mb"] > 100
        assert set(result["speed"]) == {"batch1_beam1", "batch32_beam1", "batch1_beam5", "batch32_beam5"}
        assert len((tmp_path / result["method"] / "hypotheses.txt").read_text().splitlines()) == 4
    ours = saved["results"][0]
    assert ours["trainable_params"] == 4 * 64 + 64 * 32 + 32 + 32 * (2 * 2 * 64) + 2 * 2 * 64
    assert ours["artifact_bytes"] == (tmp_path / "kg2text-prefix" / "run" / "prefix.safetensors").stat().st_size
    assert "| kg2text-prefix |" in report and "| peft-prefix |" in report
    assert "training throughput, kg2text / PEFT" in report and "Command: `kg2text benchmark --preset tiny`" in report
    for image in ("loss_curves.png", "bleu_vs_size.png", "bleu_by_triples.png", "seen_unseen.png"):
        assert (tmp_path / image).read_bytes()[:4] == b"\x89PNG"
    assert out.count("BLEU") == 2
    assert data["versions"]["peft"] != "not installed"


def test_targets_say_not_met_when_missed():
    def result(method, tok_s, sent_s, rss, bleu):
        keys = ("batch1_beam1", "batch32_beam1", "batch1_beam5", "batch32_beam5")
        speed = {k: {"sentences_per_s": sent_s, "words_per_s": 10 * sent_s} for k in keys}
        return {"method": method, "train_tokens_per_s": tok_s, "speed": speed, "peak_rss_mb": rss,
                "quality": {"bleu": {"all": {"bleu": bleu}}}}

    rows = "\n".join(targets([result("kg2text-prefix", 150, 3, 70, 30), result("peft-prefix", 100, 2, 100, 31)]))
    assert "| training throughput, kg2text / PEFT | 1.50× | ≥ 1.5× | met |" in rows
    assert "| generation batch1 beam1 (words/s), kg2text / PEFT | 1.50× | ≥ 2× | **not met** |" in rows
    assert "| peak memory, kg2text / PEFT | 0.70× | ≤ 0.8× | met |" in rows
    assert "| BLEU all, kg2text − PEFT | -1.00 | ≥ 0 | **not met** |" in rows


def test_preset_overrides_and_unknown_methods():
    from kg2text.benchmark import preset_for
    from kg2text.errors import UserError

    preset = preset_for("cpu-quick", "e2e", 5, 30, ["kg2text-prefix", "peft-prefix"])
    assert (preset.dataset, preset.steps, preset.eval_limit) == ("e2e", 5, 30)
    assert preset.methods == ("kg2text-prefix", "peft-prefix") and preset.backbone == "smollm2-135m"
    with pytest.raises(UserError, match="unknown method"):
        preset_for("cpu-quick", methods=["lora"])
    with pytest.raises(UserError, match="unknown preset"):
        preset_for("huge")


def test_benchmark_refuses_a_peft_model_whose_adapter_has_no_effect(tmp_path, monkeypatch):
    """What transformers 5.24.0 did to PEFT 0.21: generate runs the bare backbone. The row must not be scored."""
    import peft

    monkeypatch.setattr(peft.PeftModelForCausalLM, "generate",
                        lambda self, **kwargs: self.get_base_model().generate(**kwargs))
    with pytest.raises(UserError, match=r"PEFT .* with transformers .* decodes without its adapter"):
        run_method("peft-prefix", replace(PRESETS["tiny"], steps=1), tmp_path)
    assert not (tmp_path / "hypotheses.txt").exists()
