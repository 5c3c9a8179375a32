"""Scores: sacrebleu corpus BLEU against all references, overall and by WebNLG seen/unseen split."""

from __future__ import annotations

import sacrebleu

from kg2text.data import Record


def corpus_bleu(hypotheses: list[str], references: list[tuple[str, ...]]) -> float:
    """sacrebleu corpus BLEU with every reference of each entry (entries may have different counts)."""
    if not hypotheses:
        return 0.0
    streams = max(len(refs) for refs in references)
    padded = [[refs[k] if k < len(refs) else None for refs in references] for k in range(streams)]
    return sacrebleu.corpus_bleu(hypotheses, padded).score


def scores_by_group(records: list[Record], hypotheses: list[str]) -> dict[str, dict]:
    """BLEU for all entries and for the seen / unseen categories (WebNLG 2017's standard report)."""
    groups = {"all": lambda r: True, "seen": lambda r: r.seen, "unseen": lambda r: not r.seen}
    scores = {}
    for name, keep in groups.items():
        chosen = [(r, h) for r, h in zip(records, hypotheses, strict=True) if keep(r)]
        if chosen:
            refs = [r.references for r, _ in chosen]
            scores[name] = {"bleu": round(corpus_bleu([h for _, h in chosen], refs), 2), "entries": len(chosen)}
    return scores
