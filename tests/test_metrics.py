import math

import pytest

from kg2text.data import Record
from kg2text.metrics import (
    challenge_bleu,
    challenge_tokens,
    cider,
    corpus_bleu,
    e2e_slot_error_rate,
    expected_mentions,
    mentions_found,
    multi_bleu,
    nist,
    rouge_l,
    scores_by_group,
    webnlg_coverage,
)


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


def test_expected_mentions_are_what_coverage_and_slot_error_rate_count():
    triples = (("Harry_Potter", "education", '"Hogwarts"'), ("Harry_Potter", "house", "Gryffindor"))
    assert expected_mentions(triples) == [("harry potter",), ("hogwarts",), ("harry potter",), ("gryffindor",)]
    assert mentions_found(triples, "Harry Potter went to Hogwarts.") == (3, 4)
    mr = (("name", "Alimentum"), ("familyFriendly", "no"), ("area", "city centre"))
    assert expected_mentions(mr) == [("alimentum",), ("family", "kid", "child", "children"), ("city centre",)]
    assert mentions_found(mr, "Alimentum, in the City  Centre, is not for children.") == (3, 3)


def test_challenge_bleu_matches_a_hand_computed_multi_bleu():
    # Sentence 1: "the cat sat on the mat" (6 words) against "the cat is on the mat" / "a cat sat on the mat":
    #   1-grams 6/6, 2-grams 5/5, 3-grams 3/4 ("the cat sat" is in neither), 4-grams 2/3; closest length 6.
    # Sentence 2: "HOGWARTS." -> "hogwarts ." (2 tokens) against "harry studied at hogwarts ." (5) and two
    #   empty references (the challenge pads to 3): |2-0| < |2-5|, so its reference length is 0.
    #   1-grams 2/2, 2-grams 1/1, no 3- or 4-grams.
    # Corpus: precisions 8/8, 6/6, 3/4, 2/3; hypothesis 8 >= reference 6 words, no brevity penalty.
    hypotheses = ["the cat sat on the mat", "HOGWARTS."]
    references = [("the cat is on the mat", "a cat sat on the mat"), ("Harry studied at Hogwarts.",)]
    expected = 100 * (1 * 1 * (3 / 4) * (2 / 3)) ** 0.25  # = 84.0896
    assert challenge_bleu(hypotheses, references) == pytest.approx(expected, abs=1e-9)
    # Without the empty references the second sentence would count 5 reference words: 8 < 11 gives a penalty.
    penalised = math.exp(1 - 11 / 8) * expected
    assert multi_bleu([challenge_tokens(h) for h in hypotheses],
                      [[challenge_tokens(r) for r in refs] for refs in references]) == pytest.approx(penalised)


def test_challenge_bleu_uses_only_the_first_three_references():
    assert challenge_bleu(["a b c d"], [("x", "y", "z", "a b c d")]) == 0.0
    assert challenge_bleu(["a b c d"], [("x", "y", "a b c d", "z")]) == pytest.approx(100.0)


def test_challenge_preprocessing_splits_punctuation_and_folds_to_ascii():
    assert challenge_tokens("Café Zürich's “Hogwarts”, 1,200 pupils.") == [
        "cafe", "zurich", "'", "s", '"', "hogwarts", '"', ",", "1", ",", "200", "pupils", "."]


def test_multi_bleu_takes_the_shorter_reference_length_on_a_tie():
    # hypothesis 4 words; references of 3 and 5 words are equally close: multi-bleu takes 3 (no penalty)
    assert multi_bleu([["a", "b", "c", "d"]], [[["a", "b", "c"], ["a", "b", "c", "d", "e"]]]) == pytest.approx(
        100 * (1 * 1 * 1 * 1) ** 0.25)


def test_cider_d_on_a_hand_computed_corpus():
    """Two entries, one reference each: every reference n-gram has idf ln 2. Entry 1 matches its reference in
    unigrams and bigrams (cosine 1, no 3-/4-grams): 10 * (1 + 1 + 0 + 0) / 4 = 5. Entry 2 shares one of two
    unigrams (cosine 1/2) and no bigram: 10 * 0.5 / 4 = 1.25. CIDEr-D = (5 + 1.25) / 2."""
    assert cider(["a b", "c d"], [("a b",), ("c e",)]) == pytest.approx(3.125)
    # the Gaussian length penalty (sigma 6, length in bigrams): 7 bigrams more than the reference
    longer = "a b " + "x " * 7
    assert cider([longer, "c d"], [("a b",), ("c e",)]) < 3.125 * 0.6
    assert cider(["a b", "c e"], [("a b",), ("c e",)]) == pytest.approx(5.0)
