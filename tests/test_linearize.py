import re

import pytest

from kg2text.errors import UserError
from kg2text.linearize import FORMATS, clean_entity, model_prompt, model_target, parse_mr, parse_triples


def test_harry_potter_linearizes_li_liang_style():
    items = parse_triples("Harry_Potter | education | Hogwarts")
    assert items == (("Harry_Potter", "education", "Hogwarts"),)
    assert FORMATS["webnlg"].linearize(items) == "| Harry Potter : education : Hogwarts"
    assert model_prompt(FORMATS["webnlg"].linearize(items), "<|endoftext|>") == (
        " | Harry Potter : education : Hogwarts <|endoftext|>")
    assert model_target(" Harry Potter graduated from Hogwarts ", "<|endoftext|>") == (
        " Harry Potter graduated from Hogwarts <|endoftext|>")


def test_multi_triple_input():
    items = parse_triples("Harry_Potter | education | Hogwarts ; Harry_Potter | house | Gryffindor")
    assert FORMATS["webnlg"].linearize(items) == (
        "| Harry Potter : education : Hogwarts | Harry Potter : house : Gryffindor")
    assert FORMATS["webnlg-tags"].linearize(items) == (
        "<H> Harry Potter <R> education <T> Hogwarts <H> Harry Potter <R> house <T> Gryffindor")


@pytest.mark.parametrize("predicate, words", [
    ("deathPlace", "death place"), ("numberOfStudents", "number of students"), ("ISBN_number", "ISBN number"),
    ("1stRunwayLengthFeet", "1st runway length feet"), ("education", "education"),
    ("elevationAboveTheSeaLevel_(in_metres)", "elevation above the sea level (in metres)")])
def test_words_format_spells_camel_case_predicates_as_words(predicate, words):
    items = parse_triples(f"Alan_Bean | {predicate} | Wheeler,_Texas")
    assert FORMATS["webnlg-words"].linearize(items) == f"| Alan Bean : {words} : Wheeler, Texas"


def test_dbpedia_entities_are_cleaned():
    assert clean_entity('"18L/36R"') == "18L/36R"
    assert clean_entity("Abilene,_Texas") == "Abilene, Texas"


def test_e2e_meaning_representation():
    items = parse_mr("name[Alimentum], area[city centre], familyFriendly[no]")
    assert items == (("name", "Alimentum"), ("area", "city centre"), ("familyFriendly", "no"))
    assert FORMATS["e2e"].linearize(items) == "name : Alimentum | area : city centre | familyFriendly : no"


@pytest.mark.parametrize("bad, message", [
    ("a | b", "triple 1 'a | b' has 2 field(s)"),
    ("", "empty input"),
    ("   ", "empty input"),
    ("a | b | c ; d | | f", "triple 2 'd | | f' has an empty predicate"),
    ("a | b | c | d", "has 4 field(s)"),
])
def test_bad_triples_are_named(bad, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_triples(bad)


@pytest.mark.parametrize("bad", ["name[Alimentum", "name[]", "just words", "name[A], [B]"])
def test_bad_mr_is_refused(bad):
    with pytest.raises(UserError):
        parse_mr(bad)
