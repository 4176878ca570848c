"""Running the plan, resumably: train every run folder that has no ``summary.json`` yet.

Every run has its own folder ``OUT/SCALE/TASK/CELL/trial-i{init}-d{data}/`` (a
:func:`stackft.studies.runner.run_trials` study per cell); a finished run is skipped and an
interrupted one continues from its ``last/`` checkpoint, so running the same command again
resumes. A run folder written with other training settings stops the script (the trainer's
resume rule, see :func:`check_same_config`). Ensemble cells soft-vote their members' ``best/``
checkpoints per seed pair into ``OUT/SCALE/TASK/CELL/trial-i{init}-d{data}.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from stackft.run_dir import RunDir

from .plan import TaskPlan, cell_config

INVOCATIONS = "invocations.jsonl"  # one line per training invocation under OUT/SCALE
MACHINE_FILE = "machine.json"  # in each run folder: what trained it (wall times compare runs of one machine)


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check_same_config(run_dir: Path, cfg) -> None:
    """Resuming must not mix settings: a run folder written with another training config is an error.

    The rule is the trainer's (:meth:`stackft.config.TrainConfig.changed_for_resume`): fields that
    say how a run is carried out (``TrainConfig.RESUMABLE_CHANGES``: device, cache, output folder,
    progress, ...) may differ, every field that decides what is trained may not.
    """
    try:
        saved = RunDir(run_dir).read_config()
    except (OSError, json.JSONDecodeError):
        saved = None  # a config.json cut short: the trainer rewrites it when the run starts again
    if saved is None:
        return
    changed = cfg.changed_for_resume(saved)
    if changed:
        now = cfg.to_dict()
        what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
        raise SystemExit(f"{run_dir} was trained with other settings ({what}); "
                         "use another --out or delete that folder")


def run_task(plan: TaskPlan, scale: str, pairs: list[tuple[int, int]], data_root: Path, out: Path, encoder,
             device: str, encoder_name: str | None = None, cells: set | None = None, seeds_first: bool = False) -> int:
    """Train the task's missing runs and ensembles; returns how many runs were trained.

    ``encoder`` is the loaded encoder every run starts from (its pretrained weights are restored
    before each run); ``encoder_name`` is what the configs record (None: the packaged default).
    ``cells``: train only these cells (names); ``seeds_first``: all cells of a seed before the next seed.
    """
    from stackft.data.pipeline import load_task_data
    from stackft.studies.ensemble import ensemble_predict
    from stackft.studies.runner import run_trials
    from stackft.studies.study import trial_config, trial_id

    datasets: dict = {}
    trained = 0

    def data_for(cfg):
        pair_mode = cfg.pair_mode or "joint"
        if pair_mode not in datasets:  # one split for every cell: same fields, same seed
            datasets[pair_mode] = load_task_data(
                cfg.task, cfg.train_path, cfg.dev_path, tokenizer=encoder.tokenizer, max_length=cfg.max_length,
                pair_mode=pair_mode, dev_size=cfg.dev_size, split_seed=cfg.split_seed, max_train=cfg.max_train,
                max_dev=cfg.max_dev)
        return datasets[pair_mode]

    trainable = [c for c in plan.cells if c.strategy is not None and (cells is None or c.name in cells)]
    # seeds outer: every cell's run of seed 0 comes before any seed 1, so partial results are paired
    order = ([(c, p) for p in pairs for c in trainable] if seeds_first else [(c, p) for c in trainable for p in pairs])
    for cell, (i, d) in order:
        cfg = cell_config(plan, cell, scale, data_root, out, encoder_name)
        data = data_for(cfg)
        run_dir = Path(cfg.output_dir) / trial_id(i, d)
        check_same_config(run_dir, trial_config(cfg, i, d, cfg.output_dir))
        if RunDir(run_dir).is_finished():
            continue
        log(f"{plan.key}/{cell.name} init {i} data {d}: training ({len(data.train)} train, {len(data.dev)} dev)")
        t0 = time.perf_counter()
        if cell.handoff is not None:
            s = run_handoff(cfg, cell.handoff, i, d, run_dir, encoder, data)
        else:
            [s] = run_trials(cfg, init_seeds=[i], data_seeds=[d], out_dir=cfg.output_dir, encoder=encoder, data=data)
        trained += 1
        if not (run_dir / MACHINE_FILE).exists():  # a run resumed on another machine keeps the first one's
            (run_dir / MACHINE_FILE).write_text(json.dumps(machine_info()))
        log(f"{plan.key}/{cell.name} init {i} data {d}: {s['status']}, best dev {s['metric']} "
            f"{s['best_score']:.4f} in {time.perf_counter() - t0:.0f} s")

    for cell in plan.cells:
        if cell.strategy is not None or (cells is not None and cell.name not in cells):
            continue
        ens_dir = out / plan.key / cell.name
        ens_dir.mkdir(parents=True, exist_ok=True)
        data = data_for(cell_config(plan, plan.cells[0], scale, data_root, out, encoder_name))
        for i, d in pairs:
            path = ens_dir / f"{trial_id(i, d)}.json"
            if path.exists():
                continue
            members = [out / plan.key / m / trial_id(i, d) for m in cell.members]
            missing = [m.parent.name for m in members if not RunDir(m).is_finished()]
            if missing:  # soft-votes finished runs only; a later invocation votes once they are
                log(f"{plan.key}/{cell.name} {trial_id(i, d)}: skipped, members not trained yet: {', '.join(missing)}")
                continue
            t0 = time.perf_counter()
            res = ensemble_predict(members, data.dev, vote="soft", device=device)
            row = {"init_seed": i, "data_seed": d, "vote": "soft", "n": res["n"], "ensemble": res["ensemble"],
                   "members": [{"model_dir": m["model_dir"], "head": m["head"], "strategy": m["strategy"],
                                "metrics": m["metrics"]} for m in res["members"]],
                   "wall_time": time.perf_counter() - t0}
            path.write_text(json.dumps(row, indent=2))
            log(f"{plan.key}/{cell.name} {trial_id(i, d)}: ensemble {res['ensemble']}")
    return trained


def run_handoff(cfg, options: dict, init_seed: int, data_seed: int, run_dir: Path, encoder, data) -> dict:
    """One run of a searched-handoff cell (:func:`stackft.studies.handoff.search_handoff`) in ``run_dir``.

    The run folder gets what the report reads from any run: ``summary.json`` (the final run's, with
    ``phase_times`` replaced by the wall time of every part of the search, so the cell's compute is
    all of it), ``metrics.jsonl`` and ``phase1_end/`` (the chosen probe's), and ``trial.json``.
    """
    import dataclasses
    import shutil

    from stackft.run_dir import write_json
    from stackft.studies.handoff import search_handoff
    from stackft.studies.study import TRIAL_FILE, trial_id

    trial_cfg = dataclasses.replace(cfg, init_seed=init_seed, data_seed=data_seed, output_dir=str(run_dir))
    pristine = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    try:
        report = search_handoff(trial_cfg, out_dir=run_dir, encoder=encoder, data=data, **options)
    finally:
        encoder.load_state_dict(pristine)
    final = RunDir(report["final_run"])
    summary = dict(report["summary"])
    summary["phase_times"] = {name: part["wall_time"] for name, part in report["parts"].items()}
    summary["compute"] = report["total"]
    summary["handoff"] = {"candidates": report["candidates"], "chosen": report["chosen"],
                          "probe_steps": report["probe_steps"],
                          "probe_scores": {k: v["score"] for k, v in report["probes"].items()},
                          "decision": report.get("decision")}
    run = RunDir(run_dir)
    shutil.copyfile(final.metrics, run.metrics)
    p1_end = final.phase_end("phase1")
    if p1_end.exists() and not run.phase_end("phase1").exists():
        shutil.copytree(p1_end, run.phase_end("phase1"))
    wall = report["total"]["wall_time"]
    metric = summary["metric"]
    best = summary["best"]["score"]
    write_json(run_dir / TRIAL_FILE, {"trial": trial_id(init_seed, data_seed), "init_seed": init_seed,
                                      "data_seed": data_seed, "status": "finished", "metric": metric,
                                      "best_score": best, "wall_time": wall, "phase_times": summary["phase_times"],
                                      "phase_steps": {}, "compute": report["total"]})
    run.write_summary(summary)
    return {"status": "finished", "metric": metric, "best_score": best}


def machine_info() -> dict:
    """The CPU (model name), thread counts, GPU and versions of this process's machine."""
    import platform

    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu, "host_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def record_invocation(out: Path, record: dict) -> None:
    """Append one training invocation (start, wall time, command, runs trained) to ``OUT/SCALE/invocations.jsonl``."""
    with open(Path(out) / INVOCATIONS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_invocations(out: Path) -> list[dict]:
    path = Path(out) / INVOCATIONS
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return []
