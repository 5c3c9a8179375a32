import io
import json
import os
import subprocess
import sys

import pytest

from kg2text.cli import main


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def gen(run_dir, *extra):
    return ["generate", "--prefix", run_dir, "--num-beams", "1", "--max-new-tokens", "6", *extra]


def test_generate_one_and_several_triples(trained_run, capsys):
    code, out, _ = run(gen(trained_run, "Harry_Potter | education | Hogwarts",
                           "Harry_Potter | education | Hogwarts ; Harry_Potter | house | Gryffindor"), capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)


def test_generate_from_text_jsonl_and_stdin(trained_run, tmp_path, capsys, monkeypatch):
    text = tmp_path / "in.txt"
    text.write_text("A | b | c\n\nD | e | f ; G | h | i\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"triples": [["A; x", "b|y", "c"]]}) + "\n" + json.dumps({"input": "D | e | f"}) + "\n")
    code, out, _ = run(gen(trained_run, "--input", text), capsys)
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = run(gen(trained_run, "--input", jsonl, "--jsonl"), capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["input"] for r in rows] == [jsonl.read_text().splitlines()[0], '{"input": "D | e | f"}']
    code, out, _ = run(gen(trained_run), capsys, stdin="A | b | c\nD | e | f\nG | h | i\n", monkeypatch=monkeypatch)
    assert code == 0 and len(out.splitlines()) == 3


@pytest.mark.parametrize("argv, message", [
    (["A | b"], "input 1: triple 1 'A | b' has 2 field(s)"),
    ([""], "input 1: empty input"),
    (["--input", "{tmp}/missing.txt"], "cannot read --input"),
    (["--input", "{tmp}"], "is a folder"),
    (["--input", "{tmp}/bad.jsonl"], "bad.jsonl:2: not valid JSON"),
    (["--input", "{tmp}/empty.txt"], "no usable inputs (the file is empty)"),
    (["--backbone", "tiny-llama", "A | b | c"], "trained for backbone 'tiny-gpt2'"),
    (["--rerank", "A | b | c"], "--rerank chooses among the beam's sentences: it needs --num-beams 2 or more"),
])
def test_bad_generate_input_gets_one_clear_line(trained_run, tmp_path, capsys, argv, message):
    (tmp_path / "bad.jsonl").write_text('{"input": "A | b | c"}\n{not json\n')
    (tmp_path / "empty.txt").write_text("")
    code, out, err = run(gen(trained_run, *[a.format(tmp=tmp_path) for a in argv]), capsys)
    assert code == 2 and out == ""
    assert err.startswith("kg2text: error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_rerank_never_mentions_fewer_entities_than_the_best_beam(trained_run, capsys):
    from kg2text.linearize import parse_triples
    from kg2text.metrics import mentions_found

    inputs = ["Harry_Potter | education | Hogwarts ; Harry_Potter | house | Gryffindor", "A | b | c"]
    beam = ["generate", "--prefix", trained_run, "--num-beams", "4", "--max-new-tokens", "8", *inputs]
    _, best, _ = run(beam, capsys)
    code, reranked, _ = run([*beam, "--rerank"], capsys)
    assert code == 0 and len(reranked.splitlines()) == 2
    for line, plain, chosen in zip(inputs, best.splitlines(), reranked.splitlines(), strict=True):
        assert mentions_found(parse_triples(line), chosen)[0] >= mentions_found(parse_triples(line), plain)[0]


def test_missing_prefix_folder(tmp_path, capsys):
    code, _, err = run(["generate", "--prefix", tmp_path / "nope", "A | b | c"], capsys)
    assert code == 2 and "no trained prefix at" in err


def test_unknown_backbone_writes_nothing(tmp_path, capsys):
    code, _, err = run(["train", "--backbone", "no-such-model", "--output", tmp_path / "run"], capsys)
    assert code == 2 and "unknown backbone 'no-such-model'" in err
    assert not (tmp_path / "run").exists()


def test_train_refuses_to_overwrite_a_finished_run(trained_run, capsys):
    before = (trained_run / "prefix.safetensors").read_bytes()
    code, _, err = run(["train", "--backbone", "tiny-gpt2", "--output", trained_run, "--max-steps", "1"], capsys)
    assert code == 2 and "already holds a trained prefix" in err
    assert (trained_run / "prefix.safetensors").read_bytes() == before


def test_evaluate_writes_scores_for_all_seen_unseen(trained_run, tmp_path, capsys):
    code, out, _ = run(["evaluate", "--prefix", trained_run, "--limit", "6", "--num-beams", "1",
                        "--max-new-tokens", "4", "--output", tmp_path / "eval"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert report["entries"] == 6
    assert set(report["scores"]) == {"all", "seen", "unseen"}
    assert report["scores"]["seen"]["entries"] + report["scores"]["unseen"]["entries"] == 6
    assert len((tmp_path / "eval" / "hypotheses.txt").read_text().splitlines()) == 6
    assert "| unseen |" in (tmp_path / "eval" / "scores.md").read_text()
    assert "BLEU    all:" in out


def test_one_base_model_serves_several_task_prefixes_in_one_batch(trained_run, e2e_run, capsys):
    decode = ["--num-beams", "2", "--max-new-tokens", "6"]
    inputs = ["webnlg:: Harry_Potter | education | Hogwarts", "e2e:: name[Alimentum], area[city centre]",
              "webnlg:: Alan_Bean | nationality | United_States"]
    code, out, _ = run(["generate", "--prefix", f"webnlg={trained_run}", "--prefix", f"e2e={e2e_run}",
                        "--jsonl", *decode, *inputs], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["task"] for r in rows] == ["webnlg", "e2e", "webnlg"]
    _, alone_webnlg, _ = run(["generate", "--prefix", trained_run, *decode,
                              "Harry_Potter | education | Hogwarts", "Alan_Bean | nationality | United_States"], capsys)
    _, alone_e2e, _ = run(["generate", "--prefix", e2e_run, *decode, "name[Alimentum], area[city centre]"], capsys)
    assert [rows[0]["output"], rows[2]["output"]] == alone_webnlg.splitlines()
    assert [rows[1]["output"]] == alone_e2e.splitlines()
    code, _, err = run(["generate", "--prefix", f"webnlg={trained_run}", "--prefix", f"e2e={e2e_run}",
                        "A | b | c"], capsys)
    assert code == 2 and "each input starts with its task" in err


def test_evaluate_rescores_given_hypotheses_without_a_model(tmp_path, capsys, monkeypatch):
    """``--hypotheses``: E2E's own scores (NIST, ROUGE-L, CIDEr, SER) for sentences decoded elsewhere; the
    decoding facts of an earlier scores.json in that folder are kept; a wrong line count is one clear line."""
    from kg2text.data import evenly_spaced, read_records
    from kg2text.metrics import e2e_slot_error_rate

    monkeypatch.setattr("kg2text.commands._load", lambda args: pytest.fail("no model should load"))
    records = evenly_spaced(read_records("e2e", "test"), 4)
    (tmp_path / "hypotheses.txt").write_text("".join(r.references[0] + "\n" for r in records))
    (tmp_path / "scores.json").write_text(json.dumps({"decode_seconds": 12.5, "command": "kg2text evaluate X"}))
    assert main(["evaluate", "--dataset", "e2e", "--limit", "4", "--hypotheses", str(tmp_path / "hypotheses.txt")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["entries"] == 4 and scores["scores"]["all"]["bleu"] > 90
    assert scores["rouge_l"] == 100.0  # (the slot error rate of human references is not 0: they paraphrase)
    assert scores["slot_error_rate"] == round(e2e_slot_error_rate(records, [r.references[0] for r in records]), 2)
    assert scores["nist"] > 3 and scores["cider"] > 3
    assert scores["decode_seconds"] == 12.5 and scores["decode_command"] == "kg2text evaluate X"
    capsys.readouterr()
    assert main(["evaluate", "--dataset", "e2e", "--limit", "5", "--hypotheses", str(tmp_path / "hypotheses.txt")]) == 2
    assert "4 lines for 5 entries" in capsys.readouterr().err


BAD_INPUTS = {  # command line -> the start of its error
    "generate 'Harry_Potter | education'": "kg2text: error: input 1: triple 1 'Harry_Potter | education' has 2 "
                                           "field(s)",
    "generate --input missing.txt": "kg2text: error: cannot read --input missing.txt",
    "generate --prefix webnlg=webnlg --prefix e2e=e2e 'A | b | c'": "kg2text: error: input 1: with several prefixes "
                                                                      "each input starts with its task",
    "evaluate --test-file missing.jsonl": "kg2text: error: cannot read missing.jsonl",
}


def test_a_bad_input_is_refused_before_transformers_is_imported(tmp_path):
    """A typo costs reading the prefix file's header, not seconds of importing transformers and loading the
    backbone. One fresh interpreter (this one has transformers loaded) runs each command line in turn, on the shipped
    prefixes, in a folder without the files named."""
    probe = ("import shlex, sys; from kg2text.cli import main\n"
             "for line in sys.argv[1:]: print(main(shlex.split(line)), file=sys.stderr)\n"
             "print('transformers' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", probe, *BAD_INPUTS], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.stdout == "False\n", result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 2 * len(BAD_INPUTS) and lines[1::2] == ["2"] * len(BAD_INPUTS)
    assert all(line.startswith(start) for line, start in zip(lines[::2], BAD_INPUTS.values(), strict=True)), lines
