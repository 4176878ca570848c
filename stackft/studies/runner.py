"""run_trials: a seed grid of one configuration, with optional early discarding."""

from __future__ import annotations

import math
from typing import Sequence

from stackft.config import TrainConfig
from stackft.studies.study import (
    Study,
    _parse_grid,
    _planned_steps,
    _position,
    _read_json,
    _write_json,
    trial_config,
    trial_id,
)


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
    study = Study(base_cfg, out_dir, encoder, data)
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
        study.restore_encoder()  # hand the caller's encoder back with its pretrained weights


def rank_for_discard(scores: Sequence[float | None], p: int) -> tuple[list[int], set[int]]:
    """Early-discarding rank: ``scores[k]`` = best dev score seen so far by trial k (grid order;
    None = no score, ranked last). Returns (indices best first, the set of the top ``p``).
    Ties keep grid order."""
    key = [-math.inf if v is None or math.isnan(v) else float(v) for v in scores]
    order = sorted(range(len(key)), key=lambda k: (-key[k], k))
    return order, set(order[:p])


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


def _run_early_discard(study: Study, grid, early_discard) -> list[dict]:
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
                    study.restore_encoder()
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
