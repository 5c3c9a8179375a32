"""Dataset readers: WebNLG 2017 (XML) and E2E (CSV) into plain records.

The sets ship in the repo's ``data/`` folder as zip archives and are read in place, so nothing
needs the network. ``data_dir`` points a reader at an unpacked copy instead (same layout as the
archive: ``train/``, ``dev/`` and ``test/`` XML folders for WebNLG; ``trainset.csv``, ``devset.csv``,
``testset_w_refs.csv`` for E2E).
"""

from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kg2text.errors import UserError
from kg2text.linearize import Item, parse_mr, parse_triple

# The five WebNLG 2017 test categories that never occur in train/dev.
UNSEEN_CATEGORIES = frozenset({"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"})
DATASETS = ("webnlg", "e2e")
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


def read_records(dataset: str, split: str, data_dir: Path | None = None) -> list[Record]:
    """Read any shipped dataset split by name."""
    readers = {"webnlg": read_webnlg, "e2e": read_e2e}
    if dataset not in readers:
        raise UserError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return readers[dataset](split, data_dir)


def training_pairs(records: list[Record]) -> list[tuple[Record, str]]:
    """One (record, sentence) training example per reference, as in Li & Liang."""
    return [(record, reference) for record in records for reference in record.references if reference]
