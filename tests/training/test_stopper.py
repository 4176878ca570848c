"""stackft.training.stopper.Phase1Stopper: the phase-1 stop rule (methods.md §1.5) and its other modes."""

import json

import pytest
import torch

from stackft.training.stopper import MODES, Phase1Stopper


def feed(stopper, evals):
    """Feed (step, train, val) evaluations; return the index of the first that stopped, or None."""
    for i, (step, tr, val) in enumerate(evals):
        if stopper.update(step, tr, val):
            return i
    return None


# -- gap mode -------------------------------------------------------------------------------

def test_gap_stops_when_gap_exceeds_tol_and_keeps_last_within_tol():
    s = Phase1Stopper(mode="gap", gap_tol=0.02, patience=100, min_steps=0)
    evals = [(10, 0.60, 0.60), (20, 0.71, 0.70), (30, 0.765, 0.75), (40, 0.90, 0.76), (50, 0.99, 0.77)]
    assert feed(s, evals) == 3  # gap 0.14 at step 40
    assert s.chosen_step == 30  # the last evaluation whose gap was still within 0.02
    assert "gap" in s.reason


def test_gap_equal_to_tol_does_not_stop():
    s = Phase1Stopper(mode="gap", gap_tol=0.25, patience=100)
    assert feed(s, [(1, 0.5, 0.5), (2, 0.75, 0.5)]) is None  # 0.25 is not > 0.25 (exact in binary)
    assert s.chosen_step == 2


def test_gap_before_min_steps_does_not_stop_and_first_eval_is_kept():
    s = Phase1Stopper(mode="gap", gap_tol=0.02, patience=100, min_steps=30)
    evals = [(10, 0.9, 0.5), (20, 0.95, 0.55), (30, 0.99, 0.6)]
    assert feed(s, evals) == 2  # steps 10 and 20 are before min_steps
    assert s.chosen_step == 10  # no evaluation within tol: the first one


def test_gap_returns_to_tol_later():
    s = Phase1Stopper(mode="gap", gap_tol=0.05, patience=100, min_steps=25)
    # over tol at step 10 (before min_steps), back within tol at 20, over again at 30
    evals = [(10, 0.8, 0.6), (20, 0.82, 0.8), (30, 0.99, 0.81)]
    assert feed(s, evals) == 2
    assert s.chosen_step == 20


def test_gap_mode_patience():
    s = Phase1Stopper(mode="gap", gap_tol=0.5, patience=2, min_steps=0)
    evals = [(1, 0.5, 0.5), (2, 0.6, 0.6), (3, 0.6, 0.6), (4, 0.6, 0.55), (5, 0.7, 0.7)]
    assert feed(s, evals) == 3  # 0.6 at step 3 is no improvement (strict), nor is 0.55
    assert "improvement" in s.reason
    assert s.chosen_step == 4  # gap mode keeps the last evaluation within tol, not the best


def test_gap_mode_without_train_score_falls_back_to_patience():
    s = Phase1Stopper(mode="gap", gap_tol=0.0, patience=1)
    assert feed(s, [(1, None, 0.5), (2, None, 0.6), (3, None, 0.6)]) == 2
    assert s.chosen_step == 3


def test_patience_counts_only_after_min_steps_for_stopping():
    s = Phase1Stopper(mode="val_plateau", patience=1, min_steps=3)
    evals = [(1, None, 0.5), (2, None, 0.4), (3, None, 0.45), (4, None, 0.9)]
    assert feed(s, evals) == 2  # since_best reached 1 at step 2, but stopping waits for step >= 3
    assert s.chosen_step == 1


# -- val_plateau and fixed ------------------------------------------------------------------

def test_val_plateau_picks_best_and_stops_after_patience():
    s = Phase1Stopper(mode="val_plateau", patience=3, min_steps=0)
    evals = [(1, 0.9, 0.5), (2, 0.99, 0.7), (3, 1.0, 0.65), (4, 1.0, 0.7), (5, 1.0, 0.69), (6, 1.0, 0.9)]
    assert feed(s, evals) == 4
    assert s.chosen_step == 2  # best validation (first of the ties), whatever the gap
    assert s.best_val == 0.7


def test_val_plateau_ignores_gap():
    s = Phase1Stopper(mode="val_plateau", gap_tol=0.0, patience=5)
    assert feed(s, [(i, 1.0, 0.1 * i) for i in range(1, 8)]) is None
    assert s.chosen_step == 7


def test_fixed_never_stops_and_keeps_the_last():
    s = Phase1Stopper(mode="fixed", gap_tol=0.0, patience=1, min_steps=0)
    evals = [(i, 1.0, 1.0 / i) for i in range(1, 30)]  # huge gap, val falling every time
    assert feed(s, evals) is None
    assert s.chosen_step == 29
    assert s.reason == ""


def test_unknown_mode_raises():
    assert set(MODES) == {"gap", "gap_se", "val_plateau", "fixed"}
    with pytest.raises(ValueError, match="stop mode"):
        Phase1Stopper(mode="early")


# -- state ----------------------------------------------------------------------------------

EVALS = [(2, 0.5, 0.5), (4, 0.6, 0.59), (6, 0.7, 0.6), (8, 0.7, 0.6), (10, 0.75, 0.61), (12, 0.9, 0.62)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["json", "torch"])
def test_state_dict_round_trip(mode, via, tmp_path):
    a = Phase1Stopper(mode=mode, gap_tol=0.05, patience=3, min_steps=4)
    se = dict(train_se=0.01, val_se=0.01)
    for e in EVALS[:3]:
        a.update(*e, **se)
    state = a.state_dict()
    if via == "json":
        state = json.loads(json.dumps(state))  # tuples become lists, -inf survives as -Infinity
    else:
        torch.save(state, tmp_path / "s.pt")
        state = torch.load(tmp_path / "s.pt", weights_only=False)
    b = Phase1Stopper()  # default settings: everything must come from the state
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert all(isinstance(h, tuple) for h in b.history)
    for e in EVALS[3:]:
        assert a.update(*e, **se) == b.update(*e, **se)
        assert (a.chosen, a.since_best, a.best_val, a.reason) == (b.chosen, b.since_best, b.best_val, b.reason)
    assert a.chosen_step == b.chosen_step


def test_fresh_stopper_state():
    s = Phase1Stopper()
    assert s.mode == "gap" and s.gap_tol == 0.02 and s.patience == 3  # spec defaults
    assert s.chosen_step is None and s.history == []
    state = s.state_dict()
    t = Phase1Stopper(mode="fixed")
    t.load_state_dict(json.loads(json.dumps(state)))
    assert t.mode == "gap" and t.best_val == float("-inf")
