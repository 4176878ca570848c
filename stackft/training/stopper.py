"""Phase stop rules: when a phase ends early, and which of its evaluations it ends on.

``gap`` (the paper's phase-1 rule): stop once the train score exceeds the validation score by more
than ``gap_tol``, or the validation score has not improved for ``patience`` evaluations; the
phase-1 result is the last evaluation whose gap was still within ``gap_tol`` (else the first).
``val_plateau``: stop after ``patience`` evaluations without improvement; result = best validation.
``fixed``: never stop early; result = the last evaluation.
Scores are fractions in [0, 1] (accuracy, or entity F1 for NER).

The gap rule is Wang et al. (2019, arXiv 1907.05338): phase 1 of stack-and-finetune stops while
the head has fit the training data no better than the validation data; the paper leaves the
exact point open. Every phase uses a :class:`PhaseStopper` (finetuning phases use ``fixed``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MODES = ("gap", "val_plateau", "fixed")


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

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown stop mode {self.mode!r}; choose from {MODES}")

    def update(self, step: int, train_score: float | None, val_score: float) -> bool:
        """Record one evaluation; return True when the phase should stop now."""
        self.history.append((step, train_score, val_score))
        idx = len(self.history) - 1
        improved = val_score > self.best_val
        if improved:
            self.best_val, self.since_best = val_score, 0
        else:
            self.since_best += 1
        gap = None if train_score is None else train_score - val_score
        if self.mode == "fixed":
            self.chosen = idx
        elif self.mode == "val_plateau":
            if improved:
                self.chosen = idx
        elif gap is None or gap <= self.gap_tol or self.chosen is None:  # gap; else keep the first
            self.chosen = idx
        if step < self.min_steps or self.mode == "fixed":
            return False
        if self.mode == "gap" and gap is not None and gap > self.gap_tol:
            self.reason = f"train-validation gap {gap:.4f} > {self.gap_tol}"
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
            setattr(self, k, [tuple(h) for h in v] if k == "history" else v)


Phase1Stopper = PhaseStopper  # the 0.1 name; deprecated, removed in 0.3
