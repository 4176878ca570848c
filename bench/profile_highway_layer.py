"""One C++ highway-LSTM layer, both directions, forward+backward in a loop: the workload to profile.

B=32, T=64, in 384, H 256 (the bench_heads.py "highway layer bi" row), one intra-op thread. Prints the
gate-math path, the per-step and large GEMM paths and the mean ms per step; run it under a profiler to
see where the layer's time goes, e.g. (an AVX2-only CPU's paths, emulated on an AVX-512 one)::

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 perf record -o /tmp/hl.perf \\
        python bench/profile_highway_layer.py --isa avx2 --steps 30
    perf report -i /tmp/hl.perf --no-children --sort dso,symbol -g none

The share of ``fwd_row_avx2`` / ``bwd_row_avx2`` (gate math), ``micro_avx2<N>`` (per-step GEMMs) and the
BLAS kernels in that report is what bench/README.md quotes. Start-up (imports) is in the profile too:
compare shares among the layer's own symbols.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default="auto", choices=("auto", "avx512", "avx2", "base"),
                    help="the C++ layer's CPU code path (default: the best this CPU runs)")
    ap.add_argument("--steps", type=int, default=20, help="timed forward+backward steps (default 20)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from stackft.kernels.ops import highway_lstm_cpp as C
    from stackft.modeling.heads.highway_lstm import UnidirectionalHighwayLSTM

    C.isa(args.isa)
    torch.manual_seed(0)
    B, T, d, H = 32, 64, 384, 256
    layer = nn.ModuleList([UnidirectionalHighwayLSTM(d, H), UnidirectionalHighwayLSTM(d, H, reverse=True)])
    x, lengths = torch.randn(B, T, d), torch.full((B,), T, dtype=torch.long)
    params = list(layer.parameters())

    def step():
        loss = sum(m(x, lengths).sum() for m in layer)
        torch.autograd.grad(loss, params)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    print(f"gate math {C.isa()}, per-step GEMMs {C.step_gemm()}, large GEMMs {C.gemm()}: {ms:.1f} ms a step")


if __name__ == "__main__":
    main()
