"""Seed studies: expected max (against brute force), run_trials (grid, resume, early discarding,
reproducibility, seed independence), phase-1 selection, report and CLI. Tiny CPU runs only."""

import itertools
import json
import math
import statistics

import pytest
import torch
from helpers import write_keyword_csv

from stackft import studies as trials
from stackft.config import TrainConfig


# ------------------------------------------------------------------------------------------
# expected max
# ------------------------------------------------------------------------------------------
def _brute_with_replacement(scores, n):
    maxima = [max(t) for t in itertools.product(scores, repeat=n)]
    return statistics.fmean(maxima), statistics.pstdev(maxima)


def _brute_without_replacement(scores, n):
    maxima = [max(scores[i] for i in c) for c in itertools.combinations(range(len(scores)), n)]
    return statistics.fmean(maxima), statistics.pstdev(maxima)


@pytest.mark.parametrize("scores", [[0.3, 0.7, 0.5, 0.7], [0.91, 0.2, 0.55, 0.55, 0.8], [1.0, 2.0, 4.0]])
def test_expected_max_matches_enumeration_of_all_n_tuples(scores):
    for n in range(1, len(scores) + 1):
        m, s = trials.expected_max(scores, n)
        bm, bs = _brute_with_replacement(scores, n)
        assert m == pytest.approx(bm, abs=1e-12)
        assert s == pytest.approx(bs, abs=1e-12)
        m, s = trials.expected_max(scores, n, replacement=False)
        bm, bs = _brute_without_replacement(scores, n)
        assert m == pytest.approx(bm, abs=1e-12)
        assert s == pytest.approx(bs, abs=1e-12)


def test_expected_max_closed_form_for_zero_one_scores():
    scores = [0, 1, 0, 1, 1, 0, 0, 1]  # F(0) = 1/2: E[max of n] = 1 - 0.5^n
    for n in range(1, 9):
        m, s = trials.expected_max(scores, n)
        p = 1 - 0.5 ** n
        assert m == pytest.approx(p, abs=1e-12)
        assert s == pytest.approx(math.sqrt(p * (1 - p)), abs=1e-12)
    assert trials.expected_max([0, 1], 2) == pytest.approx((0.75, math.sqrt(0.75 * 0.25)))


def test_expected_max_n1_is_mean_and_curve():
    scores = [0.2, 0.9, 0.4, 0.4, 0.65]
    for repl in (True, False):
        m, s = trials.expected_max(scores, 1, replacement=repl)
        assert m == pytest.approx(statistics.fmean(scores))
        assert s == pytest.approx(statistics.pstdev(scores))
    assert trials.expected_max(scores, 5, replacement=False) == pytest.approx((0.9, 0.0))
    curve = trials.expected_max_curve(scores)
    assert [n for n, _, _ in curve] == [1, 2, 3, 4, 5]
    means = [m for _, m, _ in curve]
    assert all(a < b for a, b in zip(means, means[1:])) and means[-1] < max(scores)


@pytest.mark.parametrize("n", [0, 4, -1, 1.5, True, "2"])
def test_expected_max_invalid_n_raises(n):
    with pytest.raises(ValueError):
        trials.expected_max([0.1, 0.2, 0.3], n)


def test_expected_max_empty_raises():
    with pytest.raises(ValueError):
        trials.expected_max([], 1)


def test_expected_max_per_compute_and_plot(tmp_path):
    rows = trials.expected_max_per_compute([0.5, 0.7, 0.6], [10.0, 12.0, 14.0])
    assert [r["n"] for r in rows] == [1, 2, 3]
    assert [r["cost"] for r in rows] == pytest.approx([12.0, 24.0, 36.0])
    assert rows[1]["expected_max"] == pytest.approx(trials.expected_max([0.5, 0.7, 0.6], 2)[0])
    assert rows[0]["per_unit"] == pytest.approx(0.6 / 12.0)
    with pytest.raises(ValueError):
        trials.expected_max_per_compute([0.5], [1.0, 2.0])
    out = trials.plot_expected_max({"a": [0.5, 0.7, 0.6], "b": [0.4, 0.8]}, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = trials.plot_expected_max({"a": [0.5, 0.7], "b": [0.4, 0.8]}, tmp_path / "q.png",
                                   budget_per_trial={"a": 3.0, "b": 1.0})
    assert out.stat().st_size > 1000


def test_rank_for_discard_keeps_top_p_ties_in_grid_order():
    order, kept = trials.rank_for_discard([0.5, None, 0.9, 0.5, 0.7], 3)
    assert order == [2, 4, 0, 3, 1]
    assert kept == {2, 4, 0}
    assert trials.rank_for_discard([0.1, 0.1], 1)[1] == {0}


def test_select_heads_gap_rule():
    rows = [{"dev": 0.9, "gap": 0.10}, {"dev": 0.8, "gap": 0.01}, {"dev": 0.85, "gap": 0.0},
            {"dev": 0.7, "gap": -0.02}, {"dev": None, "gap": None}]
    order, chosen = trials.select_heads(rows, 2, gap_tol=0.02)
    assert chosen == [2, 1]  # head 0 has the best dev score but is over the gap tolerance
    assert [r["eligible"] for r in rows] == [False, True, True, True, False]
    assert order[:3] == [2, 1, 3]
    with pytest.warns(UserWarning, match="only 3 of 5"):
        _, chosen = trials.select_heads(rows, 4, gap_tol=0.02)
    assert chosen == [2, 1, 3]
    with pytest.warns(UserWarning):
        _, chosen = trials.select_heads(rows, 4, gap_tol=0.02, fill=True)
    assert chosen == [2, 1, 3, 0]


# ------------------------------------------------------------------------------------------
# tiny runs
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory, make_tiny_encoder):
    """(encoder, data, train path) of a 60-row keyword task (label = which keyword the text contains)."""
    from stackft.data.pipeline import load_task_data

    path = write_keyword_csv(tmp_path_factory.mktemp("data") / "kw.csv")
    enc = make_tiny_encoder()
    data = load_task_data("classification", path, tokenizer=enc.tokenizer, max_length=12, dev_size=20)
    return enc, data, path


def cfg(path, **kw):
    base = dict(task="classification", strategy="stack-only", head="densenet",
                head_options={"channels": 16, "kernel_sizes": [2], "layers_per_block": 1},
                train_path=path, max_length=12, dev_size=20, stack_epochs=2, phase1_epochs=1, phase2_epochs=1,
                phase1_lr=1e-2, phase2_lr=1e-3, batch_size=8, patience=10, evals_per_epoch=1,
                cache="off", progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _evals(out_dir):
    return {(r["trial"], r["phase"], r["global_step"]): (r["dev"], r["loss"])
            for r in trials.load_trials(out_dir, "eval")}


def test_early_discard_keeps_exactly_top_p(study, tmp_path):
    enc, data, path = study
    out = tmp_path / "ed"
    base = cfg(path)  # 40 train rows / batch 8 = 5 steps an epoch, 2 epochs = 10 planned steps
    res = trials.run_trials(base, init_seeds=[0, 1, 2, 3], data_seeds=[0], out_dir=out,
                            early_discard=(3, 0.6, 1), encoder=enc, data=data)
    assert [r["trial"] for r in res] == ["trial-i0-d0", "trial-i1-d0", "trial-i2-d0"]  # only the first t
    assert not (out / "trial-i3-d0").exists()
    status = {r["trial"]: r["status"] for r in res}
    assert sorted(status.values()) == ["discarded", "discarded", "finished"]
    decision = json.loads((out / "early_discard.json").read_text())
    assert all(v == 6 for v in decision["budget_steps"].values())  # round(0.6 * 10)
    # rank by the best dev score over the evaluations inside the budget, from the log itself
    seen = {}
    for r in trials.load_trials(out, "eval"):
        if r["global_step"] <= 6:
            seen[r["trial"]] = max(seen.get(r["trial"], -1), r["dev"]["accuracy"])
    ids = [r["trial"] for r in res]
    _, top = trials.rank_for_discard([seen[t] for t in ids], 1)
    kept = ids[next(iter(top))]
    assert decision["kept"] == [kept] and status[kept] == "finished"
    for r in res:
        if r["trial"] != kept:
            assert r["steps"] == 6 and r["phase_steps"] == {"stack": 6}
            assert r["best_dev_seen"] == seen[r["trial"]]
        else:
            assert r["steps"] == 10
    logged = {r["trial"] for r in trials.load_trials(out, "status") if r["status"] == "discarded"}
    assert logged == set(ids) - {kept}
    # resuming changes nothing
    n_lines = len(trials.load_trials(out))
    again = trials.run_trials(base, init_seeds=[0, 1, 2, 3], data_seeds=[0], out_dir=out,
                              early_discard=(3, 0.6, 1), encoder=enc, data=data)
    assert [r["status"] for r in again] == [r["status"] for r in res]
    assert len(trials.load_trials(out)) == n_lines
    with pytest.raises(ValueError, match="decision"):
        trials.run_trials(base, init_seeds=[0, 1, 2], data_seeds=[0], out_dir=out, early_discard=(3, 0.5, 1),
                          encoder=enc, data=data)


def test_early_discard_validates_arguments(study, tmp_path):
    enc, data, path = study
    for bad in [(4, 0.5, 1), (2, 1.0, 1), (2, 0.5, 3), (0, 0.5, 0), (2, 0.5)]:
        with pytest.raises(ValueError):
            trials.run_trials(cfg(path), init_seeds=[0, 1, 2], data_seeds=[0], out_dir=tmp_path / "x",
                              early_discard=bad, encoder=enc, data=data)


def test_trials_reproducible_restored_between_trials_and_resumable(study, tmp_path):
    enc, data, path = study
    # stack-and-finetune changes the shared encoder in phase 2: each trial must start from the pretrained one
    base = cfg(path, strategy="stack-and-finetune", stop_mode="fixed")
    a = trials.run_trials(base, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "a", encoder=enc, data=data)
    b = trials.run_trials(base, init_seeds=[1, 0], data_seeds=[0], out_dir=tmp_path / "b", encoder=enc, data=data)
    assert all(r["status"] == "finished" for r in a + b)
    ea, eb = _evals(tmp_path / "a"), _evals(tmp_path / "b")
    assert len(ea) == 4 and ea == eb  # bit for bit, whatever the trial order
    by_a = {r["trial"]: r for r in a}
    for r in b:
        assert r["best_score"] == by_a[r["trial"]]["best_score"]
        assert r["phase_steps"] == {"phase1": 5, "phase2": 5} and r["steps"] == 10
    recs = trials.load_trials(tmp_path / "a", "eval")
    assert {(r["trial"], r["init_seed"], r["data_seed"]) for r in recs} == {("trial-i0-d0", 0, 0), ("trial-i1-d0", 1, 0)}
    assert {"phase", "step", "epoch", "dev", "global_step"} <= set(recs[0])
    cfg_saved = json.loads((tmp_path / "a" / "trial-i1-d0" / "config.json").read_text())
    assert (cfg_saved["init_seed"], cfg_saved["data_seed"]) == (1, 0)

    # a second call skips the finished trials
    stamp = (tmp_path / "a" / "trial-i0-d0" / "summary.json").stat().st_mtime_ns
    again = trials.run_trials(base, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "a", encoder=enc, data=data)
    assert again == a
    assert (tmp_path / "a" / "trial-i0-d0" / "summary.json").stat().st_mtime_ns == stamp
    assert _evals(tmp_path / "a") == ea and len(trials.load_trials(tmp_path / "a", "eval")) == 4

    # interrupted trials resume via fit(resume=True); the log ends up the same as an uninterrupted study
    sliced = cfg(path, strategy="stack-and-finetune", stop_mode="fixed", max_steps_this_run=3)
    c = trials.run_trials(sliced, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "c", encoder=enc, data=data)
    assert [r["status"] for r in c] == ["interrupted", "interrupted"] and [r["steps"] for r in c] == [3, 3]
    c = trials.run_trials(base, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "c", encoder=enc, data=data)
    assert [r["status"] for r in c] == ["finished", "finished"]
    assert _evals(tmp_path / "c") == ea

    # a study resumed with other training settings is refused, not silently mixed into one log
    trials.run_trials(sliced, init_seeds=[0], data_seeds=[0], out_dir=tmp_path / "d", encoder=enc, data=data)
    changed = cfg(path, strategy="stack-and-finetune", stop_mode="fixed", phase2_lr=5e-4)
    with pytest.raises(ValueError, match="phase2_lr"):
        trials.run_trials(changed, init_seeds=[0], data_seeds=[0], out_dir=tmp_path / "d", encoder=enc, data=data)


def test_seeds_independent(study, tmp_path):
    from stackft.training.callbacks import TrainerCallback
    from stackft.training.trainer import Trainer, build_model

    enc, data, path = study
    base = cfg(path)

    def head_state(i, d):
        c = trials.trial_config(base, i, d, tmp_path)
        return build_model(c, enc, len(data.vocab)).head.state_dict()

    def same(s1, s2):
        return all(torch.equal(s1[k], s2[k]) for k in s1)

    assert same(head_state(0, 0), head_state(0, 1))  # data seed alone: same head init
    assert not same(head_state(0, 0), head_state(1, 0))  # init seed: another init

    class Recorder(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_start(self, trainer, phase, batch):
            self.seen.append(batch["index"].tolist())

    def data_order(i, d):
        c = trials.trial_config(base, i, d, tmp_path / "order")
        c.max_steps_this_run = 2
        rec = Recorder()
        Trainer(c, encoder=enc, data=data, callbacks=[rec]).fit(overwrite=True)
        return rec.seen

    assert data_order(0, 0) != data_order(0, 1)  # data seed: another order
    assert data_order(0, 0) == data_order(1, 0)  # init seed alone: same order


def test_phase1_then_select(study, tmp_path):
    enc, data, path = study
    base = cfg(path, strategy="stack-and-finetune", stop_mode="fixed")
    baseline = trials.run_trials(cfg(path, strategy="stack-only", stack_epochs=1), init_seeds=[0, 1], data_seeds=[0],
                                 out_dir=tmp_path / "ft", encoder=enc, data=data)
    res = trials.run_phase1_then_select(base, init_seeds=[0, 1, 2], keep=1, out_dir=tmp_path / "sel", gap_tol=1.0,
                                        baseline=tmp_path / "ft", cost="steps", encoder=enc, data=data)
    status = {s["trial"]: s["status"] for s in res["trials"]}
    assert sorted(status.values()) == ["finished", "not_selected", "not_selected"]
    probes = {r["trial"]: r for r in trials.load_trials(tmp_path / "sel", "probe")}
    assert set(probes) == set(status) and all(r["phase"] == "phase1_end" for r in probes.values())
    ranking = res["selection"]["ranking"]
    best_dev = max(r["dev"] for r in ranking)
    (chosen,) = res["selection"]["selected"]
    assert status[chosen] == "finished"
    assert next(r for r in ranking if r["trial"] == chosen)["dev"] == best_dev
    for r in ranking:  # the probe's numbers are what the selection used
        assert r["dev"] == probes[r["trial"]]["dev"]["accuracy"]
        assert r["gap"] == pytest.approx(probes[r["trial"]]["train"]["accuracy"] - r["dev"])
    per = {p["trial"]: p for p in res["compute"]["per_trial"]}
    for tid, st in status.items():
        assert per[tid]["steps"]["phase1"] == 5
        assert per[tid]["steps"]["phase2"] == (5 if st == "finished" else 0)
    assert res["compute"]["phase1_total"]["steps"] == 15 and res["compute"]["phase2_total"]["steps"] == 5
    (row,) = res["table"]
    by_id = {s["trial"]: s for s in res["trials"]}
    assert row["cost_steps"] == 20 and row["best_score"] == by_id[chosen]["best_score"]
    assert row["baseline_n"] == 2  # two 5-step baseline trials fit into 20 steps
    assert row["baseline_expected_max"] == pytest.approx(
        trials.expected_max([s["best_score"] for s in baseline], 2)[0])
    # resuming runs nothing new and keeps the selection; other settings are refused
    n_lines = len(trials.load_trials(tmp_path / "sel"))
    again = trials.run_phase1_then_select(base, init_seeds=[0, 1, 2], keep=1, out_dir=tmp_path / "sel", gap_tol=1.0,
                                          encoder=enc, data=data)
    assert again["selection"] == res["selection"] and len(trials.load_trials(tmp_path / "sel")) == n_lines
    with pytest.raises(ValueError, match="selection"):
        trials.run_phase1_then_select(base, init_seeds=[0, 1, 2], keep=2, out_dir=tmp_path / "sel", gap_tol=1.0,
                                      encoder=enc, data=data)
    with pytest.raises(ValueError, match="two-phase"):
        trials.run_phase1_then_select(cfg(path), init_seeds=[0], keep=1, out_dir=tmp_path / "x", encoder=enc, data=data)

    text = trials.report([tmp_path / "ft", tmp_path / "sel"], plot=tmp_path / "r.png", x="time")
    assert "E[max]" in text and (tmp_path / "r.png").exists()


def test_cli_trials_and_report(study, tmp_path, capsys):
    import argparse

    from stackft.cli import trials as cli_trials

    enc, data, path = study
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cli_trials.register(sub)
    args = p.parse_args(["trials", "--task", "classification", "--train-path", path, "--init-seeds", "0-2",
                         "--data-seeds", "0,1", "--out", str(tmp_path / "s"), "--early-discard", "4,0.5,2",
                         "--phase1-select", "3,1"])
    assert args.init_seeds == [0, 1, 2] and args.data_seeds == [0, 1]
    assert args.early_discard == (4, 0.5, 2) and args.phase1_select == (3, 1)
    with pytest.raises(SystemExit):
        p.parse_args(["trials", "--out", "x", "--early-discard", "4,0.5"])
    # trials-report on a tiny study
    trials.run_trials(cfg(path, stack_epochs=1), init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "s",
                      encoder=enc, data=data)
    assert cli_trials.main(["trials-report", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "E[max]" in out and (tmp_path / "s" / "expected_max.png").exists()
    assert cli_trials.main(["trials-report", str(tmp_path / "nothing")]) == 2


def test_cli_trials_runs_a_study(study, tiny_encoder_dir, tmp_path, capsys):
    from stackft.cli import trials as cli_trials

    _, _, path = study
    argv = ["trials", "--task", "classification", "--train-path", path, "--encoder", str(tiny_encoder_dir),
            "--strategy", "stack-only", "--head", "densenet", "--head-options",
            '{"channels": 8, "kernel_sizes": [2], "layers_per_block": 1}', "--stack-epochs", "1",
            "--max-length", "12", "--dev-size", "0.34", "--batch-size", "8", "--evals-per-epoch", "1",
            "--cache", "off", "--no-progress", "--device", "cpu",
            "--init-seeds", "0,1", "--data-seeds", "3", "--out", str(tmp_path / "study"), "--plot"]
    assert cli_trials.main(argv) == 0
    out = capsys.readouterr().out
    assert "trial-i0-d3" in out and "trial-i1-d3" in out and "E[max]" in out
    assert (tmp_path / "study" / "expected_max.png").exists()
    summaries = trials.load_summaries(tmp_path / "study")
    assert [(s["init_seed"], s["data_seed"], s["status"]) for s in summaries] == [(0, 3, "finished"), (1, 3, "finished")]
