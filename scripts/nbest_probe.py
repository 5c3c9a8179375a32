"""Which of the beam's finished sentences to output: every candidate kept, then several choices scored side by side.

Beam search ends with ``num_beams`` finished sentences per input. kg2text outputs the best-scored one, or with
``--rerank`` the one that mentions the most input entities. This decodes evenly spaced WebNLG entries once with all
candidates kept (a JSON file per split and beam size, so a later run re-scores without decoding) and scores, by
the challenge's BLEU (all / seen / unseen) and chrF++, these choices:

- ``top``: the best-scored sentence (the default);
- ``rerank``: the one naming the most entities, ties to the better-scored (``--rerank``);
- ``mbr-bleu`` / ``mbr-chrf``: minimum Bayes risk, the candidate with the highest mean sentence BLEU / chrF++
  against the other candidates (the consensus sentence);
- ``mbr-bleu+cov`` / ``mbr-chrf+cov``: the most entities first, then the consensus.

    python scripts/nbest_probe.py --split test --limit 400 --num-beams 5 --prefix webnlg
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sacrebleu

from kg2text.artifact import atomic_write_text
from kg2text.data import Record, evenly_spaced, read_records
from kg2text.generate import DecodeConfig, generate_sentences, load_for_generation, pick_sentence
from kg2text.metrics import challenge_bleu, chrf_pp, mentions_found, scores_by_group

CHOICES = ("top", "rerank", "mbr-bleu", "mbr-chrf", "mbr-bleu+cov", "mbr-chrf+cov")
CONSENSUS = {"bleu": sacrebleu.metrics.BLEU(effective_order=True), "chrf": sacrebleu.metrics.CHRF(word_order=2)}


def decode_candidates(prefix: str, records: list[Record], num_beams: int) -> list[list[str]]:
    """Each entry's finished beams, best-scored first (``rerank`` keeps them all; ``pick`` records them)."""
    kept: dict[int, list[str]] = {}

    def keep(row: int, candidates: list[str]) -> str:
        kept[row] = candidates
        return candidates[0]

    generate_sentences(load_for_generation({"webnlg": Path(prefix)}), [record.items for record in records],
                       DecodeConfig(num_beams=num_beams, rerank=True, batch_size=32), progress=True,
                       categories=[record.category for record in records], pick=keep)
    return [kept[row] for row in range(len(records))]


def consensus(candidates: list[str], metric: str) -> list[float]:
    """Each candidate's mean sentence score against the others."""
    scorer, count = CONSENSUS[metric], len(candidates)
    return [sum(scorer.sentence_score(candidates[i], [candidates[j]]).score for j in range(count) if j != i)
            / max(count - 1, 1) for i in range(count)]


def choose(record: Record, candidates: list[str], how: str) -> str:
    """The sentence that choice ``how`` outputs."""
    if how in ("top", "rerank"):
        return pick_sentence(candidates, record.items if how == "rerank" else None)
    agreement = consensus(candidates, how.split("-")[1].removesuffix("+cov"))
    first = [mentions_found(record.items, text)[0] if how.endswith("+cov") else 0 for text in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (first[i], agreement[i]))]


def table(records: list[Record], candidates: list[list[str]]) -> list[str]:
    rows = ["| choice | challenge BLEU all / seen / unseen | chrF++ |", "|---|---|---:|"]
    for how in CHOICES:
        outputs = [choose(r, c, how) for r, c in zip(records, candidates, strict=True)]
        scores = scores_by_group(records, outputs, challenge_bleu)
        bleu = " / ".join(f"{scores[g]['bleu']:.2f}" if g in scores else "–" for g in ("all", "seen", "unseen"))
        rows.append(f"| {how} | {bleu} | {chrf_pp(outputs, [r.references for r in records]):.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="webnlg", help="run folder or shipped prefix name")
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--limit", type=int, default=400, help="evenly spaced entries of the split")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--output", default="results/release/nbest", help="folder of candidates and tables")
    args = parser.parse_args()
    records = evenly_spaced(read_records("webnlg", args.split), args.limit)
    name = f"{Path(args.prefix).name}-{args.split}{len(records)}-beam{args.num_beams}"
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stored = out / f"{name}.json"
    if stored.exists():
        candidates = json.loads(stored.read_text())
    else:
        candidates = decode_candidates(args.prefix, records, args.num_beams)
        atomic_write_text(stored, json.dumps(candidates))
    command = (f"python scripts/nbest_probe.py --split {args.split} --limit {args.limit} --num-beams {args.num_beams} "
               f"--prefix {args.prefix}")
    text = "\n".join([f"# {name}: which finished beam to output", "", *table(records, candidates), "",
                      f"Command: `{command}`", ""])
    atomic_write_text(out / f"{name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
