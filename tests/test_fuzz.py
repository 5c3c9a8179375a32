"""Fuzzing what kg2text loads: every damaged file ends in one clear line naming it, or loads correctly.

Never a traceback, never a silently wrong result: a damaged prefix or checkpoint that still loads must
be bit-identical to the original (its digests catch every change). Seeded and bounded for CI (about
2,400 mutated files in well under a minute); a longer run with the same mutations:

    python tests/test_fuzz.py --scale 20      # 20x the CI counts, prints the table for tests/README.md
"""

from __future__ import annotations

import json
import random
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kg2text.artifact import read_prefix  # noqa: E402
from kg2text.backbones import load_backbone  # noqa: E402
from kg2text.checkpoint import POINTER, load_checkpoint, save_checkpoint  # noqa: E402
from kg2text.data import parse_e2e_csv, parse_webnlg_xml  # noqa: E402
from kg2text.errors import UserError  # noqa: E402
from kg2text.generate import load_for_generation  # noqa: E402
from kg2text.inputs import read_inputs  # noqa: E402
from kg2text.linearize import get_format  # noqa: E402
from kg2text.training import TrainConfig, check_config_unchanged  # noqa: E402

SEED = 20261125
CI_CASES = {"prefix-bytes": 600, "prefix-structure": 400, "checkpoint": 500, "config": 300, "webnlg-xml": 250,
            "e2e-csv": 200, "jsonl-inputs": 200}


# ---- mutations -------------------------------------------------------------------------------------------

def mutate_bytes(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random byte-level damage: a flipped bit, inserted or deleted bytes, or a truncation."""
    kind = rng.choice(["flip", "insert", "delete", "truncate"])
    at = rng.randrange(len(data)) if data else 0
    if kind == "flip" and data:
        return kind, data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    if kind == "insert":
        return kind, data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
    if kind == "delete":
        return kind, data[:at] + data[at + rng.randint(1, 8):]
    return "truncate", data[:at]


def _safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8: 8 + length]), data[8 + length:]


def _safetensors_bytes(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _wrong_value(value, rng: random.Random):
    choices = [None, "text", -1, 0, 1.5, True, [], {}, [0, 0], float("nan")]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def mutate_prefix_structure(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Damage with a meaning: kg2text's header (invalid JSON, missing keys, wrong types and shapes), the
    safetensors header (dtype, shape, offsets, tensor name), or NaN/inf values written as if valid."""
    header, body = _safetensors_parts(data)
    meta = json.loads(header["__metadata__"]["kg2text"])
    kind = rng.choice(["kg2text-invalid-json", "kg2text-missing-key", "kg2text-wrong-type", "kg2text-wrong-shape",
                       "st-dtype", "st-shape", "st-offsets", "st-tensor-name", "nan-or-inf"])
    if kind == "kg2text-invalid-json":
        text = header["__metadata__"]["kg2text"]
        header["__metadata__"]["kg2text"] = text[: rng.randrange(len(text))]
    elif kind == "kg2text-missing-key":
        meta.pop(rng.choice(sorted(meta)))
        header["__metadata__"]["kg2text"] = json.dumps(meta)
    elif kind == "kg2text-wrong-type":
        key = rng.choice(sorted(meta))
        meta[key] = _wrong_value(meta[key], rng)
        header["__metadata__"]["kg2text"] = json.dumps(meta)
    elif kind == "kg2text-wrong-shape":
        meta["shape"] = [n * rng.choice([2, 1]) + rng.choice([0, 1]) for n in meta["shape"]][: rng.randint(1, 6)]
        header["__metadata__"]["kg2text"] = json.dumps(meta)
    elif kind == "st-dtype":
        header["prefix"]["dtype"] = rng.choice(["I32", "F16", "BF16", "U8", "F64", "XX"])
    elif kind == "st-shape":
        shape = header["prefix"]["shape"]
        rng.shuffle(shape)
        if rng.random() < 0.5:
            shape[rng.randrange(len(shape))] += rng.choice([-1, 1])
    elif kind == "st-offsets":
        start, end = header["prefix"]["data_offsets"]
        header["prefix"]["data_offsets"] = [start + rng.randint(-4, 4), end + rng.randint(-4, 4)]
    elif kind == "st-tensor-name":
        header["other"] = header.pop("prefix")
    else:
        values = torch.frombuffer(bytearray(body), dtype=torch.float32).clone()
        values[rng.randrange(len(values))] = rng.choice([float("nan"), float("inf"), -float("inf")])
        from kg2text.artifact import header_digest, tensor_digest

        meta["sha256"] = tensor_digest(values.view(meta["shape"]))  # "valid" except for the values
        meta["header_sha256"] = header_digest(meta)
        header["__metadata__"]["kg2text"] = json.dumps(meta)
        body = values.numpy().tobytes()
    return kind, _safetensors_bytes(header, body)


def mutate_json(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Byte damage, or a JSON object with a key removed, a value of the wrong type, or an extra key."""
    if rng.random() < 0.5:
        return mutate_bytes(data, rng)
    value = json.loads(data)
    key = rng.choice(sorted(value))
    kind = rng.choice(["json-missing-key", "json-wrong-type", "json-extra-key"])
    if kind == "json-missing-key":
        value.pop(key)
    elif kind == "json-wrong-type":
        value[key] = _wrong_value(value[key], rng)
    else:
        value[f"x{rng.randrange(100)}"] = _wrong_value(None, rng)
    return kind, json.dumps(value).encode()


# ---- the property ----------------------------------------------------------------------------------------

class Findings:
    """Counts cases per mutation class and collects every violation of the property."""

    def __init__(self) -> None:
        self.tried, self.refused, self.loaded = Counter(), Counter(), Counter()
        self.violations: list[str] = []

    def check(self, target: str, kind: str, names: str, load: Callable[[], object],
              correct: Callable[[object], bool]) -> None:
        """``load`` must raise a one-line UserError naming ``names``, or return something ``correct``."""
        self.tried[target, kind] += 1
        try:
            result = load()
        except UserError as err:
            message = str(err)
            if "\n" in message or names not in message:
                self.violations.append(f"{target}/{kind}: unclear message: {message[:300]!r}")
            self.refused[target, kind] += 1
            return
        except Exception as err:  # noqa: BLE001 - any other exception is the finding
            self.violations.append(f"{target}/{kind}: {type(err).__name__}: {str(err)[:200]}")
            return
        if not correct(result):
            self.violations.append(f"{target}/{kind}: loaded a wrong result silently")
        self.loaded[target, kind] += 1


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---- targets ---------------------------------------------------------------------------------------------

def fuzz_prefix(findings: Findings, run: Path, backbone, work: Path, rng: random.Random, counts: dict) -> None:
    original, header = read_prefix(run)
    data = (run / "prefix.safetensors").read_bytes()
    target = work / "prefix-run"

    def correct(loaded) -> bool:
        tensor = loaded.lm.prefix if loaded.lm.prefix is not None else loaded.lm.soft_prompt
        return torch.equal(tensor, original) and loaded.header == header

    for name, mutate in (("prefix-bytes", mutate_bytes), ("prefix-structure", mutate_prefix_structure)):
        for _ in range(counts[name]):
            kind, damaged = mutate(data, rng)
            _write(target / "prefix.safetensors", damaged)
            findings.check(name, kind, str(target), lambda: load_for_generation(target, backbone), correct)


def _checkpointed_run(work: Path):
    module = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    module(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    run = work / "ckpt-run"
    run.mkdir(parents=True)
    progress = {"step": 1, "epoch": 0, "batch": 1, "tokens": 8, "elapsed_s": 1.0, "log_lines": 1}
    save_checkpoint(run, module, optimizer, scheduler, progress, AVERAGE)  # an --average-last run's, all its files
    return run, module, optimizer, scheduler


AVERAGE = {"total": torch.arange(6.0).reshape(2, 3), "count": torch.tensor(2)}


def fuzz_checkpoint(findings: Findings, work: Path, rng: random.Random, count: int) -> None:
    run, module, optimizer, scheduler = _checkpointed_run(work)
    folder = run / "checkpoint-1"
    pristine = {p.name: p.read_bytes() for p in folder.iterdir()} | {POINTER: (run / POINTER).read_bytes()}
    expected = {k: v.clone() for k, v in module.state_dict().items()}
    for _ in range(count):
        name = rng.choice(sorted(pristine))
        for file, content in pristine.items():
            _write(run / file if file == POINTER else folder / file, content)
        mutate = mutate_json if name == "state.json" else mutate_bytes
        kind, damaged = mutate(pristine[name], rng)
        _write(run / name if name == POINTER else folder / name, damaged)

        def load():
            return load_checkpoint(run, module, optimizer, scheduler)

        def correct(state) -> bool:
            return state["step"] == 1 and all(torch.equal(v, expected[k]) for k, v in module.state_dict().items()) \
                and all(torch.equal(state["average"][k], v) for k, v in AVERAGE.items())

        findings.check("checkpoint", f"{name}:{kind}", str(run), load, correct)


def fuzz_config(findings: Findings, work: Path, rng: random.Random, count: int) -> None:
    from dataclasses import asdict

    run = work / "config-run"
    data = json.dumps(asdict(TrainConfig(output=str(run), backbone="tiny-gpt2"))).encode()

    def load():  # what `train --resume` does with it: read, validate, compare with the checkpoint's copy
        config = TrainConfig.from_run(run)
        check_config_unchanged(config, json.loads(data), run / "config.json")
        return config

    for _ in range(count):
        kind, damaged = mutate_json(data, rng)
        _write(run / "config.json", damaged)
        findings.check("config", kind, str(run / "config.json"), load,
                       lambda config: asdict(config) == json.loads(data))


WEBNLG_XML = b"""<?xml version="1.0" ?>
<benchmark><entries>
<entry category="Astronaut" eid="Id1" size="2">
<modifiedtripleset><mtriple>Alan_Bean | nationality | United_States</mtriple>
<mtriple>Alan_Bean | occupation | Test_pilot</mtriple></modifiedtripleset>
<lex comment="good" lid="Id1">Alan Bean, a US national, was a test pilot.</lex>
</entry>
<entry category="Politician" eid="Id2" size="1">
<modifiedtripleset><mtriple>Harry_Potter | education | Hogwarts</mtriple></modifiedtripleset>
<lex comment="good" lid="Id1">Harry Potter studied at Hogwarts.</lex>
</entry>
</entries></benchmark>
"""
E2E_CSV = b'mr,ref\n"name[Alimentum], area[city centre]",Alimentum is in the city centre.\n' \
          b'"name[Alimentum], area[city centre]",There is Alimentum in the centre.\n' \
          b'"name[Aromi], eatType[coffee shop]",Aromi is a coffee shop.\n'
JSONL_INPUTS = b'{"triples": [["Harry Potter", "education", "Hogwarts"]]}\n' \
               b'{"input": "Harry_Potter | house | Gryffindor ; Harry_Potter | friend | Ron_Weasley"}\n'


def fuzz_data(findings: Findings, work: Path, rng: random.Random, counts: dict) -> None:
    formats = {"webnlg": get_format("webnlg")}
    readers = {
        "webnlg-xml": (WEBNLG_XML, "data.xml", lambda path: parse_webnlg_xml(str(path), path.read_bytes())),
        "e2e-csv": (E2E_CSV, "data.csv", lambda path: parse_e2e_csv(str(path), path.read_bytes())),
        "jsonl-inputs": (JSONL_INPUTS, "inputs.jsonl", lambda path: read_inputs([], str(path), formats)[0]),
    }
    for name, (data, filename, read) in readers.items():
        path = work / filename
        for _ in range(counts[name]):
            kind, damaged = mutate_bytes(data, rng)
            _write(path, damaged)
            findings.check(name, kind, str(path), lambda path=path, read=read: read(path),
                           lambda result: isinstance(result, list))


def run_fuzz(run: Path, backbone, scale: float = 1.0, seed: int = SEED) -> Findings:
    counts = {name: max(1, int(n * scale)) for name, n in CI_CASES.items()}
    findings, rng = Findings(), random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fuzz_prefix(findings, run, backbone, work, rng, counts)
        fuzz_checkpoint(findings, work, rng, counts["checkpoint"])
        fuzz_config(findings, work, rng, counts["config"])
        fuzz_data(findings, work, rng, counts)
    return findings


def test_every_loader_survives_thousands_of_damaged_files(trained_run, tiny_gpt2):
    findings = run_fuzz(trained_run, tiny_gpt2)
    assert sum(findings.tried.values()) >= 2000
    assert not findings.violations, "\n".join(findings.violations[:20])
    # the mutations really damage: most prefix and checkpoint cases are refused, not loaded
    for target in ("prefix-bytes", "prefix-structure", "checkpoint"):
        refused = sum(n for (t, _), n in findings.refused.items() if t == target)
        assert refused > 0.9 * sum(n for (t, _), n in findings.tried.items() if t == target)


def test_a_nan_prefix_with_valid_digests_is_refused(trained_run, tmp_path, tiny_gpt2):
    rng = random.Random(1)
    data = (trained_run / "prefix.safetensors").read_bytes()
    while True:
        kind, damaged = mutate_prefix_structure(data, rng)
        if kind == "nan-or-inf":
            break
    _write(tmp_path / "r" / "prefix.safetensors", damaged)
    with pytest.raises(UserError, match="NaN or infinite"):
        load_for_generation(tmp_path / "r", tiny_gpt2)


def test_a_prefix_whose_tensor_dtype_was_relabelled_is_refused(trained_run, tmp_path, tiny_gpt2):
    """F32 -> I32 keeps every byte (so the tensor digest matched); the header's dtype now catches it."""
    header, body = _safetensors_parts((trained_run / "prefix.safetensors").read_bytes())
    header["prefix"]["dtype"] = "I32"
    _write(tmp_path / "r" / "prefix.safetensors", _safetensors_bytes(header, body))
    with pytest.raises(UserError, match="does not match its own header"):
        load_for_generation(tmp_path / "r", tiny_gpt2)


def test_an_edited_header_value_is_refused_by_its_digest(trained_run, tmp_path, tiny_gpt2):
    tensors = load_file(trained_run / "prefix.safetensors")
    header, _ = _safetensors_parts((trained_run / "prefix.safetensors").read_bytes())
    meta = json.loads(header["__metadata__"]["kg2text"])
    meta["format"] = "e2e"  # valid JSON, valid type, a different meaning
    save_file(tensors, tmp_path / "prefix.safetensors", metadata={"kg2text": json.dumps(meta)})
    with pytest.raises(UserError, match="does not match its digest"):
        load_for_generation(tmp_path, tiny_gpt2)


def test_a_config_field_of_the_wrong_type_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"output": str(tmp_path), "lr": "fast"}))
    with pytest.raises(UserError, match=r"field 'lr' is 'fast', not float"):
        TrainConfig.from_run(tmp_path)


def test_a_damaged_newest_checkpoint_offers_and_takes_the_previous_one(tmp_path, capsys):
    run, module, optimizer, scheduler = _checkpointed_run(tmp_path)
    first = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        module.weight.add_(1.0)
    save_checkpoint(run, module, optimizer, scheduler, {"step": 2, "epoch": 0, "batch": 2, "tokens": 16,
                                                        "elapsed_s": 2.0, "log_lines": 2})
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    data = bytearray((run / "checkpoint-2" / "module.safetensors").read_bytes())
    data[-1] ^= 1
    (run / "checkpoint-2" / "module.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"checkpoint-2 is damaged .*checkpoint-1 is intact.*--from-previous"):
        load_checkpoint(run, module, optimizer, scheduler)
    state = load_checkpoint(run, module, optimizer, scheduler, from_previous=True)
    assert state["step"] == 1 and all(torch.equal(v, first[k]) for k, v in module.state_dict().items())
    assert "continuing from the previous checkpoint checkpoint-1" in capsys.readouterr().out


def test_a_stale_lock_from_a_killed_run_is_recognised(tmp_path, capsys):
    import subprocess

    from kg2text.rundir import RunLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(str(dead.pid))
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() != str(dead.pid)
    assert f"was left by process {dead.pid}, which is no longer running" in capsys.readouterr().out
    (tmp_path / ".lock").write_text("\x00garbage")
    with pytest.raises(UserError, match="is damaged .* delete it and run again"), RunLock(tmp_path):
        pass


def _table(findings: Findings) -> str:
    rows = ["| loader | mutation class | tried | refused with one line | loaded (and equal) | violations |",
            "|---|---|---:|---:|---:|---:|"]
    for (target, kind), tried in sorted(findings.tried.items()):
        bad = sum(1 for v in findings.violations if v.startswith(f"{target}/{kind}:"))
        rows.append(f"| {target} | {kind} | {tried} | {findings.refused[target, kind]} | "
                    f"{findings.loaded[target, kind]} | {bad} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse

    from kg2text.training import train

    parser = argparse.ArgumentParser(description="the fuzz suite, longer: SCALE times the CI case counts")
    parser.add_argument("--scale", type=float, default=20)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        train(TrainConfig(output=str(out), backbone="tiny-gpt2", max_steps=2, max_examples=16, prefix_length=4,
                          mlp_hidden=32, lr=1e-3))
        result = run_fuzz(out, load_backbone("tiny-gpt2"), args.scale, args.seed)
    print(_table(result))
    print(f"\n{sum(result.tried.values())} cases, {len(result.violations)} violations")
    for violation in result.violations[:50]:
        print(" ", violation)
    sys.exit(1 if result.violations else 0)
