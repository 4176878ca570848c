"""Compile every stackft Triton kernel to a CUDA cubin without a GPU (ptxas ships with Triton).

    python -m stackft.kernels.compile_check            # sm_90 and sm_80
    python -m stackft.kernels.compile_check --arch 90

Each kernel is compiled for fp32 and bf16 pointers and the constexpr variants the launchers use,
so a construct that only works in the interpreter (the CPU test path) fails here. Needs
``TRITON_INTERPRET`` unset: interpreted kernels cannot be compiled. Exit status 1 on any failure.
"""

from __future__ import annotations

import inspect
import os
import sys


def _cases():
    import triton.language as tl

    from stackft.kernels.ops import highway_lstm as HL
    from stackft.kernels.ops import mp_matching as MP

    f32, i32, i8 = "*fp32", "*i32", "*i8"
    out = []
    for dt, dot in (("*fp32", tl.float32), ("*bf16", tl.bfloat16)):
        mp = dict(BN=32, BD=32, BL=32, PREC="ieee")
        attn = dict(P=dt, Q=dt, RP=f32, RQ=f32, QM=i8, ALPHA=f32, S=f32, ARG=i32)
        cell = dict(XG=dt, HG=dt, C=dt, HPREV=dt, H_OUT=dt, C_OUT=dt, OUT=dt, DROP=dt, LEN=i32)
        cell_bwd = dict(XG=dt, HG=dt, C=dt, GH=f32, GC=f32, REC=dt, GOUT=dt, DROP=dt, GDROP=f32,
                        LEN=i32, DXG=dt, DHG=dt)
        out += [
            (MP._mp_cosine_fwd_kernel, dict(A=dt, Bv=f32, W=f32, M=f32, NA2=f32, NB2=f32), mp),
            (MP._mp_cosine_bwd_kernel, dict(A=dt, Bv=f32, W=f32, G=f32, M=f32, NA2=f32, NB2=f32, GA=f32,
                                            GB=f32, GWP=f32), dict(mp, PREC="tf32")),
            (MP._maxpool_fwd_kernel, dict(P=dt, Q=dt, W=f32, NP2=f32, NQ2=f32, PM=i8, QM=i8, PMAX=f32,
                                          PARG=i32, CMAX=f32, CARG=i32),
             dict(BI=64, BJ=64, BD=64, DOT=dot, PREC="ieee")),
            (MP._maxpool_bwd_kernel, dict(X=dt, Y=dt, W=f32, ARG=i32, G=f32, M=f32, NX2=f32, NY2=f32,
                                          GX=f32, GY=f32, GWP=f32), dict(BX=32, BD=64)),
            (MP._attn_scores_kernel, attn, dict(MAX_MODE=False, BI=32, BJ=64, BD=64, DOT=dot, PREC="ieee")),
            (MP._attn_scores_kernel, attn, dict(MAX_MODE=True, BI=32, BJ=64, BD=64, DOT=dot, PREC="ieee")),
            (HL._cell_fwd_kernel, cell, dict(HAS_DROP=True, HAS_LEN=True, BLOCK=256)),
            (HL._cell_fwd_kernel, cell, dict(HAS_DROP=False, HAS_LEN=False, BLOCK=256)),
            (HL._cell_bwd_kernel, cell_bwd, dict(HAS_REC=True, HAS_GOUT=True, HAS_DROP=True, HAS_LEN=True,
                                                 BLOCK=256)),
            (HL._cell_bwd_kernel, cell_bwd, dict(HAS_REC=False, HAS_GOUT=False, HAS_DROP=False,
                                                 HAS_LEN=False, BLOCK=256)),
        ]
    return out


def compile_one(kernel, pointers: dict, constexprs: dict, arch: int):
    """``triton.compile`` for ``cuda:sm_<arch>``; unlisted parameters are i32 scalars."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    consts = {(names.index(n),): v for n, v in constexprs.items()}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=consts),
                          target=GPUTarget("cuda", arch, 32))


def parse_archs(argv: list[str]) -> list[int]:
    """``[--arch N]...`` -> the SM versions (default 90 and 80). Kept free of argparse: only
    ``stackft.cli`` builds parsers."""
    archs, it = [], iter(argv)
    for arg in it:
        value = next(it, None) if arg == "--arch" else arg[len("--arch="):] if arg.startswith("--arch=") else None
        if arg in ("-h", "--help"):
            raise SystemExit(__doc__)
        if value is None or not str(value).isdigit():
            got = arg if value is None else f"{arg} {value}"
            raise SystemExit(f"usage: python -m stackft.kernels.compile_check [--arch N]...; got {got!r}")
        archs.append(int(value))
    return archs or [90, 80]


def main(argv=None) -> int:
    archs = parse_archs(sys.argv[1:] if argv is None else list(argv))
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    failures = 0
    for arch in archs:
        for kernel, pointers, constexprs in _cases():
            label = f"sm_{arch} {kernel.fn.__name__} {next(iter(pointers.values()))} {constexprs}"
            try:
                compile_one(kernel, pointers, constexprs, arch)
                print(f"ok    {label}")
            except Exception as exc:  # report every kernel, not just the first failure
                failures += 1
                print(f"FAIL  {label}: {type(exc).__name__}: {exc}")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
