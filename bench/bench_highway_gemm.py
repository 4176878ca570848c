"""GFLOP/s of the C++ highway-LSTM layer's fp32 GEMMs on each CPU path, side by side (issue #12).

The layer (``csrc/highway_lstm.cpp``, one direction, B·T rows, in → 6H input gates, H → 5H
recurrent gates) runs six GEMMs; each is timed here on the paths the extension can take,
through ``stackft.kernels.ops.highway_lstm_cpp.mm``:

* ``packed-avx512`` / ``packed-avx2``: the extension's micro-kernels on a packed copy of B
  (``csrc/packed_gemm.cpp``; the layer runs each with the gate-math path of the same ISA, and BLAS
  on the base path, bench/README.md);
* ``onednn``: oneDNN's matmul (``at::native::mkldnn_matmul``), what the large GEMMs used before;
* ``mm``: ``at::mm`` (MKL's or OpenBLAS's sgemm), what the per-step GEMMs and dW_h used before;

and, as the speed ceiling, oneDNN's fused LSTM (``nn.LSTM`` forward under ``no_grad``, counted as
2·B·T·4H·(in + H) FLOPs), the kernel the issue's ``nn.LSTM`` comparison runs.

Shapes (default B=32, T=64, in=384, H=256), with the operand layouts the layer really uses:

* ``x proj``: ``x [B·T, in] @ W_xᵀ`` (B a transposed view), once per call;
* ``step fwd``: ``h_t [B, H] @ W_hᵀ`` with h_t one step of ``[B, T, H]`` (rows T·H apart), T per call
  (timed as T back-to-back GEMMs, B packed once, as in the layer);
* ``step bwd``: ``dG_t [B, 5H] @ W_h`` with dG_t one step of ``[B, T, 6H]``, T per call;
* ``dW_h``: ``dG[:, :5H]ᵀ @ h_prev`` (A a transposed strided view); ``dW_h (dense 6H)``: the same
  product over the whole dense ``dG`` (6H rows, the carry block's H dropped after), what the layer
  runs when oneDNN is there (its FLOPs counted as computed); ``dW_x``: ``dGᵀ @ x``; ``dx``: ``dG @ W_x``.

Every (shape, path) is timed round-robin (``_util.time_round_robin``, as bench_heads: one warm-up
round, calls under 50 ms in back-to-back bursts), ``--rounds`` rounds, median and best of each; one JSON
``bench/results/highway-gemm-cpu.json`` and a Markdown table per thread count.

    python bench/bench_highway_gemm.py                  # 1 and 2 threads, ~1 min
    python bench/bench_highway_gemm.py --threads 1 --rounds 9
    python bench/bench_highway_gemm.py --smoke --out /tmp/gemm.json    # seconds, numbers meaningless
    # an AVX2-only CPU's paths, emulated on an AVX-512 one (oneDNN and MKL held to AVX2):
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python bench/bench_highway_gemm.py --packed avx2 \
        --out bench/results/highway-gemm-cpu-avx2.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as U  # noqa: E402
import torch  # noqa: E402

from stackft import _ext  # noqa: E402
from stackft.kernels.ops import highway_lstm_cpp as C  # noqa: E402

FULL = dict(B=32, T=64, n_in=384, H=256, rounds=5)
SMOKE = dict(B=4, T=6, n_in=24, H=16, rounds=1)
# settings that change which ISA the libraries use, recorded with the results (ONEDNN_MAX_CPU_ISA=AVX2 and
# MKL_ENABLE_INSTRUCTIONS=AVX2 with --packed avx2 time an AVX2-only CPU's paths on an AVX-512 one)
ENV_KEYS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
BURST_MS = 50.0  # calls faster than this are timed in back-to-back bursts (U.time_round_robin)


def operands(B: int, T: int, n_in: int, H: int, g: torch.Generator) -> dict:
    """name -> (a, b, calls per layer call): the GEMMs of one direction, in the layer's layouts."""
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x, W_x, W_h = r(B * T, n_in), r(6 * H, n_in), r(5 * H, H)
    h_prev, dG = r(B, T, H), r(B, T, 6 * H)
    dG2 = dG.view(B * T, 6 * H)
    return {
        "x proj": (x, W_x.t(), 1),
        "step fwd": (h_prev[:, T // 2], W_h.t(), T),
        "step bwd": (dG[:, T // 2, : 5 * H], W_h, T),
        "dW_h": (dG2[:, : 5 * H].t(), h_prev.reshape(B * T, H), 1),
        "dW_h (dense 6H)": (dG2.t(), h_prev.reshape(B * T, H), 1),
        "dW_x": (dG2.t(), x, 1),
        "dx": (dG2, W_x, 1),
    }


def backends(packed: str = "auto") -> list[str]:
    """The paths to time: the packed micro-kernel (``packed``: "auto" = the best this CPU runs, or "avx512" /
    "avx2"), on an AVX-512 CPU in auto mode the AVX2 micro-kernel beside it, then oneDNN and at::mm."""
    probe = torch.ones(2, 2)

    def runs(b: str) -> bool:
        try:
            C.mm(probe, probe, b)
            return True
        except RuntimeError:
            return False

    want = ["packed-avx512", "packed-avx2"] if packed == "auto" else [f"packed-{packed}"]
    out = [b for b in want if runs(b)]
    if packed != "auto" and not out:
        raise SystemExit(f"bench_highway_gemm: this CPU cannot run the {packed} micro-kernel")
    return out + [b for b in ("onednn", "mm") if runs(b)]


def run(cfg: dict, threads: int, packed: str = "auto") -> dict:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    ops = operands(cfg["B"], cfg["T"], cfg["n_in"], cfg["H"], g)
    paths = backends(packed)
    lstm = torch.nn.LSTM(cfg["n_in"], cfg["H"], batch_first=True)
    xs = torch.randn(cfg["B"], cfg["T"], cfg["n_in"], generator=g)
    lstm_flop = 2 * cfg["B"] * cfg["T"] * 4 * cfg["H"] * (cfg["n_in"] + cfg["H"])

    def lstm_fwd():
        with torch.no_grad():
            lstm(xs)

    jobs = {(name, p): (lambda a=a, b=b, p=p, reps=reps: C.mm(a, b, p, reps))
            for name, (a, b, reps) in ops.items() for p in paths}
    jobs[("nn.LSTM fwd (oneDNN RNN)", "onednn-rnn")] = lstm_fwd
    keys = list(jobs)
    wall, _ = U.time_round_robin([(str(i), jobs[k]) for i, k in enumerate(keys)], cfg["rounds"], warmup=1,
                                 burst_ms=BURST_MS)
    times = {k: wall[str(i)] for i, k in enumerate(keys)}
    rows = []
    for (name, p), ts in times.items():
        if p == "onednn-rnn":
            flop, per = lstm_flop, 1
        else:
            a, b, per = ops[name]
            flop = 2 * a.shape[0] * a.shape[1] * b.shape[1] * per
        med = statistics.median(ts)
        rows.append({"gemm": name, "path": p, "M,K,N": None if p == "onednn-rnn" else
                     f"{a.shape[0]},{a.shape[1]},{b.shape[1]}", "calls": per, "ms": med, "low_ms": min(ts),
                     "gflop": flop / 1e9, "gflop_s": flop / 1e9 / (med / 1e3), "raw_ms": ts})
    first = paths[0] if paths and paths[0].startswith("packed-") else None  # the best micro-kernel timed
    for name in ops:  # speed-up of that micro-kernel over the others, same shape, same run
        by = {r["path"]: r["ms"] for r in rows if r["gemm"] == name}
        for r in rows:
            if r["gemm"] == name and first in by:
                r["packed_speedup"] = r["ms"] / by[first]
    return {"threads": threads, "load_average": os.getloadavg(), "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="intra-op thread counts, comma list (default 1,2)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; smoke 1)")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (seconds; numbers meaningless)")
    ap.add_argument("--packed", default="auto", choices=("auto", "avx512", "avx2"),
                    help="the packed micro-kernel(s) to time: auto (the best this CPU runs, and on an AVX-512 CPU "
                         "the AVX2 one beside it), or one; packed_speedup is over the first")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/highway-gemm-cpu.json)")
    args = ap.parse_args(argv)
    if _ext.load() is None:
        raise SystemExit(f"bench_highway_gemm: the stackft_C extension is unavailable ({_ext.load_error()!r})")
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    res = {"device": f"cpu: {platform.processor() or platform.machine()}", "host_cpus": os.cpu_count(),
           "torch": torch.__version__, "shape": {k: cfg[k] for k in ("B", "T", "n_in", "H")},
           "rounds": cfg["rounds"], "burst_ms": BURST_MS, "smoke": args.smoke, "isa": C.isa("auto"),
           "packed": args.packed, "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
           "command": " ".join(["bench_highway_gemm.py", *(argv if argv is not None else sys.argv[1:])]),
           "results": {}}
    cols = ["gemm", "path", "M,K,N", "calls", "ms", "gflop_s", "packed_speedup"]
    for n in [int(t) for t in args.threads.split(",")]:
        block = run(cfg, n, args.packed)
        res["results"][f"threads={n}"] = block
        print(f"\n## {n} thread(s), load {block['load_average'][0]:.2f}\n")
        print(U.table(block["rows"], cols))
    U.write_json(U.result_path(args.out, "highway-gemm-cpu.json", args.smoke), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
