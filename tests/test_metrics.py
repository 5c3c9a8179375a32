import math

import pytest

from kg2text.data import Record
from kg2text.metrics import corpus_bleu, e2e_slot_error_rate, nist, rouge_l, scores_by_group, webnlg_coverage


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


def test_nist_hand_computed():
    # unigrams: info = log2(4 words / 1) = 2 each, 4 matches / 4 -> 2; every longer n-gram carries 0 information
    assert nist(["a b c d"], [("a b c d",)]) == pytest.approx(2.0)
    # half the length: penalty exp(beta * ln(0.5)^2) with beta = ln(0.5) / ln(1.5)^2
    beta = math.log(0.5) / math.log(1.5) ** 2
    assert nist(["a b"], [("a b c d",)]) == pytest.approx(2.0 * math.exp(beta * math.log(0.5) ** 2))


def test_rouge_l_and_faithfulness():
    assert rouge_l(["the cat sat"], [("the cat sat",)]) == pytest.approx(100.0)
    record = Record((("Harry_Potter", "education", '"Hogwarts"'),), ("x",))
    assert webnlg_coverage([record], ["harry potter studied at Hogwarts"]) == pytest.approx(100.0)
    assert webnlg_coverage([record], ["He studied at Hogwarts"]) == pytest.approx(50.0)
    mr = Record((("name", "Alimentum"), ("familyFriendly", "yes"), ("area", "city centre")), ("x",))
    assert e2e_slot_error_rate([mr], ["Alimentum is kid friendly"]) == pytest.approx(100 / 3)
