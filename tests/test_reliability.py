"""Bad input never costs a traceback: one clear line naming the file/line/field, exit code 2.

Every case here is listed in tests/README.md.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kg2text.cli import main
from kg2text.data import parse_e2e_csv, parse_webnlg_xml
from kg2text.errors import UserError
from kg2text.linearize import FORMATS, format_triples, parse_mr, parse_triples
from kg2text.training import TrainConfig, train

GOOD_XML = ('<benchmark><entries><entry category="Airport" eid="Id1" size="1"><modifiedtripleset>'
            '<mtriple>A | b | C</mtriple></modifiedtripleset><lex comment="good" lid="Id1">A b C.</lex>'
            '</entry></entries></benchmark>')

# (case id, generate arguments after --prefix RUN, files to write {name: bytes}, expected message)
GENERATE_CASES = [
    ("two-fields", ["A | b"], {}, "input 1: triple 1 'A | b' has 2 field(s)"),
    ("four-fields", ["A | b | c | d"], {}, "has 4 field(s)"),
    ("empty-subject", [" | b | c"], {}, "has an empty subject"),
    ("empty-predicate", ["A |  | c"], {}, "has an empty predicate"),
    ("empty-object", ["A | b | "], {}, "has an empty object"),
    ("stray-separator-end", ["A | b | c ;"], {}, "triple 2 '' has 1 field(s)"),
    ("double-separator", ["A | b | c ;; D | e | f"], {}, "triple 2 '' has 1 field(s)"),
    ("empty-string", [""], {}, "input 1: empty input"),
    ("only-whitespace", ["   \t "], {}, "input 1: empty input"),
    ("inputs-and-file", ["A | b | c", "--input", "{tmp}/ok.txt"], {"ok.txt": b"A | b | c\n"}, "not both"),
    ("missing-file", ["--input", "{tmp}/nope.txt"], {}, "cannot read --input"),
    ("directory", ["--input", "{tmp}"], {}, "is a folder"),
    ("empty-file", ["--input", "{tmp}/empty.txt"], {"empty.txt": b""}, "the file is empty"),
    ("blank-lines-only", ["--input", "{tmp}/blank.txt"], {"blank.txt": b"\n  \n\n"}, "the file is empty"),
    ("non-utf8", ["--input", "{tmp}/latin1.txt"], {"latin1.txt": "Caf\xe9 | b | c\n".encode("latin-1")},
     "latin1.txt: not UTF-8 text (byte 3)"),
    ("nul-byte", ["--input", "{tmp}/nul.txt"], {"nul.txt": b"A | b | c\nA\x00 | b | c\n"}, "nul.txt:2: contains a NUL"),
    ("bad-line-in-file", ["--input", "{tmp}/bad.txt"], {"bad.txt": b"A | b | c\nA | b\n"}, "bad.txt:2: triple 1"),
    ("jsonl-not-json", ["--input", "{tmp}/a.jsonl"], {"a.jsonl": b'{"input": "A | b | c"}\n{oops\n'},
     "a.jsonl:2: not valid JSON"),
    ("jsonl-not-object", ["--input", "{tmp}/b.jsonl"], {"b.jsonl": b"[1, 2]\n"}, "b.jsonl:1: expected a JSON object"),
    ("jsonl-triples-not-list", ["--input", "{tmp}/c.jsonl"], {"c.jsonl": b'{"triples": "A | b | c"}\n'},
     "c.jsonl:1: field 'triples' must be a non-empty list"),
    ("jsonl-triples-empty", ["--input", "{tmp}/d.jsonl"], {"d.jsonl": b'{"triples": []}\n'},
     "field 'triples' must be a non-empty list"),
    ("jsonl-triple-two-fields", ["--input", "{tmp}/e.jsonl"], {"e.jsonl": b'{"triples": [["A", "b"]]}\n'},
     "e.jsonl:1: field 'triples', triple 1: expected a list of 3 strings"),
    ("jsonl-triple-not-strings", ["--input", "{tmp}/f.jsonl"], {"f.jsonl": b'{"triples": [["A", 1, "c"]]}\n'},
     "triple 1: expected a list of 3 strings"),
    ("jsonl-triple-empty-field", ["--input", "{tmp}/g.jsonl"], {"g.jsonl": b'{"triples": [["A", " ", "c"]]}\n'},
     "triple 1: has an empty field"),
    ("jsonl-no-known-field", ["--input", "{tmp}/h.jsonl"], {"h.jsonl": b'{"text": "A | b | c"}\n'},
     "needs a 'triples' list, or an 'mr' or 'input' string"),
    ("jsonl-bad-input-field", ["--input", "{tmp}/i.jsonl"], {"i.jsonl": b'{"input": "A | b"}\n'},
     "i.jsonl:1: triple 1 'A | b' has 2 field(s)"),
    ("csv-no-column", ["--input", "{tmp}/a.csv"], {"a.csv": b"x,y\n1,2\n"}, "expected a header with an 'mr' or"),
    ("csv-unbalanced-quote", ["--input", "{tmp}/b.csv"], {"b.csv": b'input\n"A | b | c\nD | e | f\n'},
     "b.csv:3: unbalanced quotes"),
    ("xml-not-well-formed", ["--input", "{tmp}/a.xml"], {"a.xml": b"<benchmark><entries><entry>"},
     "a.xml: not well-formed XML"),
    ("xml-bad-triple", ["--input", "{tmp}/b.xml"], {"b.xml": GOOD_XML.replace("A | b | C", "A | b").encode()},
     "b.xml: entry Id1: triple 1 'A | b' has 2 field(s)"),
    ("xml-no-triples", ["--input", "{tmp}/c.xml"], {"c.xml": b'<benchmark><entry eid="Id7"></entry></benchmark>'},
     "c.xml: entry Id7 has no <mtriple>"),
    ("too-long-for-context", ["A | b | " + "word " * 300], {}, "more than tiny-gpt2's 256"),
    ("unknown-task", ["--input", "{tmp}/t.txt"], {"t.txt": b"nope:: A | b | c\n"}, None),  # single task: parsed as text
]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case, args, files, message", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_bad_generate_input(trained_run, tmp_path, capsys, case, args, files, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    argv = ["generate", "--prefix", trained_run, "--num-beams", "1", "--max-new-tokens", "4"]
    code, out, err = _run(argv + [a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    if message is None:  # a ':: ' inside a single-task input is just text
        assert code == 0 and len(out.splitlines()) == 1
        return
    assert code == 2, (out, err)
    assert err.startswith("kg2text: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


E2E_CASES = [
    ("mr-unbalanced-bracket", "name[Alimentum", "is malformed at character 1"),
    ("mr-empty-value", "name[]", "slot 'name' has an empty value"),
    ("mr-no-slot-name", "name[A], [B]", "an item has no slot name"),
    ("mr-plain-words", "a nice place", "is malformed"),
    ("mr-stray-comma", "name[A],, area[B]", "is malformed"),
]


@pytest.mark.parametrize("case, text, message", E2E_CASES, ids=[c[0] for c in E2E_CASES])
def test_bad_e2e_meaning_representation(e2e_run, capsys, case, text, message):
    code, _, err = _run(["generate", "--prefix", e2e_run, "--num-beams", "1", "--max-new-tokens", "4", text], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_skip_bad_keeps_the_valid_lines(trained_run, tmp_path, capsys):
    (tmp_path / "mixed.txt").write_text("A | b | c\nA | b\nD | e | f\n\n | x | y\nG | h | i\n")
    code, out, err = _run(["generate", "--prefix", trained_run, "--num-beams", "1", "--max-new-tokens", "4",
                           "--skip-bad", "--input", tmp_path / "mixed.txt"], capsys)
    assert code == 0 and len(out.splitlines()) == 3
    assert "skipped 2 bad input(s), kept 3; first: " in err and "mixed.txt:2:" in err


TRAIN_CASES = [
    ("unknown-backbone", ["train", "--backbone", "nope", "--output", "{tmp}/r"], "unknown backbone 'nope'"),
    ("output-is-a-file", ["train", "--backbone", "tiny-gpt2", "--output", "{tmp}/file"], "exists and is not a folder"),
    ("output-unwritable", ["train", "--backbone", "tiny-gpt2", "--output", "{tmp}/file/sub"], "cannot write to"),
    ("absurd-lr", ["train", "--backbone", "tiny-gpt2", "--lr", "1000", "--output", "{tmp}/r"], "not a sensible"),
    ("zero-batch", ["train", "--backbone", "tiny-gpt2", "--batch-size", "0", "--output", "{tmp}/r"], "at least 1"),
    ("unknown-format", ["train", "--backbone", "tiny-gpt2", "--format", "yaml", "--output", "{tmp}/r"],
     "unknown linearization format 'yaml'"),
    ("e2e-train-not-shipped", ["train", "--backbone", "tiny-gpt2", "--dataset", "e2e", "--output", "{tmp}/r"],
     "the E2E train set is not shipped"),
    ("data-dir-missing", ["train", "--backbone", "tiny-gpt2", "--data-dir", "{tmp}/none", "--output", "{tmp}/r"],
     "is not a folder"),
    ("resume-nothing", ["train", "--output", "{tmp}/r", "--resume"], "config.json is missing"),
    ("xml-without-references", ["evaluate", "--prefix", "{run}", "--data-dir", "{tmp}/xml", "--split", "test"],
     "entry Id1 has no <lex> reference sentence"),
    ("csv-without-mr", ["evaluate", "--prefix", "{run}", "--dataset", "e2e", "--data-dir", "{tmp}/csv"],
     "missing 'mr' column"),
    ("pairs-no-reference", ["train", "--backbone", "tiny-gpt2", "--train-file", "{tmp}/noref.jsonl", "--output",
                            "{tmp}/r"], "noref.jsonl:2: no reference sentence"),
    ("pairs-empty-field", ["train", "--backbone", "tiny-gpt2", "--train-file", "{tmp}/empty.jsonl", "--output",
                           "{tmp}/r"], "empty.jsonl:1: field 'triples', triple 1: has an empty field"),
    ("pairs-not-an-object", ["train", "--backbone", "tiny-gpt2", "--train-file", "{tmp}/list.jsonl", "--output",
                             "{tmp}/r"], "list.jsonl:1: expected a JSON object"),
    ("pairs-csv-without-column", ["train", "--backbone", "tiny-gpt2", "--train-file", "{tmp}/nocol.csv", "--output",
                                  "{tmp}/r"], "nocol.csv: line 1: expected an input column"),
    ("pairs-empty-csv-reference", ["train", "--backbone", "tiny-gpt2", "--train-file", "{tmp}/noref.csv",
                                   "--output", "{tmp}/r"], "noref.csv:3: empty reference in column 'ref'"),
    ("dart-without-annotations", ["train", "--backbone", "tiny-gpt2", "--dataset", "dart", "--data-dir", "{tmp}/dart",
                                  "--output", "{tmp}/r"], "dart-v1.1.1-full-train.json: entry 2: has no 'annotations'"),
    ("dart-not-shipped", ["train", "--backbone", "tiny-gpt2", "--dataset", "dart", "--output", "{tmp}/r"],
     "DART is not shipped"),
    ("test-file-in-another-format", ["evaluate", "--prefix", "{run}", "--test-file", "{tmp}/mr.jsonl"],
     "its inputs are not in the prefix's format (webnlg)"),
    ("init-from-another-length", ["train", "--backbone", "tiny-gpt2", "--init-from", "{run}", "--prefix-length", "7",
                                  "--output", "{tmp}/r"], "has 4 virtual tokens; train with --prefix-length 4"),
]

PAIR_FILES = {
    "noref.jsonl": '{"triples": [["A", "b", "C"]], "text": "A b C."}\n{"triples": [["D", "e", "F"]]}\n',
    "empty.jsonl": '{"triples": [["A", "b", ""]], "text": "A b."}\n',
    "list.jsonl": '[["A", "b", "C"], "A b C."]\n',
    "nocol.csv": "subject,sentence\nA,A b C.\n",
    "noref.csv": 'mr,ref\n"name[A], area[B]",A is in B.\n"name[C]",\n',
    "mr.jsonl": '{"mr": "name[A], area[B]", "text": "A is in B."}\n',
    "dart/dart-v1.1.1-full-train.json": '[{"tripleset": [["A", "b", "C"]], "annotations": [{"source": "WTQ", '
                                        '"text": "A b C."}]}, {"tripleset": [["D", "e", "F"]]}]',
}


@pytest.mark.parametrize("case, argv, message", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_and_evaluate_arguments(trained_run, tmp_path, capsys, case, argv, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "xml" / "test").mkdir(parents=True)
    (tmp_path / "xml" / "test" / "testdata_with_lex.xml").write_text(GOOD_XML.replace(
        '<lex comment="good" lid="Id1">A b C.</lex>', ""))
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "testset_w_refs.csv").write_text("meaning,ref\nx,y\n")
    (tmp_path / "dart").mkdir()
    for name, content in PAIR_FILES.items():
        (tmp_path / name).write_text(content)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(trained_run)) for a in argv]
    code, _, err = _run(args, capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not (tmp_path / "r" / "prefix.safetensors").exists()


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    code, _, err = _run(["train", "--backbone", "tiny-gpt2", "--max-steps", "1", "--output", tmp_path / "r"], capsys)
    assert code == 2 and "MB free at" in err
    assert not (tmp_path / "r" / "train_log.jsonl").exists() and not (tmp_path / "r" / "config.json").exists()


def test_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from kg2text import model

    real = model.TunedLM.target_loss
    calls = []

    def poisoned(self, *args, **kwargs):
        loss, count = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), count) if len(calls) == 5 else (loss, count)

    monkeypatch.setattr(model.TunedLM, "target_loss", poisoned)
    config = TrainConfig(output=str(tmp_path / "r"), backbone="tiny-gpt2", max_steps=8, max_examples=40, batch_size=4,
                         prefix_length=4, mlp_hidden=16, lr=1e-3, checkpoint_every=2)
    with pytest.raises(UserError, match="the loss became nan at step 5"):
        train(config)
    assert (tmp_path / "r" / "latest_checkpoint").read_text() == "checkpoint-4"
    assert not (tmp_path / "r" / "prefix.safetensors").exists()


def test_a_checkpoint_pointer_outside_the_run_folder_is_not_followed(tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"output": str(run), "backbone": "tiny-gpt2", "max_steps": 2}))
    (run / "latest_checkpoint").write_text("../elsewhere")
    code, _, err = _run(["train", "--output", run, "--resume"], capsys)
    assert code == 2 and "is not a complete checkpoint in" in err


def test_a_foreign_safetensors_file_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    (tmp_path / "r").mkdir()
    save_file({"prefix": torch.zeros(2, 2)}, tmp_path / "r" / "prefix.safetensors")
    code, _, err = _run(["generate", "--prefix", tmp_path / "r", "A | b | c"], capsys)
    assert code == 2 and "was not written by kg2text" in err


def test_damaged_header_json_is_one_clear_line(trained_run, tmp_path, capsys):
    """A prefix whose embedded kg2text header no longer parses (it used to end in a JSONDecodeError traceback)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(trained_run / "prefix.safetensors", "pt") as handle:
        tensor, header = handle.get_tensor("prefix"), handle.metadata()["kg2text"]
    (tmp_path / "r").mkdir()
    save_file({"prefix": tensor}, tmp_path / "r" / "prefix.safetensors", metadata={"kg2text": header[:-7]})
    code, _, err = _run(["generate", "--prefix", tmp_path / "r", "A | b | c"], capsys)
    assert code == 2 and "its kg2text header is not valid JSON" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("inherited", ["default", "ignored"])
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_a_resumable_checkpoint(tmp_path, inherited, sent):
    """Ctrl-C or SIGTERM (clusters, nohup runs) checkpoint the run, even when the parent shell ignored SIGINT
    (a background job or nohup): the test sets the disposition it relies on instead of inheriting ours."""
    command = [sys.executable, "-m", "kg2text", "train", "--backbone", "tiny-gpt2", "--max-examples", "400",
               "--batch-size", "4", "--prefix-length", "4", "--mlp-hidden", "32", "--max-steps", "2000",
               "--checkpoint-every", "0", "--output", str(tmp_path / "r")]
    disposition = signal.SIG_IGN if inherited == "ignored" else signal.SIG_DFL
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: (signal.signal(signal.SIGINT, disposition),
                                                   signal.signal(signal.SIGTERM, signal.SIG_DFL)))
    log = tmp_path / "r" / "train_log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(sent)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted; checkpoint saved at step" in err and "--resume" in err
    assert (tmp_path / "r" / "latest_checkpoint").exists()
    assert not (tmp_path / "r" / ".lock").exists()


@given(st.lists(st.tuples(*[st.text(min_size=1).filter(lambda t: t.strip() and not set(t) & set("|;"))] * 3),
                min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_triples_round_trip_through_parse_and_format(triples):
    parsed = parse_triples(format_triples(tuple(triples)))
    assert parsed == tuple(tuple(field.strip() for field in triple) for triple in triples)
    assert FORMATS["webnlg"].linearize(parsed).startswith("| ")


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_arbitrary_unicode_never_crashes_the_parsers(text):
    for parse in (parse_triples, parse_mr):
        try:
            items = parse(text)
        except UserError:
            continue
        assert items and all(all(field for field in item) for item in items)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_never_crash_the_readers(data):
    for reader in (parse_webnlg_xml, parse_e2e_csv):
        try:
            records = reader("fuzz", data)
        except UserError as err:
            assert str(err).startswith("fuzz")
            continue
        assert isinstance(records, list)


OTHER_CASES = {
    "skip-bad": "test_skip_bad_keeps_the_valid_lines",
    "full-disk": "test_full_disk_is_reported_before_training",
    "nan-loss": "test_nan_loss_stops_training_and_keeps_the_last_checkpoint",
    "pointer-outside-run": "test_a_checkpoint_pointer_outside_the_run_folder_is_not_followed",
    "foreign-safetensors": "test_a_foreign_safetensors_file_is_refused",
    "ctrl-c": "test_interrupt_saves_a_resumable_checkpoint",
    "kill-9-random-steps": "test_runs.py::test_kill_9_at_random_steps_then_resume_equals_an_uninterrupted_run",
    "second-training-same-folder": "test_runs.py::test_a_second_training_on_the_same_folder_is_refused",
    "truncated-or-edited-prefix": "test_artifact.py::test_edited_or_truncated_file_is_refused",
    "prefix-for-another-backbone": "test_artifact.py::test_prefix_for_another_backbone_is_refused",
    "overwrite-finished-run": "test_cli.py::test_train_refuses_to_overwrite_a_finished_run",
    "missing-prefix-folder": "test_cli.py::test_missing_prefix_folder",
    "damaged-header-json": "test_damaged_header_json_is_one_clear_line",
    "property-triples-round-trip": "test_triples_round_trip_through_parse_and_format",
    "property-unicode-parsers": "test_arbitrary_unicode_never_crashes_the_parsers",
    "property-bytes-readers": "test_arbitrary_bytes_never_crash_the_readers",
}


def test_every_case_is_listed_in_the_reliability_table():
    table = (Path(__file__).parent / "README.md").read_text()
    ids = [c[0] for c in GENERATE_CASES + E2E_CASES + TRAIN_CASES] + list(OTHER_CASES)
    missing = [case for case in ids if f"| `{case}` |" not in table]
    assert not missing, missing
    assert len(ids) >= 30
