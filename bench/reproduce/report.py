"""The report: collect the finished run folders into tables, verdicts and plots.

:func:`build_results` reads every cell's run folders (``summary.json``, ``metrics.jsonl``,
``phase1_end/meta.json``, ``trial.json``, through :class:`stackft.run_dir.RunDir`) into one JSON
record; :func:`write_report` turns it into ``docs/results.md`` (mean ± sd and raw scores per cell,
paired differences to finetune-only, expected max of n = 1..N runs, wall time per phase, a verdict
per task) and expected-max plots in ``docs/img/``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import time
from pathlib import Path

from stackft.run_dir import META_FILE, RunDir

from .plan import BASE, TaskPlan, cell_config
from .run import MACHINE_FILE, machine_info, read_invocations

DEFAULT_ENCODER_LABEL = "all-MiniLM-L6-v2"
#: finetune-only with twice the epochs (--scale mid): the equal-compute baseline
EQUAL_COMPUTE = "finetune-only-2x"
# finetune-only with its head at the lr the -headlr stack-and-finetune cells give theirs: what the head's
# lr does without phase 1
HEAD_LR_CONTROL = "finetune-only-headlr"
#: the target's budget: at most this × finetune-only's wall time (fastest runs), or ahead of EQUAL_COMPUTE
WALL_BUDGET = 1.2


def _read(path: Path):
    """A JSON file, or None when it is missing or cut short (a run killed while writing it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_metrics(run: RunDir) -> list:
    """A run's evaluation records, [] when it has none yet (or its log is unreadable)."""
    try:
        return run.read_metrics()
    except (OSError, json.JSONDecodeError):
        return []


def phase1_summary(runs: list) -> str:
    """How phase 1 of a two-phase cell ended, per run: evaluations run and the stop rule."""
    parts = []
    for r in runs:
        if r.get("phase1_stop") is None:
            continue
        why = r["phase1_stop"] or "ran to its epoch cap"
        why = why.replace("train-validation gap", "gap")
        res = "" if r.get("phase1_dev") is None else f", phase-1 model dev {r['phase1_dev']:.2f}"
        parts.append(f"{r['phase1_evals']} eval(s), {why}{res}")
    return "; ".join(parts)


def _same_cell(cell, recorded: dict) -> bool:
    """Whether a cell of an earlier report was defined as ``cell`` is now (strategy, head, options)."""
    now = {"strategy": cell.strategy or "ensemble (soft vote)", "head": cell.head,
           "head_options": dict(cell.head_options), "overrides": dict(cell.overrides),
           "members": list(cell.members), "pair_mode": cell.pair_mode, "handoff": cell.handoff}
    return all(json.dumps(now[k], sort_keys=True) == json.dumps(recorded[k], sort_keys=True)
               for k in now if k in recorded)


def recorded_runs(previous: dict | None, scale: str, key: str, confirmation: bool = False) -> dict:
    """``{cell name: (cell record, {trial: run record})}`` from an earlier report's JSON of the same scale
    and shared settings, for runs whose folders are gone (``runs/`` is not kept with the repository).
    ``confirmation``: the runs of its confirmation on fresh seeds (:func:`confirm`) instead."""
    if not previous or previous.get("scale") != scale or previous.get("base_config") != BASE[scale]:
        return {}
    task = previous.get("tasks", {}).get(key) or {}
    cells = ((task.get("confirmation") or {}) if confirmation else task).get("cells", {})
    cpu = (previous.get("machine") or {}).get("cpu")  # records written before runs kept their own machine

    def run(r: dict) -> dict:
        r = {"machine": cpu, **r}
        if r.get("timed") is False and not r.get("untimed_why"):  # records written before untimed_why
            r["untimed_why"] = "its wall time was already excluded from timings when it was recorded"
        return r

    return {name: (c, {r["trial"]: run(r) for r in c.get("runs", [])}) for name, c in cells.items()}


def merge_invocations(old: list, new: list) -> list:
    """The training invocations of an earlier record followed by those logged since (no repeats)."""
    seen = {(i.get("start"), i.get("command")) for i in old}
    return list(old) + [i for i in new if (i.get("start"), i.get("command")) not in seen]


def timing_machine(out: Path, previous: dict | None) -> str | None:
    """The CPU whose runs the wall times compare: the one that trained most run folders under ``out``
    (their ``machine.json``; ties: the latest), else the machine of the previous record."""
    found = {}
    for f in sorted(Path(out).glob(f"*/*/*/{MACHINE_FILE}"), key=lambda f: f.stat().st_mtime):
        cpu = (_read(f) or {}).get("cpu")
        if cpu:
            found[cpu] = found.pop(cpu, 0) + 1  # re-insert: the latest machine last among equals
    if found:
        return max(reversed(found), key=found.get)
    return ((previous or {}).get("machine") or {}).get("cpu")


def collect(plan: TaskPlan, pairs, out: Path, metric: str, secondary: str | None,
            recorded: dict | None = None, timing_cpu: str | None = None) -> dict:
    """Per cell: per-run scores (x100), phase times, the expected-max curve.

    ``recorded`` (:func:`recorded_runs`): a run with no finished folder under ``out`` is taken from it
    when its cell is defined as it was then; such runs carry ``"recorded": True``. ``timing_cpu``:
    runs trained on another machine keep their scores but not their wall times.
    """
    from stackft.studies.expected import expected_max_curve
    from stackft.studies.study import trial_id

    excluded = timing_excluded(out)
    recorded = recorded or {}
    cells = {}
    for cell in plan.cells:
        runs = []
        old_cell, old_runs = recorded.get(cell.name, ({}, {}))
        if not _same_cell(cell, old_cell):
            old_runs = {}
        for i, d in pairs:
            tid = trial_id(i, d)
            n_before = len(runs)
            _collect_run(runs, cell, plan, out, tid, i, d, metric, secondary, excluded)
            if len(runs) == n_before and tid in old_runs:
                runs.append({**old_runs[tid], "recorded": True})
        scores = [r["score"] for r in runs]
        entry = {"strategy": cell.strategy or "ensemble (soft vote)", "head": cell.head,
                 "head_options": dict(cell.head_options), "overrides": dict(cell.overrides),
                 "members": list(cell.members), "pair_mode": cell.pair_mode, "handoff": cell.handoff,
                 "runs": runs, "n": len(runs)}
        if scores:
            entry["mean"] = statistics.fmean(scores)
            entry["sd"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
            entry["expected_max"] = [{"n": n, "e": e, "sd": s} for n, e, s in expected_max_curve(scores)]
            p2 = [r["phase2_score"] for r in runs if r.get("phase2_score") is not None]
            if p2:
                entry["phase2_mean"] = statistics.fmean(p2)
                entry["phase2_sd"] = statistics.stdev(p2) if len(p2) > 1 else 0.0
            sec = [r["secondary"] for r in runs if r["secondary"] is not None]
            if sec:
                entry["secondary_mean"] = statistics.fmean(sec)
                entry["secondary_sd"] = statistics.stdev(sec) if len(sec) > 1 else 0.0
            for r in runs:
                if timing_cpu and r.get("machine") and r["machine"] != timing_cpu and not r.get("untimed_why"):
                    r["untimed_why"] = f"trained on {r['machine']}; wall times compare runs of {timing_cpu} only"
            keys = sorted({k for r in runs for k in r["phase_times"]})
            clean = [r for r in runs if not r.get("untimed_why")]
            entry["phase_time_mean"] = {k: statistics.fmean(r["phase_times"].get(k, 0.0) for r in clean)
                                        for k in keys} if clean else {}
            timed = [r["wall_time"] for r in runs if not r.get("untimed_why")]
            entry["wall_time_mean"] = statistics.fmean(timed) if timed else None
            # other work on the machine only ever adds time: the fastest run is the best estimate of a cost
            entry["wall_time_min"] = min(timed) if timed else None
            entry["untimed"] = {r["trial"]: r["untimed_why"] for r in runs if r.get("untimed_why")}
            ckeys = sorted({k for r in runs for k, v in r.get("compute", {}).items() if isinstance(v, (int, float))})
            entry["compute_mean"] = {k: statistics.fmean(float(r.get("compute", {}).get(k, 0)) for r in runs)
                                     for k in ckeys}
            skeys = list(dict.fromkeys(k for r in runs for k in r.get("phase_steps", {})))
            entry["phase_steps"] = {k: [r.get("phase_steps", {}).get(k, 0) for r in runs] for k in skeys}
        cells[cell.name] = entry
    return cells


def _collect_run(runs: list, cell, plan: TaskPlan, out: Path, tid: str, i: int, d: int, metric: str,
                 secondary: str | None, excluded: dict) -> None:
    """Append the record of ``cell``'s finished run ``tid`` (an ensemble: its row) to ``runs``, if any."""
    from stackft.studies.study import TRIAL_FILE

    if cell.strategy is None:
        row = _read(out / plan.key / cell.name / f"{tid}.json")
        if row is None:
            return
        member_wall = 0.0
        for m in cell.members:
            t = _read(out / plan.key / m / tid / TRIAL_FILE) or {}
            member_wall += float(t.get("wall_time") or 0.0)
        runs.append({"trial": tid, "init_seed": i, "data_seed": d,
                     "score": 100 * row["ensemble"][metric],
                     "secondary": 100 * row["ensemble"][secondary] if secondary else None,
                     "phase_times": {"ensemble_predict": row["wall_time"]},
                     "wall_time": member_wall + row["wall_time"]})
        return
    run = RunDir(out / plan.key / cell.name / tid)
    summ, trial = _read(run.summary), _read(run.root / TRIAL_FILE)
    if summ is None or summ.get("status") != "finished":
        return
    dev = summ["best"]["dev"]
    p1 = (_read(run.phase_end("phase1") / META_FILE) or {}).get("metrics", {})
    records = _read_metrics(run)
    p1_evals = [r for r in records if r.get("phase") == "phase1"]
    p2_devs = [r["dev"][metric] for r in records if r.get("phase") == "phase2"]
    p1_dev = handoff_dev(p1_evals, metric, _read(run.config) or {})
    runs.append({"phase1_stop": p1.get("stop_reason") if run.phase_end("phase1").exists() else None,
                 "phase1_evals": len(p1_evals),
                 "phase1_dev": None if p1_dev is None else 100 * p1_dev,
                 # two-phase runs: the best phase-2 evaluation (best/ may be a phase-1 model)
                 "phase2_score": 100 * max(p2_devs) if p2_devs else None,
                 "trial": tid, "init_seed": i, "data_seed": d, "score": 100 * dev[metric],
                 "secondary": 100 * dev[secondary] if secondary else None,
                 "best_phase": summ["best"].get("phase"), "best_step": summ["best"].get("step"),
                 "phase_times": summ.get("phase_times", {}),
                 "phase_steps": (trial or {}).get("phase_steps", {}),
                 "compute": summ.get("compute") or {},
                 "curve": encoder_curve(records, metric, (_read(run.config) or {}).get("batch_size", 32)),
                 "wall_time": float((trial or {}).get("wall_time")
                                    or sum(summ.get("phase_times", {}).values())),
                 "machine": ((_read(run.root / MACHINE_FILE) or {}).get("cpu")),
                 # why its wall time does not measure it (None: it does)
                 "untimed_why": excluded.get(f"{plan.key}/{cell.name}/{tid}")})


def encoder_curve(records: list, metric: str, batch_size: int) -> list:
    """``[(encoder training sequences so far, dev score x100)]`` over the evaluations of the phase that
    trains the encoder (finetune / phase2; phase-1 evaluations train no encoder and sit at 0)."""
    out = []
    for r in records:
        if r.get("phase") in ("finetune", "phase2"):
            out.append((int(r.get("step", 0)) * batch_size, 100 * r["dev"][metric]))
    return out


def plot_dev_vs_encoder_compute(cells: dict, png: Path, title: str, ylabel: str) -> Path:
    """Mean dev score over seeds (evaluation by evaluation) against encoder training sequences, per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stackft.studies.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, c in cells.items():
        curves = [r.get("curve") or [] for r in c.get("runs", [])]
        curves = [cv for cv in curves if cv]
        if not curves:
            continue
        n = min(len(cv) for cv in curves)
        xs = [curves[0][i][0] for i in range(n)]
        ys = [statistics.fmean(cv[i][1] for cv in curves) for i in range(n)]
        p1 = [r["phase1_dev"] for r in c["runs"] if r.get("phase1_dev") is not None]
        if p1:  # the stacked model phase 2 starts from: no encoder training yet
            xs, ys = [0] + xs, [statistics.fmean(p1)] + ys
        ax.plot(xs, ys, marker="o", ms=3, label=f"{name} (N={len(curves)})")
    ax.set_xlabel("sequences through the trainable encoder (forward + backward)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, png)


TIMING_EXCLUDED = "timing-excluded.json"


def timing_excluded(out: Path) -> dict:
    """``OUT/SCALE/timing-excluded.json``: ``{"TASK/CELL/TRIAL": why}`` for runs whose wall time does not
    measure them (e.g. trained by two processes at once); their scores count, their times do not."""
    found = _read(Path(out) / TIMING_EXCLUDED)
    return found if isinstance(found, dict) else {}


def handoff_dev(p1_evals: list, metric: str, cfg_saved: dict) -> float | None:
    """The dev score of the evaluation phase 1 handed to phase 2.

    The stop rule records its choice (``stop_rule.chosen_step``) in every phase-1 record; runs of
    older versions without it: the last evaluation within the gap tolerance (else the first), or the
    best dev when there was no train probe (plateau).
    """
    if not p1_evals:
        return None
    chosen = (p1_evals[-1].get("stop_rule") or {}).get("chosen_step")
    if chosen is not None:
        for r in p1_evals:
            if r.get("step") == chosen:
                return r["dev"][metric]
    if all(r.get("train") for r in p1_evals):
        tol = cfg_saved.get("gap_tol", 0.02)
        ok = [r for r in p1_evals if r["train"][metric] - r["dev"][metric] <= tol]
        return (ok[-1] if ok else p1_evals[0])["dev"][metric]
    return max(r["dev"][metric] for r in p1_evals)


def compare(base: dict, other: dict, key: str = "score") -> dict | None:
    """Paired (same seeds) differences other - base, in points."""
    b = {r["trial"]: r[key] for r in base["runs"] if r.get(key) is not None}
    o = {r["trial"]: r[key] for r in other["runs"] if r.get(key) is not None}
    common = sorted(set(b) & set(o))
    if not common:
        return None
    diffs = [o[t] - b[t] for t in common]
    return {"n": len(diffs), "mean": statistics.fmean(diffs),
            "sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "wins": sum(x > 0 for x in diffs), "losses": sum(x < 0 for x in diffs), "diffs": diffs}


def verdict_phrase(c: dict, base_sd: float) -> str:
    n, mean = c["n"], c["mean"]
    noise = max(base_sd, c["sd"])
    if c["wins"] == n and mean > noise:
        return f"ahead on all {n} seeds, by more than the seed spread"
    if c["losses"] == n and -mean > noise:
        return f"behind on all {n} seeds, by more than the seed spread"
    if c["wins"] == n:
        return f"ahead on all {n} seeds, but by less than the seed spread ({noise:.2f})"
    if c["losses"] == n:
        return f"behind on all {n} seeds, but by less than the seed spread ({noise:.2f})"
    return f"ahead on {c['wins']} of {n} seeds: no consistent difference"


def confirm(plan: TaskPlan, t: dict, pairs, out: Path, metric: str, secondary: str | None,
            recorded: dict | None = None, timing_cpu: str | None = None) -> dict | None:
    """The cell the target is judged on (:func:`best_stacked`) against finetune-only on fresh seeds.

    That cell was picked among many on the seeds it is scored on, so its delta there is optimistic;
    on seeds that chose nothing (``pairs``, disjoint from the report's) it is not. Returns the two
    cells' records over ``pairs``, their paired comparison and wall-time ratio (None without a pick).
    """
    import dataclasses

    pick = best_stacked(t)
    if pick is None or not pairs:
        return None
    names = (plan.baseline, pick["cell"])
    sub = dataclasses.replace(plan, cells=tuple(c for c in plan.cells if c.name in names))
    cells = collect(sub, pairs, out, metric, secondary, recorded, timing_cpu)
    base, other = cells[plan.baseline], cells[pick["cell"]]
    comp = compare(base, other) if base["n"] and other["n"] else None
    wall = (other["wall_time_min"] / base["wall_time_min"]
            if base.get("wall_time_min") and other.get("wall_time_min") else None)
    return {"seeds": sorted({i for i, _ in pairs}), "baseline": plan.baseline, "cell": pick["cell"], "cells": cells,
            "comparison": comp, "wall_ratio": wall}


def build_results(*, scale: str, command: str, note: str, seeds: list[int], grid: bool, pairs, plans: dict,
                  keys: list[str], data_root: Path, out: Path, encoder, encoder_name: str | None,
                  t_start: float, previous: dict | None = None, confirm_pairs=()) -> dict:
    """Everything the report shows, from the run folders under ``out`` (the JSON record).

    ``encoder`` (loaded) tokenizes the dev sets for the data notes; ``encoder_name`` is what the
    cells' configs record (None: the packaged all-MiniLM-L6-v2). ``previous``: the JSON record of an
    earlier report; runs (and training invocations) it holds whose folders are gone are kept from it.
    ``confirm_pairs``: fresh seeds for :func:`confirm` (none of them among ``pairs``: the CLI refuses
    them before it trains anything).
    """
    from stackft.data.pipeline import load_task_data, read_examples
    from stackft.tasks import get_task

    results = {
        "scale": scale,
        "command": command,
        "note": note,
        "out": str(out),
        "invocations": merge_invocations((previous or {}).get("invocations", []), read_invocations(out)),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "seeds": seeds, "grid": grid,
        "seed_note": ("every (init_seed, data_seed) pair of " if grid else "init_seed = data_seed = s for s in ")
                     + ", ".join(map(str, seeds)) + "; split_seed 0 (one fixed split and subsample for every run)",
        "n_runs": len(pairs),
        "base_config": BASE[scale],
        "encoder": encoder_name or DEFAULT_ENCODER_LABEL,
        "gap_tol": cell_config(plans[keys[0]], plans[keys[0]].cells[0], scale, data_root, out, encoder_name).gap_tol,
        "tasks": {},
    }
    runs_s = 0.0
    timing_cpu = results["timing_machine"] = timing_machine(out, previous)
    for key in keys:
        plan = plans[key]
        spec = get_task(plan.task)
        secondary = "accuracy" if spec.name == "ner" else None
        cfg0 = cell_config(plan, plan.cells[0], scale, data_root, out, encoder_name)
        data = load_task_data(cfg0.task, cfg0.train_path, cfg0.dev_path, tokenizer=encoder.tokenizer,
                              max_length=cfg0.max_length, dev_size=cfg0.dev_size, split_seed=cfg0.split_seed,
                              max_train=cfg0.max_train, max_dev=cfg0.max_dev)
        n_train_file = len(read_examples(spec.name, cfg0.train_path))
        if cfg0.dev_path:
            train_pool, dev_pool = n_train_file, len(read_examples(spec.name, cfg0.dev_path))
            src = f"{plan.train_file} / {plan.dev_file}"
        else:
            dev_pool = plan.dev_size
            train_pool = n_train_file - dev_pool
            src = f"{plan.train_file} split {train_pool}/{dev_pool} (stratified, split_seed 0)"
        unit = "sentences" if spec.name == "ner" else ("pairs" if spec.name == "pairs" else "texts")
        trunc = data.train.n_truncated
        note = (f"{src}; {unit}; max_length {cfg0.max_length}: {trunc} of {len(data.train)} training inputs "
                f"truncated")
        majority = None
        if spec.name != "ner":
            labels = [e.label for e in data.dev.examples]
            majority = 100 * max(labels.count(v) for v in set(labels)) / len(labels)
        cells = collect(plan, pairs, out, spec.metric, secondary, recorded_runs(previous, scale, key), timing_cpu)
        comparisons = {}
        for name, c in cells.items():
            if name != plan.baseline and c["n"] and cells[plan.baseline]["n"]:
                comparisons[name] = compare(cells[plan.baseline], c)
                if secondary:
                    comparisons[name + ":secondary"] = compare(cells[plan.baseline], c, "secondary")
                if EQUAL_COMPUTE in cells and name != EQUAL_COMPUTE and cells[EQUAL_COMPUTE]["n"]:
                    comparisons[name + ":2x"] = compare(cells[EQUAL_COMPUTE], c)
                if HEAD_LR_CONTROL in cells and name != HEAD_LR_CONTROL and cells[HEAD_LR_CONTROL]["n"]:
                    comparisons[name + ":headlr"] = compare(cells[HEAD_LR_CONTROL], c)
                if any(r.get("phase2_score") is not None for r in c["runs"]):
                    base_as_p2 = {**cells[plan.baseline], "runs": [{**r, "phase2_score": r["score"]}
                                                                   for r in cells[plan.baseline]["runs"]]}
                    comparisons[name + ":phase2"] = compare(base_as_p2, c, "phase2_score")
        for c in cells.values():
            if c["strategy"].startswith("ensemble"):
                runs_s += sum(r["phase_times"]["ensemble_predict"] for r in c["runs"])
            else:
                runs_s += sum(r["wall_time"] for r in c["runs"])
        t = {"title": plan.title, "metric": spec.metric, "secondary": secondary,
             "data": {"train": len(data.train), "dev": len(data.dev), "train_pool": train_pool, "dev_pool": dev_pool,
                      "note": note, "train_truncated": trunc, "dev_truncated": data.dev.n_truncated,
                      "dev_majority": majority},
             "cells": cells, "comparisons": comparisons, "notes": []}
        if key == "yahoo" and cells.get("ensemble", {}).get("n"):
            t["notes"].append("The ensemble averages three models (three runs of compute) and is compared with "
                              "one finetune-only run; its members' checkpoints were selected on the same dev "
                              "set it is scored on.")
        if key == "yahoo":
            t["notes"].append("lp-ft: linear probe on the frozen encoder (3 epochs, plateau stop), then full "
                              "fine-tuning; eh-ft-lora: fc head + LoRA (r 8, α 16) on the frozen encoder, LoRA "
                              "dropped and the encoder restored before full fine-tuning (EH-FT, Yang et al. 2022).")
        t["verdicts"] = task_verdicts(plan, t, scale)
        conf = confirm(plan, t, confirm_pairs, out, spec.metric, secondary,
                       recorded_runs(previous, scale, key, confirmation=True), timing_cpu)
        if conf is not None:
            t["confirmation"] = conf
            for c in conf["cells"].values():
                runs_s += sum(r["wall_time"] for r in c["runs"])
        results["tasks"][key] = t
    results["timing"] = {"invocation_s": time.perf_counter() - t_start, "runs_s": runs_s}
    return results


METRIC_NAMES = {"f1": "entity F1", "accuracy": "accuracy"}


def fmt(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _plot_style() -> None:
    """plot_expected_max pins its legend to the lower right: a smaller, more transparent legend hides
    less of the curves under it."""
    import matplotlib

    matplotlib.rcParams.update({"legend.fontsize": "small", "legend.framealpha": 0.55})


def write_report(results: dict, md_path: Path, img_dir: Path) -> None:
    from stackft.studies.plots import plot_expected_max

    scale = results["scale"]
    L = []
    L.append(f"# Reproduction of Wang et al. 2019 (stack-and-finetune) with "
             f"{results.get('encoder', DEFAULT_ENCODER_LABEL)}: `--scale {scale}`")
    L.append("")
    L.append("*Generated by `bench/reproduce.py`; rerun it (or `--report-only`) rather than editing this file.*")
    L.append("")
    L.append("## Setup")
    L.append("")
    inv = [i for i in results["invocations"] if i.get("runs_trained")]
    if inv:
        L.append("- **Command:** " + "; then ".join(f"`{i['command']}` ({i['runs_trained']} runs, "
                                                   f"{i['wall_s'] / 60:.1f} min, started {i['start']})" for i in inv)
                 + (" (the first invocation(s) trained the runs that later ones skipped: the script resumes)"
                    if len(inv) > 1 else ""))
    if results["command"] not in {i["command"] for i in inv}:
        L.append(f"- **This report written by:** `{results['command']}`")
    L.append(f"- **Report written:** {results['date']}")
    m = results["machine"]
    dev = f"GPU {m['gpu']}" if m["gpu"] else f"CPU only, {m['torch_threads']} torch thread(s) of {m['host_cpus']}"
    L.append(f"- **Machine:** {m['cpu']}; {dev}; torch {m['torch']}, Python {m['python']}.")
    if results.get("note"):
        L.append(f"- **Note:** {results['note']}")
    if results.get("encoder", DEFAULT_ENCODER_LABEL) == DEFAULT_ENCODER_LABEL:
        L.append("- **Encoder:** all-MiniLM-L6-v2 (6 layers, hidden 384, 22M parameters), not the paper's BERT-base.")
    else:
        L.append(f"- **Encoder:** `{results['encoder']}`, not the paper's BERT-base.")
    L.append(f"- **Seeds:** {results['seed_note']}. N = {results['n_runs']} runs per cell.")
    tw = results["timing"]
    total_inv = sum(i["wall_s"] for i in inv)
    if inv:
        L.append(f"- **Wall time:** {total_inv / 60:.1f} min over the training invocation(s) above (everything: "
                 f"encoder and data loading, cache builds, training, evaluation, ensembles); "
                 f"{tw['runs_s'] / 60:.1f} min of that inside the runs themselves.")
    else:
        L.append(f"- **Wall time:** {tw['runs_s'] / 60:.1f} min inside the runs (no training invocation ran to its "
                 "end, so none logged its own wall time: they were stopped and resumed).")
    kept = [f"{key}/{name}/{r['trial']}" for key, t in results["tasks"].items()
            for name, c in t["cells"].items() for r in c["runs"] if r.get("recorded")]
    if kept:
        L.append(f"- **Runs kept from the previous record:** {len(kept)} runs whose folders are no longer under "
                 f"`{results.get('out', 'OUT')}` (run folders are not kept with the repository) are taken from the "
                 "previous `bench/results/reproduce-" + scale + ".json` (their cell defined as now, same shared "
                 "settings).")
    L.append("")
    L.append("Every setting not listed here is the `TrainConfig` default (README \"Defaults\"). "
             "Per-run folders hold the full `config.json`.")
    L.append("")
    L.append("| task | train examples | dev examples | other settings |")
    L.append("|---|---|---|---|")
    for key, t in results["tasks"].items():
        d = t["data"]
        L.append(f"| {t['title']} | {d['train']} (of {d['train_pool']}) | {d['dev']} (of {d['dev_pool']}) | "
                 f"{d['note']} |")
    L.append("")
    base = results["base_config"]
    L.append("Shared settings: " + (", ".join(f"`{k}={v}`" for k, v in base.items()) if base else
                                    "the library defaults") + ". Head options and per-cell overrides are in each "
             "task's table. Phase 2 trains head and encoder at the same lr (`phase2_head_lr` unset), as in "
             "finetune-only. The score of a run is its best dev evaluation (the `best/` checkpoint); there is "
             "no test split here, so dev both selects the checkpoint and measures it, which flatters every "
             "cell alike.")
    L.append("")

    L.append("## Verdicts")
    L.append("")
    target = target_summary(results)
    if target:
        L.extend(target)
        L.append("")
    for key, t in results["tasks"].items():
        for v in t["verdicts"]:
            L.append(f"- {v}")
    L.append("")
    L.append("Caveats that apply to all three: the encoder is MiniLM-L6 (a distilled, 6-layer model), not "
             "BERT-base; the training sets are subsampled (see above) and the paper's were complete, so the "
             "absolute numbers are not comparable with the paper's; with N = "
             f"{results['n_runs']} seeds the spread estimates are themselves rough (Dodge et al.: with fewer than "
             "~5 runs look at the raw values, not the curve).")
    L.append("")

    for key, t in results["tasks"].items():
        metric = METRIC_NAMES[t["metric"]]
        L.append(f"## {t['title']}")
        L.append("")
        L.append(f"Dev {metric} ×100, best evaluation of each run. \"best checkpoint from\": the phase whose "
                 "evaluation was best, per run. A run's `best/` is its best dev evaluation over all phases, so "
                 "for two-phase strategies it can be a phase-1 (stacked-only) model, even one from after the "
                 "evaluation the gap rule handed to phase 2; \"phase-2 evaluations only\" is the best dev score "
                 "among phase-2 evaluations, the model the method actually produces. Δ = paired difference of "
                 "the headline score to finetune-only (same seeds), mean ± sd of the differences.")
        L.append("")
        twice = EQUAL_COMPUTE in t["cells"]
        control = bool(t["cells"].get(HEAD_LR_CONTROL, {}).get("n"))
        sec_hdr = ((f" | Δ vs {EQUAL_COMPUTE}" if twice else "") + (f" | Δ vs {HEAD_LR_CONTROL}" if control else "")
                   + (" | token acc. mean ± sd" if t["secondary"] else ""))
        extra = int(twice) + int(control) + int(bool(t["secondary"]))
        L.append(f"| cell | strategy | head (options) | N | mean ± sd | raw per seed | best checkpoint from | "
                 f"phase-2 evaluations only | Δ vs finetune-only{sec_hdr} |")
        L.append("|---|---|---|---|---|---|---|---|---|" + "---|" * extra)
        for name, c in t["cells"].items():
            if not c["n"]:
                L.append(f"| {name} | {c['strategy']} | {c['head'] or '–'} | 0 | – | – | – | – | –"
                         + " | –" * extra + " |")
                continue
            opts = ", ".join(f"{k}={v}" for k, v in {**c["head_options"], **c["overrides"]}.items())
            head = (c["head"] or "+".join(c["members"])) + (f" ({opts})" if opts else "")
            raw = ", ".join(f"{r['score']:.2f}" for r in c["runs"])
            cmp_ = t["comparisons"].get(name)
            delta = "–" if cmp_ is None else f"{cmp_['mean']:+.2f} ± {cmp_['sd']:.2f}"
            phases = [r.get("best_phase") for r in c["runs"] if r.get("best_phase")]
            where = ", ".join(f"{p} {phases.count(p)}" for p in dict.fromkeys(phases)) or "–"
            p2 = "–" if "phase2_mean" not in c else f"{c['phase2_mean']:.2f} ± {c['phase2_sd']:.2f}"
            row = (f"| {name} | {c['strategy']} | {head} | {c['n']} | {c['mean']:.2f} ± {c['sd']:.2f} | {raw} | "
                   f"{where} | {p2} | {delta}")
            if twice:
                c2x = t["comparisons"].get(name + ":2x")
                row += " | " + ("–" if c2x is None else f"{c2x['mean']:+.2f} ± {c2x['sd']:.2f}")
            if control:
                chl = t["comparisons"].get(name + ":headlr")
                row += " | " + ("–" if chl is None else f"{chl['mean']:+.2f} ± {chl['sd']:.2f}")
            if t["secondary"]:
                row += f" | {fmt(c.get('secondary_mean'))} ± {fmt(c.get('secondary_sd'))}"
            L.append(row + " |")
        L.append("")
        ns = max((c["n"] for c in t["cells"].values()), default=0)
        if ns:
            L.append(f"Expected maximum dev {metric} of n runs (Dodge et al. 2019, sampling with replacement; "
                     "n = 1 is the mean; no extrapolation past N):")
            L.append("")
            L.append("| cell | " + " | ".join(f"n={n}" for n in range(1, ns + 1)) + " |")
            L.append("|---|" + "---|" * ns)
            for name, c in t["cells"].items():
                if c["n"]:
                    cells = [f"{e['e']:.2f} ± {e['sd']:.2f}" for e in c["expected_max"]]
                    cells += ["–"] * (ns - len(cells))
                    L.append(f"| {name} | " + " | ".join(cells) + " |")
            L.append("")
        L.append("Mean wall time per run and phase, seconds (`phase1_cache`: opening or building the "
                 "frozen-encoder feature cache; the first run of a split builds it):")
        L.append("")
        keys = sorted({k for c in t["cells"].values() for k in c.get("phase_time_mean", {})})
        base_wall = t["cells"].get("finetune-only", {}).get("wall_time_min")
        L.append("| cell | " + " | ".join(keys) + " | run wall time (mean) | fastest run | × finetune-only "
                 "(fastest runs) | optimizer steps | "
                 "encoder fwd+bwd | encoder fwd only | head-only (cached) | optimizer steps per phase, per run |")
        L.append("|---|" + "---|" * (len(keys) + 8))
        for name, c in t["cells"].items():
            if c["n"]:
                pt, cm = c["phase_time_mean"], c.get("compute_mean", {})
                steps = "; ".join(f"{k}: " + ", ".join(map(str, v)) for k, v in c.get("phase_steps", {}).items())
                ratio = f"{c['wall_time_min'] / base_wall:.2f}" if base_wall and c["wall_time_min"] else "–"
                counts = " | ".join(f"{cm[k]:.0f}" if k in cm else "–" for k in
                                    ("optimizer_steps", "encoder_forward_backward", "encoder_forward",
                                     "cached_sequences"))
                L.append(f"| {name} | " + " | ".join(fmt(pt.get(k), 1) if k in pt else "–" for k in keys)
                         + f" | {fmt(c['wall_time_mean'], 1)} | {fmt(c['wall_time_min'], 1)} | {ratio} | {counts} | "
                         f"{steps or '–'} |")
        L.append("")
        untimed = {n: c["untimed"] for n, c in t["cells"].items() if c.get("untimed")}
        if untimed:
            by_why: dict = {}
            for n, trs in untimed.items():
                for tr, why in trs.items():
                    by_why.setdefault(why, []).append(f"{n}/{tr}")
            L.append("Left out of the wall times (their scores count): " + "; ".join(
                f"{', '.join(runs)} ({why})" for why, runs in by_why.items()) + ".")
            L.append("")
        L.append("Compute counts are sequences (a pair encoded jointly is one) per run, means over seeds: "
                 "\"encoder fwd+bwd\" the training passes through a trainable encoder, \"encoder fwd only\" "
                 "evaluations of live models, \"head-only\" phase-1 training, train-probe and dev sequences "
                 "served from the feature cache (no encoder). Not counted: the cache build, one encoder forward "
                 "over the train and dev sets, done once per task and shared by every run (\"phase1_cache\" "
                 "above is its time, in the first run only). Wall times are from a machine shared with other work "
                 "(see the note above), which only ever adds time: ratios compare each cell's fastest run, and the "
                 "counts are the measure to trust when they disagree.")
        L.append("")
        p1 = [(name, phase1_summary(c["runs"])) for name, c in t["cells"].items() if c["n"]]
        p1 = [(n, x) for n, x in p1 if x]
        if p1:
            L.append("How phase 1 ended, per run (stack-and-finetune: the cell's stop rule, `gap` with the fixed "
                     f"tolerance {results['gap_tol']} or `gap_se`, the gap against `gap_z` standard errors of the "
                     "two scores once dev stopped improving beyond its own; lp-ft / eh-ft: plateau of dev), and "
                     "the dev score (×100) of the model phase 2 starts from (eh-ft: with its LoRA module, which "
                     "phase 2 drops):")
            L.append("")
            for name, x in p1:
                L.append(f"- {name}: {x}")
            L.append("")
        if t.get("notes"):
            for note in t["notes"]:
                L.append(f"- {note}")
            L.append("")
        curves = {n: [r["score"] for r in c["runs"]] for n, c in t["cells"].items() if c["n"]}
        if curves:
            _plot_style()
            png = img_dir / f"reproduce-{scale}-{key}.png"
            plot_expected_max(curves, png, title=f"{t['title']}, --scale {scale}: expected max over n runs",
                              ylabel=f"expected max dev {metric} (x100)")
            budgets = {n: c["wall_time_min"] for n, c in t["cells"].items() if c["n"] and c.get("wall_time_min")}
            png_t = img_dir / f"reproduce-{scale}-{key}-time.png"
            plot_expected_max({n: v for n, v in curves.items() if n in budgets}, png_t, budget_per_trial=budgets,
                              title=f"{t['title']}, --scale {scale}: against compute",
                              ylabel=f"expected max dev {metric} (x100)",
                              xlabel="budget: n x the fastest run's wall seconds (ensemble: its three members)")
            rel = os.path.relpath(png, md_path.parent)
            rel_t = os.path.relpath(png_t, md_path.parent)
            L.append(f"![{t['title']}: expected max over n runs]({rel})")
            L.append("")
            L.append(f"The same curves against compute: [{Path(rel_t).name}]({rel_t}).")
            L.append("")
        if curves:
            png_c = img_dir / f"reproduce-{scale}-{key}-compute.png"
            plot_dev_vs_encoder_compute({n: c for n, c in t["cells"].items()
                                         if c["n"] and not c["strategy"].startswith("ensemble")}, png_c,
                                        title=f"{t['title']}, --scale {scale}: dev (mean over seeds) against "
                                              "encoder training", ylabel=f"dev {metric} (x100)")
            rel_c = os.path.relpath(png_c, md_path.parent)
            L.append(f"![{t['title']}: dev against encoder training compute]({rel_c})")
            L.append("")
        deltas = {n: c["diffs"] for n, c in t["comparisons"].items() if c and ":" not in n}
        if deltas:
            from stackft.studies.plots import plot_paired_deltas

            png_d = img_dir / f"reproduce-{scale}-{key}-deltas.png"
            plot_paired_deltas(deltas, png_d, spread=t["cells"]["finetune-only"]["sd"],
                               title=f"{t['title']}, --scale {scale}: paired Δ to finetune-only per seed",
                               ylabel=f"Δ dev {metric} (x100) vs finetune-only, same seeds")
            rel_d = os.path.relpath(png_d, md_path.parent)
            L.append(f"![{t['title']}: paired differences to finetune-only]({rel_d})")
            L.append("")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(L) + "\n")


def standing(c: dict, base_sd: float) -> dict:
    """How a paired comparison (:func:`compare`) stands against the target: ``noise`` (the seed spread:
    the larger of the baseline's sd and the differences' sd), ``as_good`` (mean Δ >= 0) and ``ahead``
    (ahead on every seed, by more than the noise)."""
    noise = max(base_sd, c["sd"])
    return {"noise": noise, "as_good": c["mean"] >= 0, "ahead": c["wins"] == c["n"] and c["mean"] > noise}


def best_stacked(t: dict) -> dict | None:
    """The stack-and-finetune cell the target is judged on, and how it stands.

    Among the cells within the target's budget (<= 1.2x finetune-only's wall time, fastest runs, or
    ahead of finetune-only-2x) the one with the highest paired delta to finetune-only; when none is
    within it, the highest delta of all (which then fails on budget).
    """
    cells, comps = t["cells"], t["comparisons"]
    base = cells.get("finetune-only", {})
    names = [n for n, c in cells.items() if c.get("strategy") == "stack-and-finetune" and c.get("n") and comps.get(n)]
    if not names or not base.get("n"):
        return None

    def wall(name):
        return (cells[name]["wall_time_min"] / base["wall_time_min"]
                if base.get("wall_time_min") and cells[name].get("wall_time_min") else None)

    def within(name):
        c2x, w = comps.get(name + ":2x"), wall(name)
        return (w is not None and w <= WALL_BUDGET) or (c2x is not None and c2x["mean"] > 0)

    _, _, name = max((within(n), comps[n]["mean"], n) for n in names)
    c, c2x, chl = comps[name], comps.get(name + ":2x"), comps.get(name + ":headlr")
    return {"cell": name, "n": c["n"], "delta": c["mean"], **standing(c, base["sd"]), "wall_ratio": wall(name),
            "delta_2x": None if c2x is None else c2x["mean"],
            "ahead_of_2x": c2x is not None and c2x["mean"] > 0, "within_budget": within(name),
            "delta_headlr": None if chl is None else chl["mean"],
            "best_overall": max((comps[n]["mean"], n) for n in names)[1]}


def target_summary(results: dict) -> list[str]:
    """The target of the mid-scale study, task by task, then overall (only with finetune-only runs)."""
    rows = {k: best_stacked(t) for k, t in results["tasks"].items()}
    rows = {k: r for k, r in rows.items() if r is not None}
    if not rows:
        return []
    L = ["Target: on dev, paired over ≥ 3 seeds, the best stack-and-finetune cell per task at least as good as "
         "finetune-only on all three tasks and ahead on at least one by more than the seed spread, at "
         f"≤ {WALL_BUDGET}× "
         "finetune-only's wall time (fastest runs) or ahead of finetune-only given twice the epochs. Per task the "
         "cell shown is the best by paired Δ among those within that budget (the best of all when none is); "
         "it is picked on the same dev set it is scored on, among several, so its Δ is optimistic by that "
         "selection; the test splits are withheld for an independent check.", "",
         "| task | best stack-and-finetune cell | seeds | Δ vs finetune-only | seed spread | × wall time | "
         f"Δ vs {EQUAL_COMPUTE} | Δ vs {HEAD_LR_CONTROL} |", "|---|---|---|---|---|---|---|---|"]
    for k, r in rows.items():
        wall = "–" if r["wall_ratio"] is None else f"{r['wall_ratio']:.2f}"
        d2 = "–" if r["delta_2x"] is None else f"{r['delta_2x']:+.2f}"
        dh = "–" if r["delta_headlr"] is None else f"{r['delta_headlr']:+.2f}"
        L.append(f"| {results['tasks'][k]['title']} | {r['cell']} | {r['n']} | {r['delta']:+.2f} | "
                 f"{r['noise']:.2f} | {wall} | {d2} | {dh} |")
    L.append("")
    over = [f"{results['tasks'][k]['title']}: {r['best_overall']}" for k, r in rows.items()
            if r["best_overall"] != r["cell"]]
    if over:
        L.append("Higher Δ but over the budget: " + "; ".join(over) + " (their rows are in the task sections).")
        L.append("")
    L.append(_target_line(rows, "Target"))
    L.extend(confirmation_summary(results, rows))
    return L


def _target_line(rows: dict, label: str) -> str:
    """Whether ``rows`` (per task: n, as_good, ahead, within_budget) meet the target, and why not."""
    complete = len(rows) == 3 and all(r["n"] >= 3 for r in rows.values())
    as_good = all(r["as_good"] for r in rows.values())
    ahead = [k for k, r in rows.items() if r["ahead"]]
    budget = all(r["within_budget"] for r in rows.values())
    met = complete and as_good and ahead and budget
    why = []
    if not complete:
        why.append("not every task has ≥ 3 paired seeds yet")
    if not as_good:
        why.append("behind finetune-only on " + ", ".join(k for k, r in rows.items() if not r["as_good"]))
    if not ahead:
        why.append("ahead by more than the seed spread nowhere")
    if not budget:
        why.append(f"over {WALL_BUDGET}× the wall time without beating {EQUAL_COMPUTE} on "
                   + ", ".join(k for k, r in rows.items() if not r["within_budget"]))
    return f"**{label} " + ("met**." if met else "not met** (" + "; ".join(why) + ").")


def confirmation_summary(results: dict, picked: dict) -> list[str]:
    """The verdict's cells against finetune-only on fresh seeds (:func:`confirm`), and the target there.

    ``picked``: :func:`best_stacked` per task, for the budget when the fresh runs carry no timing.
    """
    rows = {k: t["confirmation"] for k, t in results["tasks"].items() if t.get("confirmation")}
    if not rows:
        return []
    seeds = ", ".join(map(str, sorted({s for r in rows.values() for s in r["seeds"]})))
    L = ["", "### The same cells on fresh seeds", "",
         f"Each cell above was picked on the seeds it is scored on. Seeds {seeds} picked nothing: the picked "
         "cell and finetune-only were trained on them (paired, same seeds), the cells and seeds fixed before "
         "they trained, and are reported whatever they show. This is the estimate to trust; the table above "
         "is optimistic by its selection.", "",
         "| task | cell | seeds | finetune-only | cell | Δ vs finetune-only | paired Δ per seed | seed spread | "
         "× wall time |", "|---|---|---|---|---|---|---|---|---|"]
    status = {}
    for k, conf in rows.items():
        c, title = conf["comparison"], results["tasks"][k]["title"]
        base, other = conf["cells"][conf["baseline"]], conf["cells"][conf["cell"]]
        if c is None:
            L.append(f"| {title} | {conf['cell']} | 0 | – | – | – | – | – | – |")
            continue
        st = standing(c, base["sd"])
        noise, wall = st["noise"], conf["wall_ratio"]
        within = wall <= WALL_BUDGET if wall is not None else picked.get(k, {}).get("within_budget", False)
        status[k] = {"n": c["n"], **st, "within_budget": within}
        L.append(f"| {title} | {conf['cell']} | {c['n']} | {base['mean']:.2f} ± {base['sd']:.2f} | "
                 f"{other['mean']:.2f} ± {other['sd']:.2f} | {c['mean']:+.2f} ± {c['sd']:.2f} "
                 f"({verdict_phrase(c, base['sd'])}) | " + ", ".join(f"{x:+.2f}" for x in c["diffs"])
                 + f" | {noise:.2f} | " + ("–" if wall is None else f"{wall:.2f}") + " |")
    L.append("")
    L.append(_target_line(status, "On fresh seeds, target"))
    return L


def task_verdicts(plan: TaskPlan, t: dict, scale: str) -> list[str]:
    cells, comps = t["cells"], t["comparisons"]
    base = cells.get(plan.baseline, {})
    if not base.get("n"):
        return [f"**{t['title']}:** no finished finetune-only runs; no verdict."]
    out = []
    stack_cells = [n for n, c in cells.items() if n != plan.baseline and comps.get(n)]
    parts = []
    for name in stack_cells:
        c = comps[name]
        part = (f"{name} {c['mean']:+.2f} ({verdict_phrase(c, base['sd'])}; paired Δ per seed "
                + ", ".join(f"{x:+.2f}" for x in c["diffs"]) + ")")
        c2 = comps.get(name + ":phase2")
        from_p1 = sum(r.get("best_phase") == "phase1" for r in cells[name]["runs"])
        if c2 is not None and from_p1:
            part += (f" — but {from_p1} of its {cells[name]['n']} best checkpoints are phase-1 (stacked-only) "
                     f"models; its phase-2 models alone: {c2['mean']:+.2f} ({verdict_phrase(c2, base['sd'])}; "
                     + ", ".join(f"{x:+.2f}" for x in c2["diffs"]) + ")")
        parts.append(part)
    metric = METRIC_NAMES[t["metric"]]
    line = (f"**{t['title']}** (dev {metric}, finetune-only {base['mean']:.2f} ± {base['sd']:.2f}): "
            + "; ".join(parts) + ".")
    majority = t["data"].get("dev_majority")
    if majority is not None:
        stuck = [n for n, c in cells.items() if c["n"] and c["mean"] <= majority + 1.0]
        if stuck:
            line += (f" {', '.join(stuck)} scored at the majority-class rate of dev ({majority:.2f}): "
                     "those models predict one class.")
    snf = [r for n, c in cells.items() if c["strategy"] == "stack-and-finetune" for r in c["runs"]
           if r.get("phase1_stop") is not None]
    if snf:
        fired = sum("gap" in (r["phase1_stop"] or "") for r in snf)
        evals = [r["phase1_evals"] for r in snf]
        p1 = [r["phase1_dev"] for r in snf if r.get("phase1_dev") is not None]
        ev = f"{min(evals)}" if min(evals) == max(evals) else f"{min(evals)}–{max(evals)}"
        ref = f"majority class {majority:.2f}, " if majority is not None else ""
        line += (f" Phase 1 of stack-and-finetune: the gap rule fired in {fired} of {len(snf)} runs, after "
                 f"{ev} evaluation(s); the stacked models phase 2 started from scored {min(p1):.2f}–{max(p1):.2f} "
                 f"on dev ({ref}finetune-only ends at {base['mean']:.2f}).")
    twice = cells.get(EQUAL_COMPUTE, {})
    if twice.get("n"):
        eq = []
        for name in stack_cells:
            c2 = comps.get(name + ":2x")
            if c2 is None or name == EQUAL_COMPUTE:
                continue
            eq.append(f"{name} {c2['mean']:+.2f} ({verdict_phrase(c2, twice['sd'])})")
        if eq:
            ratio = (twice["wall_time_min"] / base["wall_time_min"]
                     if base.get("wall_time_min") and twice.get("wall_time_min") else None)
            line += (f" Against {EQUAL_COMPUTE} (finetune-only with twice the epochs, {twice['mean']:.2f} ± "
                     f"{twice['sd']:.2f}" + (f", {ratio:.2f}× its wall time" if ratio else "") + "): "
                     + "; ".join(eq) + ".")
    for cell_name, claim in plan.claim:
        c = comps.get(cell_name)
        if c is None:
            continue
        names = {"f1": "entity F1" if t["metric"] == "f1" else "F1", "accuracy": "accuracy"}
        if t["secondary"]:
            names["accuracy"] = "token accuracy"
        claimed = ", ".join(f"{v:+.2f} {names.get(k, k)}" for k, v in claim.items())
        here = f"{c['mean']:+.2f} {metric}"
        sec = comps.get(cell_name + ":secondary")
        if sec is not None:
            here += f" and {sec['mean']:+.2f} token accuracy"
        good = c["wins"] == c["n"] and c["mean"] > max(base["sd"], c["sd"])
        line += (f" The paper claims {claimed} for {cell_name} over finetune-only with BERT-base on the full data "
                 f"(single runs); here {here}, so the claimed gain is "
                 + ("**reproduced in direction**" if good else "**not reproduced**")
                 + " at this scale (MiniLM-L6, "
                 + ("subsampled data" if scale != "full" else "the data available here") + ").")
    out.append(line)
    return out
