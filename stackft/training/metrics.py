"""Task metrics (spec §4): seqeval entity F1 for NER, accuracy and F1 for classification/pairs."""

from __future__ import annotations

import warnings

import numpy as np


def _check_same_length(gold, pred, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{what}: gold has {len(gold)} items but pred has {len(pred)}")


def ner_scores(gold: list[list[str]], pred: list[list[str]], *, strict: bool = False) -> dict:
    """Entity-level micro precision/recall/F1 and token accuracy of IOB2 tag sequences.

    Args:
        gold, pred: one list of tags per sentence, word level; sentence i must have equal lengths.
        strict: False = seqeval default mode (conlleval-compatible, lenient about ill-formed
            chunks); True = seqeval ``mode="strict", scheme=IOB2`` (ill-formed chunks not counted).

    Returns {"f1", "precision", "recall", "accuracy"} as floats; accuracy is the fraction of word
    tokens with the right tag, O included. No entities at all gives 0.0 scores, not an error.
    """
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    _check_same_length(gold, pred, "ner_scores")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"ner_scores: sentence {i} has {len(g)} gold tags but {len(p)} predicted")
    if not gold or not any(gold):
        raise ValueError("ner_scores: no tags to score")
    gold = [list(s) for s in gold]
    pred = [list(s) for s in pred]
    kwargs = {}
    if strict:
        from seqeval.scheme import IOB2

        kwargs = {"mode": "strict", "scheme": IOB2}
    with warnings.catch_warnings():
        # seqeval warns when there are no predicted/gold entities; the score is then 0.0
        warnings.simplefilter("ignore")
        scores = {
            "f1": f1_score(gold, pred, **kwargs),
            "precision": precision_score(gold, pred, **kwargs),
            "recall": recall_score(gold, pred, **kwargs),
        }
    scores = {k: float(v) for k, v in scores.items()}
    scores["accuracy"] = float(accuracy_score(gold, pred))
    return scores


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2 * tp / denominator


def classification_scores(gold: list[int], pred: list[int], num_labels: int) -> dict:
    """Accuracy and F1 of integer labels in [0, num_labels).

    F1: for 2 labels the F1 of the positive class 1 (sklearn ``average="binary"``); for more,
    the macro average over the classes that occur in gold or pred (sklearn ``average="macro"``).
    A class with no true, predicted or gold positives has F1 0.0. Returns {"accuracy", "f1"}.
    """
    _check_same_length(gold, pred, "classification_scores")
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2, got {num_labels}")
    if len(gold) == 0:
        raise ValueError("classification_scores: no labels to score")
    g = np.asarray(gold, dtype=np.int64).reshape(-1)
    p = np.asarray(pred, dtype=np.int64).reshape(-1)
    for name, values in (("gold", g), ("pred", p)):
        if values.min() < 0 or values.max() >= num_labels:
            raise ValueError(f"classification_scores: {name} labels must be in [0, {num_labels})")
    accuracy = float(np.mean(g == p))

    def f1_of(c: int) -> float:
        tp = int(np.sum((p == c) & (g == c)))
        fp = int(np.sum((p == c) & (g != c)))
        fn = int(np.sum((p != c) & (g == c)))
        return _f1(tp, fp, fn)

    if num_labels == 2:
        f1 = f1_of(1)
    else:
        present = np.union1d(g, p)
        f1 = float(np.mean([f1_of(int(c)) for c in present]))
    return {"accuracy": accuracy, "f1": float(f1)}
