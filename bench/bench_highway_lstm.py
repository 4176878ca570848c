"""Benchmark one highway-LSTM layer (fused Triton cell) against its baselines.

Implementations: ``triton`` (stackft.kernels.highway_lstm, CUDA only: the recurrence replayed
from CUDA graphs), ``triton-loop`` (the same kernels launched step by step, ``graphs=False``: the
launch-bound path the graphs replace), ``reference`` (the eager
per-step loop of stackft.kernels.reference), ``compile`` (the same loop with a torch.compile'd
step; compiling the whole T-step loop would unroll it) and ``nn.LSTM`` (cuDNN on GPU: a plain LSTM
with the same H, the speed ceiling; it cannot express the highway gate, so it is not a numerical
reference). Reports the median time of a training forward and of forward+backward, the memory
autograd saves, the peak extra memory of forward+backward, and the largest forward difference
from the reference. On CUDA, ``launches`` counts the host-side launch calls (kernels, async copies,
graph launches) of one forward+backward, through the profiler.

    python bench/bench_highway_lstm.py            # B=64, T in {32,64,128}, H in {384,768}, in=768
    python bench/bench_highway_lstm.py --T 128 --H 384,768 --impls triton,triton-loop,reference,nn.LSTM
    python bench/bench_highway_lstm.py --quick    # tiny shapes: CPU plumbing only
    python bench/bench_highway_lstm.py --quick --impls reference,nn.LSTM --out /tmp/hw.json   # seconds

On CPU the Triton kernels would run in the interpreter, whose timings mean nothing, so only
reference / compile / nn.LSTM are timed there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util as U  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import stackft.kernels as K  # noqa: E402
from stackft.kernels import reference as R  # noqa: E402
from stackft.kernels._backend import triton_available  # noqa: E402

FULL = dict(B=64, T=[32, 64, 128], H=[384, 768], n_in=768, dtypes=["float32", "bfloat16"])
QUICK = dict(B=4, T=[8], H=[32], n_in=32, dtypes=["float32", "bfloat16"])
COLUMNS = ["impl", "dtype", "T", "H", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_low_ms", "saved_mib",
           "peak_mib", "launches", "speedup_vs_ref", "speedup_vs_loop", "ratio_vs_lstm", "max_err_vs_ref"]


def _step(xg_t, h, c, W_h, b, active, mask):
    h_new, c_new = R.highway_lstm_cell(xg_t, F.linear(h, W_h, b), c)
    h_new = h_new * mask
    return torch.where(active, h_new, 0.0), torch.where(active, h_new, h), torch.where(active, c_new, c)


_compiled_step = torch.compile(_step, dynamic=False)


def compiled_layer(x, lengths, W_x, W_h, b, h0, c0, mask):
    """The reference loop with the per-step work compiled (one fused graph per step)."""
    T = x.shape[1]
    xg = F.linear(x, W_x.to(x.dtype))
    h, c, outs = h0, c0, []
    W_h, b, mask = W_h.to(x.dtype), b.to(x.dtype), mask.to(x.dtype)
    for t in range(T):
        o, h, c = _compiled_step(xg[:, t], h, c, W_h, b, (lengths > t).unsqueeze(-1), mask)
        outs.append(o)
    return torch.stack(outs, 1), h, c


def implementations(on_cuda: bool, n_in: int, H: int, dtype, dev) -> dict:
    def ref(x, lengths, W_x, W_h, b, h0, c0, mask):
        out, (h, c) = R.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, dropout_mask=mask)
        return out, h, c

    def tri(x, lengths, W_x, W_h, b, h0, c0, mask):
        out, (h, c) = K.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, dropout_mask=mask, backend="triton")
        return out, h, c

    def tri_loop(x, lengths, W_x, W_h, b, h0, c0, mask):
        from stackft.kernels.ops import highway_lstm as HL

        out, (h, c) = HL.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, dropout_mask=mask, graphs=False)
        return out, h, c

    lstm = torch.nn.LSTM(n_in, H, batch_first=True).to(dev, dtype)

    def cudnn(x, lengths, W_x, W_h, b, h0, c0, mask):
        out, (h, c) = lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
        return out, h, c

    cudnn.params = list(lstm.parameters())  # its weights get gradients too, like W_x/W_h/b
    impls = {"reference": ref, "compile": compiled_layer, "nn.LSTM": cudnn}
    return {"triton": tri, "triton-loop": tri_loop, **impls} if on_cuda and triton_available() else impls


def make_inputs(B, T, n_in, H, dtype, dev):
    def make():
        g = torch.Generator().manual_seed(0)
        r = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(dev, dtype).requires_grad_()  # noqa: E731
        x = r(B, T, n_in)
        lengths = torch.full((B,), T, dtype=torch.long, device=dev)  # full: comparable with nn.LSTM
        mask = ((torch.rand(B, H, generator=g) > 0.1).float() / 0.9).to(dev, dtype)
        return (x, lengths, r(6 * H, n_in, scale=n_in ** -0.5), r(5 * H, H, scale=H ** -0.5),
                r(5 * H, scale=0.1), r(B, H), r(B, H), mask)
    return U.rotating(make)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU plumbing)")
    ap.add_argument("--impls", default=None, help="comma list; default: all available")
    ap.add_argument("--out", default=None,
                    help="JSON file to merge the rows into (default bench/results/<device>[-<mode>].json)")
    U.add_shape_args(ap, ("T", "H"))
    args = ap.parse_args(argv)
    cfg = U.apply_shape_args(QUICK if args.quick else FULL, args, ("T", "H"))
    dev = U.device()
    U.cpu_setup()
    rows = []
    for dtype_name in cfg["dtypes"]:
        dtype = getattr(torch, dtype_name)
        for H in cfg["H"]:
            for T in cfg["T"]:
                inputs = make_inputs(cfg["B"], T, cfg["n_in"], H, dtype, dev)
                impls = implementations(dev.type == "cuda", cfg["n_in"], H, dtype, dev)
                ref_fn = impls["reference"]
                if args.impls:
                    impls = {k: v for k, v in impls.items() if k in args.impls.split(",")}
                group = []
                for name, fn in impls.items():
                    row = dict(impl=name, dtype=dtype_name, B=cfg["B"], T=T, H=H, n_in=cfg["n_in"])
                    try:
                        if name != "nn.LSTM":  # a plain LSTM computes something else
                            row["max_err_vs_ref"] = U.max_err(fn, ref_fn, inputs)
                        U.measure(row, fn, inputs)
                        row["launches"] = U.launch_calls(U.fwd_bwd(fn, inputs))
                    except Exception as exc:
                        row["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
                    group.append(row)
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                by = {r["impl"]: r for r in group if "fwd_bwd_ms" in r}
                for row in group:
                    if "fwd_bwd_ms" not in row:
                        continue
                    if "reference" in by:
                        row["speedup_vs_ref"] = by["reference"]["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                    if "triton-loop" in by:  # what the CUDA graphs buy over step-by-step launches
                        row["speedup_vs_loop"] = by["triton-loop"]["fwd_bwd_ms"] / row["fwd_bwd_ms"]
                    if "nn.LSTM" in by:  # how many times slower than the cuDNN ceiling
                        row["ratio_vs_lstm"] = row["fwd_bwd_ms"] / by["nn.LSTM"]["fwd_bwd_ms"]
                rows += group
    path = U.save("highway_lstm", rows, "quick" if args.quick else "full", path=args.out)
    print(U.table(rows, COLUMNS))
    print(f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    main()
