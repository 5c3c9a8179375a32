"""Reading users' own inputs for ``generate``: command-line strings, text files, JSONL, stdin.

Each input becomes parsed items for the prefix's format; errors name the source and line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
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
        return UserInput(line, task, _from_json(obj, formats[task]))
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def read_inputs(args: list[str], source: str | None, formats: dict[str, Format]) -> list[UserInput]:
    """All inputs, parsed with their task's format; blank lines in files are skipped."""
    if args and source:
        raise UserError("give inputs either on the command line or with --input, not both")
    if not args and not source:
        if sys.stdin is None or sys.stdin.isatty():
            example = next(iter(formats.values())).example
            raise UserError(f"no input: pass e.g. {example!r}, or --input FILE, or pipe lines on stdin")
        source = "-"
    if args:
        return [_parse_line(text, formats, f"input {n}") for n, text in enumerate(args, start=1)]
    is_jsonl = source.endswith(".jsonl")
    inputs = []
    for number, line in enumerate(_read_lines(source), start=1):
        if not line.strip():
            continue
        where = f"{'<stdin>' if source == '-' else source}:{number}"
        if "\x00" in line:
            raise UserError(f"{where}: contains a NUL byte")
        if is_jsonl or (source == "-" and line.lstrip().startswith("{")):
            inputs.append(_parse_json_line(line, formats, where))
        else:
            inputs.append(_parse_line(line, formats, where))
    if not inputs:
        raise UserError(f"{source}: no inputs found (the file is empty)")
    return inputs
