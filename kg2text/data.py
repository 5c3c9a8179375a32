"""Dataset readers: WebNLG 2017 (XML), E2E (CSV), DART (JSON) and users' own pair files into plain records.

WebNLG and E2E ship in the repo's ``data/`` folder as zip archives and are read in place, so nothing
needs the network. ``data_dir`` points a reader at an unpacked copy instead (same layout as the
archive: ``train/``, ``dev/`` and ``test/`` XML folders for WebNLG; ``trainset.csv``, ``devset.csv``,
``testset_w_refs.csv`` for E2E). DART is not shipped: ``data_dir`` holds its release's split files.
Users' own (input, sentence) pairs come as JSONL or CSV (``read_pair_file``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kg2text.errors import UserError
from kg2text.linearize import Item, parse_mr, parse_triple, parse_triples

# The five WebNLG 2017 test categories that never occur in train/dev.
UNSEEN_CATEGORIES = frozenset({"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"})
DATASETS = ("webnlg", "e2e", "dart")
_WEBNLG_TEST = "test/testdata_with_lex.xml"
_E2E_FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}


@dataclass(frozen=True)
class Record:
    """One input (triples or MR slots) with all its reference sentences."""

    items: tuple[Item, ...]
    references: tuple[str, ...]
    category: str = ""
    seen: bool = True
    eid: str = ""


def data_root() -> Path:
    """The shipped ``data/`` folder (override with ``KG2TEXT_DATA``)."""
    root = Path(os.environ.get("KG2TEXT_DATA", Path(__file__).resolve().parent.parent / "data"))
    if not root.is_dir():
        raise UserError(f"shipped data folder {root} not found: install kg2text from a source checkout "
                        "(pip install -e .) or set KG2TEXT_DATA to a copy of the repo's data/ folder")
    return root


def _open_sources(archive: str, data_dir: Path | None, wanted) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) of the files selected by ``wanted(name)`` from a folder or the shipped zip."""
    if data_dir is not None:
        if not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a folder")
        for path in sorted(data_dir.rglob("*")):
            name = path.relative_to(data_dir).as_posix()
            if path.is_file() and wanted(name):
                yield str(path), path.read_bytes()
        return
    zip_path = data_root() / archive
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            inner = name.split("/", 1)[1] if name.startswith("webnlg_challenge_2017/") else name
            if not name.endswith("/") and wanted(inner):
                yield f"{zip_path}:{name}", zf.read(name)


def _webnlg_wanted(split: str):
    if split == "test":
        return lambda name: name == _WEBNLG_TEST
    return lambda name: name.startswith(f"{split}/") and name.endswith(".xml")


def parse_webnlg_xml(source: str, content: bytes, require_references: bool = True) -> list[Record]:
    """Parse one WebNLG XML file; errors name the file, line and entry."""
    try:
        root = ET.fromstring(content)
    except (ET.ParseError, ValueError, LookupError) as err:  # LookupError: an unknown declared encoding
        raise UserError(f"{source}: not well-formed XML ({err})") from None
    records = []
    for entry in root.iter("entry"):
        eid, category = entry.get("eid", "?"), entry.get("category", "")
        try:
            triples = [parse_triple(m.text or "", n) for n, m in enumerate(entry.iter("mtriple"), start=1)]
        except UserError as err:
            raise UserError(f"{source}: entry {eid}: {err}") from None
        references = tuple(" ".join((lex.text or "").split()) for lex in entry.iter("lex"))
        if not triples:
            raise UserError(f"{source}: entry {eid} has no <mtriple>")
        if require_references and not any(references):
            raise UserError(f"{source}: entry {eid} has no <lex> reference sentence")
        seen = category not in UNSEEN_CATEGORIES
        records.append(Record(tuple(triples), references, category, seen, eid))
    return records


def read_webnlg(split: str, data_dir: Path | None = None) -> list[Record]:
    """WebNLG 2017: ``train`` (6,940 sets), ``dev`` (872) or ``test`` (1,862 = 971 seen + 891 unseen)."""
    if split not in ("train", "dev", "test"):
        raise UserError(f"unknown WebNLG split {split!r}; choose train, dev or test")
    records = []
    for source, content in _open_sources("webnlg_challenge_2017.zip", data_dir, _webnlg_wanted(split)):
        records.extend(parse_webnlg_xml(source, content))
    if not records:
        raise UserError(f"no WebNLG {split} XML found in {data_dir or data_root()}")
    return records


def parse_e2e_csv(source: str, content: bytes) -> list[Record]:
    """Group an E2E CSV (``mr,ref`` rows, one per reference) into one record per MR, in file order."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{source}: not UTF-8 text ({err})") from None
    references: dict[str, list[str]] = {}
    reader = csv.DictReader(io.StringIO(text))
    try:
        for row in reader:
            if row.get("mr") is None:
                raise UserError(f"{source}: line {reader.line_num}: missing 'mr' column (expected header 'mr,ref')")
            references.setdefault(row["mr"], []).append(" ".join((row.get("ref") or "").split()))
    except csv.Error as err:
        raise UserError(f"{source}: line {reader.line_num}: not valid CSV ({err})") from None
    records = []
    for mr, refs in references.items():
        try:
            records.append(Record(parse_mr(mr), tuple(refs), "restaurant", True, str(len(records) + 1)))
        except UserError as err:
            raise UserError(f"{source}: {err}") from None
    return records


def read_e2e(split: str, data_dir: Path | None = None) -> list[Record]:
    """E2E NLG: ``dev`` or ``test`` ship here; ``train`` needs ``data_dir`` with trainset.csv."""
    if split not in _E2E_FILES:
        raise UserError(f"unknown E2E split {split!r}; choose train, dev or test")
    filename = _E2E_FILES[split]
    sources = list(_open_sources("e2e.zip", data_dir, lambda name: name == filename))
    if not sources:
        raise UserError(f"E2E {filename} not found in {data_dir or data_root() / 'e2e.zip'}; the E2E train "
                        "set is not shipped: pass --data-dir with trainset.csv, or train on the dev split")
    return parse_e2e_csv(*sources[0])


def parse_dart_json(source: str, content: bytes) -> list[Record]:
    """One DART split file (Nan et al. 2021): a JSON list of ``{"tripleset": [[s, p, o], ...],
    "annotations": [{"source": ..., "text": ...}, ...]}``; the first annotation's source is the category."""
    try:
        entries = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{source}: not a DART JSON file ({err})") from None
    if not isinstance(entries, list):
        raise UserError(f"{source}: expected a JSON list of DART entries")
    records = []
    for number, entry in enumerate(entries, start=1):
        where = f"{source}: entry {number}"
        if not isinstance(entry, dict) or "tripleset" not in entry:
            raise UserError(f"{where}: has no 'tripleset'")
        if not isinstance(entry.get("annotations"), list) or not entry["annotations"]:
            raise UserError(f"{where}: has no 'annotations' (DART's reference sentences)")
        triples = entry["tripleset"]
        if not isinstance(triples, list) or not triples or not all(
                isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in triples):
            raise UserError(f"{where}: 'tripleset' must be a non-empty list of [subject, predicate, object] strings")
        notes = entry["annotations"]
        if not all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in notes):
            raise UserError(f"{where}: every annotation needs a 'text' string")
        references = tuple(" ".join(a["text"].split()) for a in notes)
        category = str(notes[0].get("source", "dart"))
        records.append(Record(tuple(tuple(x.strip() for x in t) for t in triples), references, category, True,
                              str(number)))
    return records


def read_dart(split: str, data_dir: Path | None = None) -> list[Record]:
    """DART: ``data_dir`` holds the release's ``dart-v1.1.1-full-{train,dev,test}.json`` (any ``*-SPLIT.json``)."""
    if split not in ("train", "dev", "test"):
        raise UserError(f"unknown DART split {split!r}; choose train, dev or test")
    if data_dir is None:
        raise UserError("DART is not shipped with kg2text: download it (github.com/Yale-LILY/dart, data/v1.1.1) "
                        "and pass --data-dir with its dart-v1.1.1-full-*.json files")
    sources = list(_open_sources("", data_dir, lambda name: name.endswith((f"-{split}.json", f"/{split}.json"))
                                 or name == f"{split}.json"))
    if not sources:
        raise UserError(f"no DART {split} file (*-{split}.json) in {data_dir}")
    return [record for source in sources for record in parse_dart_json(*source)]


def read_records(dataset: str, split: str, data_dir: Path | None = None) -> list[Record]:
    """Read any dataset split by name (WebNLG and E2E ship; DART needs ``data_dir``)."""
    readers = {"webnlg": read_webnlg, "e2e": read_e2e, "dart": read_dart}
    if dataset not in readers:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return readers[dataset](split, data_dir)


def evenly_spaced(items: list, limit: int | None) -> list:
    """``limit`` records (or indices) spread over the whole split (WebNLG test is ordered seen-first)."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def training_pairs(records: list[Record]) -> list[tuple[Record, str]]:
    """One (record, sentence) training example per reference, as in Li & Liang."""
    return [(record, reference) for record in records for reference in record.references if reference]


# ---- users' own pairs ------------------------------------------------------------------------------------

_CSV_INPUTS = ("mr", "triples", "input")
_CSV_REFERENCES = ("ref", "text", "reference")


def _reference_texts(row: dict) -> list[str]:
    """A JSONL row's reference sentences: ``"text"`` or ``"texts"``."""
    texts = row.get("texts", [row["text"]] if "text" in row else None)
    if texts is None:
        raise UserError("no reference sentence: add \"text\": \"...\" (or \"texts\": [...])")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise UserError("'texts' must be a non-empty list of strings ('text' a string)")
    if not all(t.strip() for t in texts):
        raise UserError("a reference sentence is empty")
    return [" ".join(t.split()) for t in texts]


def _jsonl_rows(source: str, text: str):
    """(where, items, references, category) for each JSONL line; errors name the line."""
    from kg2text.inputs import items_from_json

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"not valid JSON ({err.msg} at column {err.colno})") from None
            items = items_from_json(row, parse_mr if isinstance(row, dict) and "mr" in row else parse_triples)
            yield where, items, _reference_texts(row), str(row.get("category", ""))
        except UserError as err:
            yield where, UserError(f"{where}: {err}"), [], ""


def _csv_rows(source: str, text: str):
    """(where, items, references, category) for each CSV row: an input column (mr, triples or input; triples
    in our 's | p | o ; ...' syntax) and a reference column (ref, text or reference)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    column = next((c for c in _CSV_INPUTS if c in header), None)
    reference = next((c for c in _CSV_REFERENCES if c in header), None)
    if column is None or reference is None:
        raise UserError(f"{source}: line 1: expected an input column ({', '.join(_CSV_INPUTS)}) and a reference "
                        f"column ({', '.join(_CSV_REFERENCES)}); the header has {header}")
    parse = parse_mr if column == "mr" else parse_triples
    try:
        for row in reader:
            where = f"{source}:{reader.line_num}"
            try:
                if None in row or row.get(column) is None or row.get(reference) is None:
                    raise UserError("wrong number of fields (unbalanced quotes?)")
                if not row[reference].strip():
                    raise UserError(f"empty reference in column {reference!r}")
                yield where, parse(row[column]), [" ".join(row[reference].split())], row.get("category") or ""
            except UserError as err:
                yield where, UserError(f"{where}: {err}"), [], ""
    except csv.Error as err:
        raise UserError(f"{source}:{reader.line_num}: not valid CSV ({err})") from None


def read_pair_file(path: str | Path, skip_bad: bool = False) -> tuple[list[Record], list[str]]:
    """Your own (input, sentence) pairs as records, plus the errors of the rows skipped.

    JSONL (one object a line): ``{"triples": [[s, p, o], ...], "text": "..."}`` (or ``"texts": [...]``), or
    ``{"mr": "...", "text": ...}``, or ``{"input": "s | p | o ; ...", "text": ...}``, optionally ``"category"``.
    CSV: an input column and a reference column (E2E's own ``mr,ref`` layout works as it is). Rows with the
    same input are one entry with several references. Without ``skip_bad`` the first bad row raises, naming
    its file and line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    rows = _csv_rows(str(path), text) if path.suffix.lower() == ".csv" else _jsonl_rows(str(path), text)
    grouped: dict[tuple, tuple[list[str], str]] = {}
    skipped, kinds = [], set()
    for where, items, references, category in rows:
        if not isinstance(items, UserError):
            kinds.add(len(items[0]))
            if len(kinds) > 1:
                items = UserError(f"{where}: mixes triples and E2E meaning representations in one file")
        if isinstance(items, UserError):
            if not skip_bad:
                raise items
            skipped.append(str(items))
            continue
        grouped.setdefault(items, ([], category))[0].extend(references)
    if not grouped:
        raise UserError(f"{path}: no usable (input, sentence) pairs"
                        + (f" ({len(skipped)} bad, first: {skipped[0]})" if skipped else " (the file is empty)"))
    records = [Record(items, tuple(refs), category, True, str(n))
               for n, (items, (refs, category)) in enumerate(grouped.items(), start=1)]
    return records, skipped


def file_format(records: list[Record]) -> str:
    """The linearization a pair file's inputs need: E2E slots have two fields, triples three."""
    return "e2e" if len(records[0].items[0]) == 2 else "webnlg"


def file_format_of(format_name: str) -> str:
    """The kind of input a linearization format reads (webnlg-tags and webnlg-words read triples as webnlg does)."""
    return "e2e" if format_name == "e2e" else "webnlg"
