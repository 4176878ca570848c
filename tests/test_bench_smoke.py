"""Smoke runs of every bench script: its cheapest mode, in a subprocess, on CPU.

Each run checks the exit code and the keys of the JSON the script writes (never into
bench/results/: every run writes under tmp_path). Tiny sizes: a random 2 x 32 BERT, the CoNLL-2003
excerpt bundled with stackft, a few batches; the numbers are not looked at. The scripts also refuse
to run without data rather than fall back on a path outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", **extra)
    env.pop("STACKFT_DATA", None)  # no data root from the environment: the scripts must not need one here
    return env


def _run(args: list[str], tmp_path: Path, *, timeout: int = 300, expect: int = 0, **env) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=tmp_path, env=_env(**env), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == expect, f"exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    return r


def _json(path: Path) -> dict:
    assert path.is_file(), f"{path} not written"
    return json.loads(path.read_text())


def _demo_data_root(tmp_path: Path) -> Path:
    """A data root with the bundled CoNLL-2003 excerpt as conll2003/train.txt and dev.txt."""
    from stackft.studies.demo import demo_paths

    root = tmp_path / "data"
    (root / "conll2003").mkdir(parents=True)
    train, dev = demo_paths()
    shutil.copy(train, root / "conll2003" / "train.txt")
    shutil.copy(dev, root / "conll2003" / "dev.txt")
    return root


def test_phase1_cache_smoke(tmp_path):
    out = tmp_path / "p1.json"
    _run([str(BENCH / "bench_phase1_cache.py"), "--smoke", "--out", str(out)], tmp_path)
    res = _json(out)
    assert {"encoder", "encoder_layers", "encoder_hidden", "device", "n_train", "n_dev", "train_tokens", "batch_size",
            "live_epoch_s", "fp32", "int8", "int8_bytes_ratio", "int8_f1_delta_points",
            "fp32_heads_on_int8_dev_delta_points_per_seed", "int8_f1_delta_points_per_seed",
            "train_step", "data"} <= set(res)
    for dtype in ("fp32", "int8"):
        assert {"build_s", "epoch_s", "speedup_vs_live", "nbytes", "bytes_per_token", "dev_f1_per_seed",
                "dev_f1"} <= set(res[dtype])
    assert res["encoder"] == "random:tiny" and res["smoke"] is True
    assert "demo_data" in res["data"]["train"]
    # the trainer's optimisation settings (TrainConfig defaults) are what ran
    assert res["train_step"] == {"optimizer": "bert_adam", "lr": 1e-3, "weight_decay": 0.01, "schedule": "bert_tf",
                                 "warmup": 0.1, "clip": 1.0, "clip_mode": "global", "autocast": None}
    assert res["live_epoch_s"] > 0 and 0 < res["int8_bytes_ratio"] < 1


def test_phase1_cache_data_root(tmp_path):
    """--data-root DIR finds conll2003/train.txt and dev.txt under DIR."""
    root = _demo_data_root(tmp_path)
    out = tmp_path / "p1.json"
    _run([str(BENCH / "bench_phase1_cache.py"), "--smoke", "--data-root", str(root), "--dtypes", "fp16",
          "--out", str(out)], tmp_path)
    res = _json(out)
    assert res["data"]["train"] == str(root / "conll2003" / "train.txt")
    assert set(res["fp16"]) >= {"build_s", "epoch_s", "nbytes"} and "dev_f1" not in res["fp16"]


@pytest.mark.parametrize("script, needle", [
    ("bench_phase1_cache.py", "--data-root"),
    ("bench_ddp.py", "--data-root"),
    ("reproduce.py", "--data-root"),
])
def test_no_hidden_data_default(tmp_path, script, needle):
    """Without data options (and no $STACKFT_DATA) a script stops and names them."""
    r = _run([str(BENCH / script)], tmp_path, expect=2, timeout=120)
    assert needle in r.stderr and "STACKFT_DATA" in r.stderr, r.stderr


def test_gather_pad_smoke(tmp_path):
    out = tmp_path / "gp.json"
    _run([str(BENCH / "bench_gather_pad.py"), "--smoke", "--json", str(out)], tmp_path, STACKFT_NO_EXT="1")
    res = _json(out)
    assert {"threads", "clock", "load_average", "cpu_us", "mean_tmax", "bytes_per_token", "int8_over_fp32"} <= set(res)
    assert {"python loop: slices, pad_sequence, .float()", "fallback (vectorised torch)"} <= set(res["cpu_us"])
    assert set(res["bytes_per_token"]) == {"fp32", "fp16", "bf16", "int8"}


@pytest.mark.parametrize("script, section, impls, extra", [
    ("bench_mp_matching.py", "mp_matching", "reference,materializing", ["--ops", "maxpool,matching"]),
    ("bench_highway_lstm.py", "highway_lstm", "reference,nn.LSTM", []),
])
def test_kernel_bench_quick(tmp_path, script, section, impls, extra):
    out = tmp_path / "k.json"
    _run([str(BENCH / script), "--quick", "--impls", impls, *extra, "--out", str(out)], tmp_path)
    res = _json(out)
    assert {"device", "torch", "python", "cpu_threads", "host_cpus", "benchmarks"} <= set(res)
    rows = res["benchmarks"][section]
    assert rows and {r["impl"] for r in rows} == set(impls.split(","))
    for r in rows:
        assert "error" not in r, r
        assert {"fwd_ms", "fwd_bwd_ms", "saved_mib"} <= set(r)


def test_heads_smoke(tmp_path):
    """bench_heads.py --smoke: tiny random encoder and shapes; the JSON has every row and ratio, and the
    cached phase-1 step of each head (a pair head included: the siamese cache layout)."""
    out = tmp_path / "heads.json"
    _run([str(BENCH / "bench_heads.py"), "--smoke", "--threads", "1", "--heads", "highway-lstm,bimpm-noctx",
          "--out", str(out)], tmp_path)
    res = _json(out)
    assert {"device", "torch", "shape", "encoder", "extension", "command", "results"} <= set(res) and res["smoke"]
    block = res["results"]["threads=1"]
    assert {"threads", "load_average_before", "load_average_after", "rows", "ratios"} <= set(block)
    rows = {r["name"]: r for r in block["rows"]}
    assert {"encoder", "encoder fwd (no grad)", "fc", "highway-lstm", "highway-lstm [torch]", "nn.LSTM 2x bi 16",
            "highway layer bi", "nn.LSTM 1x bi 16"} <= set(rows)
    for r in rows.values():
        assert r["ms"] > 0 and r["params"] > 0 and {"cpu_ms", "us_per_token", "vs_encoder", "gflop_fwd_bwd"} <= set(r)
    assert rows["highway-lstm"]["gflop_fwd_bwd"] > 0 and rows["nn.LSTM 2x bi 16"]["gflop_fwd_bwd"] > 0
    assert {"dx_ms", "phase2_step_est"} <= set(rows["highway-lstm"])
    assert "highway layer bi / nn.LSTM 1x bi" in block["ratios"]
    assert res["cached"]["dtype"] == "fp16" and res["cached"]["target_max"] == 1.15
    for name in ("fc", "highway-lstm", "bimpm-noctx"):
        r = rows[name]
        assert r["cached_ms"] > 0 and isinstance(r["cached_pass"], bool), r
        assert r["cached_over_head"] == pytest.approx(r["cached_ms"] / r["ms"])
    assert "cached_ms" not in rows["highway-lstm [torch]"] and "cached_ms" not in rows["encoder"]


def test_highway_gemm_smoke(tmp_path):
    """bench_highway_gemm.py --smoke: every GEMM of the layer on every path the extension can take here, a
    GFLOP/s and (with AVX-512) the packed kernel's speed-up per row, and the oneDNN RNN ceiling."""
    from stackft import _ext

    if _ext.disabled() or _ext.load() is None:
        pytest.skip("the stackft_C extension is disabled or does not build here")
    out = tmp_path / "gemm.json"
    _run([str(BENCH / "bench_highway_gemm.py"), "--smoke", "--threads", "1", "--out", str(out)], tmp_path)
    res = _json(out)
    assert res["smoke"] and res["shape"] == {"B": 4, "T": 6, "n_in": 24, "H": 16}
    rows = res["results"]["threads=1"]["rows"]
    gemms = {r["gemm"] for r in rows}
    assert gemms == {"x proj", "step fwd", "step bwd", "dW_h", "dW_h (dense 6H)", "dW_x", "dx",
                     "nn.LSTM fwd (oneDNN RNN)"}
    assert all(r["ms"] > 0 and r["gflop_s"] > 0 for r in rows)
    assert {r["calls"] for r in rows if r["gemm"].startswith("step")} == {6}
    paths = {r["path"] for r in rows}
    assert "mm" in paths
    if res["isa"] in ("avx512", "avx2"):  # the CPU's best ISA: its micro-kernel is timed first
        assert f"packed-{res['isa']}" in paths
        assert all(r["packed_speedup"] > 0 for r in rows if r["path"] != "onednn-rnn")
    if res["isa"] == "avx512":
        assert "packed-avx2" in paths  # timed beside it


def test_profile_highway_layer_smoke(tmp_path):
    """profile_highway_layer.py (the workload bench/README.md's perf shares come from) runs the C++ layer on
    the path it is given and says which GEMM paths ran."""
    from stackft import _ext

    if _ext.disabled() or _ext.load() is None:
        pytest.skip("the stackft_C extension is disabled or does not build here")
    r = _run([str(BENCH / "profile_highway_layer.py"), "--isa", "base", "--steps", "1"], tmp_path)
    assert "gate math base, per-step GEMMs blas" in r.stdout and "ms a step" in r.stdout


def test_reproduce_dry_run(tmp_path):
    r = _run([str(BENCH / "reproduce.py"), "--data-root", str(tmp_path / "nowhere"), "--dry-run",
              "--out", str(tmp_path / "runs"), "--seeds", "0,1"], tmp_path, timeout=120)
    plan = json.loads(r.stdout)
    assert {"scale", "data_root", "missing_data", "out", "seed_pairs", "base_config", "tasks"} <= set(plan)
    assert set(plan["tasks"]) == {"ner", "yahoo", "qqp"}
    assert plan["missing_data"]  # nothing under a folder that does not exist
    cell = plan["tasks"]["ner"]["cells"]["stack-and-finetune"]
    assert cell["runs"] == {"trial-i0-d0": "to train", "trial-i1-d1": "to train"}
    assert cell["config"]["strategy"] == "stack-and-finetune" and cell["config"]["head"] == "bilstm"
    assert plan["tasks"]["yahoo"]["cells"]["ensemble"]["members"]
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_reproduce_module_entry(tmp_path):
    """``python -m bench.reproduce`` from the repository root is the same entry point."""
    r = subprocess.run([sys.executable, "-m", "bench.reproduce", "--data-root", str(tmp_path), "--dry-run",
                        "--tasks", "ner", "--seeds", "0", "--out", str(tmp_path / "runs")],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(json.loads(r.stdout)["tasks"]) == {"ner"}


@pytest.mark.slow
def test_reproduce_smoke_scale(tmp_path):
    """Train the NER cells at --scale smoke with a tiny encoder, write the report; a rerun trains nothing
    (two invocations: ~13 s on an idle core)."""
    root = _demo_data_root(tmp_path)
    md, img, js = tmp_path / "results.md", tmp_path / "img", tmp_path / "reproduce.json"
    args = [str(BENCH / "reproduce.py"), "--scale", "smoke", "--tasks", "ner", "--seeds", "0", "--encoder",
            "random:tiny", "--data-root", str(root), "--out", str(tmp_path / "runs")]
    _run([*args, "--json", str(js), "--results-md", str(md), "--img-dir", str(img)], tmp_path)
    res = _json(js)
    assert {"scale", "command", "invocations", "machine", "seeds", "n_runs", "base_config", "gap_tol", "tasks",
            "timing", "encoder"} <= set(res)
    cells = res["tasks"]["ner"]["cells"]
    assert set(cells) == {"finetune-only", "stack-only", "stack-and-finetune"}
    assert all(c["n"] == 1 for c in cells.values())
    assert res["invocations"][-1]["runs_trained"] == 3
    assert md.read_text().startswith("# Reproduction") and sorted(p.name for p in img.iterdir()) == [
        "reproduce-smoke-ner-compute.png", "reproduce-smoke-ner-deltas.png", "reproduce-smoke-ner-time.png",
        "reproduce-smoke-ner.png"]
    _run([*args, "--no-report"], tmp_path)  # resumes: every run folder is finished
    inv = (tmp_path / "runs" / "smoke" / "invocations.jsonl").read_text().splitlines()
    assert json.loads(inv[-1])["runs_trained"] == 0

    # run folders lost (a fresh clone): the report keeps the runs the previous JSON recorded
    import shutil

    shutil.rmtree(tmp_path / "runs" / "smoke" / "ner" / "stack-only")
    report = [*args, "--report-only", "--json", str(js), "--results-md", str(md), "--img-dir", str(img)]
    _run(report, tmp_path)
    cells2 = _json(js)["tasks"]["ner"]["cells"]
    assert cells2["stack-only"]["n"] == 1 and cells2["stack-only"]["runs"][0]["recorded"] is True
    assert cells2["stack-only"]["runs"][0]["score"] == cells["stack-only"]["runs"][0]["score"]
    assert not cells2["finetune-only"]["runs"][0].get("recorded")  # its folder is still there
    assert "Runs kept from the previous record" in md.read_text()
    _run([*report, "--forget-recorded"], tmp_path)
    assert _json(js)["tasks"]["ner"]["cells"]["stack-only"]["n"] == 0


@pytest.mark.slow
def test_ddp_smoke(tmp_path):
    """1 process vs 2 gloo DDP processes of ``stackft train`` (two subprocess trainings: ~25 s)."""
    out = tmp_path / "ddp.json"
    _run([str(BENCH / "bench_ddp.py"), "--smoke", "--out", str(out)], tmp_path, timeout=600)
    res = _json(out)
    assert {"n_train", "batch_size", "nproc", "device", "1 process", "2 DDP processes", "ddp_over_one"} <= set(res)
    for key in ("1 process", "2 DDP processes"):
        assert {"wall_s", "phase_s", "sentences_per_s", "threads_per_process", "dev_f1"} <= set(res[key])


# -- the reproduction's resume rule is the trainer's ------------------------------------------

def _reproduce_run_module():
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce import run
    finally:
        sys.path.remove(str(BENCH))
    return run


def test_reproduce_resume_rule_is_the_library_rule(tmp_path):
    from stackft.config import TrainConfig
    from stackft.run_dir import RunDir

    run = _reproduce_run_module()
    cfg = TrainConfig(task="ner", output_dir=str(tmp_path / "a"))
    run_dir = RunDir(tmp_path / "a")
    run.check_same_config(run_dir.root, cfg)  # nothing saved yet
    run_dir.root.mkdir()
    saved = TrainConfig(task="ner", output_dir=str(tmp_path / "elsewhere"), cache="off", device="cpu",
                        eval_batch_size=7, progress=False).to_dict()
    run_dir.config.write_text(json.dumps(saved))
    assert set(cfg.changed_for_resume(saved)) == set()
    run.check_same_config(run_dir.root, cfg)  # how-to-run fields (TrainConfig.RESUMABLE_CHANGES) may change
    run_dir.config.write_text(json.dumps({**saved, "phase2_lr": 1e-4}))
    with pytest.raises(SystemExit, match="phase2_lr"):
        run.check_same_config(run_dir.root, cfg)


def test_reproduce_keeps_recorded_runs_only_for_unchanged_cells():
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce.plan import BASE, Cell
        from reproduce.report import _same_cell, recorded_runs
    finally:
        sys.path.remove(str(BENCH))
    cell = Cell("x", "stack-and-finetune", "bilstm", {"lstm_hidden": 128}, {"stop_mode": "gap_se"})
    rec = {"strategy": "stack-and-finetune", "head": "bilstm", "head_options": {"lstm_hidden": 128},
           "overrides": {"stop_mode": "gap_se"}, "members": [], "runs": [{"trial": "trial-i0-d0", "score": 1.0}]}
    assert _same_cell(cell, rec)
    assert not _same_cell(cell, {**rec, "overrides": {"stop_mode": "gap"}})
    assert not _same_cell(cell, {**rec, "pair_mode": "joint"})  # recorded since pair_mode was stored
    prev = {"scale": "mid", "base_config": BASE["mid"], "tasks": {"ner": {"cells": {"x": rec}}}}
    assert recorded_runs(prev, "mid", "ner")["x"][1]["trial-i0-d0"]["score"] == 1.0
    assert recorded_runs({**prev, "base_config": {**BASE["mid"], "phase2_lr": 1e-4}}, "mid", "ner") == {}
    assert recorded_runs(prev, "cpu", "ner") == {}


def test_recorded_runs_keep_their_exclusion_from_timings(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce.plan import BASE, Cell, TaskPlan
        from reproduce.report import collect, recorded_runs
    finally:
        sys.path.remove(str(BENCH))
    cell = Cell("finetune-only", "finetune-only", "fc")
    plan = TaskPlan("ner", "ner", "NER", "t.txt", None, None, None, None, cells=(cell,))
    runs = [{"trial": "trial-i0-d0", "score": 80.0, "wall_time": 10.0, "timed": False, "secondary": None,
             "phase_times": {"finetune": 10.0}},
            {"trial": "trial-i1-d1", "score": 81.0, "wall_time": 100.0, "timed": True, "secondary": None,
             "phase_times": {"finetune": 100.0}}]
    # a record written before runs carried their machine and untimed_why (the previous report's JSON)
    prev = {"scale": "mid", "base_config": BASE["mid"], "machine": {"cpu": "X"},
            "tasks": {"ner": {"cells": {"finetune-only": {"strategy": "finetune-only", "head": "fc", "runs": runs}}}}}
    rec = recorded_runs(prev, "mid", "ner")
    got = collect(plan, [(0, 0), (1, 1)], tmp_path, "f1", None, rec, "X")["finetune-only"]
    assert got["n"] == 2 and got["wall_time_min"] == 100.0  # the void 10 s is not the fastest run
    assert "excluded" in got["untimed"]["trial-i0-d0"]


def test_reproduce_target_picks_the_best_stacked_cell_and_reports_the_controls():
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce.report import best_stacked, compare, target_summary
    finally:
        sys.path.remove(str(BENCH))

    def cell(strategy, scores, wall):
        runs = [{"trial": f"trial-i{i}-d{i}", "score": s} for i, s in enumerate(scores)]
        return {"strategy": strategy, "runs": runs, "n": len(runs), "sd": 0.5, "wall_time_min": wall}

    cells = {"finetune-only": cell("finetune-only", [78.0, 77.5, 78.5], 100.0),
             "finetune-only-2x": cell("finetune-only", [82.0, 82.5, 82.0], 200.0),
             "finetune-only-headlr": cell("finetune-only", [79.0, 79.0, 79.0], 100.0),
             "snf-a": cell("stack-and-finetune", [80.0, 80.0, 80.5], 110.0),
             "snf-b": cell("stack-and-finetune", [79.0, 78.0, 79.0], 105.0),
             "stack-only-c": cell("stack-only", [90.0, 90.0, 90.0], 10.0)}  # not a stacked-and-finetuned cell
    comps = {}
    for n, c in cells.items():
        if n != "finetune-only":
            comps[n] = compare(cells["finetune-only"], c)
            comps[n + ":2x"] = compare(cells["finetune-only-2x"], c)
            comps[n + ":headlr"] = compare(cells["finetune-only-headlr"], c)
    r = best_stacked({"cells": cells, "comparisons": comps})
    assert r["cell"] == "snf-a"
    assert r["delta"] == pytest.approx((2.0 + 2.5 + 2.0) / 3)
    assert r["delta_headlr"] == pytest.approx((1.0 + 1.0 + 1.5) / 3)
    assert r["wall_ratio"] == pytest.approx(1.1) and r["ahead"] and not r["ahead_of_2x"]
    tasks = {k: {"title": k.upper(), "cells": cells, "comparisons": comps} for k in ("ner", "yahoo", "qqp")}
    text = "\n".join(target_summary({"tasks": tasks}))
    assert "Δ vs finetune-only-headlr" in text and "| NER | snf-a | 3 | +2.17 | 0.50 | 1.10 | -2.00 | +1.17 |" in text
    assert "**Target met**." in text
    tasks["qqp"] = {**tasks["qqp"], "cells": {**cells, "snf-a": cell("stack-and-finetune", [70.0, 70.0, 70.0], 110.0),
                                              "snf-b": cell("stack-and-finetune", [70.0, 70.0, 70.0], 110.0)}}
    qc = tasks["qqp"]["cells"]
    tasks["qqp"]["comparisons"] = {n: compare(qc["finetune-only"], c) for n, c in qc.items() if n != "finetune-only"}
    assert "behind finetune-only on qqp" in "\n".join(target_summary({"tasks": tasks}))
    # a higher delta over the budget loses to a lower one within it, and is named
    slow = {**cells, "snf-c": cell("stack-and-finetune", [82.0, 82.0, 82.0], 150.0)}
    sc = {**comps, "snf-c": compare(cells["finetune-only"], slow["snf-c"]),
          "snf-c:2x": compare(cells["finetune-only-2x"], slow["snf-c"])}
    r = best_stacked({"cells": slow, "comparisons": sc})
    assert (r["cell"], r["best_overall"]) == ("snf-a", "snf-c")
    text = "\n".join(target_summary({"tasks": {"ner": {"title": "NER", "cells": slow, "comparisons": sc}}}))
    assert "Higher Δ but over the budget: NER: snf-c" in text


def test_gap_rule_bench_smoke(tmp_path):
    """bench_gap_rule.py: the old rule fires on noise far more often than gap_se, which falls with z."""
    r = _run([str(BENCH / "bench_gap_rule.py"), "--sequences", "200"], tmp_path)
    res = json.loads(r.stdout)
    assert res["gap(tol=0.02)"] > 0.5
    assert res["gap_se(z=2.0)"] >= res["gap_se(z=2.5)"] >= res["gap_se(z=3.0)"]
    assert res["gap_se(z=2.5)"] < 0.15


def test_reproduce_ensemble_waits_for_its_members(tmp_path, capsys):
    """An ensemble whose member runs are not trained yet is skipped with a line, not a crash, and
    an invocation that names other cells (--cells) does not touch it."""
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce.plan import Cell, TaskPlan
        from reproduce.run import run_task
    finally:
        sys.path.remove(str(BENCH))
    from stackft.modeling.encoders import tiny_random_encoder

    data = tmp_path / "data"
    (data / "yahoo").mkdir(parents=True)
    rows = [f"{w} question number {i},{'a' if i % 2 else 'b'}" for i, w in enumerate(["why", "how"] * 10)]
    (data / "yahoo" / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    plan = TaskPlan("yahoo", "classification", "Y", "yahoo/train.csv", None, 4, None, None,
                    cells=(Cell("finetune-only", "finetune-only", "fc"),
                           Cell("ensemble", None, members=("finetune-only", "snf"))))
    enc = tiny_random_encoder()
    out = tmp_path / "out"
    assert run_task(plan, "smoke", [(0, 0)], data, out, enc, "cpu", cells={"ensemble"}) == 0
    assert "skipped, members not trained yet: finetune-only, snf" in capsys.readouterr().out
    assert not list((out / "yahoo" / "ensemble").glob("*.json"))
    assert run_task(plan, "smoke", [(0, 0)], data, out, enc, "cpu", cells={"finetune-only-2x"}) == 0
    assert "ensemble" not in capsys.readouterr().out


def test_round_robin_times_fast_entries_in_bursts():
    """An entry faster than ``burst_ms`` is called back to back and its per-call mean recorded; a slow
    one once per round (``bench/_util.time_round_robin``, shared by bench_heads and
    bench_highway_gemm)."""
    import time

    sys.path.insert(0, str(BENCH))
    try:
        import _util
    finally:
        sys.path.remove(str(BENCH))
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.03)

    import torch

    wall, cpu = _util.time_round_robin([("fast", fast), ("slow", slow)], rounds=3, warmup=1,
                                        dev=torch.device("cpu"), burst_ms=20.0)
    assert calls["slow"] == 4 and len(wall["slow"]) == 3 and min(wall["slow"]) >= 30.0
    assert calls["fast"] > 4 * 3 and len(wall["fast"]) == 3  # bursts of many calls in the timed rounds
    assert max(wall["fast"]) < 1.0  # per call, not per burst


def test_reproduce_confirms_the_picked_cell_on_fresh_seeds(tmp_path):
    """The picked cell is re-scored against finetune-only on seeds that chose nothing, from run
    folders or the previous record, and the target is judged there too."""
    sys.path.insert(0, str(BENCH))
    try:
        from reproduce.plan import BASE, Cell, TaskPlan
        from reproduce.report import compare, confirm, confirmation_summary, recorded_runs
    finally:
        sys.path.remove(str(BENCH))

    def runs(scores, seeds, wall):
        return [{"trial": f"trial-i{s}-d{s}", "score": x, "wall_time": wall, "secondary": None,
                 "phase_times": {"p": wall}} for s, x in zip(seeds, scores)]

    def cell(strategy, scores, seeds, wall):
        r = runs(scores, seeds, wall)
        return {"strategy": strategy, "head": "fc", "runs": r, "n": len(r), "sd": 0.5, "wall_time_min": wall}

    sel = {"finetune-only": cell("finetune-only", [78.0, 78.0, 78.0], [0, 1, 2], 100.0),
           "snf-a": cell("stack-and-finetune", [81.0, 81.0, 81.0], [0, 1, 2], 110.0),
           "snf-b": cell("stack-and-finetune", [79.0, 79.0, 79.0], [0, 1, 2], 100.0)}
    t = {"title": "NER", "cells": sel, "comparisons": {n: compare(sel["finetune-only"], c) for n, c in sel.items()
                                                       if n != "finetune-only"}}
    plan = TaskPlan("ner", "ner", "NER", "t.txt", None, None, None, None,
                    cells=(Cell("finetune-only", "finetune-only", "fc"), Cell("snf-a", "stack-and-finetune", "fc"),
                           Cell("snf-b", "stack-and-finetune", "fc")))
    fresh = [(5, 5), (6, 6), (7, 7)]
    # the fresh runs' folders are gone; the previous record holds them (snf-a ahead on 2 of 3 seeds only)
    prev = {"scale": "mid", "base_config": BASE["mid"], "tasks": {"ner": {"cells": {}, "confirmation": {"cells": {
        "finetune-only": {"strategy": "finetune-only", "head": "fc", "runs": runs([78.0, 78.0, 78.0], [5, 6, 7], 100.0)},
        "snf-a": {"strategy": "stack-and-finetune", "head": "fc", "runs": runs([79.0, 77.5, 79.0], [5, 6, 7], 115.0)},
        "snf-b": {"strategy": "stack-and-finetune", "head": "fc", "runs": runs([99.0] * 3, [5, 6, 7], 1.0)}}}}}}
    conf = confirm(plan, t, fresh, tmp_path, "f1", None, recorded_runs(prev, "mid", "ner", confirmation=True))
    assert conf["cell"] == "snf-a" and set(conf["cells"]) == {"finetune-only", "snf-a"}  # snf-b is not re-scored
    assert conf["seeds"] == [5, 6, 7] and conf["wall_ratio"] == pytest.approx(1.15)
    assert conf["comparison"]["diffs"] == pytest.approx([1.0, -0.5, 1.0])
    text = "\n".join(confirmation_summary({"tasks": {"ner": {**t, "confirmation": conf}}}, {}))
    assert "| NER | snf-a | 3 | 78.00 ± 0.00 | 78.50 ± 0.87 | +0.50 ± 0.87 (ahead on 2 of 3 seeds" in text
    assert "**On fresh seeds, target not met** (not every task has ≥ 3 paired seeds yet; ahead by more than" in text
    assert confirm(plan, t, [], tmp_path, "f1", None) is None


def test_reproduce_refuses_confirmation_seeds_among_its_own(tmp_path):
    r = _run([str(BENCH / "reproduce.py"), "--data-root", str(tmp_path), "--seeds", "0-4", "--confirm-seeds", "4-6",
              "--report-only"], tmp_path, expect=2)
    assert r.returncode == 2 and "overlaps --seeds" in r.stderr
