"""The time ``stackft demo`` has left: a :class:`~stackft.training.callbacks.TrainerCallback` shared by
the demo's runs that prints an estimate for the whole demo (all runs, not just the current phase).

The demo's work is known in advance: every run's phases, their epochs and the batches per epoch.
The estimate is the optimizer steps still to come times the seconds a step has taken so far
(evaluations included, since they happen between steps), measured separately for steps that train
the encoder and for steps on the frozen encoder, which are several times cheaper (cached
features). Until a kind of step has been timed its cost is guessed from the other kind
(:data:`FROZEN_STEP_RATIO`), and a frozen phase that has not started adds its feature-cache build
(:data:`CACHE_BUILD_STEPS`). A phase that its stop rule ends early makes the estimate fall. On a
machine that other jobs share the rate moves with the load, so every estimate uses the latest one.

The first estimate comes after ``first_after_steps`` steps or ``first_after_s`` seconds of
training, whichever is first; then one at every evaluation and at the start of each later run.
"""

from __future__ import annotations

import math
import time

from stackft.training.callbacks import TrainerCallback
from stackft.training.strategies import plan_phases

#: seconds of a frozen-encoder step (cached features, head only) per second of a fine-tuning step,
#: until both have been timed (the README's demo run: about 0.2)
FROZEN_STEP_RATIO = 0.2
#: a feature-cache build, in fine-tuning steps per training batch (one no-grad pass over the data)
CACHE_BUILD_STEPS = 0.15


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m} min {s:02d} s" if m < 10 else f"{m} min"
    h, m = divmod(seconds // 60, 60)
    return f"{h} h {m:02d} min"


class TimeLeft(TrainerCallback):
    """Prints ``[demo] about N min left`` while the runs of ``configs`` (name -> TrainConfig) train.

    ``n_train``: training examples of every run; ``write``: where the lines go (default
    ``tqdm.write``, so they do not break progress bars); ``clock``: seconds (for tests).
    """

    def __init__(self, configs: dict, n_train: int, *, write=None, clock=None,
                 first_after_steps: int = 10, first_after_s: float = 30.0):
        if write is None:
            from tqdm.auto import tqdm

            write = tqdm.write
        self.write, self.clock = write, clock or time.perf_counter  # looked up now: tests may patch it
        self.first_after_steps, self.first_after_s = first_after_steps, first_after_s
        self.names = {str(cfg.output_dir): name for name, cfg in configs.items()}
        # per run: [(phase name, trains the encoder, steps)], in order
        self.plan: dict[str, list[tuple[str, bool, int]]] = {}
        for name, cfg in configs.items():
            per_epoch = math.ceil(n_train / cfg.batch_size) if n_train else 0
            self.plan[name] = [(p.name, p.train_encoder or bool(p.pet), p.epochs * per_epoch)
                               for p in plan_phases(cfg.strategy, cfg) if p.epochs > 0]
        self.n_train_batches = {name: math.ceil(n_train / cfg.batch_size) if n_train else 0
                                for name, cfg in configs.items()}
        self.done: set[tuple[str, str]] = set()  # (run, phase) finished
        self.time = {True: 0.0, False: 0.0}  # seconds spent in finished phases, by "trains the encoder"
        self.steps = {True: 0, False: 0}
        self.run: str | None = None
        self.phase: tuple[str, bool, int] | None = None
        self.phase_t0 = 0.0
        self.phase_steps = 0
        self.t_start: float | None = None
        self.total_steps = 0
        self.reported = False
        self.last: float | None = None  # the last estimate, in seconds

    # -- the estimate ---------------------------------------------------------------------------
    def _rates(self) -> dict[bool, float] | None:
        """Seconds per step of each kind (encoder trained: True; frozen: False), None before any step."""
        time_, steps = dict(self.time), dict(self.steps)
        if self.phase is not None and self.phase_steps:
            kind = self.phase[1]
            time_[kind] += self.clock() - self.phase_t0
            steps[kind] += self.phase_steps
        rate = {k: time_[k] / steps[k] for k in (True, False) if steps[k]}
        if not rate:
            return None
        if True not in rate:
            rate[True] = rate[False] / FROZEN_STEP_RATIO
        if False not in rate:
            rate[False] = rate[True] * FROZEN_STEP_RATIO
        return rate

    def remaining(self) -> float | None:
        """Seconds the demo has left (None until a step has been timed)."""
        rate = self._rates()
        if rate is None:
            return None
        left = 0.0
        for run, phases in self.plan.items():
            for name, trains, steps in phases:
                if (run, name) in self.done:
                    continue
                if self.phase is not None and (run, name) == (self.run, self.phase[0]):
                    left += max(0, steps - self.phase_steps) * rate[trains]
                    continue
                left += steps * rate[trains]
                if not trains:
                    left += CACHE_BUILD_STEPS * self.n_train_batches[run] * rate[True]
        return left

    def report(self) -> None:
        left = self.remaining()
        if left is None or left < 1.0:  # nothing timed yet, or only the final evaluation and plot are left
            return
        self.reported = True
        self.last = left
        self.write(f"[demo] about {format_duration(left)} left for the whole demo (estimate)")

    # -- hooks ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer, *, resumed: bool) -> None:
        if self.t_start is None:
            self.t_start = self.clock()
        self.run = self.names.get(str(trainer.cfg.output_dir), str(trainer.cfg.output_dir))
        if self.reported:
            self.report()

    def on_phase_start(self, trainer, phase) -> None:
        plan = {p[0]: p for p in self.plan.get(self.run, [])}
        self.phase = plan.get(phase.name, (phase.name, bool(phase.train_encoder), 0))
        self.phase_t0 = self.clock()
        self.phase_steps = 0

    def on_step_end(self, trainer, phase, loss: float) -> None:
        self.phase_steps += 1
        self.total_steps += 1
        if not self.reported and self.phase_steps >= 2 and (
                self.total_steps >= self.first_after_steps or self.clock() - self.t_start >= self.first_after_s):
            self.report()

    def on_evaluate(self, trainer, phase, record: dict) -> None:
        if self.phase_steps:
            self.report()

    def on_phase_end(self, trainer, phase, stopper) -> None:
        if self.phase is not None:
            kind = self.phase[1]
            self.time[kind] += self.clock() - self.phase_t0
            self.steps[kind] += self.phase_steps
            self.done.add((self.run, self.phase[0]))
        self.phase = None
        self.phase_steps = 0
