"""Fault injection: each fault -> the outcome stackft promises (issue #16, and #14's damaged checkpoints).

The outcome is either a clean error (one line naming the file or folder, exit code 2 from the CLI, no
traceback) or a result identical to the one without the fault. Processes are killed at named moments
with ``STACKFT_FAULT=<point>[@n]`` (:func:`stackft._fs.fault_point`: SIGKILL the n-th time the point is
reached) or by SIGKILLing a subprocess; files are damaged by hand.

===========================================  =================================================  ===========================================
fault                                        expected outcome                                   test
===========================================  =================================================  ===========================================
meta.json empty / garbage / not an object    CheckpointError naming RUN/best (eval: exit 2)     test_damaged_checkpoint[meta-*]
meta.json: max_length "128", no labels       CheckpointError naming the field                   test_damaged_checkpoint[max-length-*, ...]
meta.json: unknown head name                 CheckpointError "unknown head"                     test_damaged_checkpoint[unknown-head]
model.safetensors truncated                  CheckpointError "... bytes, meta.json records"     test_damaged_checkpoint[weights-truncated*]
model.safetensors: 4 bytes changed           CheckpointError "checksum mismatch"                test_damaged_checkpoint[weights-4-bytes-...]
weights of another label set                 CheckpointError (checksum, or "size mismatch")     test_damaged_checkpoint[weights-of-another-*]
non-finite weights (an old checkpoint)       CheckpointError "NaN or inf"                       test_damaged_checkpoint[non-finite-weights]
RUN/encoder/config.json garbage              CheckpointError naming RUN/encoder                 test_damaged_checkpoint[encoder-config-garbage]
meta.json or encoder/ missing                FileNotFoundError naming it                        test_damaged_checkpoint[*-missing]
a damaged ensemble member                    one line naming the member (ensemble: exit 2)      test_damaged_ensemble_member_is_one_line
last/state.pt or weights damaged, --resume   one line naming RUN/last (train: exit 2)           test_resume_from_a_damaged_last_is_one_line
a checkpoint of the previous version         loads, one CheckpointWarning                       test_checkpoint_of_the_previous_version_loads
SIGKILL between the two renames of last/     resume recovers the complete copy, says so,        test_kill_between_the_renames_of_last
                                             identical result
SIGKILL while the extension build lock is    the next build removes torch's stale lock file     test_ext_build_after_a_killed_build_does_not_hang
held                                         and builds (no hang)
extension build lock held by a live process  a message, then TimeoutError after the timeout     test_ext_build_lock_held_by_a_live_process_times_out
SIGKILL in the middle of a cache build       the next build removes the dead temp folder        test_cache_build_after_a_killed_build_cleans_up
cache build on a full disk (file-size        CacheWriteError (one line), no temp folder left    test_cache_build_on_a_full_disk
limit: the OS refuses the blocks)
cache larger than the free space             CacheWriteError before writing; CLI exit 2         test_cache_build_checks_free_space
missing data path (train, eval)              "data file not found: PATH", exit 2                test_missing_data_path_is_file_not_found
train into a folder that holds a run         refused, one line naming --resume and --overwrite  test_training_into_a_folder_with_a_run_is_refused
                                             (nothing touched)
--overwrite                                  that run's files deleted, other files kept         test_overwrite_replaces_the_run_and_keeps_other_files
a second training into a folder in use       one line naming the holder's pid, nothing written  test_a_run_folder_in_use_by_another_training_is_refused
SIGKILL while holding a run folder's lock    the next training takes it over, says so           test_the_lock_of_a_killed_training_is_taken_over
two processes building one feature cache     the second waits, then opens the first's build;    test_a_cache_being_built_elsewhere_is_waited_for_and_opened
                                             TimeoutError naming the holder after the timeout
===========================================  =================================================  ===========================================

Elsewhere: a resume never continues an earlier run's last/, other settings or other data, never
writes non-finite checkpoints, pauses at a phase boundary bit for bit, says what it found
(tests/training/test_resume_safety.py); header rows never become classes (tests/data/test_headers.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, write_keyword_csv
from safetensors.torch import load_file, save_model

from stackft import _fs
from stackft.config import TrainConfig
from stackft.training import checkpoint as ckpt
from stackft.training.trainer import Trainer, build_model, load_trained


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _cli(argv, capsys) -> tuple[int, str]:
    from stackft.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _one_line_error(rc: int, err: str, command: str, *names: str) -> str:
    lines = [ln for ln in err.replace("\r", "\n").splitlines()  # notes and progress bars aside
             if ln.strip() and not ln.startswith("stackft: ") and "%|" not in ln]
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"stackft {command}: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# -- a trained run to damage ----------------------------------------------------------------------------

RUN_CFG = dict(task="classification", strategy="stack-only", head="linear", stack_epochs=1, cache="off",
               progress=False, device="cpu", batch_size=8, eval_batch_size=32, evals_per_epoch=1, phase1_lr=1e-2)


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault-data")
    return write_keyword_csv(d / "train.csv", 24, seed=0), write_keyword_csv(d / "dev.csv", 8, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, csvs, make_tiny_encoder):
    out = tmp_path_factory.mktemp("trained") / "run"
    Trainer(TrainConfig(output_dir=str(out), train_path=csvs[0], dev_path=csvs[1], max_length=24, **RUN_CFG),
            encoder=make_tiny_encoder()).fit()
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


def _edit_meta(best: Path, **changes):
    meta = json.loads((best / "meta.json").read_text())
    for k, v in changes.items():
        if v is _DROP:
            meta.pop(k, None)
        else:
            meta[k] = v
    (best / "meta.json").write_text(json.dumps(meta))
    return meta


_DROP = object()


def _flip_bytes(f: Path, n: int = 4):
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(f: Path):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _foreign_weights(best: Path, n_labels: int = 3):
    """model.safetensors of a model with another label set (same encoder)."""
    meta = json.loads((best / "meta.json").read_text())
    from stackft.modeling.encoders import tiny_random_encoder

    model = build_model(TrainConfig.from_dict(meta["config"]), tiny_random_encoder(), n_labels)
    save_model(model, str(best / "model.safetensors"))


def _non_finite_weights(best: Path):
    tensors = load_file(str(best / "model.safetensors"))
    name = next(k for k in tensors if k.startswith("head."))
    tensors[name][0] = float("inf")
    from safetensors.torch import save_file

    save_file(tensors, str(best / "model.safetensors"))


# fault id -> (damage(run folder), the folder the error must name, regex the error must match)
DAMAGE = {
    "meta-empty": (lambda r: (r / "best" / "meta.json").write_text(""), "best", r"meta\.json is empty"),
    "meta-garbage": (lambda r: (r / "best" / "meta.json").write_text('{"config": {'), "best",
                     r"meta\.json is not valid JSON"),
    "meta-not-an-object": (lambda r: (r / "best" / "meta.json").write_text("[1, 2]"), "best", r"not an object"),
    "max-length-not-an-int": (lambda r: _edit_meta(r / "best", max_length="128"), "best",
                              r"'max_length' is '128', expected a positive integer"),
    "labels-missing": (lambda r: _edit_meta(r / "best", labels=_DROP), "best", r"'labels' is None"),
    "unknown-head": (lambda r: _edit_meta(r / "best", head="no-such-head"), "best", r"unknown head 'no-such-head'"),
    "unknown-head-in-config": (
        lambda r: _edit_meta(r / "best", config={**json.loads((r / "best" / "meta.json").read_text())["config"],
                                                 "head": "no-such-head"}), "best", r"unknown head 'no-such-head'"),
    "weights-truncated": (lambda r: _truncate(r / "best" / "model.safetensors"), "best",
                          r"model\.safetensors has \d+ bytes, meta\.json records \d+"),
    "weights-truncated-no-checksums": (
        lambda r: (_truncate(r / "best" / "model.safetensors"), _edit_meta(r / "best", files=_DROP)), "best",
        r"cannot load model\.safetensors"),
    "weights-4-bytes-changed": (lambda r: _flip_bytes(r / "best" / "model.safetensors"), "best",
                                r"checksum mismatch in model\.safetensors"),
    "weights-of-another-label-set": (lambda r: _foreign_weights(r / "best"), "best", r"model\.safetensors"),
    "weights-of-another-label-set-no-checksums": (
        lambda r: (_foreign_weights(r / "best"), _edit_meta(r / "best", files=_DROP)), "best",
        r"size mismatch .*another task, label set"),
    "non-finite-weights": (lambda r: (_non_finite_weights(r / "best"), _edit_meta(r / "best", files=_DROP)),
                           "best", r"NaN or inf"),
    "encoder-config-garbage": (lambda r: (r / "encoder" / "config.json").write_text("garbage"), "encoder",
                               r"cannot rebuild the encoder"),
    "encoder-missing": (lambda r: shutil.rmtree(r / "encoder"), "encoder", r"missing"),
    "meta-missing": (lambda r: (r / "best" / "meta.json").unlink(), "best", r"not a stackft checkpoint"),
}


@pytest.mark.parametrize("fault", list(DAMAGE))
def test_damaged_checkpoint(fault, run_copy, csvs, capsys):
    damage, folder, pattern = DAMAGE[fault]
    damage(run_copy)
    named = str(run_copy / folder)
    with pytest.raises((ckpt.CheckpointError, FileNotFoundError), match=pattern) as err:
        load_trained(run_copy / "best")
    assert named in str(err.value)
    rc, stderr = _cli(["eval", run_copy / "best", "--data", csvs[1]], capsys)
    _one_line_error(rc, stderr, "eval", named)


def test_damaged_ensemble_member_is_one_line(run_copy, trained, csvs, capsys):
    _flip_bytes(run_copy / "best" / "model.safetensors")
    rc, err = _cli(["ensemble", trained, run_copy, "--data", csvs[1]], capsys)
    _one_line_error(rc, err, "ensemble", str(run_copy / "best"), "checksum mismatch in model.safetensors")


@pytest.mark.parametrize("name", ["state.pt", "model.safetensors"])
def test_resume_from_a_damaged_last_is_one_line(run_copy, csvs, tiny_encoder_dir, capsys, name):
    _flip_bytes(run_copy / "last" / name)
    rc, err = _cli(["train", "--task", "classification", "--train-path", csvs[0], "--dev-path", csvs[1],
                    "--encoder", tiny_encoder_dir, "--device", "cpu", "--no-progress", "--output-dir", run_copy,
                    "--resume"], capsys)
    _one_line_error(rc, err, "train", str(run_copy / "last"), f"checksum mismatch in {name}")


def test_checkpoint_of_the_previous_version_loads(run_copy, csvs, capsys):
    for name in ("best", "last"):
        _edit_meta(run_copy / name, files=_DROP, run_id=_DROP, data=_DROP)
    ckpt._warned.clear()
    with pytest.warns(ckpt.CheckpointWarning, match="older stackft .*without verifying"):
        model, meta = load_trained(run_copy / "best")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ckpt.CheckpointWarning)  # once per process
        load_trained(run_copy / "last")
    rc, _ = _cli(["eval", run_copy / "best", "--data", csvs[1]], capsys)
    assert rc == 0


# -- kill between the two renames of last/ --------------------------------------------------------------


def _train_argv(enc_dir, csvs, out, *extra):
    return ["train", "--task", "classification", "--strategy", "stack-only", "--head", "linear",
            "--train-path", csvs[0], "--dev-path", csvs[1], "--max-length", "24", "--encoder", enc_dir,
            "--batch-size", "6", "--stack-epochs", "2", "--evals-per-epoch", "2", "--save-every", "1",
            "--cache", "off", "--device", "cpu", "--no-progress", "--output-dir", out, *extra]


def test_kill_between_the_renames_of_last(tmp_path, tiny_encoder_dir, csvs, capsys):
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert _cli(_train_argv(tiny_encoder_dir, csvs, ref), capsys)[0] == 0
    # the third save of last/ (global step 3) dies after the old copy went aside, before the new one went in
    argv = [sys.executable, "-m", "stackft", *map(str, _train_argv(tiny_encoder_dir, csvs, out))]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                       env=_env(STACKFT_FAULT="checkpoint.swap.last@3"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    left = sorted(p.name for p in out.iterdir() if p.name.startswith(".last."))
    assert not (out / "last").exists() and len(left) == 2, left  # .last.old-*, .last.tmp-* (complete)
    rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, out, "--resume"), capsys)
    assert rc == 0, err
    assert f"recovered {out / 'last'} from .last.tmp-" in err and "global step 3" in err
    assert not [p for p in out.iterdir() if p.name.startswith(".last.")]
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(out) == strip(ref)
    a, b = load_file(str(ref / "best" / "model.safetensors")), load_file(str(out / "best" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- the C++ extension's build lock ---------------------------------------------------------------------

# holds the build folder's lock as a build does (flock on stackft.lock, its pid inside); no torch import
_HOLD = r"""
import fcntl, os, sys, time
from pathlib import Path
d = Path(sys.argv[1])
d.mkdir(parents=True, exist_ok=True)
fd = os.open(d / "stackft.lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
if sys.argv[2] == "mid-build":
    (d / "lock").touch()  # torch's own lock file, as cpp_extension.load holds it while compiling
print("held", flush=True)
time.sleep(300)
"""

# torch's cpp_extension.load locking, without the compiler: what a build does with the lock files
_FAKE_TORCH_LOAD = r"""
import os
from torch.utils import cpp_extension
from torch.utils.file_baton import FileBaton
from stackft import _ext

def fake_load(name, sources, build_directory, **kw):
    baton = FileBaton(os.path.join(build_directory, "lock"))
    if baton.try_acquire():
        baton.release()
    else:
        baton.wait()  # torch polls every 100 ms, forever
    return os.path.join(build_directory, name + ".so")

cpp_extension.load = fake_load
_ext._build_info = lambda: "fake build"
"""


def _holder(root: Path, mode: str) -> subprocess.Popen:
    from stackft import _ext

    build_dir = root / _ext.build_key(_ext.want_cuda())
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(build_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        pytest.fail(f"the lock holder did not start: {proc.stderr.read()[-2000:]}")
    return proc


def test_ext_build_after_a_killed_build_does_not_hang(tmp_path):
    proc = _holder(tmp_path, "mid-build")
    proc.send_signal(signal.SIGKILL)  # killed mid-build: torch's lock file stays behind
    proc.wait()
    assert list(tmp_path.glob("*/lock"))
    code = _FAKE_TORCH_LOAD + "info = _ext.build(verbose=False)\nprint('built:', info.info)\n"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=_env(STACKFT_EXT_DIR=str(tmp_path)))
    except subprocess.TimeoutExpired:
        pytest.fail("the build after a killed build hangs on the stale lock file")
    assert r.returncode == 0 and "built: fake build" in r.stdout, r.stderr[-2000:]
    assert not list(tmp_path.glob("*/lock"))


def test_ext_build_lock_held_by_a_live_process_times_out(tmp_path, monkeypatch, capfd):
    from torch.utils import cpp_extension

    from stackft import _ext

    scope: dict = {}
    exec(_FAKE_TORCH_LOAD.replace("cpp_extension.load = fake_load", "").replace("_ext._build_info = ", "info = "),
         scope)
    monkeypatch.setattr(cpp_extension, "load", scope["fake_load"])  # no compiler either way
    monkeypatch.setattr(_ext, "_build_info", scope["info"])
    monkeypatch.setattr(_ext, "_state", {"loaded": None, "error": None, "warned": False})
    monkeypatch.setenv("STACKFT_EXT_DIR", str(tmp_path))
    monkeypatch.setenv("STACKFT_EXT_LOCK_TIMEOUT", "0.5")
    monkeypatch.delenv("STACKFT_NO_EXT", raising=False)
    proc = _holder(tmp_path, "idle")
    try:
        with pytest.raises(TimeoutError, match=rf"build lock .*stackft\.lock \(held by pid {proc.pid}\)"):
            _ext.build(verbose=False)
        assert "waiting for another process building the C++ extension" in capfd.readouterr().err
        with pytest.warns(RuntimeWarning, match="build lock"):
            assert _ext.load() is None  # load() falls back to PyTorch with a warning
    finally:
        proc.kill()
        proc.wait()
    assert _ext.build(verbose=False).info == "fake build"  # the holder gone, the lock is free


# -- feature caches -------------------------------------------------------------------------------------

_BUILD = r"""
import sys, torch
from stackft.cache.format import FeatureCache

class Enc(torch.nn.Module):
    def forward(self, ids, mask, types=None):
        return torch.ones(ids.shape[0], ids.shape[1], 64)

FeatureCache.build(Enc(), [[1, 2, 3, 4, 5, 6, 7, 8]] * 256, path=sys.argv[1], batch_size=16, fingerprint="f",
                   dtype="fp32", progress=False)
print("built")
"""


class _Enc(torch.nn.Module):
    def forward(self, ids, mask, types=None):
        return torch.ones(ids.shape[0], ids.shape[1], 64)


def _temps(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_cache_build_after_a_killed_build_cleans_up(tmp_path):
    from stackft.cache.format import FeatureCache

    path = tmp_path / "train-cache"
    r = subprocess.run([sys.executable, "-c", _BUILD, str(path)], capture_output=True, text=True, timeout=120,
                       env=_env(STACKFT_FAULT="cache.build@2"))
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not path.exists() and len(_temps(tmp_path)) == 1  # the dead build's full-size temp folder
    FeatureCache.build(_Enc(), [[1, 2, 3]] * 8, path=path, fingerprint="f", progress=False)
    assert _temps(tmp_path) == [] and FeatureCache.open(path, verify=True).fingerprint == "f"


_FULL_DISK = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
""" + _BUILD


def test_cache_build_on_a_full_disk(tmp_path):
    path = tmp_path / "train-cache"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True, timeout=120,
                       env=_env())
    assert r.returncode == 1 and "CacheWriteError" in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert f"cannot write the feature cache {path}" in last and "File too large" in last, last
    assert not path.exists() and _temps(tmp_path) == []


def test_cache_build_checks_free_space(tmp_path, monkeypatch, csvs, tiny_encoder_dir, capsys):
    from stackft.cache.format import CacheWriteError, FeatureCache

    monkeypatch.setattr(_fs, "disk_free", lambda folder: 10 << 20)
    with pytest.raises(CacheWriteError, match=rf"not enough free space for the feature cache c in {tmp_path}: it needs"):
        FeatureCache.build(_Enc(), [[1, 2, 3]] * 8, path=tmp_path / "c", fingerprint="f", progress=False)
    assert list(tmp_path.iterdir()) == []
    # the command line: one line, exit 2
    rc, err = _cli(["cache", "build", "--task", "classification", "--train-path", csvs[0], "--dev-path", csvs[1],
                    "--encoder", tiny_encoder_dir, "--device", "cpu", "--no-progress", "--cache", tmp_path / "caches"],
                   capsys)
    _one_line_error(rc, err, "cache build", "not enough free space", str(tmp_path / "caches"))


# -- missing data paths ---------------------------------------------------------------------------------


def test_missing_data_path_is_file_not_found(trained, tiny_encoder_dir, csvs, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["train", "--task", "classification", "--train-path", "bad/nothere.txt", "--encoder",
                    tiny_encoder_dir, "--device", "cpu", "--no-progress", "--output-dir", tmp_path / "out"], capsys)
    _one_line_error(rc, err, "train", "data file not found: bad/nothere.txt")
    rc, err = _cli(["eval", trained / "best", "--data", "nothere.txt"], capsys)
    _one_line_error(rc, err, "eval", "data file not found: nothere.txt")
    # an explicit hub id is looked up on the hub, whatever its name
    import stackft.data.hf as hf
    from stackft.data.pipeline import read_examples

    calls = []
    monkeypatch.setattr(hf, "load_hf_examples", lambda source, split, task, **kw: calls.append(source) or ["x"])
    assert read_examples("classification", "hf:nothere.txt") == ["x"] and calls == ["nothere.txt"]


# -- run folders: no silent replacement, one training at a time ------------------------------------------

# takes a lock as stackft._fs.exclusive_lock does, then idles ("idle") or dies holding it ("die")
_HOLD_RUN = r"""
import os, signal, sys, time
from stackft import _fs
with _fs.exclusive_lock(sys.argv[1]):
    print("held", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(300)
"""


def _hold(lock: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_RUN, str(lock), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    if proc.stdout.readline().strip() != "held":
        proc.kill()
        pytest.fail(f"the lock holder did not start: {proc.stderr.read()[-2000:]}")
    return proc


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_into_a_folder_with_a_run_is_refused(run_copy, tiny_encoder_dir, csvs, capsys, make_tiny_encoder):
    before = _snapshot(run_copy)
    rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, run_copy), capsys)
    line = _one_line_error(rc, err, "train", str(run_copy), "already holds a finished run", "--resume", "--overwrite")
    assert "best dev accuracy" in line
    assert _snapshot(run_copy) == before  # nothing touched
    with pytest.raises(ValueError, match="already holds a finished run"):  # the API says the same
        Trainer(TrainConfig(output_dir=str(run_copy), train_path=csvs[0], dev_path=csvs[1], max_length=24,
                            **RUN_CFG), encoder=make_tiny_encoder()).fit()
    assert _snapshot(run_copy) == before


def test_overwrite_replaces_the_run_and_keeps_other_files(run_copy, tiny_encoder_dir, csvs, capsys):
    (run_copy / "notes.txt").write_text("mine")
    stale = run_copy / "phase1_end"  # a checkpoint of an earlier two-phase run in the same folder
    shutil.copytree(run_copy / "best", stale)
    old_id = json.loads((run_copy / "run.json").read_text())["run_id"]
    rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, run_copy, "--overwrite"), capsys)
    assert rc == 0, err
    assert "--overwrite: deleted the previous run" in err
    assert (run_copy / "notes.txt").read_text() == "mine" and not stale.exists()
    assert json.loads((run_copy / "run.json").read_text())["run_id"] != old_id
    assert (run_copy / "summary.json").exists()
    with pytest.raises(SystemExit) as exit_:  # one or the other
        _cli(_train_argv(tiny_encoder_dir, csvs, run_copy, "--overwrite", "--resume"), capsys)
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_run_folder_in_use_by_another_training_is_refused(tmp_path, tiny_encoder_dir, csvs, capsys):
    from stackft.run_dir import RunDir

    out = tmp_path / "run"
    proc = _hold(RunDir(out).lock_file, "idle")
    try:
        rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, out), capsys)
        _one_line_error(rc, err, "train", f"{out} is in use", f"pid {proc.pid}")
        rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, out, "--resume"), capsys)  # --resume waits for no one
        _one_line_error(rc, err, "train", f"{out} is in use")
        assert sorted(p.name for p in out.iterdir()) == [".stackft-run.lock"]  # nothing written
    finally:
        proc.kill()
        proc.wait()
    rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, out), capsys)  # the holder gone, the folder is free
    assert rc == 0, err


def test_the_lock_of_a_killed_training_is_taken_over(tmp_path, tiny_encoder_dir, csvs, capsys):
    from stackft.run_dir import RunDir

    out = tmp_path / "run"
    proc = _hold(RunDir(out).lock_file, "die")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert RunDir(out).lock_file.read_text().startswith(f"{proc.pid} ")  # its pid is still in the file
    rc, err = _cli(_train_argv(tiny_encoder_dir, csvs, out), capsys)
    assert rc == 0, err
    assert f"the previous training (pid {proc.pid}" in err and "taking it over" in err
    assert not RunDir(out).lock_file.exists()  # released cleanly: deleted, nothing for the next one to report


def test_a_cache_being_built_elsewhere_is_waited_for_and_opened(tmp_path, monkeypatch, capfd):
    """Two trainings asking for one cache: the second waits for the first one's build, then opens it."""
    import threading

    from stackft.cache import format as cf

    path = tmp_path / "train-cache"
    builds = []
    real_build = cf.FeatureCache.build.__func__

    def counted(cls, *a, **k):
        builds.append(threading.current_thread().name)
        return real_build(cls, *a, **k)

    monkeypatch.setattr(cf.FeatureCache, "build", classmethod(counted))
    gate = threading.Event()
    lock = tmp_path / f".{path.name}.lock"

    def first():  # holds the cache's lock (as a build in another process would) and builds it
        with _fs.exclusive_lock(lock):
            gate.set()
            import time

            time.sleep(0.5)
            cf.FeatureCache.build(_Enc(), [[1, 2, 3]] * 8, path=path, fingerprint="f", progress=False)

    t = threading.Thread(target=first, name="first")
    t.start()
    gate.wait(10)
    cache = cf.get_or_build(path, _Enc(), [[1, 2, 3]] * 8, fingerprint="f", progress=False)
    t.join()
    assert builds == ["first"] and cache.fingerprint == "f"
    assert "waiting for another process building the feature cache" in capfd.readouterr().err
    # held for longer than the timeout: a one-line TimeoutError naming the lock
    monkeypatch.setenv("STACKFT_CACHE_LOCK_TIMEOUT", "0.3")
    proc = _hold(tmp_path / ".other-cache.lock", "idle")
    try:
        with pytest.raises(TimeoutError, match=rf"feature cache .*other-cache by pid {proc.pid}"):
            cf.get_or_build(tmp_path / "other-cache", _Enc(), [[1]], fingerprint="g", progress=False)
    finally:
        proc.kill()
        proc.wait()
