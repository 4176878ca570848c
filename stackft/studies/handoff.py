"""Handoff search: choose where phase 1 hands over to phase 2 by trying, not by a rule.

The paper leaves open when phase 1 should stop. Rules (the gap rule, its noise-aware form) guess
it from phase-1 scores; the search measures it, cheaply:

1. Phase 1 runs once (from the feature cache: no encoder passes but the cache build) and keeps a
   candidate checkpoint of its head at every evaluation (``OUT/phase1/candidates/step-N/``).
2. ``candidates`` of them are picked (the stop rule's choice, plus others evenly spread along the
   trajectory). From each, phase 2 runs for ``probe_fraction`` of its steps (a *probe*: the same
   schedule, data order and RNG state as the full phase 2, so probes differ only in the head they
   start from) and is scored on dev.
3. One probe continues to the end of phase 2 (its probe steps are not repeated), chosen by
   :func:`choose_probe`: ``choice="best"`` takes the best by dev; ``choice="se"`` keeps the stop
   rule's candidate unless another probe beats it by more than ``z`` standard errors of the
   difference of the two dev scores. Probes are short and dev sets small, so their scores are
   noisy: on 400 dev examples one standard error of an accuracy near 0.92 is 1.4 points, about
   what separated the probes of a Yahoo run (docs/methods.md 3.2), and ``best`` then follows noise.

Every decision is written to ``OUT/handoff.json``; calling :func:`search_handoff` again with the
same arguments resumes where it stopped. The compute of every part is recorded (wall time,
optimizer steps, encoder forward and forward+backward passes, from each run's
``summary["compute"]``), so the search can be compared with finetune-only *at equal compute*:
its total cost is phase 1 + (K - 1) x probe + one full phase 2.

Layout::

    OUT/handoff.json          candidates, probe scores, the decision and why, compute per part
    OUT/phase1/               the phase-1 run (paused after phase 1), candidates/step-N/ checkpoints
    OUT/probe-step-N/         phase 2 from candidate N (the chosen one runs to the end: its best/)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path

from stackft.config import TrainConfig
from stackft.run_dir import LAST_DIR, STATE_FILE, RunDir, read_json, write_json
from stackft.training.callbacks import TrainerCallback

HANDOFF_FILE = "handoff.json"
CHOICES = ("best", "se")
log = logging.getLogger(__name__)


class CandidateKeeper(TrainerCallback):
    """Saves the model at every evaluation of the first phase as ``RUN/candidates/step-N/``."""

    def __init__(self, phase_index: int = 0):
        self.phase_index = phase_index

    def on_evaluate(self, trainer, phase, record: dict) -> None:
        if phase is not trainer.phases[self.phase_index]:
            return
        path = candidate_dir(trainer.out, record["step"])
        trainer.save_model(path, kind="candidate", metrics=record["dev"])


def candidate_dir(run_root, step: int) -> Path:
    return Path(run_root) / "candidates" / f"step-{step}"


def pick_candidates(evals: list[dict], k: int, chosen_step: int | None) -> list[int]:
    """Steps of ``k`` phase-1 evaluations: the stop rule's choice plus others spread evenly.

    ``evals``: the phase's metrics records in order. Returns steps in trajectory order.
    """
    steps = [r["step"] for r in evals]
    if not steps:
        raise ValueError("phase 1 made no evaluation to hand off from")
    k = min(k, len(steps))
    picked = {chosen_step} if chosen_step in steps else set()
    n = len(steps)
    for j in range(k):
        if len(picked) >= k:
            break
        picked.add(steps[round(j * (n - 1) / max(k - 1, 1))])
    for s in steps[::-1]:  # fill from the end where rounding merged two picks
        if len(picked) >= k:
            break
        picked.add(s)
    return sorted(picked)


def _check_choice(choice: str) -> None:
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")


def choose_probe(probes: dict, candidates: list[int], rule_step: int | None, choice: str = "best",
                 z: float = 1.0) -> tuple[int, dict]:
    """The candidate whose probe continues, and the decision with its numbers.

    ``probes``: ``{str(step): {"score": float, "dev": {metric + "_se": float, ...}, "metric": str}}``
    for every step in ``candidates``; ``rule_step``: the stop rule's choice.

    * ``"best"``: the highest probe score (ties: the later step).
    * ``"se"``: the rule's candidate, unless another probe scores above it by more than ``z`` x
      sqrt(se_a² + se_b²) (the standard error of the difference of two independent scores; the
      probes share one dev set, so this is conservative). Of the probes that clear it, the best.
      Where the rule's candidate is not among ``candidates`` or a standard error is missing, this
      falls back to ``"best"`` and says why.
    """
    _check_choice(choice)
    missing = [s for s in candidates if str(s) not in probes]
    if missing:
        raise ValueError(f"no probe result for candidate step(s) {missing}")
    score = {s: probes[str(s)]["score"] for s in candidates}
    best = max(candidates, key=lambda s: (score[s], s))
    decision = {"mode": choice, "z": z, "rule_step": rule_step, "scores": {str(s): score[s] for s in candidates}}
    if choice == "best":
        return best, {**decision, "chosen": best, "why": f"the best probe by dev ({score[best]:.4f})"}
    se = {s: probes[str(s)]["dev"].get(f"{probes[str(s)]['metric']}_se") for s in candidates}
    if rule_step not in score or any(v is None for v in se.values()):
        why = ("the stop rule's candidate was not probed" if rule_step not in score
               else "a probe score has no standard error")
        return best, {**decision, "chosen": best, "why": f"{why}: the best probe by dev ({score[best]:.4f})"}
    margins, winners = {}, []
    for s in candidates:
        if s == rule_step:
            continue
        diff, se_diff = score[s] - score[rule_step], math.hypot(se[s], se[rule_step])
        margins[str(s)] = {"diff": diff, "se_diff": se_diff, "beats": diff > z * se_diff}
        if margins[str(s)]["beats"]:
            winners.append(s)
    decision["margins"] = margins
    if not winners:
        return rule_step, {**decision, "chosen": rule_step,
                           "why": f"no probe beat the stop rule's candidate (step {rule_step}, {score[rule_step]:.4f}) "
                                  f"by more than {z:g} standard error(s) of the difference"}
    chosen = max(winners, key=lambda s: (score[s], s))
    m = margins[str(chosen)]
    return chosen, {**decision, "chosen": chosen,
                    "why": f"step {chosen} beat the stop rule's candidate (step {rule_step}) by {m['diff']:.4f} > "
                           f"{z:g} x {m['se_diff']:.4f}"}


def search_handoff(cfg: TrainConfig, *, out_dir, candidates: int = 3, probe_fraction: float = 0.1,
                   choice: str = "best", z: float = 1.0, encoder=None, data=None, callbacks=()) -> dict:
    """Run stack-and-finetune (or lp-ft) with a searched handoff; returns the handoff report.

    ``cfg``: a two-phase strategy whose phase 1 freezes the encoder (stack-and-finetune, lp-ft);
    its ``output_dir`` is ignored (runs go under ``out_dir``). ``candidates``: K >= 1 handoff
    points to probe; ``probe_fraction``: the share of phase 2's optimizer steps each probe runs;
    ``choice``, ``z``: how the probe that continues is chosen (:func:`choose_probe`).
    The final model is ``report["final_run"]/best``.
    """
    from stackft.modeling.encoders import load_encoder
    from stackft.training.strategies import plan_phases
    from stackft.training.trainer import Trainer, load_run_data

    phases = plan_phases(cfg.strategy, cfg)
    if len(phases) != 2 or phases[0].train_encoder or phases[0].pet or phases[0].reload_encoder:
        raise ValueError(f"handoff search needs a two-phase strategy with a frozen phase 1 "
                         f"(stack-and-finetune, lp-ft), not {cfg.strategy!r}")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if not 0.0 < probe_fraction < 1.0:
        raise ValueError(f"probe_fraction must be in (0, 1), got {probe_fraction}")
    _check_choice(choice)  # here too: before phase 1, not after it
    if not z >= 0:
        raise ValueError(f"z must be >= 0, got {z}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / HANDOFF_FILE
    settings = {"candidates_k": candidates, "probe_fraction": probe_fraction, "choice": choice, "z": z}
    report = read_json(report_path) or {**settings, "parts": {}, "probes": {}}
    # reports written before the choice was an option chose the best probe
    written = {**{"choice": "best", "z": 1.0}, **{k: report[k] for k in settings if k in report}}
    if written != settings:
        raise ValueError(f"{report_path} was written with " + ", ".join(f"{k}={v}" for k, v in written.items())
                         + "; use another out_dir for other settings")
    # the sub-runs follow the stop rule; the search is this function
    base = dataclasses.replace(cfg, stop_after_phase=None, max_steps_this_run=None, handoff="rule")

    # one encoder and one encoding of the data for every part; each part starts from the pretrained weights
    if encoder is None:
        encoder = load_encoder(cfg.encoder, layers=cfg.layers, dropout=cfg.dropout)
    if data is None:
        data = load_run_data(cfg, encoder.tokenizer)
    pristine = {k: v.detach().clone() for k, v in encoder.state_dict().items()}

    def run(part: str, run_cfg: TrainConfig, extra_callbacks=()):
        t0 = time.perf_counter()
        _restore(encoder, pristine)
        trainer = Trainer(run_cfg, encoder=encoder, data=data, callbacks=[*extra_callbacks, *callbacks])
        result = trainer.fit(resume=True)
        wall = time.perf_counter() - t0
        prev = report["parts"].get(part, {})
        report["parts"][part] = {"wall_time": prev.get("wall_time", 0.0) + wall, "compute": dict(trainer.compute),
                                 "status": result["status"]}
        write_json(report_path, report)
        return trainer, result

    # 1. phase 1 once, keeping a candidate at each evaluation
    p1_dir = out / "phase1"
    if report["parts"].get("phase1", {}).get("status") != "paused":
        trainer, _ = run("phase1", dataclasses.replace(base, output_dir=str(p1_dir), stop_after_phase=0),
                         [CandidateKeeper(0)])
        p1_name = trainer.phases[0].name
        evals = [r for r in trainer.history if r["phase"] == p1_name]
        stop_rule_step = _chosen_step(evals)
        report["phase1"] = {"evaluations": [{"step": r["step"], "dev": r["dev"], "train": r.get("train"),
                                             "stop_rule": r.get("stop_rule")} for r in evals],
                            "stop_rule_choice": stop_rule_step}
        report["candidates"] = pick_candidates(evals, candidates, stop_rule_step)
        write_json(report_path, report)

    # 2. probes: phase 2 for probe_fraction of its steps from each candidate
    probe_steps = None
    for step in report["candidates"]:
        key = str(step)
        if key in report["probes"]:
            continue
        r_dir = out / f"probe-step-{step}"
        _seed_probe(p1_dir, r_dir, step)
        r_cfg = dataclasses.replace(base, output_dir=str(r_dir))
        if probe_steps is None:
            probe_steps = _probe_steps(r_cfg, encoder, data, probe_fraction)
            report["probe_steps"] = probe_steps
        p1_global = RunDir(r_dir).last_position()["global_step"]
        trainer, result = run(f"probe-{step}", dataclasses.replace(r_cfg, max_steps_this_run=probe_steps))
        if result["status"] == "finished":  # phase 2 shorter than the probe
            dev = trainer.best["dev"]
        else:
            dev = trainer.evaluate("dev")
        metric = trainer.task.metric
        report["probes"][key] = {"dev": dev, "score": dev[metric], "metric": metric, "run": str(r_dir),
                                 "phase1_global_step": p1_global, "status": result["status"]}
        write_json(report_path, report)

    # 3. the chosen probe continues to the end of phase 2
    chosen, report["decision"] = choose_probe(report["probes"], report["candidates"],
                                              report["phase1"]["stop_rule_choice"], choice, z)
    log.info("handoff search: phase 2 continues from phase-1 step %d: %s", chosen, report["decision"]["why"])
    report["chosen"] = chosen
    final_dir = Path(report["probes"][str(chosen)]["run"])
    report["final_run"] = str(final_dir)
    write_json(report_path, report)
    if not RunDir(final_dir).is_finished():
        run("final", dataclasses.replace(base, output_dir=str(final_dir)))
    report["summary"] = RunDir(final_dir).read_summary()
    report["total"] = _total(report)
    write_json(report_path, report)
    _restore(encoder, pristine)
    return report


def _chosen_step(evals: list[dict]) -> int | None:
    """The step of the evaluation the stop rule chose: its last ``stop_rule`` record names it; the
    ``fixed`` rule (no records) ends on the last evaluation."""
    for r in reversed(evals):
        rule = r.get("stop_rule") or {}
        if rule.get("chosen_step") is not None:
            return rule["chosen_step"]
    return evals[-1]["step"] if evals else None


def _seed_probe(p1_dir: Path, r_dir: Path, step: int) -> None:
    """Make ``r_dir`` a copy of the paused phase-1 run whose weights are candidate ``step``'s."""
    from safetensors.torch import load_file, save_file

    from stackft.training import checkpoint as ckpt

    if (r_dir / LAST_DIR / STATE_FILE).exists() and (r_dir / ".seeded").exists():
        return
    if r_dir.exists():
        shutil.rmtree(r_dir)
    shutil.copytree(p1_dir, r_dir, ignore=shutil.ignore_patterns("candidates", ".*"))
    src = candidate_dir(p1_dir, step) / "model.safetensors"
    dst = RunDir(r_dir).last / "model.safetensors"
    save_file(load_file(str(src)), str(dst))  # the phase-boundary state (RNG, position) stays
    ckpt.seal(RunDir(r_dir).last)  # record the swapped weights' checksum
    (r_dir / ".seeded").write_text(str(step))


def _probe_steps(cfg: TrainConfig, encoder, data, fraction: float) -> int:
    from stackft.training.loaders import loader
    from stackft.training.strategies import plan_phases

    phase2 = plan_phases(cfg.strategy, cfg)[1]
    dl = loader(data.train, cfg.batch_size, encoder.pad_id, shuffle=True, seed=cfg.data_seed * 1000 + 1,
                max_tokens=cfg.max_tokens)
    return max(1, math.ceil(fraction * len(dl.batch_sampler) * phase2.epochs))


def _restore(encoder, state: dict) -> None:
    encoder.load_state_dict(state)
    encoder.requires_grad_(True)
    encoder.train()


def _total(report: dict) -> dict:
    """Compute summed over every part of the search."""
    total = {"wall_time": 0.0}
    for part in report["parts"].values():
        total["wall_time"] += part["wall_time"]
    # each part's trainer tallies from its own start: phase1 counts phase 1; probes/final resume a copy
    # of phase 1, so their counts include phase 1's and must be reduced by it
    p1 = report["parts"].get("phase1", {}).get("compute", {})
    keys = set(p1) | {k for part in report["parts"].values() for k in part.get("compute", {})}
    probe_runs = {report["probes"][name[len("probe-"):]]["run"]: part["compute"]
                  for name, part in report["parts"].items() if name.startswith("probe-")}
    if "final" in report["parts"]:  # the final part continues a probe: its tally includes the probe's
        probe_runs[report["final_run"]] = report["parts"]["final"]["compute"]
    for k in keys:
        total[k] = p1.get(k, 0) + sum(c.get(k, 0) - p1.get(k, 0) for c in probe_runs.values())
    return total
