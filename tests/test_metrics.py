import pytest

from kg2text.data import Record
from kg2text.metrics import corpus_bleu, scores_by_group


def test_references_against_themselves_score_100():
    refs = [("The cat sat on the mat.", "A cat was on the mat."), ("Alan Bean is American.",)]
    assert corpus_bleu([r[0] for r in refs], refs) == pytest.approx(100.0)


def test_known_pair_gives_hand_computed_bleu():
    # 1-4 gram precisions 5/6, 4/5, 3/4, 2/3, no brevity penalty: BLEU = (1/3) ** (1/4)
    assert corpus_bleu(["a b c d e f"], [("a b c d e g",)]) == pytest.approx(100 * (1 / 3) ** 0.25, abs=1e-6)


def test_all_references_count():
    # the hypothesis matches only the second reference
    assert corpus_bleu(["a b c d e f"], [("x y z", "a b c d e f")]) == pytest.approx(100.0)


def test_seen_unseen_groups():
    records = [Record((("a", "b", "c"),), ("a b c d e f",), "Airport", True),
               Record((("a", "b", "c"),), ("g h i j k l",), "Artist", False)]
    scores = scores_by_group(records, ["a b c d e f", "m n o p q r"])
    assert scores["seen"] == {"bleu": 100.0, "entries": 1}
    assert scores["unseen"] == {"bleu": 0.0, "entries": 1}
    assert scores["all"]["entries"] == 2
