"""Extension points of the :class:`~stackft.training.trainer.Trainer` loop.

A callback subclasses :class:`TrainerCallback` and overrides the hooks it needs (every hook is a
no-op by default), in the spirit of Hugging Face's ``TrainerCallback`` and Lightning's callbacks::

    class PrintDev(TrainerCallback):
        def on_evaluate(self, trainer, phase, record):
            print(phase.name, record["step"], record["dev"])

    Trainer(cfg, callbacks=[PrintDev()]).fit()

Order of the calls in one ``fit``::

    on_fit_start
      per phase: on_phase_start, then per optimizer step on_step_start and on_step_end, at each evaluation
                 on_evaluate, and after each checkpoint write on_save; on_phase_end
    on_fit_end              (only when the run finished; not when it paused or was interrupted)

Hooks get the trainer itself: read ``trainer.cfg``, ``trainer.pos`` (phase, epoch, step
counters), ``trainer.history``, ``trainer.model``, ``trainer.run_dir``, ``trainer.optimizer`` (the
current phase's, e.g. for its per-group learning rates); call
``trainer.evaluate(split)`` for extra scores, and ``trainer.request_phase_stop(reason)`` from
``on_evaluate`` or ``on_step_end`` to end the current phase after this step (the phase then ends
as if its stop rule had fired). Under DDP every rank calls every hook; write files on
``trainer.dist.is_main`` only.
"""

from __future__ import annotations

from pathlib import Path


class TrainerCallback:
    """Base class: override any of the hooks below."""

    def on_fit_start(self, trainer, *, resumed: bool) -> None:
        """Before the first phase runs (``resumed``: continuing from ``last/``)."""

    def on_phase_start(self, trainer, phase) -> None:
        """A phase (:class:`~stackft.training.strategies.Phase`) is set up and about to train."""

    def on_step_start(self, trainer, phase, batch: dict) -> None:
        """Before every optimizer step; ``batch`` is the collated batch (this rank's share)."""

    def on_step_end(self, trainer, phase, loss: float) -> None:
        """After every optimizer step; ``loss`` is the step's mean loss."""

    def on_evaluate(self, trainer, phase, record: dict) -> None:
        """After an evaluation; ``record`` is the line written to ``metrics.jsonl``."""

    def on_save(self, trainer, kind: str, path: Path) -> None:
        """After a checkpoint was written: ``kind`` is ``"best"``, ``"last"``, ``"chosen"`` (the
        stop rule's current choice) or ``"phase_end"`` (the model the next phase starts from)."""

    def on_phase_end(self, trainer, phase, stopper) -> None:
        """A phase has ended (its model restored to the stop rule's choice where it has one)."""

    def on_fit_end(self, trainer, summary: dict) -> None:
        """The run finished; ``summary`` is what ``summary.json`` holds."""


HOOKS = tuple(name for name in vars(TrainerCallback) if name.startswith("on_"))


class CallbackList:
    """Calls a hook on every callback, in order."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, TrainerCallback):
                raise TypeError(f"callbacks must be TrainerCallback instances, got {type(cb).__name__}")

    def add(self, callback: TrainerCallback) -> None:
        self.callbacks.append(callback)

    def __call__(self, hook: str, *args, **kwargs) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args, **kwargs)
