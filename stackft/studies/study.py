"""Seed studies (Dodge et al. 2020, arXiv 2002.06305): a study folder, its log, its trials.

A trial is one run of a configuration with one head-init seed and one data-order seed; Dodge et
al. separate the two because they affect fine-tuning differently. This module owns the study
folder layout below; :mod:`~stackft.studies.runner` and :mod:`~stackft.studies.phase1_select`
run studies through :class:`Study`, which trains each trial with the public
:class:`~stackft.training.trainer.Trainer` and logs its evaluations through a
:class:`~stackft.training.callbacks.TrainerCallback`.

Study folder layout::

    OUT/trials.jsonl              one JSON object a line: every evaluation of every trial
                                  ({"event": "eval", ...}), probes, status changes, decisions
    OUT/trial-i{I}-d{D}/          the trial's run folder (Trainer.output_dir: best/, last/, ...)
    OUT/trial-i{I}-d{D}/trial.json  the trial's summary (status, scores, compute), rewritten each call
    OUT/early_discard.json        the (t, f, p) decision once taken (reused when the study resumes)
    OUT/phase1_select.json        the phase-1 selection once taken (idem)

Resuming: calling the same function again with the same arguments skips trials that are done
(``summary.json`` written, discarded, not selected, diverged, or paused past ``stop_after_phase``)
and continues interrupted ones with ``Trainer.fit(resume=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from stackft.config import TrainConfig
from stackft.run_dir import RunDir, read_json, write_json
from stackft.training.callbacks import TrainerCallback

log = logging.getLogger("stackft")
TRIALS_FILE = "trials.jsonl"
TRIAL_FILE = "trial.json"
DONE_STATUSES = ("finished", "discarded", "not_selected", "diverged")


def load_trials(path, event: str | None = None) -> list[dict]:
    """The records of a study's ``trials.jsonl`` (``path``: the file or the study folder).

    ``event`` filters: ``"eval"`` (one per evaluation), ``"probe"``, ``"status"``, ``"decision"``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRIALS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {TRIALS_FILE} at {path}")
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if event is None or rec.get("event") == event:
                out.append(rec)
    return out


def load_summaries(out_dir) -> list[dict]:
    """The ``trial.json`` summaries of a study folder, in trial-folder order."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"not a study folder: {out_dir}")
    rows = []
    for d in sorted(out_dir.glob("trial-*")):
        s = _read_trial_summary(d)
        if s is not None:
            rows.append(s)
    return rows


_write_json, _read_json = write_json, read_json  # the 0.1 names


def _read_trial_summary(trial_dir: Path) -> dict | None:
    s = _read_json(trial_dir / TRIAL_FILE)
    if s is not None:
        return s
    summ = RunDir(trial_dir).read_summary()  # trial finished but trial.json not written (crash)
    if summ is None:
        return None
    best = summ.get("best", {}).get("score")
    times = summ.get("phase_times", {})
    return {"trial": trial_dir.name, "init_seed": summ.get("init_seed"), "data_seed": summ.get("data_seed"),
            "status": "finished", "best_score": best if best is not None and math.isfinite(best) else None,
            "best_dev_seen": None, "metric": summ.get("metric"), "strategy": summ.get("strategy"),
            "phase_times": times, "time": sum(times.values()), "phase_steps": {}, "steps": None,
            "output_dir": str(trial_dir)}


def _position(trial_dir: Path) -> dict | None:
    return RunDir(trial_dir).last_position()


def trial_id(init_seed: int, data_seed: int) -> str:
    return f"trial-i{init_seed}-d{data_seed}"


def trial_config(base_cfg: TrainConfig, init_seed: int, data_seed: int, out_dir) -> TrainConfig:
    """``base_cfg`` with the trial's seeds and run folder ``out_dir/trial-i{init}-d{data}``."""
    return dataclasses.replace(base_cfg, init_seed=int(init_seed), data_seed=int(data_seed),
                               output_dir=str(Path(out_dir) / trial_id(init_seed, data_seed)))


def _parse_grid(init_seeds, data_seeds) -> list[tuple[int, int]]:
    init_seeds, data_seeds = [int(s) for s in init_seeds], [int(s) for s in data_seeds]
    if not init_seeds or not data_seeds:
        raise ValueError("init_seeds and data_seeds must not be empty")
    grid = [(i, d) for i in init_seeds for d in data_seeds]
    if len(set(grid)) != len(grid):
        raise ValueError("the seed grid has duplicate (init_seed, data_seed) pairs")
    return grid


class Study:
    """One study folder: the encoder/data every trial reuses, the ``trials.jsonl`` writer, trial summaries."""

    def __init__(self, base_cfg: TrainConfig, out_dir, encoder=None, data=None):
        self.base = base_cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / TRIALS_FILE
        self.encoder, self.data = encoder, data
        self.pretrained = None
        if encoder is not None:
            self.snapshot_encoder()
        self._seen: set = set()
        if self.log_path.exists():
            for rec in load_trials(self.log_path):
                self._seen.add(self._key(rec))

    # -- encoder restore -------------------------------------------------------------------
    def snapshot_encoder(self) -> None:
        """Keep the encoder's pretrained weights (on the CPU) for :meth:`restore_encoder`."""
        from stackft.modeling import pet

        if pet.is_attached(self.encoder):
            pet.detach(self.encoder)
        # on the CPU: a second copy of a large encoder on the accelerator would cost its memory
        self.pretrained = {k: v.detach().to("cpu", copy=True) for k, v in self.encoder.state_dict().items()}

    def restore_encoder(self) -> None:
        """Pretrained weights back (phase 2 and PET change the shared encoder in place)."""
        if self.encoder is None:
            return
        from stackft.modeling import pet

        if pet.is_attached(self.encoder):
            pet.detach(self.encoder)
        self.encoder.load_state_dict(self.pretrained)
        self.encoder.requires_grad_(True)
        self.encoder.train()

    def make_trainer(self, cfg: TrainConfig, trial: dict):
        """A Trainer for ``trial`` on the shared encoder/data that logs every evaluation here."""
        from stackft.training.trainer import Trainer

        trainer = Trainer(cfg, encoder=self.encoder, data=self.data, callbacks=[TrialLogger(self, trial)])
        if self.encoder is None:  # first trial loaded them; every later trial reuses them
            self.encoder, self.data = trainer.encoder, trainer.data
            self.snapshot_encoder()
        return trainer

    # -- trials.jsonl ----------------------------------------------------------------------
    @staticmethod
    def _key(rec: dict):
        return (rec.get("event"), rec.get("trial"), rec.get("phase"), rec.get("global_step"), rec.get("status"))

    def append(self, rec: dict) -> None:
        key = self._key(rec)
        if rec.get("event") != "decision" and key in self._seen:
            return  # already logged (a crash between two writes may repeat an evaluation or a status)
        self._seen.add(key)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def append_eval(self, trial: dict, record: dict, event: str = "eval") -> None:
        self.append({"event": event, **trial, **record})

    def status(self, trial: dict, status: str, **extra) -> None:
        self.append({"event": "status", **trial, "status": status, "time_logged": time.time(), **extra})

    # -- running -------------------------------------------------------------------------
    def trial_info(self, init_seed: int, data_seed: int) -> dict:
        return {"trial": trial_id(init_seed, data_seed), "init_seed": int(init_seed), "data_seed": int(data_seed),
                "strategy": self.base.strategy}

    def trial_dir(self, init_seed: int, data_seed: int) -> Path:
        return self.out / trial_id(init_seed, data_seed)

    def summary(self, init_seed: int, data_seed: int) -> dict | None:
        return _read_trial_summary(self.trial_dir(init_seed, data_seed))

    def run(self, init_seed: int, data_seed: int, *, max_steps=None, stop_after_phase="base",
            probe_if_no_eval: bool = False):
        """One ``fit(resume=True)`` call of the trial; returns (summary, trainer)."""
        from stackft.training.step import NonFiniteLoss

        trial = self.trial_info(init_seed, data_seed)
        cfg = trial_config(self.base, init_seed, data_seed, self.out)
        cfg.max_steps_this_run = max_steps
        if stop_after_phase != "base":
            cfg.stop_after_phase = stop_after_phase
        self.restore_encoder()
        trainer = self.make_trainer(cfg, trial)
        previous = self.summary(init_seed, data_seed) or {}
        t0 = time.perf_counter()
        diverged = None
        try:
            result = trainer.fit(resume=True)
        except NonFiniteLoss as exc:
            result, diverged = {"status": "diverged"}, str(exc)
            log.warning("%s diverged: %s", trial["trial"], exc)
        wall = time.perf_counter() - t0 + float(previous.get("wall_time", 0.0))
        if probe_if_no_eval and not trainer.history and diverged is None:
            dev = trainer.evaluate("dev")  # no evaluation fell inside the budget: score the model as it is
            self.append_eval(trial, {"phase": trainer.current_phase.name,
                                     "step": trainer.pos.phase_step, "global_step": trainer.pos.global_step,
                                     "dev": dev}, event="probe")
            previous = {**previous, "probe_dev": dev[trainer.task.metric]}
        summary = self._summarize(trainer, trial, result["status"], wall, previous)
        if diverged:
            summary["error"] = diverged
        self.write_summary(summary)
        if result["status"] in ("finished", "diverged"):
            self.status(trial, result["status"], best_score=summary["best_score"])
        return summary, trainer

    def write_summary(self, summary: dict) -> None:
        d = self.out / summary["trial"]
        d.mkdir(parents=True, exist_ok=True)
        _write_json(d / TRIAL_FILE, summary)

    def _summarize(self, trainer, trial: dict, status: str, wall: float, previous: dict) -> dict:
        metric = trainer.task.metric
        devs = [r["dev"][metric] for r in trainer.history if r.get("dev")]
        if "probe_dev" in previous:
            devs.append(previous["probe_dev"])
        best = trainer.best.get("score", -math.inf)
        phase_steps = _phase_steps(trainer)
        times = {p.name: float(trainer.phase_times.get(p.name, 0.0)) for p in trainer.phases}
        return {
            **trial,
            **{k: v for k, v in previous.items() if k in ("probe_dev", "phase1_probe")},
            "status": status,
            "metric": metric,
            "best_score": best if math.isfinite(best) else None,
            "best": trainer.best if math.isfinite(best) else None,
            "best_dev_seen": max(devs) if devs else None,
            "n_evals": len(trainer.history),
            "steps": trainer.pos.global_step,
            "phase_steps": phase_steps,
            "phase_times": times,
            "time": sum(times.values()),
            "wall_time": wall,
            "position": vars(trainer.pos).copy(),
            "output_dir": str(trainer.out),
        }

    def done(self, init_seed: int, data_seed: int, stop_after_phase=None) -> bool:
        s = self.summary(init_seed, data_seed)
        d = self.trial_dir(init_seed, data_seed)
        if RunDir(d).is_finished() or (s is not None and s.get("status") in DONE_STATUSES):
            return True
        if stop_after_phase is not None:
            pos = _position(d)
            return pos is not None and pos["phase"] > stop_after_phase
        return False


class TrialLogger(TrainerCallback):
    """Appends each evaluation of one trial to the study's ``trials.jsonl`` as it happens."""

    def __init__(self, study: Study, trial: dict):
        self.study, self.trial = study, trial

    def on_evaluate(self, trainer, phase, record: dict) -> None:
        if trainer.dist.is_main:
            self.study.append_eval(self.trial, record)


_Study = Study  # the 0.1 name


def _phase_steps(trainer) -> dict:
    """Optimizer steps run in each planned phase (0 for phases not started)."""
    starts: dict[str, int] = {}
    for r in trainer.history:
        starts.setdefault(r["phase"], r["global_step"] - r["step"])
    pos = trainer.pos
    names = [p.name for p in trainer.phases]
    if pos.phase < len(names):
        starts.setdefault(names[pos.phase], pos.global_step - pos.phase_step)
    out, ordered = {}, [n for n in names if n in starts]
    for i, name in enumerate(ordered):
        end = starts[ordered[i + 1]] if i + 1 < len(ordered) else pos.global_step
        out[name] = end - starts[name]
    return {n: out.get(n, 0) for n in names}


def _planned_steps(cfg: TrainConfig, encoder, data) -> int:
    """Optimizer steps the trial would take with every phase run to its epoch cap."""
    from stackft.training.loaders import loader
    from stackft.training.strategies import plan_phases

    total = 0
    for k, phase in enumerate(plan_phases(cfg.strategy, cfg)):
        dl = loader(data.train, cfg.batch_size, encoder.pad_id, shuffle=True, seed=cfg.data_seed * 1000 + k,
                    max_tokens=cfg.max_tokens)  # the trainer's loader of phase k
        total += len(dl.batch_sampler) * phase.epochs
    return total
