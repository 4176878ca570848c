"""A run killed with SIGKILL (mid-phase-1 or mid-phase-2) resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_keyword_csv
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    return write_keyword_csv(tmp_path_factory.mktemp("data") / "train.csv", 40, 3)


def _cmd(enc_dir, train_csv, out, *extra):
    return [sys.executable, "-m", "stackft", "train", "--task", "classification", "--strategy", "stack-and-finetune",
            "--head", "densenet", "--head-options", '{"channels": 16}', "--train-path", train_csv, "--dev-size", "8",
            "--encoder", str(enc_dir), "--batch-size", "4", "--phase1-epochs", "2", "--phase2-epochs", "2",
            "--stop-mode", "fixed", "--save-every", "1", "--cache", "off", "--device", "cpu", "--no-progress",
            "--output-dir", str(out), *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("TRITON_INTERPRET", None)
    return env


def _position(out: Path):
    try:
        return json.loads((out / "last" / "meta.json").read_text())["position"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _kill_when(cmd, out: Path, phase: int, min_step: int):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        pos = _position(out)
        if pos and pos["phase"] == phase and pos["phase_step"] >= min_step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return pos
        time.sleep(0.05)
    err = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
    proc.kill()
    pytest.fail(f"the run never reached phase {phase} step {min_step} (rc={proc.returncode})\n{err}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_encoder_dir, train_csv):
    out = tmp_path_factory.mktemp("ref")
    r = subprocess.run(_cmd(tiny_encoder_dir, train_csv, out), capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("phase,step", [(0, 3), (1, 2)], ids=["mid-phase-1", "mid-phase-2"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_encoder_dir, train_csv, reference, phase, step):
    out = tmp_path / "run"
    pos = _kill_when(_cmd(tiny_encoder_dir, train_csv, out), out, phase, step)
    assert not (out / "summary.json").exists(), "the run finished before it was killed"
    r = subprocess.run(_cmd(tiny_encoder_dir, train_csv, out, "--resume"), capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = json.loads((reference / "summary.json").read_text())
    got = json.loads((out / "summary.json").read_text())
    assert got["best"] == ref["best"], f"killed at {pos}"
    ref_lines = (reference / "metrics.jsonl").read_text().splitlines()
    got_lines = (out / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "time"} for x in lines]
    assert strip(got_lines) == strip(ref_lines)
    a, b = load_file(str(reference / "best" / "model.safetensors")), load_file(str(out / "best" / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
