"""TensorBoard logging of a run (``TrainConfig.report_to="tensorboard"``, ``--report-to tensorboard``).

:class:`TensorBoardCallback` is a :class:`~stackft.training.callbacks.TrainerCallback` that writes
TensorBoard event files into the run folder, beside ``metrics.jsonl`` (``tensorboard --logdir
runs/`` then shows every run folder as one run). What it logs, at the run's global optimizer step:

- ``train/loss``: every step's mean loss;
- ``lr/<group>``: the learning rate each parameter group trained that step with (``head``,
  ``encoder.layer0`` = embeddings, ``encoder.layer<k>`` = transformer layer k; the decay and no-decay
  halves of a group share one lr, so each is logged once);
- ``dev/<metric>`` and ``train_probe/<metric>`` at every evaluation (the numbers of ``metrics.jsonl``;
  the train probe is the fixed train sample of the gap rule, only in phases that use it);
- phase boundaries: ``phase/index`` (0, 1, ...: a step plot whose steps are the boundaries) at each
  phase's first and last step, and a ``phases`` text entry at each start and end (with the stop
  rule's reason);
- the run's config as text at the start, its summary as text at the end.

A resumed run purges the events past the resume point (``purge_step``), so steps logged before an
interruption are not shown twice. Under DDP only rank 0 writes. ``torch.utils.tensorboard`` needs
the ``tensorboard`` package (``pip install tensorboard``): without it, building the callback raises
one ImportError saying so. Tests inject a writer with ``writer_factory``.
"""

from __future__ import annotations

import json
import math

from stackft.training.callbacks import TrainerCallback

#: the values of ``TrainConfig.report_to`` (``stackft.config.REPORT_TO`` repeats them)
REPORT_TO = ("none", "tensorboard")

INSTALL_HINT = "pip install tensorboard"


class TensorBoardUnavailable(ImportError, ValueError):
    """``tensorboard`` is not installed. An ImportError, and a ValueError so that the command line
    reports it as one line (``stackft train: error: ...``) like other unusable settings."""


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``; TensorBoardUnavailable naming ``pip install tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch.utils.tensorboard imports the tensorboard package
        raise TensorBoardUnavailable(f"report_to='tensorboard' (--report-to tensorboard) needs the tensorboard "
                                     f"package: {INSTALL_HINT} (or report to none); the import failed: {exc}") from None
    return SummaryWriter


def _group_name(name: str) -> str:
    for suffix in (".decay", ".no_decay"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _scalars(prefix: str, metrics: dict | None):
    """``(tag, float)`` for the numeric entries of a metrics dict (nested dicts and non-numbers skipped)."""
    for key, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            yield f"{prefix}/{key}", float(value)


class TensorBoardCallback(TrainerCallback):
    """Write TensorBoard event files for a run (see the module docstring for the tags).

    ``log_dir``: where the event files go (default: the run folder, ``trainer.run_dir.root``).
    ``writer_factory(log_dir, purge_step) -> writer``: makes the writer (default
    ``torch.utils.tensorboard.SummaryWriter``); a writer needs ``add_scalar(tag, value, step)``,
    ``add_text(tag, text, step)``, ``flush()`` and ``close()``.
    """

    def __init__(self, log_dir=None, *, writer_factory=None):
        self.log_dir = log_dir
        if writer_factory is None:
            cls = summary_writer_class()  # fail now, before any training, when tensorboard is missing

            def writer_factory(log_dir, purge_step):
                return cls(log_dir=str(log_dir), purge_step=purge_step)

        self.writer_factory = writer_factory
        self.writer = None
        self._lrs: dict[str, float] = {}

    # -- helpers ----------------------------------------------------------------------------
    def _active(self, trainer) -> bool:
        return self.writer is not None and trainer.dist.is_main

    def _step(self, trainer) -> int:
        return int(trainer.pos.global_step)

    def _phase_index(self, trainer, phase) -> int:
        for i, p in enumerate(trainer.phases):
            if p is phase:
                return i
        return int(trainer.pos.phase)

    @staticmethod
    def current_lrs(optimizer) -> dict[str, float]:
        """``{group: lr}`` of an optimizer whose param groups carry ``name`` (build_param_groups)."""
        out = {}
        for i, group in enumerate(getattr(optimizer, "param_groups", [])):
            out.setdefault(_group_name(str(group.get("name", f"group{i}"))), float(group["lr"]))
        return out

    # -- hooks ------------------------------------------------------------------------------
    def on_fit_start(self, trainer, *, resumed: bool) -> None:
        if not trainer.dist.is_main:
            return
        log_dir = self.log_dir if self.log_dir is not None else trainer.run_dir.root
        step = self._step(trainer)
        self.writer = self.writer_factory(log_dir, step if resumed else None)
        text = "```json\n" + json.dumps(trainer.cfg.to_dict(), indent=2, sort_keys=True) + "\n```"
        self.writer.add_text("config", text, step)

    def on_phase_start(self, trainer, phase) -> None:
        if not self._active(trainer):
            return
        step = self._step(trainer)
        self.writer.add_scalar("phase/index", self._phase_index(trainer, phase), step)
        what = f"encoder lr {phase.encoder_lr:g}" if phase.train_encoder else "encoder frozen"
        self.writer.add_text("phases", f"**{phase.name}** starts at global step {step} "
                                       f"(head lr {phase.head_lr:g}, {what})", step)

    def on_step_start(self, trainer, phase, batch) -> None:
        if self._active(trainer):
            self._lrs = self.current_lrs(getattr(trainer, "optimizer", None))

    def on_step_end(self, trainer, phase, loss: float) -> None:
        if not self._active(trainer):
            return
        step = self._step(trainer)
        if math.isfinite(loss):
            self.writer.add_scalar("train/loss", float(loss), step)
        for name, lr in self._lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, step)

    def on_evaluate(self, trainer, phase, record: dict) -> None:
        if not self._active(trainer):
            return
        step = int(record.get("global_step", self._step(trainer)))
        for tag, value in _scalars("dev", record.get("dev")):
            self.writer.add_scalar(tag, value, step)
        for tag, value in _scalars("train_probe", record.get("train")):
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def on_save(self, trainer, kind: str, path) -> None:
        if kind == "last" and self._active(trainer):
            self.writer.flush()  # an interrupted run returns right after saving last/

    def on_phase_end(self, trainer, phase, stopper) -> None:
        if not self._active(trainer):
            return
        step = self._step(trainer)
        self.writer.add_scalar("phase/index", self._phase_index(trainer, phase), step)
        reason = getattr(stopper, "reason", None)
        self.writer.add_text("phases", f"**{phase.name}** ends at global step {step}"
                                       + (f": {reason}" if reason else ""), step)
        self.writer.flush()

    def on_fit_end(self, trainer, summary: dict) -> None:
        if not self._active(trainer):
            return
        best = summary.get("best", {})
        text = "```json\n" + json.dumps({k: summary.get(k) for k in ("status", "strategy", "head", "metric",
                                                                      "phase_times")} | {"best": best},
                                        indent=2, default=str) + "\n```"
        self.writer.add_text("summary", text, self._step(trainer))
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def add_reporting_callbacks(cfg, callbacks) -> None:
    """Append the callbacks ``cfg.report_to`` asks for to a CallbackList (unless one is already there)."""
    report_to = getattr(cfg, "report_to", "none") or "none"
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {REPORT_TO}, got {report_to!r}")
    if report_to == "tensorboard" and not any(isinstance(cb, TensorBoardCallback) for cb in callbacks.callbacks):
        callbacks.add(TensorBoardCallback())
