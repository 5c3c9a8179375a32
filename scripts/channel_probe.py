"""Noisy-channel reranking of the beam's sentences: does a reverse prefix (sentence -> triples) pick better ones?

``--rerank`` outputs, of beam search's 5 finished sentences, the one naming the most input entities; the oracle
among those 5 is about 6 BLEU above it (``oracle`` below), so the choice matters. A reverse model scores how well
a sentence lets one recover its facts, log P(triples | sentence), the "channel" of noisy-channel reranking. This
trains such a prefix on WebNLG train (the shipped prefix's recipe with the roles of input and output swapped,
``--minutes`` of training, kept in ``runs/probe/``), scores every candidate that ``scripts/nbest_probe.py`` stored
(dev 300 and test 400, beam 5, the shipped prefix) with it and with the shipped prefix itself (log P(sentence |
triples)), and compares, by the challenge's BLEU, choices that add these scores to the entity count and the beam
rank. Weights are chosen on dev, then read on test. A probe, not a feature: nothing here is in the package.

    python scripts/channel_probe.py --minutes 20
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from dataclasses import replace
from pathlib import Path

import sacrebleu
import torch
from slice_probe import train_shipped_recipe

import kg2text.batching as batching
from kg2text.artifact import atomic_write_text
from kg2text.backbones import Backbone, load_backbone
from kg2text.data import Record, evenly_spaced, read_records
from kg2text.generate import load_for_generation
from kg2text.hardware import cpu_info
from kg2text.linearize import Format, get_format, model_prompt, model_target
from kg2text.metrics import challenge_bleu, mentions_found, scores_by_group
from kg2text.model import IGNORE_INDEX

NBEST = Path("results/release/nbest")
SPLITS = (("dev", 300), ("test", 400))
SENTENCE = Format("sentence", lambda line: ((line,),), lambda items: items[0][0], "a sentence")


def train_reverse(output: Path, minutes: float) -> None:
    """The shipped prefix's recipe (40 positions, bf16 backbone, --compile, lr 5e-4) on (sentence, triples) pairs:
    each training pair's roles swapped before ``encode_examples`` sees it. Resumes an interrupted run."""
    forward = batching.encode_examples
    webnlg = get_format("webnlg")

    def reversed_examples(pairs, fmt, backbone, max_tokens):
        swapped = [(replace(record, items=((sentence.strip(),),)), webnlg.linearize(record.items))
                   for record, sentence in pairs]
        return forward(swapped, SENTENCE, backbone, max_tokens)

    batching.encode_examples = reversed_examples
    try:
        train_shipped_recipe(output, minutes)
    finally:
        batching.encode_examples = forward


@functools.cache
def smollm2() -> Backbone:
    """One backbone for both prefixes and both splits (each scoring pass sets its own prefix)."""
    return load_backbone("smollm2-135m")


@torch.no_grad()
def log_probs(run: Path, pairs: list[tuple[str, str]], batch_size: int = 32) -> list[float]:
    """log P(target | source) of each (source, target) under ``run``'s prefix, fp32, the LM head on targets only."""
    lm = load_for_generation(run, backbone=smollm2()).lm
    backbone = lm.backbone
    tokenizer, head = backbone.tokenizer, backbone.model.get_output_embeddings()
    encoded = [(tokenizer(model_prompt(source, backbone.separator), add_special_tokens=False)["input_ids"],
                tokenizer(model_target(target, backbone.end), add_special_tokens=False)["input_ids"])
               for source, target in pairs]
    examples = [{"input_ids": p + t, "labels": [IGNORE_INDEX] * len(p) + t} for p, t in encoded]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    scores = [0.0] * len(examples)
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        batch = batching.collate([examples[i] for i in rows], tokenizer.pad_token_id)
        hidden = lm.hidden_states(batch["input_ids"], batch["attention_mask"])[:, :-1]
        targets = batch["labels"][:, 1:]
        where = targets != IGNORE_INDEX
        picked = torch.log_softmax(head(hidden[where]).float(), -1).gather(-1, targets[where][:, None])[:, 0]
        per_row = torch.zeros(len(rows)).index_add_(0, where.nonzero()[:, 0], picked)
        for row, i in enumerate(rows):
            scores[i] = float(per_row[row])
    return scores


def stored_scores(path: Path, compute) -> list[list[float]]:
    if not path.exists():
        atomic_write_text(path, json.dumps(compute()))
    return json.loads(path.read_text())


def per_entry(flat: list[float], count: int) -> list[list[float]]:
    return [flat[i * count: (i + 1) * count] for i in range(len(flat) // count)]


def choose(candidates: list[str], entities: list[int], channel: list[float], direct: list[float],
           weights: tuple[bool, float, float, float]) -> str:
    """The candidate with the highest (entities named, if used; w_c channel + w_d direct - w_r beam rank)."""
    by_entities, w_channel, w_direct, w_rank = weights
    return candidates[max(range(len(candidates)), key=lambda i: (
        entities[i] if by_entities else 0, w_channel * channel[i] + w_direct * direct[i] - w_rank * i))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20, help="training budget of the reverse prefix")
    args = parser.parse_args()
    reverse = Path(f"runs/probe/reverse-{args.minutes:g}min")
    train_reverse(reverse, args.minutes)
    webnlg, fmt = Path("webnlg"), get_format("webnlg")
    grid = [w for w in itertools.product((False, True), (0, 0.25, 0.5, 1.0), (0, 1.0), (0, 0.5, 1.0, 2.0))
            if w[1] or w[2] or w[3] == 1.0]
    bleu = sacrebleu.metrics.BLEU(effective_order=True)
    scored: dict[tuple, dict[str, str]] = {}
    oracle: dict[str, str] = {}
    for split, limit in SPLITS:
        records: list[Record] = evenly_spaced(read_records("webnlg", split), limit)
        name = f"webnlg-{split}{limit}-beam5"
        candidates = json.loads((NBEST / f"{name}.json").read_text())
        count = len(candidates[0])
        flat = [(r, c) for r, cs in zip(records, candidates, strict=True) for c in cs]
        channel_pairs = [(c, fmt.linearize(r.items)) for r, c in flat]
        direct_pairs = [(fmt.linearize(r.items), c) for r, c in flat]
        channel = per_entry(stored_scores(NBEST / f"{name}-channel-{args.minutes:g}min.json",
                                          lambda pairs=channel_pairs: log_probs(reverse, pairs)), count)
        direct = per_entry(stored_scores(NBEST / f"{name}-direct.json",
                                         lambda pairs=direct_pairs: log_probs(webnlg, pairs)), count)
        entities = [[mentions_found(r.items, c)[0] for c in cs] for r, cs in zip(records, candidates, strict=True)]

        def table_cell(outputs: list[str], records=records) -> str:
            scores = scores_by_group(records, outputs, challenge_bleu)
            return " / ".join(f"{scores[g]['bleu']:.2f}" for g in ("all", "seen", "unseen") if g in scores)

        for weights in grid:
            outputs = [choose(cs, found, ch, di, weights)
                       for cs, found, ch, di in zip(candidates, entities, channel, direct, strict=True)]
            scored.setdefault(weights, {})[split] = table_cell(outputs)
        oracle[split] = table_cell([max(cs, key=lambda t, r=r: bleu.sentence_score(t, list(r.references)).score)
                                    for r, cs in zip(records, candidates, strict=True)])
    top, rerank = scored[(False, 0, 0, 1.0)], scored[(True, 0, 0, 1.0)]
    best = sorted(scored, key=lambda w: -float(scored[w]["dev"].split(" / ")[0]))[:5]
    rows = ["| choice (entities first; weights of channel, direct, beam rank) | dev 300 challenge BLEU | "
            "test 400 challenge BLEU all / seen / unseen |", "|---|---:|---|",
            f"| top (the best-scored beam) | {top['dev']} | {top['test']} |",
            f"| rerank (`--rerank`: entities, then beam rank) | {rerank['dev']} | {rerank['test']} |",
            *(f"| {'entities, ' if w[0] else ''}{w[1]:g} / {w[2]:g} / {w[3]:g} | {scored[w]['dev']} | "
              f"{scored[w]['test']} |" for w in best),
            f"| oracle (the candidate closest to the references) | {oracle['dev']} | {oracle['test']} |"]
    trained = json.loads((reverse / "train_log.jsonl").read_text().splitlines()[-1])
    cpu = cpu_info()
    text = "\n".join([
        f"# Noisy-channel reranking of the beam's 5 sentences (reverse prefix: {args.minutes:g} minutes)", "",
        f"Reverse prefix `{reverse}`: {trained['step']} steps of 8 in {trained['elapsed_s'] / 60:.1f} minutes "
        f"({trained['tokens_per_s']:.0f} tokens/s) on {cpu['model']} ({cpu['cores']} cores; "
        f"{', '.join(cpu['flags'])}).",
        "The five best on dev of the weight grid, then read on test; top and rerank as kg2text decodes.", "",
        *rows, "", f"Command: `python scripts/channel_probe.py --minutes {args.minutes:g}`", ""])
    atomic_write_text(NBEST / f"channel-{args.minutes:g}min.md", text)
    print(text)


if __name__ == "__main__":
    main()
