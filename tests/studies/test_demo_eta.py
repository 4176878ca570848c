"""The demo's remaining-time estimate (stackft.studies.demo_eta.TimeLeft), driven with a fake clock
through the hooks the trainer calls, and its line in a real quick demo."""

import json
from types import SimpleNamespace

import pytest

from stackft import cli
from stackft.studies.demo import demo_configs
from stackft.studies.demo_eta import CACHE_BUILD_STEPS, FROZEN_STEP_RATIO, TimeLeft, format_duration
from stackft.training.strategies import plan_phases


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _drive(eta, clock, cfg, *, step_s, steps=None, evals=(), stop_after=None, on_step=None):
    """Run the hooks of one fit of ``cfg``: ``step_s`` seconds per step (by phase name)."""
    trainer = SimpleNamespace(cfg=cfg)
    eta.on_fit_start(trainer, resumed=False)
    for phase in plan_phases(cfg.strategy, cfg):
        eta.on_phase_start(trainer, phase)
        n = steps[phase.name]
        for i in range(1, n + 1):
            clock.t += step_s[phase.name]
            eta.on_step_end(trainer, phase, 0.5)
            if on_step:
                on_step(phase.name, i)
            if i in evals:
                eta.on_evaluate(trainer, phase, {})
            if stop_after and stop_after.get(phase.name) == i:
                break
        eta.on_phase_end(trainer, phase, None)


def test_the_estimate_counts_every_run_still_to_come():
    configs = demo_configs("runs/demo")
    lines, clock = [], Clock()
    eta = TimeLeft(configs, n_train=160, write=lines.append, clock=clock)  # 10 batches of 16 per epoch
    ft, sf = configs["finetune-only"], configs["stack-and-finetune"]
    seen = {}

    def check(phase, i):
        seen.setdefault(phase, []).append(eta.remaining())

    # fine-tuning steps take 2 s: after 5 of finetune-only's 30 steps, 25 + phase 2's 30 remain at 2 s,
    # and phase 1's 30 frozen steps at 2 x FROZEN_STEP_RATIO plus its cache build
    _drive(eta, clock, ft, step_s={"finetune": 2.0}, steps={"finetune": 30}, evals=(15, 30), on_step=check)
    expected = 25 * 2 + 30 * 2 + 30 * 2 * FROZEN_STEP_RATIO + CACHE_BUILD_STEPS * 10 * 2
    assert seen["finetune"][4] == pytest.approx(expected)
    assert eta.remaining() == pytest.approx(30 * 2 + 30 * 2 * FROZEN_STEP_RATIO + CACHE_BUILD_STEPS * 10 * 2)
    # phase 1 runs at 0.1 s a step and its stop rule ends it after 12 of 30 steps
    _drive(eta, clock, sf, step_s={"phase1": 0.1, "phase2": 2.0}, steps={"phase1": 30, "phase2": 30},
           stop_after={"phase1": 12}, evals=(12, 15, 30), on_step=check)
    assert seen["phase1"][3] == pytest.approx(26 * 0.1 + 30 * 2)  # the frozen rate is measured now
    assert seen["phase2"][9] == pytest.approx(20 * 2)
    assert eta.remaining() == 0
    # the first line after 10 steps, then one per evaluation and one as the second run starts
    assert lines[0].startswith("[demo] about ") and lines[0].endswith(" left for the whole demo (estimate)")
    assert len(lines) == 1 + 2 + 1 + 1 + 2  # none at the very last evaluation: nothing is left
    assert lines[0] == f"[demo] about {format_duration(20 * 2 + 30 * 2 + 12 + 3)} left for the whole demo (estimate)"


def test_a_slow_first_step_reports_after_30_seconds():
    configs = demo_configs("runs/demo")
    lines, clock = [], Clock()
    eta = TimeLeft(configs, n_train=1200, write=lines.append, clock=clock)
    trainer = SimpleNamespace(cfg=configs["finetune-only"])
    eta.on_fit_start(trainer, resumed=False)
    (phase,) = plan_phases("finetune-only", configs["finetune-only"])
    eta.on_phase_start(trainer, phase)
    for _ in range(2):
        clock.t += 20.0  # a busy machine: 20 s a step
        eta.on_step_end(trainer, phase, 0.5)
    assert len(lines) == 1 and "h" in lines[0]  # 448 more steps at 20 s: hours


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (45, "45 s"), (200, "3 min 20 s"), (1500, "25 min"),
                                           (7500, "2 h 05 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_the_quick_demo_prints_the_estimate(tmp_path, tiny_encoder_dir, capsys, monkeypatch):
    from stackft.studies import demo_eta

    ticks = iter(range(0, 10**9, 5))  # every clock read is 5 s later: a warm process is not too fast to estimate
    monkeypatch.setattr(demo_eta.time, "perf_counter", lambda: float(next(ticks)))
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output-dir", str(out), "--device", "cpu",
                     "--encoder", str(tiny_encoder_dir)]) == 0
    printed = capsys.readouterr().out
    assert "left for the whole demo (estimate)" in printed
    assert json.loads((out / "demo_summary.json").read_text())["results"]
