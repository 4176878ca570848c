"""Task metrics: seqeval entity F1 for NER, accuracy and F1 for classification/pairs, with standard errors.

Every score dict also carries the standard error of its selection metric, so that rules which
compare two scores (the noise-aware gap rule, :mod:`stackft.training.stopper`) know how much of a
difference is noise at the sample sizes actually used:

- ``accuracy_se``: binomial, ``sqrt(acc (1 - acc) / n)``;
- ``f1_se`` (NER): bootstrap over sentences (entity counts resampled by sentence, 200 draws,
  fixed seed, so it is deterministic), since entity F1 is not a mean over independent items.
"""

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
    if not strict:
        scores["f1_se"] = f1_bootstrap_se(*sentence_entity_counts(gold, pred))
    return scores


def sentence_entity_counts(gold: list[list[str]], pred: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sentence entity (tp, fp, fn) counts, int64 ``[n_sentences]`` each (seqeval's lenient chunks).

    Their sums give the same micro F1 as seqeval's default ``f1_score``.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    n = len(gold)
    tp, fp, fn = (np.zeros(n, dtype=np.int64) for _ in range(3))
    for i, (g, p) in enumerate(zip(gold, pred)):
        ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
        hit = len(ge & pe)
        tp[i], fp[i], fn[i] = hit, len(pe) - hit, len(ge) - hit
    return tp, fp, fn


def f1_bootstrap_se(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, draws: int = 200, seed: int = 0) -> float:
    """Standard error of micro F1 = 2tp / (2tp + fp + fn) by resampling sentences with replacement."""
    n = len(tp)
    if n < 2:
        return 0.0
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    t, f_p, f_n = tp[idx].sum(1), fp[idx].sum(1), fn[idx].sum(1)
    denom = 2 * t + f_p + f_n
    f1 = np.where(denom > 0, 2 * t / np.maximum(denom, 1), 0.0)
    return float(f1.std(ddof=1))


def accuracy_se(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` items."""
    return float(np.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / max(n, 1)))


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
    return {"accuracy": accuracy, "f1": float(f1), "accuracy_se": accuracy_se(accuracy, len(g))}
