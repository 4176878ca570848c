"""The demo's learning-curve plot draws what happened: phase 2 starts from the head phase 1 chose
(not from phase 1's discarded tail), and the time axis counts the feature-cache build."""

import json

from stackft.studies.plots import plot_learning_curves, run_segments


def rec(phase, step, global_step, time, f1, chosen=None):
    r = {"phase": phase, "step": step, "global_step": global_step, "time": time, "dev": {"f1": f1}}
    if chosen is not None:
        r["stop_rule"] = {"chosen_step": chosen}
    return r


PHASE1 = [rec("phase1", 10, 10, 1.0, 0.50, 10), rec("phase1", 20, 20, 2.0, 0.60, 20),
          rec("phase1", 30, 30, 3.0, 0.58, 20), rec("phase1", 40, 40, 4.0, 0.57, 20)]  # gap rule kept step 20
PHASE2 = [rec("phase2", 10, 50, 5.0, 0.70, 10), rec("phase2", 20, 60, 10.0, 0.80, 20)]
TIMES = {"phase1_cache": 7.0, "phase1": 4.5, "phase2": 10.5}


def test_phase2_starts_from_phase1s_choice_after_the_cache_build_and_all_of_phase1():
    p1, p2 = run_segments(PHASE1 + PHASE2, TIMES, "f1")
    assert p1["cache"] == (0.0, 7.0)
    assert [t for t, _, _ in p1["points"]] == [8.0, 9.0, 10.0, 11.0]  # after the cache build
    assert p1["kept"] == 2  # steps 30 and 40 were discarded: phase 2 trains the step-20 head
    assert p2["start"] == (7.0 + 4.5, 40, 0.60)  # where phase 1 ended, with the chosen head's score
    assert [t for t, _, _ in p2["points"]] == [16.5, 21.5]
    assert p2["cache"] is None and p2["kept"] == 2


def test_one_phase_runs_and_runs_without_times():
    (seg,) = run_segments([rec("finetune", 5, 5, 2.0, 0.4, 5), rec("finetune", 10, 10, 4.0, 0.5, 10)], {}, "f1")
    assert seg["start"] is None and seg["cache"] is None and seg["kept"] == 2
    assert [p[0] for p in seg["points"]] == [2.0, 4.0]


def test_the_plot_is_written(tmp_path):
    for name, recs, times in (("sf", PHASE1 + PHASE2, TIMES), ("ft", [rec("finetune", 5, 5, 2.0, 0.4)], {})):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "summary.json").write_text(json.dumps({"phase_times": times}))
    png = plot_learning_curves({"stack-and-finetune": tmp_path / "sf", "finetune-only": tmp_path / "ft"},
                               tmp_path / "lc.png", metric="f1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
