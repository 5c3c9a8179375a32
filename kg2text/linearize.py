"""Turning structured inputs (WebNLG triples, E2E meaning representations) into model text.

Everything about the text format lives here, so that training, generation and the CLI agree.
A *format* knows how to parse a user's line into items and how to linearize items into the
source text the model reads. The full model input is ``" {source} {separator}"`` and the target
``" {sentence} {end}"`` (Li & Liang 2021), where separator and end are the backbone's BOS and EOS
tokens (both ``<|endoftext|>`` for GPT-2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kg2text.errors import UserError

Item = tuple[str, ...]  # a WebNLG triple (subject, predicate, object) or an E2E (slot, value) pair

TRIPLE_SEPARATOR = ";"
FIELD_SEPARATOR = "|"
_E2E_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\[\]]*)\]\s*(?:,|$)")


def clean_entity(text: str) -> str:
    """DBpedia style ``Abilene,_Texas`` / ``"18L/36R"`` -> ``Abilene, Texas`` / ``18L/36R``."""
    text = text.strip().replace("_", " ")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return " ".join(text.split())


def parse_triple(text: str, number: int = 1) -> Item:
    """Parse one ``subject | predicate | object``; the error names the triple's number."""
    fields = [field.strip() for field in text.split(FIELD_SEPARATOR)]
    if len(fields) != 3:
        raise UserError(
            f"triple {number} {text.strip()!r} has {len(fields)} field(s); expected "
            "'subject | predicate | object' (separate triples with ';')"
        )
    for name, field in zip(("subject", "predicate", "object"), fields, strict=True):
        if not field:
            raise UserError(f"triple {number} {text.strip()!r} has an empty {name}")
    return tuple(fields)


def parse_triples(line: str) -> tuple[Item, ...]:
    """Parse ``"Harry_Potter | education | Hogwarts ; Harry_Potter | house | Gryffindor"``.

    Triples are separated by ``;`` and fields by ``|`` (values containing those characters go
    through JSONL input instead). Raises UserError naming the bad triple.
    """
    if not line.strip():
        raise UserError("empty input: expected 'subject | predicate | object' (several joined by ';')")
    chunks = line.split(TRIPLE_SEPARATOR)
    return tuple(parse_triple(chunk, number) for number, chunk in enumerate(chunks, start=1))


def format_triples(triples: tuple[Item, ...]) -> str:
    """The inverse of ``parse_triples``: ``"s | p | o ; s2 | p2 | o2"``."""
    return f" {TRIPLE_SEPARATOR} ".join(f" {FIELD_SEPARATOR} ".join(triple) for triple in triples)


def parse_mr(line: str) -> tuple[Item, ...]:
    """Parse an E2E meaning representation ``"name[Alimentum], area[city centre]"``."""
    text = line.strip()
    if not text:
        raise UserError("empty input: expected an E2E meaning representation like 'name[X], area[Y]'")
    pairs, position = [], 0
    while position < len(text):
        match = _E2E_SLOT.match(text, position)
        if not match:
            raise UserError(
                f"E2E meaning representation {text!r} is malformed at character {position + 1}: "
                "expected 'slot[value]' items separated by ','"
            )
        slot, value = match.group(1).strip(), match.group(2).strip()
        if not slot:
            raise UserError(f"E2E meaning representation {text!r}: an item has no slot name before '['")
        if not value:
            raise UserError(f"E2E meaning representation {text!r}: slot {slot!r} has an empty value")
        pairs.append((slot, value))
        position = match.end()
    return tuple(pairs)


def linearize_li_liang(triples: tuple[Item, ...]) -> str:
    """Li & Liang's WebNLG source: ``| s1 : p1 : o1 | s2 : p2 : o2``."""
    return " ".join(f"| {clean_entity(s)} : {clean_entity(p)} : {clean_entity(o)}" for s, p, o in triples)


def predicate_words(predicate: str) -> str:
    """DBpedia's camelCase predicates as words: ``deathPlace`` -> ``death place``, ``ISBN_number`` -> ``ISBN number``.

    The unseen WebNLG categories bring predicates never seen in training; as words the frozen model already
    knows what they mean."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", clean_entity(predicate))
    return " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in spaced.split())


def linearize_words(triples: tuple[Item, ...]) -> str:
    """Li & Liang's source with the predicates as words: ``| Alan Bean : birth place : Wheeler, Texas``."""
    return " ".join(f"| {clean_entity(s)} : {predicate_words(p)} : {clean_entity(o)}" for s, p, o in triples)


def linearize_tags(triples: tuple[Item, ...]) -> str:
    """The tagged WebNLG source common in later work: ``<H> s <R> p <T> o``."""
    return " ".join(f"<H> {clean_entity(s)} <R> {clean_entity(p)} <T> {clean_entity(o)}" for s, p, o in triples)


def linearize_e2e(pairs: tuple[Item, ...]) -> str:
    """Li & Liang's E2E source: ``name : X | area : Y``."""
    return " | ".join(f"{slot} : {value}" for slot, value in pairs)


@dataclass(frozen=True)
class Format:
    """How one kind of input is parsed from a user's line and linearized for the model."""

    name: str
    parse: Callable[[str], tuple[Item, ...]]
    linearize: Callable[[tuple[Item, ...]], str]
    example: str


FORMATS: dict[str, Format] = {
    "webnlg": Format("webnlg", parse_triples, linearize_li_liang, "Harry_Potter | education | Hogwarts"),
    "webnlg-tags": Format("webnlg-tags", parse_triples, linearize_tags, "Harry_Potter | education | Hogwarts"),
    "webnlg-words": Format("webnlg-words", parse_triples, linearize_words, "Harry_Potter | education | Hogwarts"),
    "e2e": Format("e2e", parse_mr, linearize_e2e, "name[Alimentum], area[city centre]"),
}

DEFAULT_FORMAT = {"webnlg": "webnlg", "e2e": "e2e", "dart": "webnlg"}


def get_format(name: str) -> Format:
    """Look a format up by name, with an error that lists the choices."""
    if name not in FORMATS:
        raise UserError(f"unknown linearization format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def model_prompt(source: str, separator: str) -> str:
    """The text the model conditions on: the linearized source, then the separator token."""
    return f" {source} {separator}"


def model_target(sentence: str, end: str) -> str:
    """The text the model learns to produce after the prompt."""
    return f" {sentence.strip()} {end}"
