"""Phase-1 selection: many cheap phase-1 heads, few expensive phase-2 runs."""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Iterable, Sequence

from stackft.config import TrainConfig
from stackft.run_dir import RunDir
from stackft.studies.expected import _baseline_at_budget, expected_max_per_compute
from stackft.studies.study import (
    Study,
    _parse_grid,
    _position,
    _read_json,
    _write_json,
    load_summaries,
    trial_config,
    trial_id,
)


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
    from stackft.training.strategies import plan_phases

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
    study = Study(dataclasses.replace(base_cfg, stop_after_phase=None), out_dir, encoder, data)
    try:
        return _phase1_then_select(study, base_cfg, grid, keep, gap_tol, fill, baseline, cost, replacement,
                                   (phases[0].name, phases[1].name))
    finally:
        study.restore_encoder()


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


def _phase1_probe(study: Study, init_seed: int, data_seed: int, trainer=None) -> dict:
    """Dev and train-probe scores of the model phase 2 would start from."""
    from stackft.modeling import pet
    from stackft.training import checkpoint as ckpt

    trial = study.trial_info(init_seed, data_seed)
    if trainer is None:  # a resumed study: rebuild the trainer and load the paused state
        study.restore_encoder()
        cfg = trial_config(study.base, init_seed, data_seed, study.out)
        trainer = study.make_trainer(cfg, trial)
        ckpt.load_weights(RunDir(cfg.output_dir).last, trainer.model)
    model = trainer.model
    if pet.is_attached(model.encoder):
        pet.detach(model.encoder)
    if trainer.phases[1].reload_encoder:
        model.encoder.load_state_dict(study.pretrained)
    metric = trainer.task.metric  # live: the encoder phase 2 starts from, not the cached one
    dev, train = trainer.evaluate("dev", live=True), trainer.evaluate("train", live=True)
    probe = {"dev": dev[metric], "train": train[metric], "gap": train[metric] - dev[metric]}
    pos = _position(study.trial_dir(init_seed, data_seed)) or {}
    study.append_eval(trial, {"phase": "phase1_end", "step": 0, "global_step": pos.get("global_step"),
                              "dev": dev, "train": train}, event="probe")
    return probe
