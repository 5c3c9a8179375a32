"""Reading users' own inputs for ``generate``: command-line strings, text, JSONL, CSV, WebNLG XML, stdin.

Each input becomes parsed items for the prefix's format; errors name the source and line.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kg2text.errors import UserError
from kg2text.linearize import Format, Item


def items_from_json(obj: object, parse: Callable[[str], tuple[Item, ...]]) -> tuple[Item, ...]:
    """A JSONL object: {"triples": [[s, p, o], ...]}, {"mr": "..."} or {"input": "<a text line>"}.

    JSON triples keep their strings as given, so values may contain '|' or ';'; an ``mr`` or ``input``
    string is parsed with ``parse`` (the format of the prefix or file it is for).
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
            return parse(obj[key])
    raise UserError("JSON object needs a 'triples' list, or an 'mr' or 'input' string")


@dataclass(frozen=True)
class UserInput:
    """One input as the user wrote it, the task (prefix) it is for, and its parsed items."""

    text: str
    task: str
    items: tuple[Item, ...]


TASK_SEPARATOR = "::"


def _split_task(text: str, formats: dict[str, Format]) -> tuple[str, str]:
    """With one prefix every input is for it; with several, a line starts with ``task::``."""
    if len(formats) == 1:
        return next(iter(formats)), text
    task, separator, rest = text.partition(TASK_SEPARATOR)
    if not separator or task.strip() not in formats:
        raise UserError(f"with several prefixes each input starts with its task, e.g. "
                        f"'{next(iter(formats))}{TASK_SEPARATOR} ...'; tasks: {', '.join(formats)}")
    return task.strip(), rest


def _parse_line(text: str, formats: dict[str, Format], where: str) -> UserInput:
    try:
        task, rest = _split_task(text, formats)
        return UserInput(text, task, formats[task].parse(rest))
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _parse_json_line(line: str, formats: dict[str, Format], where: str) -> UserInput:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    try:
        task = next(iter(formats))
        if len(formats) > 1:
            task = obj.get("task") if isinstance(obj, dict) else None
            if task not in formats:
                raise UserError(f"field 'task' must name one of the prefixes: {', '.join(formats)}")
        return UserInput(line, task, items_from_json(obj, formats[task].parse))
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _read_bytes(source: str) -> tuple[str, bytes]:
    if source == "-":
        return "<stdin>", sys.stdin.buffer.read()
    path = Path(source)
    if path.is_dir():
        raise UserError(f"--input {path} is a folder; expected a .txt, .jsonl, .csv or .xml file")
    try:
        return str(path), path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read --input {path}: {err.strerror}") from None


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as err:
        raise UserError(f"{name}: not UTF-8 text (byte {err.start})") from None


Parse = Callable[[], UserInput]


def _line_entries(name: str, text: str, formats: dict[str, Format], jsonl: bool) -> list[tuple[str, Parse]]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        if "\x00" in line:
            entries.append((where, functools.partial(_raise, f"{where}: contains a NUL byte")))
        elif jsonl or (name == "<stdin>" and line.lstrip().startswith("{")):
            entries.append((where, functools.partial(_parse_json_line, line, formats, where)))
        else:
            entries.append((where, functools.partial(_parse_line, line, formats, where)))
    return entries


def _csv_entries(name: str, text: str, formats: dict[str, Format]) -> list[tuple[str, Parse]]:
    """A CSV with an ``mr`` (E2E) or ``input`` column, one input per row."""
    reader = csv.DictReader(io.StringIO(text))
    column = next((c for c in ("mr", "input") if c in (reader.fieldnames or [])), None)
    if column is None:
        raise UserError(f"{name}: expected a header with an 'mr' or 'input' column, got {reader.fieldnames}")
    entries = []
    for row in reader:
        where = f"{name}:{reader.line_num}"
        value = row.get(column) or ""
        if "\n" in value or None in row:
            entries.append((where, functools.partial(_raise, f"{where}: unbalanced quotes or extra fields in "
                                                              f"column {column!r}")))
        else:
            entries.append((where, functools.partial(_parse_line, value, formats, where)))
    return entries


def _xml_entries(name: str, data: bytes, formats: dict[str, Format]) -> list[tuple[str, Parse]]:
    """WebNLG XML: each <entry>'s <mtriple>s are one input (references are not needed)."""
    from kg2text.data import parse_webnlg_xml

    task = next(iter(formats))
    return [(f"{name}: entry {r.eid}", functools.partial(UserInput, f"{name}#{r.eid}", task, r.items))
            for r in parse_webnlg_xml(name, data, require_references=False)]


def _raise(message: str) -> UserInput:
    raise UserError(message)


def read_inputs(args: list[str], source: str | None, formats: dict[str, Format],
                skip_bad: bool = False) -> tuple[list[UserInput], list[str]]:
    """All inputs parsed with their task's format, and the errors of the ones skipped.

    Without ``skip_bad`` the first bad input raises (naming its file and line); with it, bad inputs
    are collected and the good ones kept. Blank lines are ignored; file-level problems always raise.
    """
    if args and source:
        raise UserError("give inputs either on the command line or with --input, not both")
    if not args and not source:
        if sys.stdin is None or sys.stdin.isatty():
            example = next(iter(formats.values())).example
            raise UserError(f"no input: pass e.g. {example!r}, or --input FILE, or pipe lines on stdin")
        source = "-"
    if args:
        entries = [(f"input {n}", functools.partial(_parse_line, text, formats, f"input {n}"))
                   for n, text in enumerate(args, start=1)]
    else:
        name, data = _read_bytes(source)
        if source.endswith(".xml"):
            entries = _xml_entries(name, data, formats)
        elif source.endswith(".csv"):
            entries = _csv_entries(name, _decode(name, data), formats)
        else:
            entries = _line_entries(name, _decode(name, data), formats, jsonl=source.endswith(".jsonl"))
    inputs, skipped = [], []
    for _, parse in entries:
        try:
            inputs.append(parse())
        except UserError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
    if not inputs:
        raise UserError(f"{source or 'the command line'}: no usable inputs"
                        + (f" ({len(skipped)} bad, first: {skipped[0]})" if skipped else " (the file is empty)"))
    return inputs, skipped
