"""Phase stop rules: when a phase ends early, and which of its evaluations it ends on.

``gap`` (the paper's phase-1 rule): stop once the train score exceeds the validation score by more
than ``gap_tol``, or the validation score has not improved for ``patience`` evaluations; the
phase-1 result is the last evaluation whose gap was still within ``gap_tol`` (else the first).
``val_plateau``: stop after ``patience`` evaluations without improvement; result = best validation.
``fixed``: never stop early; result = the last evaluation.
``gap_se`` (noise-aware gap rule): the same idea with tolerances from the scores' standard errors:

- the gap ``train - dev`` counts as real only above ``gap_z * sqrt(se_train^2 + se_dev^2)`` (the
  train probe and dev are disjoint samples; the errors come from the score dicts, binomial for
  accuracy and a sentence bootstrap for entity F1, see :mod:`stackft.training.metrics`);
- the head must first have reached "a reasonable accuracy", defined as: dev is no longer
  improving by more than its standard error (``dev <= best earlier dev + se_dev``); before that a
  gap never stops the phase, so the first evaluations cannot end it;
- it stops on a real gap once the head is ready, or after ``patience`` evaluations without a
  dev improvement; the result is the best dev evaluation among those whose gap was not real
  (else the first).

Scores are fractions in [0, 1] (accuracy, or entity F1 for NER). Each call of :meth:`update`
leaves its reasoning, with all numbers, in :attr:`PhaseStopper.decisions` (the trainer writes it
into ``metrics.jsonl`` as ``"stop_rule"``).

The gap rule is Wang et al. (2019, arXiv 1907.05338): phase 1 of stack-and-finetune stops while
the head has fit the training data no better than the validation data; the paper leaves the
exact point open. Every phase uses a :class:`PhaseStopper` (finetuning phases use ``fixed``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MODES = ("gap", "gap_se", "val_plateau", "fixed")


@dataclass
class PhaseStopper:
    mode: str = "gap"
    gap_tol: float = 0.02
    patience: int = 3
    min_steps: int = 0
    history: list = field(default_factory=list)  # (step, train_score, val_score)
    best_val: float = float("-inf")
    since_best: int = 0
    chosen: int | None = None  # index into history of the evaluation to keep
    reason: str = ""
    gap_z: float = 2.5  # gap_se: a gap is real above gap_z standard errors of the difference
    errors: list = field(default_factory=list)  # (train_se, val_se) per evaluation, None where unknown
    decisions: list = field(default_factory=list)  # one dict per evaluation: the numbers behind the decision

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown stop mode {self.mode!r}; choose from {MODES}")

    def update(self, step: int, train_score: float | None, val_score: float, *,
               train_se: float | None = None, val_se: float | None = None) -> bool:
        """Record one evaluation; return True when the phase should stop now.

        ``train_se``/``val_se``: standard errors of the two scores (needed by ``gap_se``).
        """
        if self.mode == "gap_se" and train_score is not None and (train_se is None or val_se is None):
            raise ValueError("stop mode 'gap_se' needs the standard errors of both scores")
        prev_best = self.best_val
        self.history.append((step, train_score, val_score))
        self.errors.append((train_se, val_se))
        idx = len(self.history) - 1
        improved = val_score > self.best_val
        if improved:
            self.best_val, self.since_best = val_score, 0
        else:
            self.since_best += 1
        gap = None if train_score is None else train_score - val_score
        decision = {"step": step, "mode": self.mode, "train": train_score, "dev": val_score, "gap": gap}
        if self.mode == "fixed":
            self.chosen = idx
        elif self.mode == "val_plateau":
            if improved:
                self.chosen = idx
        elif self.mode == "gap":
            decision["tol"] = self.gap_tol
            if gap is None or gap <= self.gap_tol or self.chosen is None:  # else keep the first
                self.chosen = idx
        else:
            self._update_gap_se(idx, gap, val_score, train_se, val_se, prev_best, decision)
        stop = self._should_stop(step, gap, decision)
        decision.update(stop=stop, reason=self.reason if stop else "", chosen_step=self.chosen_step,
                        since_best=self.since_best)
        self.decisions.append(decision)
        return stop

    def _update_gap_se(self, idx, gap, val, train_se, val_se, prev_best, decision) -> None:
        se_gap = None if gap is None else (train_se ** 2 + val_se ** 2) ** 0.5
        tol = None if se_gap is None else self.gap_z * se_gap
        real_gap = gap is not None and gap > tol
        ready = idx > 0 and val <= prev_best + (val_se or 0.0)
        decision.update(train_se=train_se, dev_se=val_se, tol=tol, real_gap=real_gap, ready=ready,
                        best_before=None if idx == 0 else prev_best)
        if not real_gap:  # the best dev among the evaluations without a real gap (ties: the earliest)
            ok = [k for k in range(idx) if not self.decisions[k].get("real_gap")] + [idx]
            self.chosen = max(ok, key=lambda k: (self.history[k][2], -k))
        elif self.chosen is None:
            self.chosen = idx

    def _should_stop(self, step: int, gap, decision: dict) -> bool:
        if step < self.min_steps or self.mode == "fixed":
            return False
        if self.mode == "gap" and gap is not None and gap > self.gap_tol:
            self.reason = f"train-validation gap {gap:.4f} > {self.gap_tol}"
            return True
        if self.mode == "gap_se" and decision["real_gap"] and decision["ready"]:
            self.reason = (f"train-validation gap {gap:.4f} > {self.gap_z} x its standard error "
                           f"({decision['tol']:.4f}) with dev no longer improving beyond its standard error")
            return True
        if self.since_best >= self.patience:
            self.reason = f"no validation improvement for {self.patience} evaluations"
            return True
        return False

    @property
    def chosen_step(self) -> int | None:
        return None if self.chosen is None else self.history[self.chosen][0]

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, [tuple(h) for h in v] if k in ("history", "errors") else v)
        if len(self.errors) < len(self.history):  # a state saved by stackft 0.1
            self.errors = [(None, None)] * (len(self.history) - len(self.errors)) + self.errors


Phase1Stopper = PhaseStopper  # the 0.1 name; deprecated, removed in 0.3
