"""kg2text from Python: generate from a trained run, train with a config object, score sentences.

    from kg2text import Verbalizer, TrainConfig, train, evaluate

    verbalizer = Verbalizer.load("runs/webnlg")
    verbalizer.generate([("Harry Potter", "education", "Hogwarts")])        # -> ["Harry Potter ..."]
    train(TrainConfig(output="runs/hogwarts", backbone="smollm2-135m", train_file="kb.jsonl", max_steps=100))
    evaluate(["Harry Potter studied at Hogwarts."], [["Harry Potter went to Hogwarts."]])

The command line (``kg2text.commands``) is a thin layer over these same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from kg2text.backbones import load_backbone
from kg2text.data import Record
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, LoadedPrefix, generate_sentences, load_for_generation
from kg2text.inputs import UserInput, items_from_json
from kg2text.linearize import Item
from kg2text.metrics import (
    challenge_bleu,
    chrf_pp,
    cider,
    corpus_bleu,
    e2e_slot_error_rate,
    nist,
    rouge_l,
    scores_by_group,
    webnlg_coverage,
)
from kg2text.training import TrainConfig
from kg2text.training import train as _train

Triple = tuple[str, str, str]
Input = str | Triple | Sequence[Triple] | Mapping
"""One input: a line in the run's syntax (``"Harry_Potter | education | Hogwarts"`` or ``"name[X], area[Y]"``),
one triple, a list of triples, or a dict as in JSONL files (``{"triples": [...]}``, ``{"mr": ...}``)."""


class Verbalizer:
    """A frozen backbone with one or more trained task prefixes on it, loaded once, generating on demand."""

    def __init__(self, loaded: LoadedPrefix, decode: DecodeConfig):
        self.loaded, self.decode = loaded, decode

    @classmethod
    def load(cls, run: str | Path | Mapping[str, str | Path] = "webnlg", backbone: str | None = None,
             dtype: str = "float32", ensemble: Sequence[str | Path] = (), **decode: object) -> Verbalizer:
        """Load a run folder (or ``{"webnlg": RUN1, "e2e": RUN2}`` for several tasks on one backbone); a bare
        ``"webnlg"`` (the default) or ``"e2e"`` is the prefix shipped with kg2text. ``ensemble``: more runs like
        ``run`` to decode with it by their mean next-token probability (``kg2text generate --ensemble``).

        ``decode`` sets the decoding defaults (``num_beams=5``, ``max_new_tokens=100``, ...: ``DecodeConfig``).
        """
        runs = {task: Path(path) for task, path in run.items()} if isinstance(run, Mapping) else Path(run)
        loaded = load_for_generation(runs, load_backbone(backbone) if backbone else None, dtype,
                                     ensemble=[Path(path) for path in ensemble])
        return cls(loaded, DecodeConfig(**decode))

    @property
    def tasks(self) -> list[str]:
        return list(self.loaded.headers)

    def generate(self, inputs: Iterable[Input], task: str | None = None, category: str = "",
                 **decode: object) -> list[str]:
        """One sentence per input, in order. With several tasks, ``task`` (or a dict's ``"task"``) picks the prefix;
        ``category`` a ``--method control`` run's WebNLG category for every input (default, or one it did not train:
        its general control prefix); ``decode`` overrides this call's decoding settings."""
        self.check_category(category)
        parsed = self.parse(inputs, task)
        return generate_sentences(self.loaded, parsed, replace(self.decode, **decode),
                                  categories=[category] * len(parsed)) if parsed else []

    def check_category(self, category: str) -> None:
        """Refuse a category where the loaded prefix has no control prefixes to choose from (the API and serve)."""
        if category and not self.loaded.categories:
            raise UserError(f"category: {category!r} chooses a control prefix; the loaded prefix has none (only a "
                            "--method control run has them)")

    def parse(self, inputs: Iterable[Input], task: str | None = None) -> list[UserInput]:
        """Inputs checked and parsed for their task's format; a bad one raises ``UserError`` naming its number."""
        return [self._parse(value, task, number) for number, value in enumerate(inputs, start=1)]

    def linearized(self, parsed: UserInput) -> str:
        """The source text the model reads for a parsed input."""
        return self.loaded.formats[parsed.task].linearize(parsed.items)

    def __call__(self, value: Input, task: str | None = None, category: str = "", **decode: object) -> str:
        """The sentence for one input."""
        return self.generate([value], task, category, **decode)[0]

    def _parse(self, value: Input, task: str | None, number: int) -> UserInput:
        formats = self.loaded.formats
        if isinstance(value, Mapping) and "task" in value:
            task = value["task"]
        task = task or (self.tasks[0] if len(self.tasks) == 1 else None)
        if task not in formats:
            raise UserError(f"input {number}: task {task!r} is not loaded; name one of: {', '.join(formats)}"
                            if task else f"input {number}: name its task, one of: {', '.join(formats)}")
        try:
            return UserInput(str(value), task, _items(value, formats[task].parse))
        except UserError as err:
            raise UserError(f"input {number}: {err}") from None


def _items(value: Input, parse) -> tuple[Item, ...]:
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, Mapping):
        return items_from_json(dict(value), parse)
    triples = [value] if len(value) == 3 and all(isinstance(x, str) for x in value) else list(value)
    return items_from_json({"triples": [list(t) if isinstance(t, tuple | list) else t for t in triples]}, parse)


def train(config: TrainConfig | None = None, **fields: object) -> Path:
    """Train a prefix (or prompt) and return its ``prefix.safetensors``; ``fields`` build a ``TrainConfig``."""
    config = config or TrainConfig(**fields)
    return _train(config)


def evaluate(hypotheses: Sequence[str], references: Sequence[Sequence[str]] | Sequence[Record],
             seen: Sequence[bool] | None = None) -> dict:
    """Score sentences against their references (several per entry allowed).

    Returns sacrebleu BLEU (``bleu``) and the WebNLG challenge's BLEU (``bleu_challenge``), each for ``all``
    entries and, where ``seen`` is given (or the records say), ``seen`` / ``unseen``; chrF++; and with records,
    faithfulness: entity coverage (triples) or, for E2E slots, slot error rate with NIST, ROUGE-L and CIDEr.
    """
    grouped = bool(references) and isinstance(references[0], Record)
    records = list(references) if grouped else [
        Record((), tuple(refs), seen=True if seen is None else bool(seen[i])) for i, refs in enumerate(references)]
    if len(records) != len(hypotheses):
        raise UserError(f"{len(hypotheses)} hypotheses for {len(records)} references")
    hypotheses = list(hypotheses)
    scores: dict = {"entries": len(records)}
    for name, score in (("bleu", corpus_bleu), ("bleu_challenge", challenge_bleu)):
        by_group = scores_by_group(records, hypotheses, score)
        scores[name] = by_group if grouped or seen is not None else {"all": by_group["all"]}
    scores["chrf++"] = round(chrf_pp(hypotheses, [r.references for r in records]), 2)
    kinds = {len(r.items[0]) for r in records if r.items}
    if kinds == {3}:
        scores["entity_coverage"] = round(webnlg_coverage(records, hypotheses), 2)
    elif kinds == {2}:  # the E2E challenge's word-overlap scores besides BLEU
        references = [r.references for r in records]
        scores["slot_error_rate"] = round(e2e_slot_error_rate(records, hypotheses), 2)
        scores["nist"] = round(nist(hypotheses, references), 4)
        scores["rouge_l"] = round(rouge_l(hypotheses, references), 2)
        scores["cider"] = round(cider(hypotheses, references), 4)
    return scores
