"""The noise-aware gap rule (stop mode ``gap_se``) and the standard errors it reads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stackft.training.metrics import (
    accuracy_se,
    classification_scores,
    f1_bootstrap_se,
    ner_scores,
    sentence_entity_counts,
)
from stackft.training.stopper import PhaseStopper


def _run(stopper, train, dev, n_train, n_dev):
    """Feed accuracy sequences with their binomial errors; returns the index of the stopping eval or None."""
    for k, (t, d) in enumerate(zip(train, dev)):
        if stopper.update(10 * (k + 1), t, d, train_se=accuracy_se(t, n_train), val_se=accuracy_se(d, n_dev)):
            return k
    return None


def _noisy_plateau(rng, n, evals=10, p=0.8):
    """Train probe and dev scores of a head that has converged: both binomial around the same p."""
    return rng.binomial(n, p, size=evals) / n, rng.binomial(n, p, size=evals) / n


def test_noise_alone_rarely_stops_the_phase_on_the_gap():
    rng = np.random.default_rng(0)
    n, runs = 300, 300
    gap_stops_se = gap_stops_old = 0
    for _ in range(runs):
        train, dev = _noisy_plateau(rng, n)
        se = PhaseStopper(mode="gap_se", patience=100)
        if _run(se, train, dev, n, n) is not None:
            gap_stops_se += 1
        old = PhaseStopper(mode="gap", gap_tol=0.02, patience=100)
        if _run(old, train, dev, n, n) is not None:
            gap_stops_old += 1
    # the old fixed tolerance fires on noise most of the time; the noise-aware one rarely
    assert gap_stops_old / runs > 0.5
    assert gap_stops_se / runs < 0.10


def test_a_real_widening_gap_stops_it_once_dev_has_plateaued():
    n = 300
    dev = [0.55, 0.68, 0.75, 0.78, 0.79, 0.79, 0.785, 0.79, 0.788, 0.79]
    train = [0.56, 0.70, 0.78, 0.83, 0.88, 0.93, 0.96, 0.98, 0.99, 0.995]
    s = PhaseStopper(mode="gap_se", patience=100)
    k = _run(s, train, dev, n, n)
    assert k is not None and 4 <= k <= 6, s.decisions
    d = s.decisions[k]
    assert d["stop"] and d["real_gap"] and d["ready"] and d["gap"] > d["tol"]
    assert "standard error" in s.reason
    # the chosen evaluation had no real gap and is the best dev among those
    assert not s.decisions[s.chosen]["real_gap"]
    assert s.history[s.chosen][2] == max(h[2] for h, dd in zip(s.history, s.decisions) if not dd["real_gap"])


def test_a_gap_while_dev_still_improves_does_not_stop():
    n = 2000  # small errors: the gaps below are real
    train = [0.60, 0.75, 0.86, 0.93]
    dev = [0.50, 0.62, 0.72, 0.80]  # rising by far more than its error each time
    s = PhaseStopper(mode="gap_se", patience=100)
    assert _run(s, train, dev, n, n) is None
    assert all(d["real_gap"] and not d["ready"] for d in s.decisions)


def test_every_decision_is_logged_with_its_numbers():
    s = PhaseStopper(mode="gap_se")
    s.update(5, 0.9, 0.8, train_se=0.02, val_se=0.03)
    (d,) = s.decisions
    assert d["step"] == 5 and d["gap"] == pytest.approx(0.1) and d["tol"] == pytest.approx(s.gap_z * math.hypot(0.02, 0.03))
    assert set(d) >= {"train", "dev", "train_se", "dev_se", "tol", "real_gap", "ready", "stop", "chosen_step"}
    with pytest.raises(ValueError, match="needs the standard errors"):
        s.update(6, 0.9, 0.8)


def test_accuracy_se_is_binomial():
    scores = classification_scores([0, 1] * 50, [0, 1] * 40 + [1, 0] * 10, 2)
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["accuracy_se"] == pytest.approx(math.sqrt(0.8 * 0.2 / 100))


def test_entity_f1_bootstrap_matches_seqeval_and_shrinks_with_more_sentences():
    rng = np.random.default_rng(1)
    tags = ["O", "B-PER", "I-PER", "B-LOC"]

    def sentences(m):
        gold = [list(rng.choice(tags, size=int(rng.integers(3, 9)), p=[0.6, 0.2, 0.1, 0.1])) for _ in range(m)]
        pred = [[t if rng.random() < 0.85 else "O" for t in g] for g in gold]
        return gold, pred

    gold, pred = sentences(200)
    tp, fp, fn = sentence_entity_counts(gold, pred)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    scores = ner_scores(gold, pred)
    assert scores["f1"] == pytest.approx(micro)
    assert 0 < scores["f1_se"] < 0.1
    big = ner_scores(*sentences(3200))
    assert big["f1_se"] < scores["f1_se"] / 2  # ~1/sqrt(n): 16x the sentences, ~1/4 the error
    assert f1_bootstrap_se(tp, fp, fn) == f1_bootstrap_se(tp, fp, fn)  # fixed seed: deterministic
