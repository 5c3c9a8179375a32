"""Decoding: prefixed prompts in, one clean sentence per input out (greedy or beam search).

Inputs are left-padded and their positions come from the mask, so a row decodes the same in any
batch. The prefix is set once per loaded model and broadcast to rows and beams by the attention
hook; the KV cache holds only real tokens. Newline tokens are banned (as in Li & Liang).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, NoRepeatNGramLogitsProcessor

from kg2text.artifact import check_compatible, control_categories_of, read_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.control import category_rows
from kg2text.decoding import CacheMemory, beam_search, greedy
from kg2text.errors import UserError
from kg2text.hardware import prepare_for_decoding
from kg2text.inputs import UserInput
from kg2text.linearize import Format, Item, get_format, model_prompt
from kg2text.metrics import mentions_found
from kg2text.model import PREFIX_METHODS, TunedLM, check_fits


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings; defaults follow Li & Liang's table-to-text decoding (beam 5)."""

    num_beams: int = 5
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 100
    batch_size: int = 16
    engine: str = "kg2text"  # kg2text: our loop (kg2text/decoding.py); hf: transformers' generate, the reference
    draft_tokens: int = 3  # greedy of one input: tokens drafted by prompt lookup, verified per forward (0: off)
    rerank: bool = False  # of the num_beams finished beams, output the one that mentions most input entities

    @property
    def candidates(self) -> int:
        """Hypotheses kept per input: all finished beams when reranking, else the best one."""
        return self.num_beams if self.rerank else 1


ENGINES = ("kg2text", "hf")


@dataclass
class LoadedPrefix:
    """One frozen backbone with one or more trained task prefixes (or one soft prompt) on it."""

    lm: TunedLM
    headers: dict[str, dict]  # task name -> artifact header
    ensemble: tuple[str, ...] = ()  # names (folders) of the runs decoded side by side with the one run

    @property
    def members(self) -> int:
        """Prefixes that choose each token together: the run and its ensemble's."""
        return 1 + len(self.ensemble)

    @property
    def backbone(self) -> Backbone:
        return self.lm.backbone

    @property
    def formats(self) -> dict[str, Format]:
        return {task: get_format(header["format"]) for task, header in self.headers.items()}

    @property
    def header(self) -> dict:
        return next(iter(self.headers.values()))

    @property
    def categories(self) -> list[str]:
        """A control-prefix run's categories, in the order of its stack (empty for other runs)."""
        return control_categories_of(self.header)


def load_for_generation(runs: Path | dict[str, Path], backbone: Backbone | None = None,
                        dtype: str = "float32", onednn: bool | None = None, stack: bool = True,
                        ensemble: Sequence[Path] = ()) -> LoadedPrefix:
    """Load one run, or several task runs (``{"webnlg": RUN1, "e2e": RUN2}``), onto one backbone.

    Several task prefixes are stacked so that one batch can mix tasks row by row. ``dtype`` is the
    backbone's format for decoding: float32, bfloat16, float16, int8 or int4, and ``onednn`` whether its fp32 matmuls go
    through oneDNN (by default where measured faster; see kg2text/hardware.py), ``stack`` whether sibling linear
    layers run as one matmul (``hardware.stack_siblings``). ``ensemble``: more runs like the one run, decoded
    together with it by their mean next-token probability (``decoding.ensemble_logits``).
    """
    runs = {Path(runs).name: Path(runs)} if not isinstance(runs, dict) else runs
    if ensemble and len(runs) > 1:
        raise UserError("--ensemble goes with one --prefix run, not several tasks")
    loaded = {task: read_prefix(path) for task, path in runs.items()}
    first = next(iter(loaded.values()))[1]
    backbone = backbone or load_backbone(first["backbone"])
    prepare_for_decoding(backbone.model, dtype, onednn, stack)
    for task, (_, header) in loaded.items():
        check_compatible(header, backbone, runs[task])
    tensors = [t.to(device=backbone.model.device, dtype=backbone.model.dtype) for t, _ in loaded.values()]
    headers = {task: header for task, (_, header) in loaded.items()}
    lm = TunedLM(backbone)
    control = torch.zeros(1, dtype=torch.long) if first.get("method") == "control" else None  # rows: the inputs'
    if ensemble:
        if first["method"] not in PREFIX_METHODS:
            raise UserError(f"--ensemble averages prefix runs ({', '.join(PREFIX_METHODS)}), not a {first['method']} "
                            "run")
        members = [tensors[0], *(_ensemble_member(path, first, backbone) for path in ensemble)]
        stacks = [m if control is not None else m[None] for m in members]  # member k's stack at k * its size
        lm.use(first["method"], torch.cat(stacks), rows=torch.zeros(1, dtype=torch.long))
        return LoadedPrefix(lm, headers, tuple(Path(path).name for path in ensemble))
    if len(tensors) == 1:
        lm.use(first.get("method", "prefix"), tensors[0], control)
        return LoadedPrefix(lm, headers)
    methods = {h.get("method", "prefix") for h in headers.values()}
    if "control" in methods:
        raise UserError("a --method control run cannot share a batch with other --prefix runs; generate for it "
                        "on its own")
    if len(methods) > 1 or not methods <= set(PREFIX_METHODS):
        raise UserError("several --prefix runs can share a batch only if all are runs of one method, prefix or "
                        f"prefix-hidden (got {', '.join(sorted(methods))})")
    if len({t.shape for t in tensors}) > 1:
        raise UserError("several --prefix runs need the same prefix length to share a batch "
                        f"(got {', '.join(f'{k}: {t.shape[-2]}' for k, t in zip(runs, tensors, strict=True))}); "
                        "generate for them separately")
    lm.use(methods.pop(), torch.stack(tensors), rows=torch.zeros(1, dtype=torch.long))
    return LoadedPrefix(lm, headers)


def _ensemble_member(path: Path, first: dict, backbone: Backbone) -> torch.Tensor:
    """An ``--ensemble`` run's prefix, refused unless it is a run like the ``--prefix`` one: same backbone, method,
    input format, prefix shape (and a control run's categories), so that its rows decode the same prompts."""
    prefix, header = read_prefix(path)
    check_compatible(header, backbone, path)
    facts = ("method", "format", "shape")
    mine, wanted = [header[f] for f in facts], [first[f] for f in facts]
    if mine != wanted or control_categories_of(header) != control_categories_of(first):
        raise UserError(f"--ensemble {path}: its method, format, shape ({', '.join(map(str, mine))}) must be the "
                        f"--prefix run's ({', '.join(map(str, wanted))}), and a control run's categories too")
    return prefix.to(device=backbone.model.device, dtype=backbone.model.dtype)


@functools.cache
def newline_token_ids(tokenizer) -> tuple[int, ...]:
    vocab = tokenizer.get_vocab()
    return tuple(i for token, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([token]))


def _generation_config(backbone: Backbone, decode: DecodeConfig) -> GenerationConfig:
    tokenizer = backbone.tokenizer
    banned = [[i] for i in newline_token_ids(tokenizer)]
    return GenerationConfig(
        do_sample=False, num_beams=decode.num_beams, length_penalty=decode.length_penalty,
        no_repeat_ngram_size=decode.no_repeat_ngram_size, max_new_tokens=decode.max_new_tokens,
        early_stopping=decode.num_beams > 1 or None, bad_words_ids=banned or None,
        num_return_sequences=decode.candidates,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


GenerateBatch = Callable[[list[int], torch.Tensor, torch.Tensor, GenerationConfig], torch.Tensor]
Pick = Callable[[int, list[str]], str]  # (input index, its candidates best-scored first) -> its output


class OutputNoRepeatNGram(LogitsProcessor):
    """transformers' no-repeat-n-gram ban over the generated tokens only. Its own ban also counts a decoder-only
    model's prompt, so it forbids copying any input name of ``size`` tokens or more, which a data-to-text sentence
    must do. One instance per ``generate`` call: its first call sees the prompt alone, which fixes where the output
    starts."""

    def __init__(self, size: int):
        self.ban, self.start = NoRepeatNGramLogitsProcessor(size), None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        return self.ban(input_ids[:, self.start:], scores)


def hf_generate(model, config: GenerationConfig, **inputs) -> torch.Tensor:
    """``model.generate`` (transformers' or PEFT's) with ``config``, its n-gram ban on the output only."""
    processors = LogitsProcessorList()
    if config.no_repeat_ngram_size:
        processors.append(OutputNoRepeatNGram(config.no_repeat_ngram_size))
        config = copy.deepcopy(config)
        config.no_repeat_ngram_size = 0
    return model.generate(**inputs, generation_config=config, logits_processor=processors)


def pick_sentence(candidates: list[str], items: tuple[Item, ...] | None = None) -> str:
    """An input's output among its candidates (best-scored first): the first, or with ``items`` (``--rerank``) the
    first of those that mention the most of their entities."""
    return candidates[0] if items is None else max(candidates, key=lambda text: mentions_found(items, text)[0])


def decode_batched(backbone: Backbone, prompts: list[str], decode: DecodeConfig, generate_batch: GenerateBatch,
                   virtual_tokens: int = 0, progress: bool = False,
                   items: list[tuple[Item, ...]] | None = None, pick: Pick | None = None) -> list[str]:
    """Tokenize, batch by length, left-pad, call ``generate_batch(indices, ids, mask, config)`` for the
    new tokens of each batch (``decode.candidates`` rows per input, best first), and return clean one-line
    sentences in input order. With ``decode.rerank``, each input's sentence is its candidate that mentions
    the most of its ``items``' entities (ties: the better-scored one); ``pick`` chooses instead where given."""
    if decode.rerank and items is None and pick is None:
        raise ValueError("reranking by mentions needs each prompt's items")

    def by_mentions(row: int, candidates: list[str]) -> str:
        return pick_sentence(candidates, items[row] if decode.rerank else None)

    pick = pick or by_mentions
    tokenizer, device = backbone.tokenizer, backbone.model.device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for ids in encoded:
        check_fits(backbone, virtual_tokens, len(ids) + decode.max_new_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    config = _generation_config(backbone, decode)
    outputs: list[str] = [""] * len(prompts)
    batches = [order[i: i + decode.batch_size] for i in range(0, len(order), decode.batch_size)]
    bar = tqdm(total=len(prompts), desc="decoding", unit="sent", disable=not progress)  # shows sentences/s
    for batch in batches:
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):], mask[row, width - len(encoded[i]):] = torch.tensor(encoded[i]), 1
        with torch.no_grad():
            new_tokens = generate_batch(batch, ids.to(device), mask.to(device), config)
        texts = [" ".join(text.split()) for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        for index, row in enumerate(batch):
            candidates = texts[index * decode.candidates: (index + 1) * decode.candidates]
            outputs[row] = pick(row, candidates)
        bar.update(len(batch))
    bar.close()
    return outputs


def decode_prompts(lm: TunedLM, prompts: list[str], decode: DecodeConfig, progress: bool = False,
                   tasks: list[int] | None = None, items: list[tuple[Item, ...]] | None = None,
                   pick: Pick | None = None, members: int = 1) -> list[str]:
    """Generate a sentence for each model prompt with the prefix or prompt in use.

    With a stack of task prefixes, ``tasks`` gives each prompt's task index (rows of one batch may differ);
    ``items`` are each prompt's facts, which ``decode.rerank`` needs; ``pick`` as in ``decode_batched``.
    ``members`` > 1: the stack is an ensemble's, member k's prefixes (its ``tasks``) at ``k * len(stack) // members``.
    ``no_repeat_ngram_size`` is only in transformers' ``generate``, which then decodes.
    """
    tokenizer = lm.backbone.tokenizer
    banned = torch.tensor(newline_token_ids(tokenizer), dtype=torch.long)
    own_loop = decode.engine == "kg2text" and not decode.no_repeat_ngram_size
    if members > 1 and not own_loop:
        raise UserError("--ensemble decodes with kg2text's own loop: leave out --decoder hf and --no-repeat-ngram")
    memory = CacheMemory()  # the batches' caches reuse one block
    stack = len(lm.prefix) // members if members > 1 else 1

    def generate_batch(batch: list[int], ids: torch.Tensor, mask: torch.Tensor, config: GenerationConfig):
        if tasks is not None or members > 1:
            own = [0] * len(batch) if tasks is None else [tasks[i] for i in batch]
            rows = [member * stack + task for task in own for member in range(members)]  # an input's members together
            lm.use(lm.method, lm.prefix, rows=torch.tensor(rows, device=ids.device))
        if own_loop:
            lm.model_inputs(ids, mask)  # sets this object's prefix on the shared injector
            if decode.num_beams == 1:
                return greedy(lm, ids, mask, decode.max_new_tokens, tokenizer.eos_token_id, banned,
                              decode.draft_tokens, memory, members)
            hypotheses = beam_search(lm, ids, mask, decode.num_beams, decode.max_new_tokens, tokenizer.eos_token_id,
                                     banned, decode.length_penalty, memory, members)
            return [tokens for row in hypotheses for tokens in row[: decode.candidates]]
        inputs = lm.model_inputs(ids, mask)
        out = hf_generate(lm.backbone.model, config, **inputs)
        return out[:, ids.shape[1]:] if "input_ids" in inputs else out  # from embeddings only new tokens return

    return decode_batched(lm.backbone, prompts, decode, generate_batch, lm.virtual_tokens, progress, items, pick)


def generate_sentences(loaded: LoadedPrefix, inputs: list[tuple[Item, ...]] | list[UserInput],
                       decode: DecodeConfig, progress: bool = False, categories: list[str] | None = None,
                       pick: Pick | None = None) -> list[str]:
    """Parsed inputs (items, or ``UserInput`` naming their task) -> sentences.

    ``categories`` (each input's WebNLG category) choose a control-prefix run's control prefixes; without
    them, or for a category it was not trained on, an input gets its general one."""
    names = list(loaded.headers)
    tasks = [names.index(i.task) if isinstance(i, UserInput) else 0 for i in inputs]
    formats = [loaded.formats[names[t]] for t in tasks]
    items = [i.items if isinstance(i, UserInput) else i for i in inputs]
    separator = loaded.backbone.separator
    prompts = [model_prompt(fmt.linearize(x), separator) for fmt, x in zip(formats, items, strict=True)]
    if loaded.categories:
        rows = category_rows(loaded.categories, categories or [""] * len(inputs))
        return decode_prompts(loaded.lm, prompts, decode, progress, rows, items, pick, loaded.members)
    return decode_prompts(loaded.lm, prompts, decode, progress, tasks if len(names) > 1 else None, items, pick,
                          loaded.members)
