from kg2text.data import UNSEEN_CATEGORIES, read_records, training_pairs


def test_webnlg_train_counts():
    records = read_records("webnlg", "train")
    assert len(records) == 6940
    assert sum(len(r.references) for r in records) == 18102
    assert len(training_pairs(records)) == 18102
    assert all(r.seen for r in records)


def test_webnlg_dev_and_test_counts():
    assert len(read_records("webnlg", "dev")) == 872
    test = read_records("webnlg", "test")
    assert len(test) == 1862
    assert sum(r.seen for r in test) == 971
    assert sum(not r.seen for r in test) == 891
    assert {r.category for r in test if not r.seen} == UNSEEN_CATEGORIES


def test_webnlg_record_content():
    first = read_records("webnlg", "test")[0]
    assert first.items == (("Abilene_Regional_Airport", "cityServed", "Abilene,_Texas"),)
    assert first.references == ("Abilene, Texas is served by the Abilene regional airport.",
                                 "Abilene Regional Airport serves the city of Abilene in Texas.")
    assert first.category == "Airport" and first.seen


def test_e2e_counts_group_references_by_mr():
    dev, test = read_records("e2e", "dev"), read_records("e2e", "test")
    assert (len(dev), sum(len(r.references) for r in dev)) == (547, 4672)
    assert (len(test), sum(len(r.references) for r in test)) == (630, 4693)
    assert test[0].items == (("name", "Blue Spice"), ("eatType", "coffee shop"), ("area", "city centre"))
