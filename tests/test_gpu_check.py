"""bench/gpu_check.py on a CPU: its dry run (the plan and its plumbing), the budget rule, fail-soft
running, interruption, and the summary (targets, markdown) built from fake measurements."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import gpu_check as G  # noqa: E402

sys.path.remove(str(REPO / "bench"))

STEP_NAMES = ["env", "build-ext", "pytest-cuda", "gpu-sweep", "bench-highway", "bench-mp", "bench-gather",
              "bench-phase1", "e2e-bf16", "ddp-nccl", "pytest-kernels"]


def test_dry_run_lists_the_plan_and_checks_its_plumbing(tmp_path):
    out = tmp_path / "dry.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--dry-run-out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["ok"] and rep["dry_run"]
    assert [s["name"] for s in rep["steps"]] == STEP_NAMES
    for s in rep["steps"]:
        assert s["cmd"] and s["max_s"] >= s["min_s"] > 0, s
        assert rep["checks"][s["name"]]["ok"], rep["checks"][s["name"]]
        assert "{" not in s["cmd"], s["cmd"]  # every placeholder filled
    assert rep["budget_s"] == G.DEFAULT_BUDGET_S and rep["sum_min_s"] < rep["budget_s"]
    # every option of the bench/CLI steps exists in their --help
    assert all(not c["run"]["options_not_in_help"] for c in rep["checks"].values() if "options_not_in_help" in
               c.get("run", {}))
    # pytest -m cuda selects every CUDA-only test (and the sweep), and none is skipped without the marker
    audit = rep["marker_audit"]
    assert audit["ok"] and audit["cuda_skip_without_marker"] == [] and audit["sweep_tests"] > 0
    assert {"tests/kernels/test_gpu_sweep.py", "tests/kernels/test_highway_graphs.py", "tests/cache/test_gather_pad.py",
            "tests/cache/test_prefetch.py", "tests/cache/test_cache.py"} <= set(audit["cuda_test_files"])
    assert rep["checks"]["pytest-cuda"]["run"]["selected"] > 0
    st = rep["runner_selftest"]
    assert st["ok"] and st["times-out"]["status"] == "timeout" and st["fails"]["rc"] == 3
    assert rep["env_step"]["rc"] == 0 and rep["env_step"]["report"]["device"] == "cpu"
    assert rep["preflight"]["ok"] and rep["preflight"]["stackft_imports"]
    assert out.with_suffix(".md").read_text().startswith("# GPU check")
    assert "bench-highway" in r.stdout and "marker audit" in r.stdout


def test_slug_and_select():
    assert G.slug("NVIDIA H200") == "NVIDIA-H200"
    assert G.slug("NVIDIA GeForce RTX 4090 (24GB)/x") == "NVIDIA-GeForce-RTX-4090-24GB-x"
    assert [s.name for s in G.select(G.steps(), "bench-mp, env")] == ["env", "bench-mp"]  # plan order kept
    with pytest.raises(SystemExit, match="unknown"):
        G.select(G.steps(), "env,nope")


def _step(name, cmd, max_s=30.0, min_s=1.0, optional=False, **kw):
    return G.Step(name, f"test step {name}", cmd, max_s=max_s, min_s=min_s, expected_s=min_s, optional=optional, **kw)


def test_timeout_reserves_the_later_minimums_and_skips_what_cannot_fit():
    a, b, c = _step("a", [], max_s=100, min_s=10), _step("b", [], min_s=20), _step("c", [], min_s=30, optional=True)
    spare = G.FINAL_RESERVE_S
    assert G.timeout_for(a, [b, c], 200 + spare) == 100  # capped by max_s
    assert G.timeout_for(a, [b, c], 60 + spare) == 40  # leaves b its 20 s; c is optional: nothing reserved
    assert G.timeout_for(a, [b], 25 + spare) == 10  # squeezed to its own minimum
    assert G.timeout_for(a, [b], 9 + spare) is None  # not even that: skipped
    sched = G.schedule([a, b, c], 45 + spare, took=lambda s: s.min_s)
    assert [r["timeout_s"] for r in sched] == [25, 30, None]  # c gets nothing once a and b took theirs


def _args(tmp_path, budget=60.0):
    return type("A", (), dict(steps=None, budget_s=budget, out_dir=str(tmp_path / "res"), copy_to=str(tmp_path / "out"),
                              no_cuda_check=True))()


def test_run_is_fail_soft_and_writes_results_after_every_step(tmp_path, monkeypatch):
    py = sys.executable
    plan = [_step("ok", [py, "-c", "print('hello')"]),
            _step("fails", [py, "-c", "import sys; print('boom'); sys.exit(2)"]),
            _step("hangs", [py, "-c", "import time; time.sleep(60)"], max_s=1.5, min_s=1.0),
            _step("after", [py, "-c", "import json, sys; json.dump({'x': 1}, open(sys.argv[1], 'w'))", "{art}/a.json"],
                  artefact="a.json"),
            _step("too-big", [py, "-c", "pass"], min_s=10_000, optional=True)]
    monkeypatch.setattr(G, "steps", lambda: plan)
    rc = G.run(_args(tmp_path))
    assert rc == 1
    res = json.loads((tmp_path / "res" / "gpu-cpu.json").read_text())
    status = {s["name"]: s["status"] for s in res["steps"]}
    assert status == {"ok": "ok", "fails": "failed", "hangs": "timeout", "after": "ok", "too-big": "skipped"}
    assert res["results"]["after"] == {"x": 1} and res["complete"] and not res["interrupted"]
    rec = {s["name"]: s for s in res["steps"]}
    assert rec["fails"]["rc"] == 2 and "boom" in rec["fails"]["log_tail"] and rec["hangs"]["wall_s"] < 15
    assert "budget" in rec["too-big"]["reason"]
    log = (tmp_path / "res" / "gpu-cpu.log").read_text()
    assert "===== fails: failed rc=2" in log and "hello" in log
    md = (tmp_path / "res" / "gpu-cpu.md").read_text()
    assert "| hangs | timeout |" in md and "## Not measured in this run" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-cpu.json", "gpu-cpu.log", "gpu-cpu.md"]


def test_sigterm_stops_the_running_step_and_keeps_what_was_measured(tmp_path, monkeypatch):
    py = sys.executable
    started = tmp_path / "long-started"
    plan = [_step("first", [py, "-c", "print('measured')"]),
            _step("long", [py, "-c", "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(120)", str(started)],
                  max_s=100),
            _step("never", [py, "-c", "pass"])]
    monkeypatch.setattr(G, "steps", lambda: plan)
    before = signal.getsignal(signal.SIGTERM)
    done = threading.Event()

    def stop_when_long_runs():
        while not done.is_set():
            if started.exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            done.wait(0.1)

    killer = threading.Thread(target=stop_when_long_runs)
    killer.start()
    try:
        rc = G.run(_args(tmp_path, budget=300))
    finally:
        done.set()
        killer.join()
    assert rc == 130
    res = json.loads((tmp_path / "res" / "gpu-cpu.json").read_text())
    status = {s["name"]: s["status"] for s in res["steps"]}
    assert status == {"first": "ok", "long": "interrupted", "never": "not run"} and res["interrupted"]
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are given back


def test_targets_and_markdown_from_fake_measurements():
    results = {
        "bench-mp": {"benchmarks": {"mp_matching": [
            {"op": "matching", "impl": "triton", "dtype": "float32", "T": 64, "d": 768, "fwd_bwd_ms": 2.0,
             "speedup_vs_mat": 6.0, "mem_ratio_vs_mat": 40.0},
            {"op": "matching", "impl": "triton", "dtype": "bfloat16", "T": 128, "d": 768, "fwd_bwd_ms": 3.0,
             "speedup_vs_mat": 4.0, "mem_ratio_vs_mat": 30.0}]}},
        "bench-highway": {"benchmarks": {"highway_lstm": [
            {"impl": "triton", "T": 128, "H": 768, "speedup_vs_ref": 5.0, "ratio_vs_lstm": 1.5, "speedup_vs_loop": 2.5,
             "launches": 40}]}},
        "bench-gather": {"cuda": {"gather_pad bf16_vs_copy": 0.6, "gather_pad bf16 max_len_vs_copy": 0.75,
                                  "gather_pad int8_vs_copy": 0.5}},
        "bench-phase1": {"gpu_placement": {"device, prefetch 0": 1.0, "pinned, prefetch 0": 1.4,
                                           "pinned, prefetch 2": 1.05}},
        "pytest-cuda": {"tests": 10, "failures": 1, "errors": 0, "skipped": 2, "passed": 7, "failed_ids": ["t::x"]},
    }
    got = {t["id"]: t["met"] for t in G.targets(results)}
    assert got["mp_speed"] is False  # 4x at bf16
    assert got["mp_memory"] is True
    assert got["highway_vs_eager"] is True and got["highway_vs_cudnn"] is True and got["highway_graphs"] is True
    assert got["gather_bf16"] is True  # the max_len path
    assert got["gather_int8"] is False
    assert got["prefetch_overlap"] is True
    assert got["pytest-cuda"] is False
    assert got["bf16_training"] is None and got["gpu-sweep"] is None and got["nccl_ddp"] is None
    summary = {"device": "NVIDIA H200", "command": "gpu_check.py", "started": "now", "wall_s": 12.0, "budget_s": 465,
               "steps": [{"name": "bench-mp", "what": "w", "status": "ok", "wall_s": 3.0, "timeout_s": 100}],
               "results": results, "targets": G.targets(results)}
    md = G.markdown(summary)
    assert md.startswith("# GPU check: NVIDIA H200") and "## bench-highway" in md
    assert "| matching | triton | float32 | 64 | 768 |" in md
    assert "`t::x`" in md and "## Not measured in this run" in md and "bf16 training end to end" in md
