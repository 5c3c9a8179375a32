"""Your own knowledge base: pair files, DART, dev-loss selection, --init-from, the Python API, evaluate modules."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kg2text
from kg2text.artifact import read_prefix
from kg2text.cli import main
from kg2text.data import Record, read_pair_file, read_records
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, generate_sentences, load_for_generation
from kg2text.methods import build_tuner
from kg2text.metrics import challenge_bleu, corpus_bleu, webnlg_coverage
from kg2text.training import TrainConfig, train

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "examples" / "hogwarts"
DART = Path(__file__).resolve().parent / "fixtures" / "dart"


def test_rows_with_the_same_input_are_one_entry_with_several_references(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [
        {"triples": [["Harry_Potter", "education", "Hogwarts"]], "text": "Harry Potter studied at Hogwarts."},
        {"input": "Luna_Lovegood | house | Ravenclaw", "texts": ["Luna was a Ravenclaw.", "Luna was in Ravenclaw."]},
        {"triples": [["Harry_Potter", "education", "Hogwarts"]], "texts": ["Harry went to Hogwarts."]},
    ]) + "\n")
    records, skipped = read_pair_file(path)
    assert skipped == []
    assert [r.items for r in records] == [(("Harry_Potter", "education", "Hogwarts"),),
                                          (("Luna_Lovegood", "house", "Ravenclaw"),)]
    assert records[0].references == ("Harry Potter studied at Hogwarts.", "Harry went to Hogwarts.")
    assert records[1].references == ("Luna was a Ravenclaw.", "Luna was in Ravenclaw.")


def test_e2e_csv_layout_and_skip_bad_count(tmp_path):
    path = tmp_path / "e2e.csv"
    path.write_text('mr,ref\n"name[A], area[B]",A is in B.\n"name[A], area[B]",In B is A.\nname[C,\n'
                    '"name[C], food[D]",C serves D.\n')
    with pytest.raises(UserError, match=r"e2e.csv:4: "):
        read_pair_file(path)
    records, skipped = read_pair_file(path, skip_bad=True)
    assert [r.items for r in records] == [(("name", "A"), ("area", "B")), (("name", "C"), ("food", "D"))]
    assert records[0].references == ("A is in B.", "In B is A.")
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}:4: ")


def test_dart_reader_reads_triples_references_and_source():
    records = read_records("dart", "dev", DART)
    assert len(records) == 3
    assert records[0].items == (("Hogwarts", "LOCATION", "Scotland"), ("Hogwarts", "TYPE", "school of magic"))
    assert records[0].references == ("Hogwarts is a school of magic in Scotland.",
                                     "Hogwarts, in Scotland, is a school of magic.")
    assert records[2].category == "WikiTableQuestions_mturk"
    assert len(read_records("dart", "train", DART)) == 2


def test_example_knowledge_base_has_forty_triples_and_a_reference_per_entry():
    triples = 0
    for split in ("train", "dev", "test"):
        records, skipped = read_pair_file(EXAMPLES / f"{split}.jsonl")
        assert skipped == [] and all(r.references and all(r.references) for r in records)
        triples += sum(len(r.items) for r in records)
    assert triples >= 40


def test_dev_file_keeps_the_prefix_of_the_lowest_dev_loss(tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--backbone", "tiny-gpt2", "--train-file", str(EXAMPLES / "train.jsonl"), "--dev-file",
                 str(EXAMPLES / "dev.jsonl"), "--max-steps", "8", "--eval-every", "2", "--batch-size", "4",
                 "--prefix-length", "3", "--mlp-hidden", "16", "--lr", "3e-2", "--output", str(out)])
    assert code == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    dev = [e for e in log if "dev_loss" in e]
    assert [e["step"] for e in dev] == [2, 4, 6, 8]
    best = min(dev, key=lambda e: e["dev_loss"])
    tensor, header = read_prefix(out)
    assert header["selected_by_dev_loss"]["step"] == best["step"]
    assert header["format"] == "webnlg" and not (out / "best.safetensors").exists()
    # the saved prefix really is that step's: its dev loss is the logged one
    from kg2text.backbones import load_backbone
    from kg2text.batching import training_examples
    from kg2text.linearize import get_format
    from kg2text.model import TunedLM
    from kg2text.training import dev_loss

    backbone = load_backbone("tiny-gpt2")
    examples = training_examples(read_pair_file(EXAMPLES / "dev.jsonl")[0], get_format("webnlg"), backbone, 3, 42)
    loss = dev_loss(TunedLM(backbone), "prefix", tensor, examples, 4, backbone.tokenizer.pad_token_id,
                    torch.device("cpu"))
    assert loss == pytest.approx(best["dev_loss"], abs=1e-4)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_init_from_starts_exactly_at_the_trained_tensor(trained_run, tiny_gpt2, tmp_path, method):
    if method == "prompt":
        run = tmp_path / "prompt"
        train(TrainConfig(output=str(run), backbone="tiny-gpt2", method="prompt", max_steps=2, max_examples=8,
                          batch_size=4, prefix_length=4, lr=1e-2))
    else:
        run = trained_run
    trained = read_prefix(run)[0]
    config = TrainConfig(output=str(tmp_path / "next"), backbone="tiny-gpt2", method=method, prefix_length=4,
                         mlp_hidden=32, init_from=str(run))
    from kg2text.training import trained_start

    tuner, _ = build_tuner(method, tiny_gpt2, 4, 32, None, 7, trained_start(config, tiny_gpt2))
    with torch.no_grad():
        assert torch.equal(tuner(), trained)


def test_python_api_generates_like_the_cli_from_tuples_strings_and_dicts(trained_run, capsys):
    verbalizer = kg2text.Verbalizer.load(trained_run, num_beams=1, max_new_tokens=6)
    inputs = [("Harry Potter", "education", "Hogwarts"), "Harry_Potter | education | Hogwarts",
              {"triples": [["Harry Potter", "education", "Hogwarts"]]},
              [("A", "b", "c"), ("D", "e", "f")]]
    sentences = verbalizer.generate(inputs)
    assert len(sentences) == 4 and sentences[0] == sentences[2]
    assert verbalizer(inputs[1]) == sentences[1]
    code = main(["generate", "--prefix", str(trained_run), "--num-beams", "1", "--max-new-tokens", "6",
                 "Harry Potter | education | Hogwarts", "Harry_Potter | education | Hogwarts", "A | b | c ; D | e | f"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out == [sentences[0], sentences[1], sentences[3]]
    with pytest.raises(UserError, match="input 1: triple 1 'A | b' has 2 field"):
        verbalizer.generate(["A | b"])


def test_python_api_evaluate_gives_both_bleus_and_faithfulness():
    records = [Record((("Harry_Potter", "education", "Hogwarts"),), ("Harry Potter studied at Hogwarts.",),
                      "School", True),
               Record((("Luna_Lovegood", "house", "Ravenclaw"),), ("Luna Lovegood was in Ravenclaw.",), "House", False)]
    hypotheses = ["Harry Potter studied at Hogwarts.", "Luna was a Ravenclaw."]
    scores = kg2text.evaluate(hypotheses, records)
    assert scores["bleu"]["seen"]["bleu"] == 100.0 and scores["bleu"]["unseen"]["entries"] == 1
    assert scores["bleu"]["all"]["bleu"] == round(corpus_bleu(hypotheses, [r.references for r in records]), 2)
    assert scores["bleu_challenge"]["all"]["bleu"] == round(challenge_bleu(hypotheses,
                                                                           [r.references for r in records]), 2)
    assert scores["entity_coverage"] == 75.0  # Luna_Lovegood is not in the second sentence
    plain = kg2text.evaluate(hypotheses, [r.references for r in records])
    assert set(plain["bleu"]) == {"all"} and "entity_coverage" not in plain


def test_evaluate_cli_scores_a_test_file(trained_run, tmp_path, capsys):
    code = main(["evaluate", "--prefix", str(trained_run), "--test-file", str(EXAMPLES / "test.jsonl"), "--num-beams",
                 "1", "--max-new-tokens", "6", "--output", str(tmp_path / "eval")])
    assert code == 0
    report = json.loads((tmp_path / "eval" / "scores.json").read_text())
    hypotheses = (tmp_path / "eval" / "hypotheses.txt").read_text().splitlines()
    records = read_pair_file(EXAMPLES / "test.jsonl")[0]
    assert report["entries"] == len(records) == len(hypotheses) == 8
    assert report["scores"]["all"]["bleu"] == round(corpus_bleu(hypotheses, [r.references for r in records]), 2)
    assert report["entity_coverage"] == round(webnlg_coverage(records, hypotheses), 2)
    assert "scores_challenge" in report and "challenge" in (tmp_path / "eval" / "scores.md").read_text()


def test_cli_and_api_use_the_same_decoding(trained_run):
    loaded = load_for_generation(trained_run)
    decode = DecodeConfig(num_beams=2, max_new_tokens=5)
    items = [(("A", "b", "c"),), (("Harry_Potter", "education", "Hogwarts"),)]
    verbalizer = kg2text.Verbalizer(loaded, decode)
    assert verbalizer.generate([list(i) for i in items]) == generate_sentences(loaded, items, decode)


def test_evaluate_modules_load_offline_and_combine(tmp_path):
    """``evaluate.load(kg2text.metric_path(...))`` with the Hub unreachable, in a fresh process and cache."""
    script = """
import json, evaluate, kg2text
bleu = evaluate.load(kg2text.metric_path("webnlg_bleu"))
both = evaluate.combine([bleu, evaluate.load(kg2text.metric_path("entity_coverage"))])
ser = evaluate.load(kg2text.metric_path("slot_error_rate"))
print(json.dumps([
    bleu.compute(predictions=["the cat sat on the mat", "HOGWARTS."],
                 references=[["the cat is on the mat", "a cat sat on the mat"], ["Harry studied at Hogwarts."]],
                 seen=[True, False]),
    both.compute(predictions=["Harry Potter studied at Hogwarts."], references=[["Harry Potter went to Hogwarts."]],
                 inputs=[[["Harry_Potter", "education", "Hogwarts"]]]),
    ser.compute(predictions=["Alimentum is in the city centre."], references=[["x"]],
                inputs=["name[Alimentum], area[city centre], food[French]"])]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    bleu, both, ser = json.loads(done.stdout.strip().splitlines()[-1])
    assert bleu["bleu_challenge"]["all"]["bleu"] == 84.09  # the hand-computed value of test_metrics.py
    assert bleu["bleu_challenge"]["seen"]["bleu"] == 84.09 and bleu["bleu_challenge"]["unseen"]["bleu"] == 0.0
    assert both["entity_coverage"] == 100.0 and "bleu_challenge" in both
    assert ser["slot_error_rate"] == pytest.approx(100 / 3)


def test_max_minutes_ends_on_time_with_the_learning_rate_decayed(tmp_path):
    out = tmp_path / "timed"
    started = time.perf_counter()
    code = main(["train", "--backbone", "tiny-gpt2", "--train-file", str(EXAMPLES / "train.jsonl"), "--max-minutes",
                 "0.03", "--warmup-steps", "2", "--batch-size", "4", "--prefix-length", "3", "--mlp-hidden", "16",
                 "--lr", "1e-2", "--log-every", "1", "--checkpoint-every", "0", "--output", str(out)])
    elapsed = time.perf_counter() - started
    assert code == 0 and read_prefix(out)[1]["train_config"]["max_minutes"] == 0.03
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["elapsed_s"] >= 1.8 and elapsed < 60  # stopped at the first step past 1.8 s
    assert log[0]["lr"] == pytest.approx(5e-3)  # warmup: half way after step 1 of 2
    # then the clock: step 2's rate is set by the time spent when step 1 ended (whatever this machine's speed)
    assert log[1]["lr"] == pytest.approx(1e-2 * (1 - log[0]["elapsed_s"] / 1.8), abs=1e-4)
    assert log[-2]["elapsed_s"] <= 1.8 <= log[-1]["elapsed_s"]  # the first step past the budget is the last
    assert log[-1]["lr"] == pytest.approx(1e-2 * (1 - log[-2]["elapsed_s"] / 1.8), abs=1e-4)  # decayed with the clock
    # from step 2 on the rate only falls, however few steps a loaded machine fits in the budget
    rates = [entry["lr"] for entry in log[1:]]
    assert len(rates) >= 2 and rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)


def test_python_api_trains_from_a_config_object(tmp_path):
    config = kg2text.TrainConfig(output=str(tmp_path / "api"), backbone="tiny-gpt2",
                                 train_file=str(EXAMPLES / "train.jsonl"), max_steps=2, batch_size=4,
                                 prefix_length=3, mlp_hidden=16, lr=1e-3)
    path = kg2text.train(config)
    tensor, header = read_prefix(tmp_path / "api")
    assert path == tmp_path / "api" / "prefix.safetensors" and tuple(tensor.shape)[3] == 3
    assert header["format"] == "webnlg" and header["train_config"]["train_file"].endswith("train.jsonl")
    assert kg2text.train(output=str(tmp_path / "fields"), backbone="tiny-gpt2",
                         train_file=str(EXAMPLES / "train.jsonl"), max_steps=1, batch_size=4, prefix_length=3,
                         mlp_hidden=16).exists()
    assert sorted(kg2text.__all__) == sorted(["DecodeConfig", "Record", "TrainConfig", "UserError", "Verbalizer",
                                              "evaluate", "metric_path", "read_pair_file", "train", "__version__"])
