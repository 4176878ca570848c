"""Benchmark BiMPM matching (maxpool, attentive mean/max, and all three together).

Implementations: ``triton`` (stackft.kernels, CUDA only), ``reference`` (stackft.kernels.reference),
``materializing`` (AllenNLP-style, bench/materializing.py) and ``compile`` (torch.compile of the
reference). Reports the median time of a training forward and of forward+backward, what autograd
saves for backward, the peak extra memory of forward+backward, and the largest forward difference
from the reference (materializing attentive_max differs by design: element-wise max, see there).

    python bench/bench_mp_matching.py            # B=64, T in {32,64,128}, d in {384,768}, l=20
    python bench/bench_mp_matching.py --quick    # tiny shapes: CPU plumbing only
    python bench/bench_mp_matching.py --quick --impls reference,materializing --out /tmp/mp.json   # seconds

    python bench/bench_mp_matching.py --saved-only   # B=64, T=64, d=768, l=20: memory only
    python bench/bench_mp_matching.py --ops matching --T 64,128 --d 768   # a shorter matrix (--B, --dtypes too)

On CPU the Triton kernels would run in the interpreter, whose timings mean nothing, so only
reference / materializing / compile are timed there. ``--saved-only`` times nothing: it runs one
training forward per implementation at the target shape and records what autograd saves for
backward, which does not depend on the device, so on CPU it includes Triton (run by the
interpreter, ~1 min per call) and gives an exact activation-memory comparison without a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

if "--saved-only" in sys.argv and not torch.cuda.is_available():
    import os

    os.environ["TRITON_INTERPRET"] = "1"  # before stackft.kernels decorates its kernels

import _util as U  # noqa: E402
import materializing as MAT  # noqa: E402

import stackft.kernels as K  # noqa: E402
from stackft.kernels import reference as R  # noqa: E402

FULL = dict(B=64, T=[32, 64, 128], d=[384, 768], l=20, dtypes=["float32", "bfloat16"])
QUICK = dict(B=4, T=[16], d=[32], l=20, dtypes=["float32", "bfloat16"])
SAVED = dict(B=64, T=[64], d=[768], l=20, dtypes=["float32", "bfloat16"])


COLUMNS = ["op", "impl", "dtype", "T", "d", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_low_ms", "saved_mib",
           "peak_mib", "speedup_vs_mat", "saved_ratio_vs_mat", "mem_ratio_vs_mat", "max_err_vs_ref"]


def _ops(lib, **kw):
    """The four benchmarked ops for one implementation (``lib`` has the three functions)."""
    def maxpool(p, q, W, pm, qm):
        return lib.maxpool_match(p, q, W, pm, qm, **kw)

    def att_mean(p, q, W, pm, qm):
        return lib.attentive_match(p, q, W, pm, qm, mode="mean", **kw)

    def att_max(p, q, W, pm, qm):
        return lib.attentive_match(p, q, W, pm, qm, mode="max", **kw)

    def matching(p, q, W, pm, qm):
        return (*maxpool(p, q, W, pm, qm), att_mean(p, q, W, pm, qm), att_max(p, q, W, pm, qm))

    return dict(maxpool=maxpool, attentive_mean=att_mean, attentive_max=att_max, matching=matching)


class _Triton:
    maxpool_match = staticmethod(K.maxpool_match)
    attentive_match = staticmethod(K.attentive_match)


def implementations(on_cuda: bool, saved_only: bool = False) -> dict:
    impls = {"reference": _ops(R), "materializing": _ops(MAT)}
    if not saved_only:  # compiling at the big shape on CPU costs minutes and saves like reference
        impls["compile"] = {k: torch.compile(f, dynamic=False) for k, f in _ops(R).items()}
    if on_cuda or saved_only:
        impls = {"triton": _ops(_Triton, backend="triton"), **impls}
    return impls


def make_inputs(B, T, d, l, dtype, dev):
    def make():
        g = torch.Generator().manual_seed(0)
        p = torch.randn(B, T, d, generator=g).to(dev, dtype).requires_grad_()
        q = torch.randn(B, T, d, generator=g).to(dev, dtype).requires_grad_()
        W = torch.randn(l, d, generator=g).to(dev).requires_grad_()
        lens = torch.randint(T // 2, T + 1, (2, B), generator=g)
        ar = torch.arange(T)
        pm, qm = (ar[None] < lens[0, :, None]).to(dev), (ar[None] < lens[1, :, None]).to(dev)
        return p, q, W, pm, qm
    return U.rotating(make)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU plumbing)")
    ap.add_argument("--saved-only", action="store_true",
                    help="target shape, saved-for-backward memory only (includes Triton on CPU)")
    ap.add_argument("--ops", default="maxpool,attentive_mean,attentive_max,matching")
    ap.add_argument("--impls", default=None, help="comma list; default: all available")
    ap.add_argument("--out", default=None,
                    help="JSON file to merge the rows into (default bench/results/<device>[-<mode>].json)")
    U.add_shape_args(ap, ("T", "d"))
    args = ap.parse_args(argv)
    cfg = U.apply_shape_args(SAVED if args.saved_only else QUICK if args.quick else FULL, args, ("T", "d"))
    dev = U.device()
    U.cpu_setup()
    impls = implementations(dev.type == "cuda", args.saved_only)
    if args.impls:
        impls = {k: v for k, v in impls.items() if k in args.impls.split(",")}
    impls_ref = _ops(R)
    rows = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(torch, dtype_name)
        for d in cfg["d"]:
            for T in cfg["T"]:
                inputs = make_inputs(cfg["B"], T, d, cfg["l"], dtype, dev)
                for op in args.ops.split(","):
                    base = None
                    for name, fns in impls.items():
                        fn = fns[op]
                        row = dict(op=op, impl=name, dtype=dtype_name, B=cfg["B"], T=T, d=d, l=cfg["l"])
                        try:
                            if args.saved_only:
                                row["saved_mib"] = U.saved_mib(U.fwd(fn, inputs))
                            else:
                                row["max_err_vs_ref"] = U.max_err(fn, impls_ref[op], inputs)
                                U.measure(row, fn, inputs)
                        except Exception as exc:  # e.g. out of memory at the large shapes
                            row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                        if name == "materializing":
                            base = row
                        rows.append(row)
                        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                    for row in rows:  # speed-up and memory ratio against the materialising baseline
                        if not (base and row["op"] == op and row["T"] == T and row["d"] == d
                                and row["dtype"] == dtype_name):
                            continue
                        if "fwd_bwd_ms" in row and "fwd_bwd_ms" in base:
                            row["speedup_vs_mat"] = base["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                        if row.get("peak_mib") and base.get("peak_mib"):
                            row["mem_ratio_vs_mat"] = base["peak_mib"] / row["peak_mib"]
                        if row.get("saved_mib") and base.get("saved_mib"):
                            row["saved_ratio_vs_mat"] = base["saved_mib"] / row["saved_mib"]
    mode = "saved" if args.saved_only else "quick" if args.quick else "full"
    path = U.save("mp_matching", rows, mode, path=args.out)
    print(U.table(rows, COLUMNS))
    print(f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    main()
