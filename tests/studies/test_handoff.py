"""Handoff search (stackft.studies.handoff): candidates along phase 1, probes, the chosen one continues."""

from __future__ import annotations

import pytest
from helpers import tiny_keyword_task, write_keyword_csv

from stackft.config import TrainConfig
from stackft.run_dir import RunDir
from stackft.studies import handoff as H

# 48 train / batch 8 = 6 steps an epoch, evaluations at steps 3 and 6: phase 1 (2 epochs) makes 4
BASE = dict(task="classification", cache="off", progress=False, device="cpu", batch_size=8, eval_batch_size=32,
            evals_per_epoch=2, phase1_lr=1e-2, phase2_lr=1e-3, strategy="stack-and-finetune", head="fc",
            stop_mode="fixed", phase1_epochs=2, phase2_epochs=2)


@pytest.fixture(scope="module")
def encoder_and_data(tmp_path_factory):
    return tiny_keyword_task(tmp_path_factory.mktemp("handoff-data"))


def test_pick_candidates_includes_the_stop_rule_choice_and_spreads():
    evals = [{"step": s} for s in (3, 6, 9, 12, 15, 18)]
    assert H.pick_candidates(evals, 3, chosen_step=9) == [3, 9, 18]
    assert H.pick_candidates(evals, 1, chosen_step=12) == [12]
    assert H.pick_candidates(evals, 10, chosen_step=None) == [3, 6, 9, 12, 15, 18]
    assert len(H.pick_candidates(evals, 4, chosen_step=15)) == 4
    with pytest.raises(ValueError, match="no evaluation"):
        H.pick_candidates([], 3, None)


def test_search_probes_each_candidate_and_continues_the_best(encoder_and_data, tmp_path):
    enc, data = encoder_and_data
    cfg = TrainConfig(output_dir="unused", **BASE)
    report = H.search_handoff(cfg, out_dir=tmp_path / "s", candidates=3, probe_fraction=0.25, encoder=enc, data=data)
    assert report["candidates"] == [3, 9, 12]  # of 4 evaluations (3, 6, 9, 12); the fixed rule chose 12
    assert report["probe_steps"] == 3  # ceil(0.25 x 12 phase-2 steps)
    scores = {int(k): p["score"] for k, p in report["probes"].items()}
    assert set(scores) == {3, 9, 12}
    best = max(scores, key=lambda s: (scores[s], s))
    assert report["chosen"] == best
    final = RunDir(report["final_run"])
    assert final.is_finished() and final.root.name == f"probe-step-{best}"
    # the other probes stopped after their probe steps
    for s in scores:
        pos = RunDir(tmp_path / "s" / f"probe-step-{s}").last_position()
        assert pos["phase"] == 1 and (s == best or pos["phase_step"] == 3)
    # compute: phase 1 once (12 steps) + 3 probes x 3 steps + the rest of the chosen phase 2 (9)
    assert report["total"]["optimizer_steps"] == 12 + 3 * 3 + 9
    n = len(data.train)
    assert report["total"]["encoder_forward_backward"] == 3 * 3 * 8 + (n * 2 - 3 * 8)
    assert report["total"]["wall_time"] == pytest.approx(sum(p["wall_time"] for p in report["parts"].values()))
    # resumable: a second call redoes nothing and returns the same choice
    again = H.search_handoff(cfg, out_dir=tmp_path / "s", candidates=3, probe_fraction=0.25, encoder=enc, data=data)
    assert again["chosen"] == report["chosen"] and again["total"] == report["total"]


@pytest.fixture
def probe_3_wins(monkeypatch):
    """Rigs Trainer.evaluate: phase-2 evaluations of the probe from step 3 score accuracy 2.0, far above
    every other candidate (the fixed rule's, 12, included)."""
    from stackft.training.trainer import Trainer

    real = Trainer.evaluate

    def rigged(self, split="dev", **kw):
        out = real(self, split, **kw)
        if self.pos.phase == 1 and "probe-step-3" in str(self.out):
            out = {**out, "accuracy": 2.0}
        return out

    monkeypatch.setattr(Trainer, "evaluate", rigged)


def test_search_picks_the_constructed_best_candidate(encoder_and_data, tmp_path, probe_3_wins):
    """Probe scores are rigged so the earliest candidate wins: the search must continue that one."""
    enc, data = encoder_and_data
    cfg = TrainConfig(output_dir="unused", **BASE)
    report = H.search_handoff(cfg, out_dir=tmp_path / "r", candidates=2, probe_fraction=0.25, encoder=enc, data=data)
    assert report["candidates"] == [3, 12] and report["chosen"] == 3


def _probes(**scores_and_ses):
    """{"28": (0.92, 0.013), ...} -> the probes dict search_handoff keeps."""
    return {k.removeprefix("s"): {"score": v, "dev": {"accuracy": v, "accuracy_se": se}, "metric": "accuracy"}
            for k, (v, se) in scores_and_ses.items()}


def test_choose_probe_se_keeps_the_rule_within_noise_and_switches_on_a_clear_win():
    # a Yahoo run's probes (n = 400): 28 ahead of the rule's 141 by 1.25 points, under one SE of the difference
    probes = _probes(s28=(0.9225, 0.0134), s85=(0.92, 0.0136), s141=(0.91, 0.0143))
    assert H.choose_probe(probes, [28, 85, 141], 141, "best")[0] == 28
    step, d = H.choose_probe(probes, [28, 85, 141], 141, "se", z=1.0)
    assert step == 141 and d["chosen"] == 141 and "no probe beat" in d["why"]
    assert d["margins"]["28"]["diff"] == pytest.approx(0.0125)
    assert d["margins"]["28"]["se_diff"] == pytest.approx((0.0134 ** 2 + 0.0143 ** 2) ** 0.5)
    assert not d["margins"]["28"]["beats"]
    # z = 0: any gain counts, so se reduces to the best of those above the rule
    assert H.choose_probe(probes, [28, 85, 141], 141, "se", z=0.0)[0] == 28
    # a clear win (a probe 11 points up, a real difference): taken; of two clear winners, the better
    clear = _probes(s28=(0.7975, 0.0201), s56=(0.9075, 0.0145), s85=(0.8925, 0.0155))
    step, d = H.choose_probe(clear, [28, 56, 85], 28, "se")
    assert step == 56 and d["margins"]["56"]["beats"] and d["margins"]["85"]["beats"] and "beat" in d["why"]
    # a candidate below the rule never wins
    assert H.choose_probe(clear, [28, 56, 85], 56, "se")[0] == 56


def test_choose_probe_falls_back_to_best_and_says_why():
    probes = _probes(s3=(0.5, None), s6=(0.9, 0.01))
    step, d = H.choose_probe(probes, [3, 6], 3, "se")
    assert step == 6 and "no standard error" in d["why"]
    step, d = H.choose_probe(_probes(s3=(0.5, 0.01), s6=(0.9, 0.01)), [3, 6], 9, "se")
    assert step == 6 and "not probed" in d["why"]
    with pytest.raises(ValueError, match="choice"):
        H.choose_probe(probes, [3, 6], 3, "median")
    with pytest.raises(ValueError, match="no probe result"):
        H.choose_probe(probes, [3, 6, 9], 3, "best")


def test_search_with_se_choice_continues_a_clearly_better_probe_and_refuses_other_settings_on_resume(
        encoder_and_data, tmp_path, probe_3_wins):
    enc, data = encoder_and_data
    cfg = TrainConfig(output_dir="unused", **BASE)
    report = H.search_handoff(cfg, out_dir=tmp_path / "r", candidates=2, probe_fraction=0.25, choice="se",
                              encoder=enc, data=data)
    assert report["candidates"] == [3, 12] and report["chosen"] == 3
    d = report["decision"]
    assert d["mode"] == "se" and d["rule_step"] == 12 and d["margins"]["3"]["beats"]
    with pytest.raises(ValueError, match="choice=se"):
        H.search_handoff(cfg, out_dir=tmp_path / "r", candidates=2, probe_fraction=0.25, choice="best",
                         encoder=enc, data=data)


def test_search_refuses_strategies_without_a_frozen_phase_1(tmp_path):
    for strategy in ("finetune-only", "eh-ft", "stack-only"):
        with pytest.raises(ValueError, match="frozen phase 1"):
            H.search_handoff(TrainConfig(strategy=strategy), out_dir=tmp_path)


def test_stackft_train_handoff_search_runs_the_search(encoder_and_data, tmp_path, monkeypatch):
    """`stackft train --handoff search` hands the config to search_handoff with its options."""
    from stackft.cli import main

    seen = {}

    def fake_search(cfg, *, out_dir, candidates, probe_fraction, choice, z):
        seen.update(cfg=cfg, out_dir=out_dir, candidates=candidates, probe_fraction=probe_fraction, choice=choice, z=z)
        return {"candidates": [3], "probes": {}, "decision": {}, "chosen": 3, "final_run": "x", "total": {}}

    monkeypatch.setattr(H, "search_handoff", fake_search)
    train = write_keyword_csv(tmp_path / "t.csv", 8, seed=0)
    assert main(["train", "--task", "classification", "--train-path", train, "--handoff", "search",
                 "--handoff-candidates", "4", "--handoff-probe", "0.2", "--handoff-choice", "se", "--handoff-z", "2",
                 "--output-dir", str(tmp_path / "o")]) == 0
    assert seen["candidates"] == 4 and seen["probe_fraction"] == 0.2 and seen["out_dir"] == str(tmp_path / "o")
    assert seen["choice"] == "se" and seen["z"] == 2.0
    assert seen["cfg"].handoff == "search"


def test_search_resumed_without_an_encoder_loads_its_own(tmp_path, tiny_encoder_dir):
    """The CLI passes no encoder or data: a search resumed after phase 1 must load them itself."""
    import json
    import shutil

    train = write_keyword_csv(tmp_path / "train.csv", 48, seed=0)
    dev = write_keyword_csv(tmp_path / "dev.csv", 16, seed=1)
    cfg = TrainConfig(output_dir="unused", encoder=str(tiny_encoder_dir), train_path=train, dev_path=dev,
                      max_length=24, **BASE)
    out = tmp_path / "s"
    first = H.search_handoff(cfg, out_dir=out, candidates=2, probe_fraction=0.25)
    # forget the probes, as if the first call had died right after phase 1
    report = json.loads((out / H.HANDOFF_FILE).read_text())
    report["probes"], report["parts"] = {}, {"phase1": report["parts"]["phase1"]}
    for key in ("chosen", "final_run", "summary", "total", "probe_steps"):
        report.pop(key, None)
    (out / H.HANDOFF_FILE).write_text(json.dumps(report))
    for step in first["candidates"]:
        shutil.rmtree(out / f"probe-step-{step}")
    again = H.search_handoff(cfg, out_dir=out, candidates=2, probe_fraction=0.25)
    assert again["candidates"] == first["candidates"] and set(again["probes"]) == set(first["probes"])
    assert RunDir(again["final_run"]).is_finished()
