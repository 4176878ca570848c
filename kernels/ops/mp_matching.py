"""BiMPM multi-perspective matching in Triton: cosine, max-pooling matching, attentive matching.

Kernels, launchers and ``torch.autograd.Function``s live together (Liger-Kernel layout); the
semantics are those of :mod:`stackft.kernels.reference` (same eps, masks, dtypes). Nothing
here materialises the ``W∘v`` copies (``[B,l,T,d]``), the pairwise ``[B,l,T1,T2]`` cosines or the
AllenNLP-style ``[B,T1,T2,d]`` attentive tensor:

* The multi-perspective cosine is three small GEMMs against ``W∘W``:
  ``num = (a∘b)(W∘W)ᵀ``, ``|W_k∘a|² = (a∘a)(W∘W)ᵀ``, ``|W_k∘b|² = (b∘b)(W∘W)ᵀ``, fused in one kernel.
* Max-pooling matching streams ``(i, j)`` tiles per perspective k, computing
  ``Σ_d p_id W_kd² q_jd`` with a tensor-core dot of the W²-scaled p tile, and keeps the running row
  max/argmax (P->Q) in registers; each tile's column max/argmax (Q->P) is written as a per-i-tile
  partial (``[B,l,n_i_tiles,T2]``, tiny) and reduced afterwards. The norms
  ``|W_k∘p_i|² = (p∘p)(W∘W)ᵀ`` are one small GEMM per side. Backward routes each gradient only
  through the stored argmax: O(B·T·l·d) vector math, atomic adds into the gathered side.
* Attentive matching computes ``α = cos(p_i, q_j)`` tile-wise (norms folded in, padding masked,
  Σα accumulated) and keeps only ``α [B,T1,T2]`` (mean) or the argmax ``[B,T1]`` (max); then
  ``h = (α/Σα) q`` is a bmm (or a gather of the argmax row) and the result is the fused
  multi-perspective cosine. Autograd keeps p, q, α, ``h [B,T1,d]`` and O(B·T) extras.

Precision: loads are upcast to fp32 and every reduction accumulates in fp32. fp32 dots use
IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32`` is set. For bf16/fp16 inputs the
maxpool and attention GEMMs run on tensor cores in the input dtype (the W²-scaled p tile is
rounded to that dtype) with fp32 accumulation; under ``TRITON_INTERPRET`` those dots run in fp32
(the interpreter mishandles low-precision dot operands).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stackft.kernels import reference as R
from stackft.kernels._backend import interpreting

__all__ = ["multi_perspective_cosine", "maxpool_match", "attentive_match"]

_EPS2 = tl.constexpr(R.NORM_EPS * R.NORM_EPS)
_LOW_PRECISION = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _block(n: int, lo: int = 16, hi: int = 64) -> int:
    # tl.dot needs every dim >= 16
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def _precision() -> str:
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _dot_dtype(dtype: torch.dtype):
    # The interpreter's tl.dot mishandles bf16/fp16 operands (it multiplies the raw bits), so
    # under TRITON_INTERPRET the low-precision tiles are upcast and the dot runs in fp32.
    if interpreting():
        return tl.float32
    return _LOW_PRECISION.get(dtype, tl.float32)


# ============================================================================ multi-perspective cosine


@triton.jit
def _mp_cosine_fwd_kernel(A, Bv, W, M, NA2, NB2, N, D, L,
                          BN: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, PREC: tl.constexpr):
    """Rows ``[BN]`` of ``a, b [N,D]`` against all l perspectives: ``m, |W∘a|², |W∘b|² [N,L]``."""
    pid = tl.program_id(0)
    rows = pid * BN + tl.arange(0, BN)
    ks = tl.arange(0, BL)
    rmask = rows < N
    kmask = ks < L
    num = tl.zeros((BN, BL), tl.float32)
    a2 = tl.zeros((BN, BL), tl.float32)
    b2 = tl.zeros((BN, BL), tl.float32)
    for d0 in range(0, D, BD):
        ds = d0 + tl.arange(0, BD)
        dmask = ds < D
        xm = rmask[:, None] & dmask[None, :]
        a = tl.load(A + rows[:, None] * D + ds[None, :], mask=xm, other=0.0).to(tl.float32)
        b = tl.load(Bv + rows[:, None] * D + ds[None, :], mask=xm, other=0.0).to(tl.float32)
        w = tl.load(W + ks[:, None] * D + ds[None, :], mask=kmask[:, None] & dmask[None, :], other=0.0)
        w2t = tl.trans(w * w)
        num = tl.dot(a * b, w2t, num, input_precision=PREC)
        a2 = tl.dot(a * a, w2t, a2, input_precision=PREC)
        b2 = tl.dot(b * b, w2t, b2, input_precision=PREC)
    m = num / (tl.sqrt(tl.maximum(a2, _EPS2)) * tl.sqrt(tl.maximum(b2, _EPS2)))
    out = rows[:, None] * L + ks[None, :]
    om = rmask[:, None] & kmask[None, :]
    tl.store(M + out, m, mask=om)
    tl.store(NA2 + out, a2, mask=om)
    tl.store(NB2 + out, b2, mask=om)


@triton.jit
def _mp_cosine_bwd_kernel(A, Bv, W, G, M, NA2, NB2, GA, GB, GWP, N, D, L,
                          BN: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, PREC: tl.constexpr):
    """``ga, gb [N,D]`` and this block's partial ``gW [L,D]`` (summed over blocks by the caller).

    With ``c1 = g/(|W∘a||W∘b|)``, ``ca = g·m/|W∘a|²``, ``cb = g·m/|W∘b|²`` (0 where a norm is clamped):
    ``ga = b∘(c1 W²) − a∘(ca W²)``, ``gb = a∘(c1 W²) − b∘(cb W²)``,
    ``gW = W∘(2c1ᵀ(a∘b) − caᵀ(a∘a) − cbᵀ(b∘b))``.
    """
    pid = tl.program_id(0)
    rows = pid * BN + tl.arange(0, BN)
    ks = tl.arange(0, BL)
    rmask = rows < N
    kmask = ks < L
    idx = rows[:, None] * L + ks[None, :]
    lm = rmask[:, None] & kmask[None, :]
    g = tl.load(G + idx, mask=lm, other=0.0)
    m = tl.load(M + idx, mask=lm, other=0.0)
    na2 = tl.load(NA2 + idx, mask=lm, other=0.0)
    nb2 = tl.load(NB2 + idx, mask=lm, other=0.0)
    na2c = tl.maximum(na2, _EPS2)
    nb2c = tl.maximum(nb2, _EPS2)
    c1 = g / (tl.sqrt(na2c) * tl.sqrt(nb2c))
    ca = tl.where(na2 > _EPS2, g * m / na2c, 0.0)
    cb = tl.where(nb2 > _EPS2, g * m / nb2c, 0.0)
    for d0 in range(0, D, BD):
        ds = d0 + tl.arange(0, BD)
        dmask = ds < D
        xm = rmask[:, None] & dmask[None, :]
        a = tl.load(A + rows[:, None] * D + ds[None, :], mask=xm, other=0.0).to(tl.float32)
        b = tl.load(Bv + rows[:, None] * D + ds[None, :], mask=xm, other=0.0).to(tl.float32)
        wm = kmask[:, None] & dmask[None, :]
        w = tl.load(W + ks[:, None] * D + ds[None, :], mask=wm, other=0.0)
        w2 = w * w
        t1 = tl.dot(c1, w2, input_precision=PREC)
        ta = tl.dot(ca, w2, input_precision=PREC)
        tb = tl.dot(cb, w2, input_precision=PREC)
        tl.store(GA + rows[:, None] * D + ds[None, :], b * t1 - a * ta, mask=xm)
        tl.store(GB + rows[:, None] * D + ds[None, :], a * t1 - b * tb, mask=xm)
        gw = tl.dot(tl.trans(2.0 * c1), a * b, input_precision=PREC)
        gw -= tl.dot(tl.trans(ca), a * a, input_precision=PREC)
        gw -= tl.dot(tl.trans(cb), b * b, input_precision=PREC)
        tl.store(GWP + pid * L * D + ks[:, None] * D + ds[None, :], w * gw, mask=wm)


def _mp_settings(N: int, D: int, L: int):
    return dict(BN=_block(N, hi=32), BD=_block(D, hi=32), BL=_block(L, hi=max(16, triton.next_power_of_2(L))))


class MultiPerspectiveCosine(torch.autograd.Function):
    """``a, b [N, d]`` (same shape; dtypes may differ, each is upcast on load), ``weight [l, d]``
    -> ``m [N, l]`` (fp32).

    Saves a, b, W and the fp32 ``m, |W∘a|², |W∘b|² [N, l]``; backward is one kernel plus a sum of
    the per-block ``gW`` partials.
    """

    @staticmethod
    def forward(ctx, a, b, weight):
        a, b = a.contiguous(), b.contiguous()
        N, D = a.shape
        L = weight.shape[0]
        w = weight.detach().float().contiguous()
        m = torch.empty(N, L, device=a.device, dtype=torch.float32)
        na2, nb2 = torch.empty_like(m), torch.empty_like(m)
        s = _mp_settings(N, D, L)
        if N > 0:
            _mp_cosine_fwd_kernel[(triton.cdiv(N, s["BN"]),)](a, b, w, m, na2, nb2, N, D, L, PREC=_precision(), **s)
        ctx.save_for_backward(a, b, w, m, na2, nb2)
        ctx.settings = s
        ctx.w_dtype = weight.dtype
        return m

    @staticmethod
    def backward(ctx, g):
        a, b, w, m, na2, nb2 = ctx.saved_tensors
        N, D = a.shape
        L = w.shape[0]
        s = ctx.settings
        nblk = triton.cdiv(N, s["BN"])
        ga = torch.empty(N, D, device=a.device, dtype=torch.float32)
        gb = torch.empty_like(ga)
        gwp = torch.zeros(max(nblk, 1), L, D, device=a.device, dtype=torch.float32)
        if N > 0:
            _mp_cosine_bwd_kernel[(nblk,)](a, b, w, g.float().contiguous(), m, na2, nb2, ga, gb, gwp,
                                           N, D, L, PREC=_precision(), **s)
        return ga.to(a.dtype), gb.to(b.dtype), gwp.sum(0).to(ctx.w_dtype)


def multi_perspective_cosine(v1: torch.Tensor, v2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Triton ``f_m``: ``v1, v2 [..., d]`` (broadcastable), ``weight [l, d]`` -> ``[..., l]``."""
    out_dtype = torch.promote_types(v1.dtype, v2.dtype)
    shape = torch.broadcast_shapes(v1.shape, v2.shape)
    D, L = shape[-1], weight.shape[0]
    a = v1.expand(shape).reshape(-1, D)
    b = v2.expand(shape).reshape(-1, D)
    m = MultiPerspectiveCosine.apply(a, b, weight)
    return m.reshape(*shape[:-1], L).to(out_dtype)


# ============================================================================ max-pooling matching


@triton.jit
def _maxpool_fwd_kernel(P, sPb, sPt, sPd, Q, sQb, sQt, sQd, W, NP2, NQ2, PM, QM,
                        PMAX, PARG, CMAX, CARG, T1, T2, D, L,
                        BI: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
                        DOT: tl.constexpr, PREC: tl.constexpr):
    """Program (i-tile, k, b): row max/argmax over all j -> PMAX/PARG ``[B,T1,L]``; column
    max/argmax of this i-tile -> CMAX/CARG ``[B,L,n_i_tiles,T2]``. Invalid pairs score -inf."""
    it = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2)
    n_it = tl.num_programs(0)
    i_s = it * BI + tl.arange(0, BI)
    i_in = i_s < T1
    i_ok = i_in & (tl.load(PM + b * T1 + i_s, mask=i_in, other=0) != 0)
    np_ = tl.sqrt(tl.maximum(tl.load(NP2 + (b * T1 + i_s) * L + k, mask=i_in, other=0.0), _EPS2))
    run_max = tl.full((BI,), float("-inf"), tl.float32)
    run_arg = tl.zeros((BI,), tl.int32)
    for j0 in range(0, T2, BJ):
        j_s = j0 + tl.arange(0, BJ)
        j_in = j_s < T2
        j_ok = j_in & (tl.load(QM + b * T2 + j_s, mask=j_in, other=0) != 0)
        acc = tl.zeros((BI, BJ), tl.float32)
        for d0 in range(0, D, BD):
            ds = d0 + tl.arange(0, BD)
            dm = ds < D
            w = tl.load(W + k * D + ds, mask=dm, other=0.0)
            p = tl.load(P + b * sPb + i_s[:, None] * sPt + ds[None, :] * sPd,
                        mask=i_in[:, None] & dm[None, :], other=0.0).to(tl.float32)
            q = tl.load(Q + b * sQb + j_s[:, None] * sQt + ds[None, :] * sQd,
                        mask=j_in[:, None] & dm[None, :], other=0.0)
            pw = (p * (w * w)[None, :]).to(DOT)
            acc = tl.dot(pw, tl.trans(q.to(DOT)), acc, input_precision=PREC)
        nq = tl.sqrt(tl.maximum(tl.load(NQ2 + (b * T2 + j_s) * L + k, mask=j_in, other=0.0), _EPS2))
        cos = acc / (np_[:, None] * nq[None, :])
        s = tl.where(i_ok[:, None] & j_ok[None, :], cos, float("-inf"))
        t_max = tl.max(s, axis=1)
        t_arg = tl.argmax(s, axis=1).to(tl.int32) + j0
        upd = t_max > run_max
        run_max = tl.where(upd, t_max, run_max)
        run_arg = tl.where(upd, t_arg, run_arg)
        c_off = ((b * L + k) * n_it + it) * T2 + j_s
        tl.store(CMAX + c_off, tl.max(s, axis=0), mask=j_in)
        tl.store(CARG + c_off, tl.argmax(s, axis=0).to(tl.int32) + it * BI, mask=j_in)
    found = run_max > float("-inf")
    o_off = (b * T1 + i_s) * L + k
    tl.store(PMAX + o_off, tl.where(found, run_max, 0.0), mask=i_in)
    tl.store(PARG + o_off, tl.where(found, run_arg, -1), mask=i_in)


@triton.jit
def _maxpool_bwd_kernel(X, sXb, sXt, sXd, Y, sYb, sYt, sYd, W, ARG, G, M, NX2, NY2,
                        GX, GY, GWP, TX, TY, D, L, BX: tl.constexpr, BD: tl.constexpr):
    """One direction of the max-pool backward. Program (x-tile, b) owns rows ``x`` of GX; for
    each perspective k the gradient flows only through the pair ``(x, y = ARG[b,x,k])``:
    plain adds into GX, atomic adds into GY[b, y], per-program partial gW rows into GWP."""
    it = tl.program_id(0)
    b = tl.program_id(1)
    n_it = tl.num_programs(0)
    x_s = it * BX + tl.arange(0, BX)
    x_in = x_s < TX
    for d0 in range(0, D, BD):
        ds = d0 + tl.arange(0, BD)
        dm = ds < D
        x = tl.load(X + b * sXb + x_s[:, None] * sXt + ds[None, :] * sXd,
                    mask=x_in[:, None] & dm[None, :], other=0.0).to(tl.float32)
        gx = tl.zeros((BX, BD), tl.float32)
        for k in range(0, L):
            o = (b * TX + x_s) * L + k
            y_s = tl.load(ARG + o, mask=x_in, other=-1)
            ok = x_in & (y_s >= 0)
            y_s = tl.where(ok, y_s, 0)
            g = tl.load(G + o, mask=ok, other=0.0)
            m = tl.load(M + o, mask=ok, other=0.0)
            nx2 = tl.load(NX2 + o, mask=ok, other=0.0)
            ny2 = tl.load(NY2 + (b * TY + y_s) * L + k, mask=ok, other=0.0)
            nx2c = tl.maximum(nx2, _EPS2)
            ny2c = tl.maximum(ny2, _EPS2)
            c1 = g / (tl.sqrt(nx2c) * tl.sqrt(ny2c))
            cx = tl.where(nx2 > _EPS2, g * m / nx2c, 0.0)
            cy = tl.where(ny2 > _EPS2, g * m / ny2c, 0.0)
            ym = ok[:, None] & dm[None, :]
            y = tl.load(Y + b * sYb + y_s[:, None] * sYt + ds[None, :] * sYd, mask=ym, other=0.0).to(tl.float32)
            w = tl.load(W + k * D + ds, mask=dm, other=0.0)
            w2 = (w * w)[None, :]
            gx += w2 * (c1[:, None] * y - cx[:, None] * x)
            gy = w2 * (c1[:, None] * x - cy[:, None] * y)
            tl.atomic_add(GY + (b * TY + y_s[:, None]) * D + ds[None, :], gy, mask=ym)
            gw = 2.0 * c1[:, None] * x * y - cx[:, None] * x * x - cy[:, None] * y * y
            tl.store(GWP + ((b * n_it + it) * L + k) * D + ds, w * tl.sum(gw, axis=0), mask=dm)
        # this program is the only writer of these GX rows in this launch: read-add-write is safe
        ptr = GX + (b * TX + x_s[:, None]) * D + ds[None, :]
        xm = x_in[:, None] & dm[None, :]
        tl.store(ptr, tl.load(ptr, mask=xm, other=0.0) + gx, mask=xm)


def _as_i8_mask(mask, B, T, device):
    if mask is None:
        return torch.ones(B, T, dtype=torch.int8, device=device)
    return mask.to(device=device, dtype=torch.int8).contiguous()


def _sq_norms(x: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``|W_k∘x_t|² = (x∘x)(W∘W)ᵀ``: ``[B,T,d] -> [B,T,l]`` fp32 (one small GEMM)."""
    xf = x.float()
    return (xf * xf) @ w2.t()


class MaxPoolMatch(torch.autograd.Function):
    """``p [B,T1,d], q [B,T2,d], weight [l,d]`` + int8 masks -> ``(p_max [B,T1,l], q_max [B,T2,l])``.

    Saves p, q, W, the fp32 squared norms ``[B,T,l]``, the fp32 maxima and the int32 argmax
    ``[B,T,l]`` of both directions: O(B·T·l), never O(B·T1·T2·l).
    """

    @staticmethod
    def forward(ctx, p, q, weight, pm, qm):
        B, T1, D = p.shape
        T2, L = q.shape[1], weight.shape[0]
        dev = p.device
        w = weight.detach().float().contiguous()
        w2 = w * w
        np2, nq2 = _sq_norms(p, w2).contiguous(), _sq_norms(q, w2).contiguous()
        BI, BJ, BD = _block(T1), _block(T2), _block(D)
        n_it = triton.cdiv(T1, BI)
        p_max = torch.empty(B, T1, L, device=dev, dtype=torch.float32)
        p_arg = torch.empty(B, T1, L, device=dev, dtype=torch.int32)
        c_max = torch.empty(B, L, n_it, T2, device=dev, dtype=torch.float32)
        c_arg = torch.empty(B, L, n_it, T2, device=dev, dtype=torch.int32)
        _maxpool_fwd_kernel[(n_it, L, B)](
            p, *p.stride(), q, *q.stride(), w, np2, nq2, pm, qm, p_max, p_arg, c_max, c_arg,
            T1, T2, D, L, BI=BI, BJ=BJ, BD=BD, DOT=_dot_dtype(p.dtype), PREC=_precision())
        q_max, sel = c_max.max(dim=2)  # reduce the per-i-tile column partials: [B, L, T2]
        q_arg = c_arg.gather(2, sel.unsqueeze(2)).squeeze(2)
        found = q_max > float("-inf")
        q_max = torch.where(found, q_max, 0.0).transpose(1, 2).contiguous()
        q_arg = torch.where(found, q_arg, -1).transpose(1, 2).contiguous()
        ctx.save_for_backward(p, q, w, np2, nq2, p_max, p_arg, q_max, q_arg)
        ctx.w_dtype = weight.dtype
        dtype = torch.promote_types(p.dtype, q.dtype)
        return p_max.to(dtype), q_max.to(dtype)

    @staticmethod
    def backward(ctx, gp_max, gq_max):
        p, q, w, np2, nq2, p_max, p_arg, q_max, q_arg = ctx.saved_tensors
        B, T1, D = p.shape
        T2, L = q.shape[1], w.shape[0]
        gp = torch.zeros(B, T1, D, device=p.device, dtype=torch.float32)
        gq = torch.zeros(B, T2, D, device=p.device, dtype=torch.float32)
        gw = torch.zeros(L, D, device=p.device, dtype=torch.float32)
        BD = _block(D)
        # direction P->Q owns gp rows and scatters into gq; then Q->P owns gq and scatters into gp
        for g, X, Y, arg, mx, nx2, ny2, GX, GY, TX, TY in (
            (gp_max, p, q, p_arg, p_max, np2, nq2, gp, gq, T1, T2),
            (gq_max, q, p, q_arg, q_max, nq2, np2, gq, gp, T2, T1),
        ):
            if g is None:
                continue
            BX = _block(TX, hi=32)  # more programs: each one loops over all l and d
            n_it = triton.cdiv(TX, BX)
            gwp = torch.empty(B * n_it, L, D, device=p.device, dtype=torch.float32)
            _maxpool_bwd_kernel[(n_it, B)](
                X, *X.stride(), Y, *Y.stride(), w, arg, g.float().contiguous(), mx, nx2, ny2,
                GX, GY, gwp, TX, TY, D, L, BX=BX, BD=BD)
            gw += gwp.sum(0)
        return gp.to(p.dtype), gq.to(q.dtype), gw.to(ctx.w_dtype), None, None


def maxpool_match(p, q, weight, p_mask=None, q_mask=None):
    """Triton max-pooling matching; same contract as :func:`stackft.kernels.reference.maxpool_match`."""
    B, T1, _ = p.shape
    T2 = q.shape[1]
    if p.dtype != q.dtype:
        cd = torch.promote_types(p.dtype, q.dtype)
        p, q = p.to(cd), q.to(cd)
    pm = _as_i8_mask(p_mask, B, T1, p.device)
    qm = _as_i8_mask(q_mask, B, T2, p.device)
    return MaxPoolMatch.apply(p, q, weight, pm, qm)


# ============================================================================ attentive matching


@triton.jit
def _attn_scores_kernel(P, sPb, sPt, sPd, Q, sQb, sQt, sQd, RP, RQ, QM, ALPHA, S, ARG, T1, T2, D,
                        MAX_MODE: tl.constexpr, BI: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
                        DOT: tl.constexpr, PREC: tl.constexpr):
    """Program (i-tile, b): ``α_ij = (p_i·q_j)·rp_i·rq_j`` with padded j excluded.

    Mean mode writes ``α [B,T1,T2]`` (0 at padded j) and ``Σ_j α_ij [B,T1]``; max mode keeps a
    running max/argmax and writes only ``argmax_j [B,T1]`` (-1 when no j is valid).
    """
    it = tl.program_id(0)
    b = tl.program_id(1)
    i_s = it * BI + tl.arange(0, BI)
    i_in = i_s < T1
    rp = tl.load(RP + b * T1 + i_s, mask=i_in, other=0.0)
    run_max = tl.full((BI,), float("-inf"), tl.float32)
    run_arg = tl.zeros((BI,), tl.int32)
    row_sum = tl.zeros((BI,), tl.float32)
    for j0 in range(0, T2, BJ):
        j_s = j0 + tl.arange(0, BJ)
        j_in = j_s < T2
        j_ok = j_in & (tl.load(QM + b * T2 + j_s, mask=j_in, other=0) != 0)
        acc = tl.zeros((BI, BJ), tl.float32)
        for d0 in range(0, D, BD):
            ds = d0 + tl.arange(0, BD)
            dm = ds < D
            p = tl.load(P + b * sPb + i_s[:, None] * sPt + ds[None, :] * sPd,
                        mask=i_in[:, None] & dm[None, :], other=0.0)
            q = tl.load(Q + b * sQb + j_s[:, None] * sQt + ds[None, :] * sQd,
                        mask=j_in[:, None] & dm[None, :], other=0.0)
            acc = tl.dot(p.to(DOT), tl.trans(q.to(DOT)), acc, input_precision=PREC)
        rq = tl.load(RQ + b * T2 + j_s, mask=j_in, other=0.0)
        alpha = acc * rp[:, None] * rq[None, :]
        if MAX_MODE:
            s = tl.where(j_ok[None, :], alpha, float("-inf"))
            t_max = tl.max(s, axis=1)
            t_arg = tl.argmax(s, axis=1).to(tl.int32) + j0
            upd = t_max > run_max
            run_max = tl.where(upd, t_max, run_max)
            run_arg = tl.where(upd, t_arg, run_arg)
        else:
            alpha = tl.where(j_ok[None, :], alpha, 0.0)
            row_sum += tl.sum(alpha, axis=1)
            tl.store(ALPHA + (b * T1 + i_s[:, None]) * T2 + j_s[None, :], alpha,
                     mask=i_in[:, None] & j_in[None, :])
    if MAX_MODE:
        tl.store(ARG + b * T1 + i_s, tl.where(run_max > float("-inf"), run_arg, -1), mask=i_in)
    else:
        tl.store(S + b * T1 + i_s, row_sum, mask=i_in)


def _inv_norm(x: torch.Tensor):
    """fp32 ``1/max(|x|, eps)`` over the last dim, and whether the norm was above the clamp."""
    sq = x.float().square().sum(-1)
    return sq.clamp_min(R.NORM_EPS ** 2).rsqrt(), sq > R.NORM_EPS ** 2


def _attn_launch(p, q, qm, max_mode):
    B, T1, D = p.shape
    T2 = q.shape[1]
    rp, _ = _inv_norm(p)
    rq, _ = _inv_norm(q)
    BI, BJ, BD = _block(T1, hi=32), _block(T2), _block(D)  # grid is (T1 tiles, B) only
    dev = p.device
    # the outputs of the other mode are never touched; 1-element dummies keep the pointers valid
    if max_mode:
        alpha = s = torch.empty(1, device=dev, dtype=torch.float32)
        arg = torch.empty(B, T1, device=dev, dtype=torch.int32)
    else:
        alpha = torch.empty(B, T1, T2, device=dev, dtype=torch.float32)
        s = torch.empty(B, T1, device=dev, dtype=torch.float32)
        arg = torch.empty(1, device=dev, dtype=torch.int32)
    _attn_scores_kernel[(triton.cdiv(T1, BI), B)](
        p, *p.stride(), q, *q.stride(), rp, rq, qm, alpha, s, arg, T1, T2, D,
        MAX_MODE=max_mode, BI=BI, BJ=BJ, BD=BD, DOT=_dot_dtype(p.dtype), PREC=_precision())
    return alpha, s, arg


class AttentionScores(torch.autograd.Function):
    """``p [B,T1,d], q [B,T2,d]`` + int8 q mask -> ``(α [B,T1,T2], Σ_j α [B,T1])``, fp32.

    Saves p, q, α and the inverse norms; backward is two bmm's (no ``[B,T1,T2,d]``):
    ``gp_i = rp_i (g∘rq) q − rp_i² (Σ_j g_ij α_ij) p_i`` and symmetrically for q.
    """

    @staticmethod
    def forward(ctx, p, q, qm):
        alpha, s, _ = _attn_launch(p, q, qm, max_mode=False)
        ctx.save_for_backward(p, q, qm, alpha)
        return alpha, s

    @staticmethod
    def backward(ctx, g_alpha, g_s):
        p, q, qm, alpha = ctx.saved_tensors
        g = torch.zeros_like(alpha) if g_alpha is None else g_alpha.float()
        if g_s is not None:
            g = g + g_s.float().unsqueeze(-1)
        g = g * qm.unsqueeze(1)  # α is the constant 0 at padded j
        pf, qf = p.float(), q.float()
        rp, p_ok = _inv_norm(p)
        rq, q_ok = _inv_norm(q)
        ga = g * alpha
        gp = rp.unsqueeze(-1) * torch.bmm(g * rq.unsqueeze(1), qf) \
            - (rp.square() * p_ok * ga.sum(2)).unsqueeze(-1) * pf
        gq = rq.unsqueeze(-1) * torch.bmm((g * rp.unsqueeze(2)).transpose(1, 2), pf) \
            - (rq.square() * q_ok * ga.sum(1)).unsqueeze(-1) * qf
        return gp.to(p.dtype), gq.to(q.dtype), None


class WeightedSum(torch.autograd.Function):
    """``h = a @ q``: ``a [B,T1,T2]`` fp32, ``q [B,T2,d]`` any float dtype -> ``h [B,T1,d]`` fp32.

    Like ``torch.bmm(a, q.float())`` but saves ``q`` in its own dtype (bf16 q is upcast again in
    backward instead of keeping an fp32 copy alive)."""

    @staticmethod
    def forward(ctx, a, q):
        ctx.save_for_backward(a, q)
        return torch.bmm(a, q.float())

    @staticmethod
    def backward(ctx, gh):
        a, q = ctx.saved_tensors
        gh = gh.float()
        ga = torch.bmm(gh, q.float().transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gq = torch.bmm(a.transpose(1, 2), gh).to(q.dtype) if ctx.needs_input_grad[1] else None
        return ga, gq


def attentive_match(p, q, weight, p_mask=None, q_mask=None, mode: str = "mean"):
    """Triton attentive matching; same contract as :func:`stackft.kernels.reference.attentive_match`."""
    if mode not in ("mean", "max"):
        raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
    B, T1, D = p.shape
    T2 = q.shape[1]
    dtype = torch.promote_types(p.dtype, q.dtype)
    if p.dtype != q.dtype:
        p, q = p.to(dtype), q.to(dtype)
    pm = _as_i8_mask(p_mask, B, T1, p.device)
    qm = _as_i8_mask(q_mask, B, T2, p.device)
    if mode == "max":
        with torch.no_grad():
            _, _, arg = _attn_launch(p, q, qm, max_mode=True)
        idx = arg.clamp_min(0).long().unsqueeze(-1).expand(B, T1, D)
        h = torch.gather(q, 1, idx)  # the argmax row itself; gradient flows to q_{j*} only
    else:
        alpha, s = AttentionScores.apply(p, q, qm)
        # normalise the [B,T1,T2] weights, not the [B,T1,d] sum: autograd then keeps only small tensors
        h = WeightedSum.apply(alpha / R.attention_denominator(s).unsqueeze(-1), q)
    m = multi_perspective_cosine(p, h, weight)  # p stays in its dtype: no fp32 copy is saved
    rows = (pm.bool() & qm.bool().any(1, keepdim=True)).unsqueeze(-1)
    return torch.where(rows, m, m.new_zeros(())).to(dtype)
