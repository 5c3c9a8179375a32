"""Scores: sacrebleu BLEU / chrF++ / TER against all references (overall and WebNLG seen / unseen),
the WebNLG 2017 challenge's BLEU (what Li & Liang and DART report), the E2E challenge's NIST, ROUGE-L and
CIDEr, and faithfulness (WebNLG entity coverage, E2E slot error rate)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable

import sacrebleu
from sacrebleu.metrics import CHRF, TER

from kg2text.data import Record


def corpus_bleu(hypotheses: list[str], references: list[tuple[str, ...]]) -> float:
    """sacrebleu corpus BLEU with every reference of each entry (entries may have different counts)."""
    if not hypotheses:
        return 0.0
    return sacrebleu.corpus_bleu(hypotheses, _streams(references)).score


Score = Callable[[list[str], list[tuple[str, ...]]], float]


def scores_by_group(records: list[Record], hypotheses: list[str], score: Score = corpus_bleu) -> dict[str, dict]:
    """BLEU (or ``score``) for all entries and for the seen / unseen categories (WebNLG 2017's standard report)."""
    groups = {"all": lambda r: True, "seen": lambda r: r.seen, "unseen": lambda r: not r.seen}
    scores = {}
    for name, keep in groups.items():
        chosen = [(r, h) for r, h in zip(records, hypotheses, strict=True) if keep(r)]
        if chosen:
            refs = [r.references for r, _ in chosen]
            scores[name] = {"bleu": round(score([h for _, h in chosen], refs), 2), "entries": len(chosen)}
    return scores


# ---- the WebNLG 2017 challenge's BLEU --------------------------------------------------------------------
# The challenge scores with ``multi-bleu.perl -lc`` over three reference files, after its own preprocessing
# (evaluation.py in the challenge's evaluation kit): text converted to ASCII, lower-cased, split at every
# non-word character. An entry with fewer than three references gets empty lines in the missing files, and
# multi-bleu counts an empty line as a reference of length 0 when it picks the closest reference length.

_ASCII_EXTRA = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "þ": "th", "ł": "l",
                              "ı": "i", "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "..."})


def ascii_fold(text: str) -> str:
    """Accents dropped (NFKD) and common letters spelt in ASCII, as the challenge's ``unidecode`` does for
    Latin text; any other non-ASCII character is dropped (unidecode would transliterate it)."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_ASCII_EXTRA))
    return decomposed.encode("ascii", "ignore").decode("ascii")


def challenge_tokens(text: str) -> list[str]:
    """The challenge's preprocessing: ASCII, lower case, every non-word character a token of its own."""
    return " ".join(re.split(r"(\W)", ascii_fold(text))).split()


def multi_bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """``multi-bleu.perl`` on tokenized text: corpus BLEU-4, n-grams clipped by their most frequent occurrence
    in any one reference, the closest reference length (the shorter on a tie), 0 if any precision is 0."""
    correct, total = [0] * 5, [0] * 5
    hyp_length = ref_length = 0
    for words, refs in zip(hypotheses, references, strict=True):
        hyp_length += len(words)
        ref_length += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            best: Counter = Counter()
            for ref in refs:
                best |= _ngrams(ref, n)
            grams = _ngrams(words, n)
            total[n] += sum(grams.values())
            correct[n] += sum(min(count, best[gram]) for gram, count in grams.items())
    if ref_length == 0 or not all(correct[1:]):
        return 0.0
    penalty = math.exp(1 - ref_length / hyp_length) if hyp_length < ref_length else 1.0
    return 100 * penalty * math.exp(sum(math.log(correct[n] / total[n]) for n in range(1, 5)) / 4)


def challenge_bleu(hypotheses: list[str], references: list[tuple[str, ...]]) -> float:
    """The WebNLG 2017 challenge's BLEU: its preprocessing, then ``multi-bleu.perl -lc`` over the first three
    references of each entry (missing ones count as empty references, as in the challenge's files)."""
    refs = [[challenge_tokens(r) for r in (list(entry[:3]) + [""] * 3)[:3]] for entry in references]
    return multi_bleu([challenge_tokens(h) for h in hypotheses], refs)


def _streams(references: list[tuple[str, ...]]) -> list[list[str | None]]:
    count = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(count)]


def chrf_pp(hypotheses: list[str], references: list[tuple[str, ...]]) -> float:
    """chrF++ (character n-grams plus word bigrams), sacrebleu, all references."""
    return CHRF(word_order=2).corpus_score(hypotheses, _streams(references)).score


def ter(hypotheses: list[str], references: list[tuple[str, ...]]) -> float:
    """Translation edit rate (lower is better), sacrebleu, all references."""
    return TER().corpus_score(hypotheses, _streams(references)).score


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], previous + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hypotheses: list[str], references: list[tuple[str, ...]], beta: float = 1.2) -> float:
    """ROUGE-L F (as in the E2E challenge's script: best reference per entry, averaged), 0-100."""
    total = 0.0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hyp, best = hypothesis.lower().split(), 0.0
        for ref in refs:
            tokens = ref.lower().split()
            common = _lcs(hyp, tokens)
            if common:
                precision, recall = common / len(hyp), common / len(tokens)
                best = max(best, (1 + beta**2) * precision * recall / (recall + beta**2 * precision))
        total += best
    return 100 * total / max(len(hypotheses), 1)


def normalise(text: str) -> str:
    """Case, underscores, quotes and spacing do not decide whether a fact was mentioned."""
    return " ".join(text.replace("_", " ").replace('"', " ").replace("'", " ").lower().split())


_BINARY_SLOT_WORDS = {"familyFriendly": ("family", "kid", "child", "children")}


def expected_mentions(items: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """What a faithful output contains, one entry per fact element, each a tuple of acceptable words: a
    triple's subject and its object; an E2E slot's value (a binary slot: any of its keywords)."""
    wanted: list[tuple[str, ...]] = []
    for item in items:
        if len(item) == 3:
            wanted += [(normalise(item[0]),), (normalise(item[2]),)]
        else:
            wanted.append(_BINARY_SLOT_WORDS.get(item[0], (normalise(item[1]),)))
    return wanted


def mentions_found(items: tuple[tuple[str, ...], ...], hypothesis: str) -> tuple[int, int]:
    """(found, expected) mentions of ``items`` in ``hypothesis``, verbatim after ``normalise``."""
    text, wanted = normalise(hypothesis), expected_mentions(items)
    return sum(any(word in text for word in words) for words in wanted), len(wanted)


def _mention_totals(records: list[Record], hypotheses: list[str]) -> tuple[int, int]:
    counts = [mentions_found(r.items, h) for r, h in zip(records, hypotheses, strict=True)]
    return sum(found for found, _ in counts), sum(total for _, total in counts)


def webnlg_coverage(records: list[Record], hypotheses: list[str]) -> float:
    """Share (%) of triple subjects and objects that appear verbatim (normalised) in the output.

    BLEU hides a dropped or invented fact; this counts dropped entities directly.
    """
    found, total = _mention_totals(records, hypotheses)
    return 100 * found / max(total, 1)


def e2e_slot_error_rate(records: list[Record], hypotheses: list[str]) -> float:
    """Slot error rate (%): MR values not found in the output (binary slots by keyword). Approximate:
    it catches dropped values, not wrong negations or hallucinated extra slots."""
    found, total = _mention_totals(records, hypotheses)
    return 100 * (total - found) / max(total, 1)


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))


def nist(hypotheses: list[str], references: list[tuple[str, ...]], max_n: int = 5) -> float:
    """NIST (Doddington 2002), mteval's formula with multiple references: information-weighted n-gram
    matches (clipped by the most frequent occurrence in any one reference) and NIST's length penalty.
    Our implementation, not bit-exact with mteval-v13a's tokenisation."""
    hyp_words = [h.lower().split() for h in hypotheses]
    ref_words = [[r.lower().split() for r in refs] for refs in references]
    counts: Counter = Counter()
    for refs in ref_words:
        for words in refs:
            for n in range(1, max_n + 1):
                counts.update(_ngrams(words, n))
    total_words = sum(len(words) for refs in ref_words for words in refs)

    def info(gram: tuple[str, ...]) -> float:
        context = counts[gram[:-1]] if len(gram) > 1 else total_words
        return math.log2(context / counts[gram]) if counts[gram] else 0.0

    score = 0.0
    for n in range(1, max_n + 1):
        gained = produced = 0.0
        for words, refs in zip(hyp_words, ref_words, strict=True):
            grams = _ngrams(words, n)
            produced += sum(grams.values())
            best = Counter()
            for ref in refs:
                best |= _ngrams(ref, n)
            gained += sum(info(g) * min(c, best[g]) for g, c in grams.items() if best[g])
        score += gained / produced if produced else 0.0
    hyp_len = sum(map(len, hyp_words))
    ref_len = sum(sum(map(len, refs)) / len(refs) for refs in ref_words)
    beta = math.log(0.5) / math.log(1.5) ** 2  # penalty 0.5 at 2/3 of the reference length
    ratio = min(hyp_len / ref_len, 1.0) if ref_len else 0.0
    return score * (math.exp(beta * math.log(ratio) ** 2) if ratio > 0 else 0.0)


def cider(hypotheses: list[str], references: list[tuple[str, ...]], max_n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015), the variant the E2E challenge's script reports (coco-caption's).

    Per entry and n: cosine of tf-idf n-gram vectors (idf from the test references' document frequencies),
    the hypothesis weight clipped by the reference's, times a Gaussian penalty on the length difference
    (coco-caption counts length in bigrams); averaged over n and references, times 10, averaged over entries.
    Our implementation on lower-cased whitespace tokens (coco-caption tokenises with PTB's Java tokeniser)."""
    hyp_grams = [_gram_counts(h.lower().split(), max_n) for h in hypotheses]
    ref_grams = [[_gram_counts(r.lower().split(), max_n) for r in refs] for refs in references]
    frequency: Counter = Counter()
    for refs in ref_grams:
        frequency.update(set().union(*(set(grams) for grams in refs)))
    log_entries = math.log(max(len(references), 1))

    def tf_idf(grams: Counter) -> tuple[list[dict], list[float], int]:
        vectors: list[dict] = [{} for _ in range(max_n)]
        for gram, count in grams.items():
            vectors[len(gram) - 1][gram] = count * (log_entries - math.log(max(1.0, frequency[gram])))
        norms = [math.sqrt(sum(v * v for v in vector.values())) for vector in vectors]
        return vectors, norms, sum(count for gram, count in grams.items() if len(gram) == 2)

    def similarity(hyp: tuple, ref: tuple) -> float:
        (hyp_vectors, hyp_norms, hyp_length), (ref_vectors, ref_norms, ref_length) = hyp, ref
        penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * sigma**2))
        total = 0.0
        for n in range(max_n):
            dot = sum(min(w, ref_vectors[n].get(g, 0.0)) * ref_vectors[n].get(g, 0.0)
                      for g, w in hyp_vectors[n].items())
            if hyp_norms[n] and ref_norms[n]:
                total += dot / (hyp_norms[n] * ref_norms[n]) * penalty
        return total / max_n

    scores = [10 * sum(similarity(tf_idf(hyp), tf_idf(ref)) for ref in refs) / len(refs)
              for hyp, refs in zip(hyp_grams, ref_grams, strict=True)]
    return sum(scores) / max(len(scores), 1)


def _gram_counts(words: list[str], max_n: int) -> Counter:
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        counts.update(_ngrams(words, n))
    return counts
