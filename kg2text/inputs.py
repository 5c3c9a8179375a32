"""Reading users' own inputs for ``generate``: command-line strings, text files, JSONL, stdin.

Each input becomes parsed items for the prefix's format; errors name the source and line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kg2text.errors import UserError
from kg2text.linearize import Format, Item


def _from_json(obj: object, fmt: Format) -> tuple[Item, ...]:
    """A JSONL object: {"triples": [[s, p, o], ...]}, {"mr": "..."} or {"input": "<a text line>"}.

    JSON triples keep their strings as given, so values may contain '|' or ';'.
    """
    if not isinstance(obj, dict):
        raise UserError('expected a JSON object like {"triples": [["s", "p", "o"]]}')
    if "triples" in obj:
        triples = obj["triples"]
        if not isinstance(triples, list) or not triples:
            raise UserError("field 'triples' must be a non-empty list of [subject, predicate, object]")
        for number, triple in enumerate(triples, start=1):
            if not (isinstance(triple, list) and len(triple) == 3 and all(isinstance(x, str) for x in triple)):
                raise UserError(f"field 'triples', triple {number}: expected a list of 3 strings")
            if not all(x.strip() for x in triple):
                raise UserError(f"field 'triples', triple {number}: has an empty field")
        return tuple(tuple(x.strip() for x in triple) for triple in triples)
    for key in ("mr", "input"):
        if isinstance(obj.get(key), str):
            return fmt.parse(obj[key])
    raise UserError("JSON object needs a 'triples' list, or an 'mr' or 'input' string")


def _read_lines(source: str) -> list[str]:
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        path = Path(source)
        if path.is_dir():
            raise UserError(f"--input {path} is a folder; expected a .txt or .jsonl file")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"cannot read --input {path}: {err.strerror}") from None
        name = str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{name}: not UTF-8 text (byte {err.start})") from None
    return text.splitlines()


def read_inputs(args: list[str], source: str | None, fmt: Format) -> list[tuple[str, tuple[Item, ...]]]:
    """All inputs as (original text, parsed items); blank lines in files are skipped."""
    if args and source:
        raise UserError("give inputs either on the command line or with --input, not both")
    if not args and not source:
        if sys.stdin is None or sys.stdin.isatty():
            raise UserError(f"no input: pass e.g. {fmt.example!r}, or --input FILE, or pipe lines on stdin")
        source = "-"
    if args:
        return [(text, _parse_or_raise(text, fmt, f"input {n}")) for n, text in enumerate(args, start=1)]
    is_jsonl = source.endswith(".jsonl")
    inputs = []
    for number, line in enumerate(_read_lines(source), start=1):
        if not line.strip():
            continue
        where = f"{'<stdin>' if source == '-' else source}:{number}"
        if "\x00" in line:
            raise UserError(f"{where}: contains a NUL byte")
        if is_jsonl or (source == "-" and line.lstrip().startswith("{")):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            try:
                inputs.append((line, _from_json(obj, fmt)))
            except UserError as err:
                raise UserError(f"{where}: {err}") from None
        else:
            inputs.append((line, _parse_or_raise(line, fmt, where)))
    if not inputs:
        raise UserError(f"{source}: no inputs found (the file is empty)")
    return inputs


def _parse_or_raise(text: str, fmt: Format, where: str) -> tuple[Item, ...]:
    try:
        return fmt.parse(text)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
