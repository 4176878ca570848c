"""Seed studies (Dodge et al. 2020; ../shared/spec/methods.md §2) and the phase-1 selection mode.

- :func:`expected_max`, :func:`expected_max_curve`, :func:`plot_expected_max`: expected validation
  performance of the best of n trials (Dodge et al. 2019, "Show Your Work"; allentune's ``samplemax``).
- :func:`run_trials`: the grid ``init_seeds x data_seeds`` of one configuration, resumable, with
  optional early discarding ``(t, f, p)``; every evaluation goes to one ``OUT/trials.jsonl``.
- :func:`run_phase1_then_select`: many cheap phase-1 heads, few expensive phase-2 runs.
- :func:`expected_max_per_compute`, :func:`load_trials`, :func:`load_summaries`, :func:`report`.

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
import os
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from .config import TrainConfig

log = logging.getLogger("stackft")

TRIALS_FILE = "trials.jsonl"
TRIAL_FILE = "trial.json"
DONE_STATUSES = ("finished", "discarded", "not_selected", "diverged")


# =====================================================================================
# Expected maximum (methods.md §2.3)
# =====================================================================================
def _sorted_scores(scores) -> list[float]:
    v = sorted(float(s) for s in scores)
    if not v:
        raise ValueError("expected_max: no scores")
    if any(math.isnan(x) for x in v):
        raise ValueError("expected_max: scores contain NaN")
    return v


def _check_n(n, N: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) and not (hasattr(n, "__index__")):
        raise ValueError(f"n must be an integer in 1..{N}, got {n!r}")
    n = int(n)
    if not 1 <= n <= N:
        raise ValueError(f"n must be in 1..{N} (the number of trials; no extrapolation), got {n}")
    return n


def _max_weights(N: int, n: int, replacement: bool) -> list[float]:
    """p_i(n): probability that the i-th smallest of N scores is the maximum of n draws."""
    if replacement:
        return [(i / N) ** n - ((i - 1) / N) ** n for i in range(1, N + 1)]
    total = math.comb(N, n)  # allentune: F(i) = C(i, n) / C(N, n), p_i = F(i) - F(i-1)
    return [(math.comb(i, n) - math.comb(i - 1, n)) / total for i in range(1, N + 1)]


def expected_max(scores: Iterable[float], n: int, *, replacement: bool = True) -> tuple[float, float]:
    """Expected maximum of ``n`` trials drawn from the empirical distribution of ``scores``.

    With v_(1) <= ... <= v_(N) the sorted scores: E_n = sum_i v_(i) p_i(n), with
    p_i(n) = (i/N)^n - ((i-1)/N)^n when drawing with replacement (the default), and
    p_i(n) = [C(i,n) - C(i-1,n)] / C(N,n) without (allentune's ``C(i,n)/C(N,n)`` CDF).
    Returns ``(E_n, sd_n)`` with sd_n = sqrt(sum_i p_i(n) (v_(i) - E_n)^2). ``n`` must be in 1..N.
    """
    v = _sorted_scores(scores)
    n = _check_n(n, len(v))
    p = _max_weights(len(v), n, replacement)
    mean = sum(pi * vi for pi, vi in zip(p, v))
    var = sum(pi * (vi - mean) ** 2 for pi, vi in zip(p, v))
    return float(mean), float(math.sqrt(max(var, 0.0)))


def expected_max_curve(scores: Iterable[float], *, replacement: bool = True) -> list[tuple[int, float, float]]:
    """``[(n, E_n, sd_n) for n = 1..N]``."""
    v = _sorted_scores(scores)
    return [(n, *expected_max(v, n, replacement=replacement)) for n in range(1, len(v) + 1)]


def plot_expected_max(curves: dict, out_png, *, budget_per_trial: dict | None = None, replacement: bool = True,
                      title: str = "", ylabel: str = "expected max dev score", xlabel: str | None = None) -> Path:
    """One line per label: expected max of n trials for n = 1..N, shaded E_n ± sd_n clipped to [min, max].

    ``curves``: ``{label: scores}``. ``budget_per_trial``: ``{label: mean cost of one trial}`` (e.g.
    seconds); with it the x axis is n x that cost, so strategies of different cost compare at equal
    budget.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, scores in curves.items():
        scores = [float(s) for s in scores]
        if not scores:
            continue
        rows = expected_max_curve(scores, replacement=replacement)
        scale = 1.0 if budget_per_trial is None else float(budget_per_trial[label])
        x = [n * scale for n, _, _ in rows]
        mean = [m for _, m, _ in rows]
        lo = [max(m - s, min(scores)) for _, m, s in rows]
        hi = [min(m + s, max(scores)) for _, m, s in rows]
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{label} (N={len(scores)})")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel or ("budget (n x mean cost of a trial)" if budget_per_trial else "number of trials n"))
    ax.set_ylabel(ylabel)
    if budget_per_trial is None:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")  # wherever the curves and their bands leave room
    ax.set_title(title or "expected validation performance (shaded: ±1 sd, clipped to [min, max])", fontsize=9)
    from .plots import save_figure

    return save_figure(fig, out_png)


def expected_max_per_compute(scores: Sequence[float], costs: Sequence[float], *,
                             replacement: bool = True) -> list[dict]:
    """Expected max of n trials against the compute n trials cost (n = 1..N).

    ``costs``: the cost of each trial (seconds or optimizer steps; trials may be unequal, the mean
    is used). Rows ``{"n", "cost", "expected_max", "std", "per_unit"}`` with cost = n x mean cost and
    per_unit = expected_max / cost.
    """
    if len(scores) != len(costs):
        raise ValueError(f"{len(scores)} scores but {len(costs)} costs")
    mean_cost = sum(float(c) for c in costs) / max(len(costs), 1)
    rows = []
    for n, m, s in expected_max_curve(scores, replacement=replacement):
        cost = n * mean_cost
        rows.append({"n": n, "cost": cost, "expected_max": m, "std": s,
                     "per_unit": m / cost if cost > 0 else math.inf})
    return rows


def _baseline_at_budget(rows: list[dict], budget: float) -> dict | None:
    """The baseline row with the most trials whose cost fits ``budget`` (None: not even one fits)."""
    fit = [r for r in rows if r["cost"] <= budget * (1 + 1e-9)]
    return fit[-1] if fit else None


# =====================================================================================
# Files
# =====================================================================================
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


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _read_trial_summary(trial_dir: Path) -> dict | None:
    s = _read_json(trial_dir / TRIAL_FILE)
    if s is not None:
        return s
    summ = _read_json(trial_dir / "summary.json")  # trial finished but trial.json not written (crash)
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
    meta = _read_json(Path(trial_dir) / "last" / "meta.json")
    return None if meta is None else meta.get("position")


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


# =====================================================================================
# The study runner
# =====================================================================================
class _Study:
    """Shared state of one study: encoder/data reused across trials, the trials.jsonl writer."""

    def __init__(self, base_cfg: TrainConfig, out_dir, encoder=None, data=None):
        self.base = base_cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / TRIALS_FILE
        self.encoder, self.data = encoder, data
        self.pretrained = None
        if encoder is not None:
            self._snapshot()
        self._seen: set = set()
        if self.log_path.exists():
            for rec in load_trials(self.log_path):
                self._seen.add(self._key(rec))

    # -- encoder restore -------------------------------------------------------------------
    def _snapshot(self) -> None:
        from . import pet

        if pet.is_attached(self.encoder):
            pet.detach(self.encoder)
        # on the CPU: a second copy of a large encoder on the accelerator would cost its memory
        self.pretrained = {k: v.detach().to("cpu", copy=True) for k, v in self.encoder.state_dict().items()}

    def _restore(self) -> None:
        """Pretrained weights back (phase 2 and PET change the shared encoder in place)."""
        if self.encoder is None:
            return
        from . import pet

        if pet.is_attached(self.encoder):
            pet.detach(self.encoder)
        self.encoder.load_state_dict(self.pretrained)
        self.encoder.requires_grad_(True)
        self.encoder.train()

    def make_trainer(self, cfg: TrainConfig, trial: dict):
        trainer = _trial_trainer_class()(cfg, study=self, trial=trial, encoder=self.encoder, data=self.data)
        if self.encoder is None:  # first trial loaded them; every later trial reuses them
            self.encoder, self.data = trainer.encoder, trainer.data
            self._snapshot()
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
        from .trainer import NonFiniteLoss

        trial = self.trial_info(init_seed, data_seed)
        cfg = trial_config(self.base, init_seed, data_seed, self.out)
        cfg.max_steps_this_run = max_steps
        if stop_after_phase != "base":
            cfg.stop_after_phase = stop_after_phase
        self._restore()
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
            self.append_eval(trial, {"phase": trainer.phases[min(trainer.pos.phase, len(trainer.phases) - 1)].name,
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
        if (d / "summary.json").exists() or (s is not None and s.get("status") in DONE_STATUSES):
            return True
        if stop_after_phase is not None:
            pos = _position(d)
            return pos is not None and pos["phase"] > stop_after_phase
        return False


_TRIAL_TRAINER = None


def _trial_trainer_class():
    """A Trainer subclass that also appends each evaluation to the study's trials.jsonl as it happens
    (defined lazily: importing stackft.trials does not import torch/transformers)."""
    global _TRIAL_TRAINER
    if _TRIAL_TRAINER is None:
        from .trainer import Trainer

        class TrialTrainer(Trainer):
            def __init__(self, cfg, *, study: _Study, trial: dict, **kw):
                self._study, self._trial = study, trial
                super().__init__(cfg, **kw)

            def _log(self, record: dict) -> None:
                super()._log(record)
                self._study.append_eval(self._trial, record)

        _TRIAL_TRAINER = TrialTrainer
    return _TRIAL_TRAINER


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
    from .evaluate import loader
    from .strategies import plan_phases

    total = 0
    for k, phase in enumerate(plan_phases(cfg.strategy, cfg)):
        dl = loader(data.train, cfg.batch_size, encoder.pad_id, shuffle=True, seed=cfg.data_seed * 1000 + k,
                    max_tokens=cfg.max_tokens)  # the trainer's loader of phase k
        total += len(dl.batch_sampler) * phase.epochs
    return total


# =====================================================================================
# run_trials
# =====================================================================================
def run_trials(base_cfg: TrainConfig, *, init_seeds: Sequence[int], data_seeds: Sequence[int], out_dir,
               early_discard: tuple | None = None, encoder=None, data=None) -> list[dict]:
    """Train ``base_cfg`` once per (init_seed, data_seed) of the grid; resumable.

    Each trial runs in ``out_dir/trial-i{init}-d{data}/`` with ``base_cfg``'s settings and those two
    seeds; every evaluation is appended to ``out_dir/trials.jsonl``. ``encoder``/``data`` (optional)
    are reused by every trial; the encoder's pretrained weights are restored before each trial.

    ``early_discard=(t, f, p)`` (Dodge et al. §2.4): start the first ``t`` trials of the grid
    (init-seed major order), train each for a fraction ``f`` of its planned optimizer steps
    (``max_steps_this_run``; planned = every phase at its epoch cap), rank them by the best dev score
    seen so far (max over their evaluations; a trial with no evaluation yet is scored once on dev as
    it stands), continue the top ``p`` to completion and mark the others ``"discarded"``.
    Ties are broken by grid order. Choose ``evals_per_epoch`` so that evaluations fall inside ``f``.

    Returns one summary per trial run (grid order): trial, seeds, status (``finished``,
    ``discarded``, ``interrupted``, ``paused``, ``diverged``), ``best_score`` (the trainer's best dev
    score, the final model's), ``best_dev_seen`` (max over all evaluations, PET phases included),
    ``steps``, ``phase_steps``, ``phase_times``/``time`` (training + evaluation seconds per phase),
    ``wall_time`` (seconds in ``fit``), ``output_dir``.
    """
    grid = _parse_grid(init_seeds, data_seeds)
    study = _Study(base_cfg, out_dir, encoder, data)
    try:
        if early_discard is not None:
            return _run_early_discard(study, grid, early_discard)
        out = []
        for i, d in grid:
            if study.done(i, d, base_cfg.stop_after_phase):
                out.append(study.summary(i, d))
                continue
            summary, _ = study.run(i, d, max_steps=base_cfg.max_steps_this_run)
            out.append(summary)
        return out
    finally:
        study._restore()  # hand the caller's encoder back with its pretrained weights


def rank_for_discard(scores: Sequence[float | None], p: int) -> tuple[list[int], set[int]]:
    """Early-discarding rank: ``scores[k]`` = best dev score seen so far by trial k (grid order;
    None = no score, ranked last). Returns (indices best first, the set of the top ``p``).
    Ties keep grid order."""
    key = [-math.inf if v is None or math.isnan(v) else float(v) for v in scores]
    order = sorted(range(len(key)), key=lambda k: (-key[k], k))
    return order, set(order[:p])


def select_heads(rows: list[dict], keep: int, *, gap_tol: float, fill: bool = False) -> tuple[list[int], list[int]]:
    """The phase-1 selection rule. ``rows[k]``: ``{"dev", "gap"}`` of head k (grid order; None = no probe).

    Heads with ``gap <= gap_tol`` are eligible and ranked by dev score (ties: grid order); the top
    ``keep`` are chosen. With fewer eligible heads only those are chosen (a warning says so), unless
    ``fill`` (then the smallest-gap ineligible heads fill the places). Sets ``rows[k]["eligible"]``.
    Returns (all indices in rank order: eligible first, chosen indices in rank order).
    """
    for r in rows:
        r["eligible"] = r.get("gap") is not None and r["gap"] <= gap_tol + 1e-12
    order = sorted(range(len(rows)), key=lambda k: (not rows[k]["eligible"],
                                                    -(rows[k]["dev"] if rows[k].get("dev") is not None else -math.inf), k))
    eligible = [k for k in order if rows[k]["eligible"]]
    chosen = eligible[:keep]
    if len(chosen) < keep:
        msg = f"only {len(eligible)} of {len(rows)} heads have a train-dev gap <= {gap_tol}"
        if fill:
            rest = sorted((k for k in range(len(rows)) if not rows[k]["eligible"] and rows[k].get("gap") is not None),
                          key=lambda k: (rows[k]["gap"], k))
            chosen += rest[: keep - len(chosen)]
            msg += f"; filled with the {len(chosen) - len(eligible)} smallest-gap heads"
        warnings.warn(msg, stacklevel=3)
    return order, chosen


def _check_early_discard(early_discard, n_grid: int) -> tuple[int, float, int]:
    try:
        t, f, p = early_discard
        t, f, p = int(t), float(f), int(p)
    except (TypeError, ValueError):
        raise ValueError(f"early_discard must be (t, f, p), got {early_discard!r}") from None
    if not 1 <= t <= n_grid:
        raise ValueError(f"early_discard t={t} must be in 1..{n_grid} (the grid size)")
    if not 0.0 < f < 1.0:
        raise ValueError(f"early_discard f={f} must be in (0, 1)")
    if not 1 <= p <= t:
        raise ValueError(f"early_discard p={p} must be in 1..t={t}")
    return t, f, p


def _run_early_discard(study: _Study, grid, early_discard) -> list[dict]:
    t, f, p = _check_early_discard(early_discard, len(grid))
    started = grid[:t]
    decision_path = study.out / "early_discard.json"
    decision = _read_json(decision_path)
    if decision is not None and (decision["t"], decision["f"], decision["p"]) != (t, f, p):
        raise ValueError(f"{decision_path} holds a decision for (t, f, p) = "
                         f"({decision['t']}, {decision['f']}, {decision['p']}), not ({t}, {f}, {p})")
    if decision is None:
        # stage 1: every started trial up to its budget of f x planned steps
        budgets, scores = {}, {}
        for i, d in started:
            tid = trial_id(i, d)
            if study.done(i, d):
                s = study.summary(i, d)
            else:
                cfg = trial_config(study.base, i, d, study.out)
                if study.encoder is None:  # load encoder/data once, through a first Trainer
                    study._restore()
                    study.make_trainer(cfg, study.trial_info(i, d))
                budget = max(1, round(f * _planned_steps(cfg, study.encoder, study.data)))
                budgets[tid] = budget
                pos = _position(study.trial_dir(i, d))
                done_steps = pos["global_step"] if pos else 0
                if done_steps < budget:
                    s, _ = study.run(i, d, max_steps=budget - done_steps, probe_if_no_eval=True)
                else:
                    s = study.summary(i, d) or {}
            score = s.get("best_dev_seen") if s else None
            scores[tid] = -math.inf if score is None else score
        order, kept_idx = rank_for_discard([scores[trial_id(*g)] for g in started], p)
        kept = [trial_id(*started[k]) for k in order if k in kept_idx]
        discarded = [trial_id(*started[k]) for k in order if k not in kept_idx]
        decision = {"t": t, "f": f, "p": p, "budget_steps": budgets,
                    "ranking": [{"trial": trial_id(*started[k]), "best_dev_seen": scores[trial_id(*started[k])]}
                                for k in order],
                    "kept": kept, "discarded": discarded}
        _write_json(decision_path, decision)
        study.append({"event": "decision", "kind": "early_discard", **decision})
    for i, d in started:  # idempotent: also completes the marking if a crash interrupted it
        if trial_id(i, d) in decision["discarded"]:
            s = study.summary(i, d)
            if s is not None and s.get("status") not in ("finished", "diverged", "discarded"):
                s["status"] = "discarded"
                study.write_summary(s)
                study.status(study.trial_info(i, d), "discarded", best_dev_seen=s.get("best_dev_seen"))
    # stage 2: the kept trials to completion
    out = []
    for i, d in started:
        tid = trial_id(i, d)
        if tid in decision["kept"] and not study.done(i, d, study.base.stop_after_phase):
            s, _ = study.run(i, d, max_steps=study.base.max_steps_this_run)
        else:
            s = study.summary(i, d)
        out.append(s)
    return out


# =====================================================================================
# Phase-1 selection: many cheap heads, few expensive phase-2 runs
# =====================================================================================
def _load_baseline(baseline) -> list[dict]:
    if baseline is None:
        return []
    if isinstance(baseline, (str, os.PathLike)):
        baseline = load_summaries(baseline)
    return [b for b in baseline if b and b.get("status") == "finished" and b.get("best_score") is not None]


def _cost(summary: dict, unit: str, phases: Iterable[str] | None = None) -> float:
    src = summary["phase_times"] if unit == "time" else summary["phase_steps"]
    return float(sum(v for k, v in src.items() if phases is None or k in phases))


def run_phase1_then_select(base_cfg: TrainConfig, *, init_seeds: Sequence[int], keep: int, out_dir,
                           data_seeds: Sequence[int] | None = None, k: int | None = None,
                           gap_tol: float | None = None, fill: bool = False, baseline=None,
                           cost: str = "time", replacement: bool = True, encoder=None, data=None) -> dict:
    """Phase 1 for k trials, then phase 2 only for the ``keep`` best heads (a two-phase strategy).

    1. Every trial of the grid ``init_seeds x data_seeds`` (default data seed: ``base_cfg``'s; only
       the first ``k`` when given) runs phase 1 only (``stop_after_phase=0``; phase 1 ignores
       ``max_steps_this_run``, phase 2 honours it).
    2. Each head is scored as phase 2 would start from it (the phase-1 result, on the pretrained
       encoder for strategies that reload it): dev score and score on the trainer's fixed train
       probe; this evaluation is logged as ``{"event": "probe", "phase": "phase1_end"}``.
    3. Gap rule: heads whose train - dev gap is <= ``gap_tol`` (default ``base_cfg.gap_tol``) are
       eligible; they are ranked by dev score (ties: grid order) and the top ``keep`` continue with
       phase 2 (``fit(resume=True)``). With fewer than ``keep`` eligible heads only those continue,
       unless ``fill=True`` (then the smallest-gap ineligible heads fill the remaining places).
       The others end with status ``"not_selected"``.

    ``baseline``: finetune-only trial summaries (a list from :func:`run_trials`, or its study
    folder) to compare against at equal compute; ``cost``: ``"time"`` (seconds of training and
    evaluation, the fair unit: frozen-encoder steps are cheaper) or ``"steps"``.

    Returns ``{"trials": [...], "selection": {...}, "compute": {...}, "table": [...]}``; ``table``
    has one row per number n of continued heads (in rank order): the study's cost (all phase-1
    runs + n phase-2 runs) and its best score, and the baseline's expected max at the largest
    number of trials that fits the same cost (None where not even one baseline trial fits, or
    where that would need more trials than the baseline has: no extrapolation).
    """
    from .strategies import plan_phases

    if cost not in ("time", "steps"):
        raise ValueError(f"cost must be 'time' or 'steps', got {cost!r}")
    phases = plan_phases(base_cfg.strategy, base_cfg)
    if len(phases) != 2:
        raise ValueError(f"phase-1 selection needs a two-phase strategy, {base_cfg.strategy!r} has {len(phases)} phase(s)")
    grid = _parse_grid(init_seeds, data_seeds if data_seeds is not None else [base_cfg.data_seed])
    if k is not None:
        if not 1 <= int(k) <= len(grid):
            raise ValueError(f"k={k} must be in 1..{len(grid)} (the grid size)")
        grid = grid[: int(k)]
    if not 1 <= int(keep) <= len(grid):
        raise ValueError(f"keep={keep} must be in 1..{len(grid)} (the number of phase-1 heads)")
    keep = int(keep)
    gap_tol = base_cfg.gap_tol if gap_tol is None else float(gap_tol)
    study = _Study(dataclasses.replace(base_cfg, stop_after_phase=None), out_dir, encoder, data)
    try:
        return _phase1_then_select(study, base_cfg, grid, keep, gap_tol, fill, baseline, cost, replacement,
                                   (phases[0].name, phases[1].name))
    finally:
        study._restore()


def _phase1_then_select(study, base_cfg, grid, keep, gap_tol, fill, baseline, cost, replacement, names) -> dict:
    p1, p2 = names

    # 1-2. phase 1 of every head, then its probe
    for i, d in grid:
        trainer = None
        if not study.done(i, d, 0):  # not paused after phase 1 (nor further) yet
            _, trainer = study.run(i, d, max_steps=None, stop_after_phase=0)
        s = study.summary(i, d)
        if s is not None and s.get("status") == "paused" and s.get("phase1_probe") is None:
            s["phase1_probe"] = _phase1_probe(study, i, d, trainer)
            study.write_summary(s)

    # 3. selection (persisted, so a resumed study continues the same heads)
    sel_path = study.out / "phase1_select.json"
    selection = _read_json(sel_path)
    trials = [study.summary(i, d) for i, d in grid]
    if selection is not None and (selection["keep"], selection["gap_tol"], len(selection["ranking"])) != (keep, gap_tol, len(grid)):
        raise ValueError(f"{sel_path} holds a selection for keep={selection['keep']}, gap_tol={selection['gap_tol']} "
                         f"over {len(selection['ranking'])} heads; use a new out_dir for other settings")
    if selection is None:
        rows = []
        for idx, s in enumerate(trials):
            probe = (s or {}).get("phase1_probe")
            if probe is None:
                rows.append({"trial": trial_id(*grid[idx]), "dev": None, "train": None, "gap": None})
                continue
            rows.append({"trial": s["trial"], "dev": probe["dev"], "train": probe["train"], "gap": probe["gap"]})
        order, chosen = select_heads(rows, keep, gap_tol=gap_tol, fill=fill)
        selection = {"keep": keep, "gap_tol": gap_tol, "fill": fill,
                     "ranking": [rows[r] for r in order], "selected": [rows[r]["trial"] for r in chosen]}
        _write_json(sel_path, selection)
        study.append({"event": "decision", "kind": "phase1_select", **selection})
        for (i, d), s in zip(grid, trials):
            if s is not None and s["trial"] not in selection["selected"] and s.get("status") == "paused":
                s["status"] = "not_selected"
                study.write_summary(s)
                study.status(study.trial_info(i, d), "not_selected", phase1_probe=s.get("phase1_probe"))

    # 4. phase 2 of the selected heads
    for i, d in grid:
        if trial_id(i, d) in selection["selected"] and not study.done(i, d):
            study.run(i, d, max_steps=base_cfg.max_steps_this_run, stop_after_phase=None)
    trials = [study.summary(i, d) for i, d in grid]

    # compute report
    by_id = {s["trial"]: s for s in trials if s is not None}
    p1_cost = {u: sum(_cost(s, u, [p1]) for s in by_id.values()) for u in ("time", "steps")}
    table = []
    baseline_rows = _load_baseline(baseline)
    base_curve = (expected_max_per_compute([b["best_score"] for b in baseline_rows],
                                           [_cost(b, cost) for b in baseline_rows], replacement=replacement)
                  if baseline_rows else [])
    best_so_far = -math.inf
    cum = dict(p1_cost)
    for n, tid in enumerate(selection["selected"], start=1):
        s = by_id.get(tid)
        if s is None:
            continue
        for u in ("time", "steps"):
            cum[u] += _cost(s, u, [p2])
        if s.get("best_score") is not None:
            best_so_far = max(best_so_far, s["best_score"])
        row = {"n_phase2": n, "cost_time": cum["time"], "cost_steps": cum["steps"],
               "best_score": best_so_far if math.isfinite(best_so_far) else None, "finished": s.get("status") == "finished"}
        if base_curve:
            b = _baseline_at_budget(base_curve, cum[cost])
            row["baseline_n"] = None if b is None else b["n"]
            row["baseline_expected_max"] = None if b is None else b["expected_max"]
            row["baseline_std"] = None if b is None else b["std"]
            if b is not None and b["n"] == base_curve[-1]["n"] and cum[cost] >= base_curve[-1]["cost"] + base_curve[0]["cost"]:
                row["baseline_note"] = "budget affords more baseline trials than were run (no extrapolation)"
        table.append(row)
    compute = {
        "unit": cost,
        "phase1_total": p1_cost,
        "phase2_total": {u: sum(_cost(by_id[t], u, [p2]) for t in selection["selected"] if t in by_id)
                         for u in ("time", "steps")},
        "per_trial": [{"trial": s["trial"], "status": s["status"],
                       "steps": s["phase_steps"], "time": s["phase_times"]} for s in by_id.values()],
    }
    if base_curve:
        compute["baseline"] = {"n_trials": len(baseline_rows), "curve": base_curve}
    return {"trials": trials, "selection": selection, "compute": compute, "table": table}


def _phase1_probe(study: _Study, init_seed: int, data_seed: int, trainer=None) -> dict:
    """Dev and train-probe scores of the model phase 2 would start from."""
    from . import checkpoint as ckpt
    from . import pet

    trial = study.trial_info(init_seed, data_seed)
    if trainer is None:  # a resumed study: rebuild the trainer and load the paused state
        study._restore()
        cfg = trial_config(study.base, init_seed, data_seed, study.out)
        trainer = study.make_trainer(cfg, trial)
        ckpt.load_weights(Path(cfg.output_dir) / "last", trainer.model)
    model = trainer.model
    if pet.is_attached(model.encoder):
        pet.detach(model.encoder)
    if trainer.phases[1].reload_encoder:
        model.encoder.load_state_dict(study.pretrained)
    trainer.features = None
    metric = trainer.task.metric
    dev, train = trainer.evaluate("dev"), trainer.evaluate("train")
    probe = {"dev": dev[metric], "train": train[metric], "gap": train[metric] - dev[metric]}
    pos = _position(study.trial_dir(init_seed, data_seed)) or {}
    study.append_eval(trial, {"phase": "phase1_end", "step": 0, "global_step": pos.get("global_step"),
                              "dev": dev, "train": train}, event="probe")
    return probe


# =====================================================================================
# Report
# =====================================================================================
def report(out_dirs, *, plot: str | Path | None = None, x: str = "n", replacement: bool = True) -> str:
    """A text report of one or more study folders: mean ± std, the expected max table, the plot.

    ``x``: ``"n"`` (number of trials) or ``"time"`` (n x mean seconds of a trial) for the plot.
    ``plot``: where to write the PNG (None: no plot).
    """
    if isinstance(out_dirs, (str, os.PathLike)):
        out_dirs = [out_dirs]
    lines, curves, budgets = [], {}, {}
    for out_dir in out_dirs:
        summaries = load_summaries(out_dir)
        if not summaries:
            raise FileNotFoundError(f"{out_dir}: no trials (no trial-*/trial.json)")
        finished = [s for s in summaries if s.get("status") == "finished" and s.get("best_score") is not None]
        strategies = sorted({str(s.get("strategy")) for s in summaries})
        label = Path(out_dir).name if len(out_dirs) > 1 else "/".join(strategies)
        if label in curves:
            label = str(out_dir)
        metric = summaries[0].get("metric") or "score"
        counts: dict[str, int] = {}
        for s in summaries:
            counts[s.get("status", "?")] = counts.get(s.get("status", "?"), 0) + 1
        lines.append(f"== {out_dir} ({', '.join(strategies)}; dev {metric}) ==")
        lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        if not finished:
            lines.append("no finished trials")
            continue
        scores = [s["best_score"] for s in finished]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((v - mean) ** 2 for v in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
        times = [s.get("time") or 0.0 for s in finished]
        lines.append(f"best dev {metric} over {len(scores)} finished trials: mean {mean:.4f} ± {sd:.4f} (sample sd), "
                     f"min {min(scores):.4f}, max {max(scores):.4f}; mean time {sum(times) / len(times):.1f} s")
        everything = [s.get("best_score") if s.get("best_score") is not None else s.get("best_dev_seen")
                      for s in summaries]
        everything = [v for v in everything if v is not None]
        if len(everything) > len(scores):
            lines.append(f"study best incl. discarded/partial trials: {max(everything):.4f}")
        if len(scores) < 5:
            lines.append("fewer than 5 trials: raw scores " + ", ".join(f"{v:.4f}" for v in scores))
        lines.append(f"{'n':>4} {'E[max]':>8} {'sd':>8}")
        for n, m, s in expected_max_curve(scores, replacement=replacement):
            lines.append(f"{n:>4} {m:>8.4f} {s:>8.4f}")
        curves[label] = scores
        budgets[label] = sum(times) / len(times)
    if plot is not None and curves:
        plot_expected_max(curves, plot, replacement=replacement,
                          budget_per_trial=budgets if x == "time" else None,
                          xlabel="budget: n x mean seconds per trial" if x == "time" else None)
        lines.append(f"plot: {plot}")
    return "\n".join(lines)
