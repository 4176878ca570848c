"""ner_scores (seqeval, conlleval-compatible) and classification_scores, against hand counts."""

import pytest

from stackft.training.metrics import classification_scores, ner_scores


def test_seqeval_readme_example():
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    scores = ner_scores(gold, pred)
    assert scores["f1"] == pytest.approx(0.50)
    assert scores["precision"] == pytest.approx(0.50) and scores["recall"] == pytest.approx(0.50)
    assert scores["accuracy"] == pytest.approx(8 / 10)


def test_hand_computed_entities():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG"]]
    # gold PER, LOC, ORG; pred PER, ORG, ORG: 2 correct of 3 predicted and 3 gold
    scores = ner_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(5 / 6)


def test_default_vs_strict_on_ill_formed_chunk():
    gold = [["B-PER", "I-PER", "O"]]
    pred = [["I-PER", "I-PER", "O"]]  # IOB1-style start: lenient mode reads it as PER
    assert ner_scores(gold, pred)["f1"] == pytest.approx(1.0)
    assert ner_scores(gold, pred, strict=True)["f1"] == pytest.approx(0.0)


def test_no_predicted_entities_scores_zero():
    scores = ner_scores([["B-PER", "O"]], [["O", "O"]])
    assert scores["f1"] == 0.0 and scores["precision"] == 0.0 and scores["recall"] == 0.0
    assert scores["accuracy"] == 0.5


def test_ner_length_mismatch():
    with pytest.raises(ValueError, match="sentence 0"):
        ner_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="gold has 2"):
        ner_scores([["O"], ["O"]], [["O"]])


def test_binary_f1_positive_class_one():
    gold = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 0, 1, 0, 0, 0]
    # tp=2, fp=1, fn=2: P=2/3, R=1/2, F1=4/7
    scores = classification_scores(gold, pred, 2)
    assert scores["accuracy"] == pytest.approx(5 / 8)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert classification_scores([0, 0], [0, 0], 2)["f1"] == 0.0  # no positives at all


def test_macro_f1_three_classes():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    # class 0: tp1 fp1 fn1 -> 1/2; class 1: tp2 fp1 fn0 -> 4/5; class 2: tp1 fp0 fn1 -> 2/3
    scores = classification_scores(gold, pred, 3)
    assert scores["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)


def test_classification_validation():
    with pytest.raises(ValueError, match="gold has 2 items but pred has 1"):
        classification_scores([0, 1], [0], 2)
    with pytest.raises(ValueError):
        classification_scores([0, 3], [0, 1], 2)
    with pytest.raises(ValueError):
        classification_scores([], [], 2)
