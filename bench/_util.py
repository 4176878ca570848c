"""Shared benchmark helpers: timing, peak memory, result files.

* :func:`time_ms`: ``triton.testing.do_bench`` (median, warm-up, L2 flush) on CUDA; on CPU, where
  do_bench needs a CUDA device, a ``time.perf_counter`` median over ``rep`` runs after ``warmup``.
* :func:`peak_mib`: on CUDA, ``max_memory_allocated`` above the baseline (exact, allocator-level);
  on CPU, the process RSS high-water mark above the starting RSS (``/proc/self/clear_refs``
  reset, Linux only): approximate, since the allocator may reuse freed pages.
* :func:`saved_mib`: what autograd keeps for backward (exact on any device) -- the number that
  tells materialising implementations apart on CPU, where peak_mib is only approximate.
* :func:`time_round_robin`: several callables timed in turn, round after round (side-by-side
  ratios under one load), fast ones in back-to-back bursts.
* Inputs rotate: callers pass a list of input sets and each call uses the next one, so repeated
  calls do not hit the same cache lines.
* :func:`add_data_args` / :func:`conll_paths`: where the CoNLL-2003 benches read their data
  (``--train``/``--dev``, ``--data-root`` or ``$STACKFT_DATA``, or the bundled ``--demo`` excerpt);
  there is no default outside the repository.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
DATA_ENV = "STACKFT_DATA"
CONLL_TRAIN, CONLL_DEV = "conll2003/train.txt", "conll2003/dev.txt"  # under a data root


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def sync(dev: torch.device | None = None) -> None:
    """Wait for ``dev``'s queued work (a no-op off CUDA); ``None``: the current CUDA device if there is one."""
    if (dev is None and torch.cuda.is_available()) or (dev is not None and dev.type == "cuda"):
        torch.cuda.synchronize()


def rotating(make, n: int = 3):
    """Call ``make()`` n times; return a zero-argument function yielding the sets in turn."""
    sets = [make() for _ in range(n)]
    it = itertools.cycle(sets)
    return lambda: next(it)


def time_round_robin(entries: list[tuple[str, object]], rounds: int, warmup: int,
                     dev: torch.device | None = None, burst_ms: float = 50.0):
    """Every entry once per round, ``warmup`` untimed rounds first -> (wall ms, process CPU ms) lists.

    Round robin puts every entry under the same machine load, so ratios between entries of one
    call are side by side. An entry whose last warmup call took less than ``burst_ms`` is timed as
    a burst of back-to-back calls (``ceil(burst_ms / warmup time)`` of them; the per-call mean is
    recorded): a training loop runs such a step after itself, with its weights and inputs in
    cache, while a single call timed right after a large one measures a cold cache (the fc head:
    1.3 ms single, 0.55 ms in bursts). Larger entries are timed one call per round. With
    ``warmup=0`` every entry is timed one call per round.

    The CPU time (``time.process_time``: all threads of this process) is what a run costs when the
    host is shared: with one thread it excludes the time other processes held the core; with two
    it includes OpenMP's spin-waiting, so it is no speed measure there.
    """
    dev = dev if dev is not None else torch.device("cpu")
    wall = {name: [] for name, _ in entries}
    cpu = {name: [] for name, _ in entries}
    reps = {name: 1 for name, _ in entries}
    for r in range(warmup + rounds):
        for name, fn in entries:
            n = reps[name]
            sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            sync(dev)
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                wall[name].append((t1 - t0) * 1e3 / n)
                cpu[name].append((c1 - c0) * 1e3 / n)
            elif r == warmup - 1:
                reps[name] = max(1, math.ceil(burst_ms / max((t1 - t0) * 1e3 / n, 1e-3)))
    return wall, cpu


def cpu_setup() -> None:
    """CPU runs: one intra-op thread (on a small shared host, OpenMP barriers waiting for a
    descheduled sibling thread turn 2 ms ops into 1 s outliers) and no background compile workers."""
    if not torch.cuda.is_available():
        import torch._inductor.config as inductor_config

        torch.set_num_threads(1)
        inductor_config.compile_threads = 1


def time_ms(fn, warmup: int = 25, rep: int = 100, cpu_reps: int = 15) -> dict:
    """``{"median": ms, "low": ms}`` of ``fn()``. On CUDA: do_bench (``warmup``/``rep`` are its
    budgets in ms), low = 20th percentile. On CPU: ``cpu_reps`` timed runs after three untimed ones
    (torch.compile compiles in those), low = minimum."""
    if torch.cuda.is_available():
        import triton.testing

        med, low, _ = triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
        return {"median": float(med), "low": float(low)}
    for _ in range(3):
        fn()
    times = []
    for _ in range(cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": statistics.median(times), "low": min(times)}


def max_err(fn, ref_fn, inputs) -> float:
    """Largest |fn - ref_fn| over all outputs on one input set (a sanity check of what is timed)."""
    args = inputs()
    with torch.no_grad():
        a, b = fn(*args), ref_fn(*args)
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


def measure(row: dict, fn, inputs) -> dict:
    """Fill ``row`` with fwd/fwd+bwd times, saved-for-backward and peak memory of ``fn``."""
    row["fwd_ms"] = time_ms(fwd(fn, inputs))["median"]
    t = time_ms(fwd_bwd(fn, inputs))
    row["fwd_bwd_ms"], row["fwd_bwd_low_ms"] = t["median"], t["low"]
    row["saved_mib"] = saved_mib(fwd(fn, inputs))
    row["peak_mib"] = peak_mib(fwd_bwd(fn, inputs))
    return row


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def peak_mib(fn) -> float | None:
    """Peak extra memory of one ``fn()`` call in MiB (see the module docstring)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS")
        fn()
        return max(0, _rss_kib("VmHWM") - base) / 1024
    except OSError:
        return None


def saved_mib(fn) -> float:
    """MiB of distinct storages autograd saves for backward during ``fn()`` (activation memory;
    any device, exact). Inputs and parameters that get saved are included."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values()) / 2**20


def fwd(fn, inputs):
    """A closure running ``fn`` on the next input set (autograd on: a training forward)."""
    return lambda: fn(*inputs())


def fwd_bwd(fn, inputs):
    """A closure that runs ``fn`` on the next input set, sums every output and takes the
    gradients w.r.t. every input that requires grad and every tensor in ``fn.params`` (a module's
    own weights) via ``autograd.grad``: no ``.grad`` build-up between runs."""
    def run():
        args = inputs()
        outs = fn(*args)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        loss = sum(o.float().sum() for o in outs)
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        torch.autograd.grad(loss, leaves + list(getattr(fn, "params", [])), allow_unused=True)
    return run


def save(section: str, rows: list[dict], mode: str = "full", path=None) -> Path:
    """Merge ``rows`` under ``section`` into ``bench/results/<device>.json`` (mode "full") or
    ``bench/results/<device>-<mode>.json`` (e.g. "quick": tiny plumbing shapes), or into ``path``."""
    if path is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", device_name()).strip("-")
        path = RESULTS / (f"{name}.json" if mode == "full" else f"{name}-{mode}.json")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(device=device_name(), torch=torch.__version__, python=platform.python_version(),
                cpu_threads=torch.get_num_threads(), host_cpus=os.cpu_count())
    data.setdefault("benchmarks", {})[section] = rows
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def result_path(explicit, name: str, smoke: bool = False) -> Path:
    """Where a bench writes its JSON: ``explicit`` (``--out``) if given, else ``bench/results/NAME``
    (a smoke run: the temp folder's ``stackft-bench/NAME``, never the results of record)."""
    if explicit:
        return Path(explicit)
    import tempfile

    return (Path(tempfile.gettempdir()) / "stackft-bench" if smoke else RESULTS) / name


def write_json(path, data: dict) -> Path:
    """Write a bench's JSON result (folders made as needed) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return path


def table(rows: list[dict], cols: list[str]) -> str:
    """A Markdown table of ``rows`` restricted to ``cols``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "—" if v is None else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def add_shape_args(ap, dims: tuple[str, ...]) -> None:
    """``--B N`` and ``--T/--d/--H/... LIST`` (comma lists) overriding a bench's shape table, plus
    ``--dtypes float32,bfloat16``: a shorter matrix (e.g. within ``bench/gpu_check.py``'s budget)."""
    g = ap.add_argument_group("shape overrides (default: the mode's table)")
    g.add_argument("--B", type=int, default=None, help="batch size")
    for dim in dims:
        g.add_argument(f"--{dim}", default=None, help=f"comma list of {dim} values")
    g.add_argument("--dtypes", default=None, help="comma list, e.g. float32,bfloat16")


def apply_shape_args(cfg: dict, args, dims: tuple[str, ...]) -> dict:
    """``cfg`` with the overrides of :func:`add_shape_args` applied (a copy)."""
    cfg = dict(cfg)
    if args.B is not None:
        cfg["B"] = args.B
    for dim in dims:
        value = getattr(args, dim)
        if value:
            cfg[dim] = [int(v) for v in value.split(",")]
    if args.dtypes:
        bad = [d for d in args.dtypes.split(",") if not isinstance(getattr(torch, d, None), torch.dtype)]
        if bad:
            raise SystemExit(f"--dtypes: not torch dtypes: {bad}")
        cfg["dtypes"] = args.dtypes.split(",")
    return cfg


def launch_calls(fn) -> int | None:
    """Host-side launch calls (kernels, async copies/memsets, graph launches) that one ``fn()`` makes,
    counted by the torch profiler; None on CPU or when the profiler does not report them."""
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    names = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch",
             "cudaMemcpyAsync", "cudaMemsetAsync"}
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    n = sum(e.count for e in prof.key_averages() if e.key in names)
    return n or None


def add_data_args(ap) -> None:
    """``--train``/``--dev``/``--data-root``/``--demo``: the CoNLL-2003 files a bench reads."""
    g = ap.add_argument_group("data (CoNLL-2003 train/dev; no default outside the repository)")
    g.add_argument("--train", default=None, help="CoNLL-2003 training file")
    g.add_argument("--dev", default=None, help="CoNLL-2003 dev file")
    g.add_argument("--data-root", default=None,
                   help=f"folder holding {CONLL_TRAIN} and {CONLL_DEV} (default: ${DATA_ENV} when set)")
    g.add_argument("--demo", action="store_true",
                   help="the CoNLL-2003 excerpt bundled with stackft (stackft/demo_data: 1,200 train / 300 dev)")


def conll_paths(ap, args) -> tuple[str, str]:
    """(train, dev) from :func:`add_data_args`'s options; ``ap.error`` naming them all when missing.

    Order: ``--demo``; ``--train`` and ``--dev``; ``--data-root``; ``$STACKFT_DATA``.
    """
    if args.demo:
        from stackft.studies.demo import demo_paths

        return demo_paths()
    if args.train or args.dev:
        if not (args.train and args.dev):
            ap.error("give both --train and --dev")
        paths = (args.train, args.dev)
    else:
        root = args.data_root or os.environ.get(DATA_ENV)
        if not root:
            ap.error(f"no data: pass --train PATH --dev PATH, or --data-root DIR (or set {DATA_ENV}) with "
                     f"{CONLL_TRAIN} and {CONLL_DEV} under it, or --demo for the bundled CoNLL-2003 excerpt")
        paths = (str(Path(root) / CONLL_TRAIN), str(Path(root) / CONLL_DEV))
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        ap.error(f"data file(s) not found: {', '.join(missing)} (see --train/--dev, --data-root, ${DATA_ENV}, --demo)")
    return paths
