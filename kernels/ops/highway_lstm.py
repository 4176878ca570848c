"""Fused highway-LSTM cell (Triton) and the sequence-level highway-LSTM layer built on it.

Semantics are those of :func:`stackft.kernels.reference.highway_lstm_cell` /
:func:`~stackft.kernels.reference.highway_lstm` (He et al. 2017, AllenNLP alternating highway
LSTM): gates ``(i, f, g, o, r)`` plus a linear carry of the input.

Per time step the layer runs one GEMM (``h_{t-1} W_hᵀ + b``, with the bias fused by ``addmm``)
and one fused elementwise kernel; the input projection ``x W_xᵀ`` is hoisted out of the loop as
one GEMM over all steps. Ragged lengths, the direction and the variational dropout mask are
handled inside the kernel (inactive rows copy their state through and output 0).

Backward (:class:`HighwayLSTMLayerFunction`): forward saves only the per-step states ``h_t, c_t``
(``[T,B,H]`` each, which the forward writes anyway) and the hoisted ``x W_xᵀ``; backward
*recomputes* the recurrent pre-activations of all steps with one GEMM from the saved states,
then per step runs one fused backward kernel and one GEMM (``dh_{t-1} = d(hg_t) W_h``). The weight
gradients are single GEMMs over all steps at the end. The cell-level
:class:`HighwayLSTMCellFunction` saves its three inputs and recomputes the gates in its single backward kernel.

Precision: gate math in fp32; ``h`` and ``c`` are stored in the input dtype (as the reference does
step by step); the backward's running ``dh``/``dc`` are fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["highway_lstm_cell", "highway_lstm", "HighwayLSTMCellFunction", "HighwayLSTMLayerFunction"]


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh(x) = 2σ(2x) − 1, stable for large |x|
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _gates(XG, HG, C, row_x, row_h, row_c, cols, m, H):
    """Load one row block of gates and the previous cell; return activations in fp32."""
    xi = tl.load(XG + row_x + cols, mask=m, other=0.0).to(tl.float32)
    xf = tl.load(XG + row_x + H + cols, mask=m, other=0.0).to(tl.float32)
    xg = tl.load(XG + row_x + 2 * H + cols, mask=m, other=0.0).to(tl.float32)
    xo = tl.load(XG + row_x + 3 * H + cols, mask=m, other=0.0).to(tl.float32)
    xr = tl.load(XG + row_x + 4 * H + cols, mask=m, other=0.0).to(tl.float32)
    carry = tl.load(XG + row_x + 5 * H + cols, mask=m, other=0.0).to(tl.float32)
    i = _sigmoid(xi + tl.load(HG + row_h + cols, mask=m, other=0.0).to(tl.float32))
    f = _sigmoid(xf + tl.load(HG + row_h + H + cols, mask=m, other=0.0).to(tl.float32))
    g = _tanh(xg + tl.load(HG + row_h + 2 * H + cols, mask=m, other=0.0).to(tl.float32))
    o = _sigmoid(xo + tl.load(HG + row_h + 3 * H + cols, mask=m, other=0.0).to(tl.float32))
    r = _sigmoid(xr + tl.load(HG + row_h + 4 * H + cols, mask=m, other=0.0).to(tl.float32))
    c_prev = tl.load(C + row_c + cols, mask=m, other=0.0).to(tl.float32)
    return i, f, g, o, r, carry, c_prev


@triton.jit
def _cell_fwd_kernel(XG, s_xg, HG, s_hg, C, s_c, HPREV, s_hp, H_OUT, s_ho, C_OUT, s_co, OUT, s_out,
                     DROP, LEN, t, H,
                     HAS_DROP: tl.constexpr, HAS_LEN: tl.constexpr, BLOCK: tl.constexpr):
    """Program (column block, row b). Writes the new state ``H_OUT, C_OUT`` and, with lengths, the
    step output ``OUT`` (0 where ``t >= LEN[b]``, where the state is copied through from
    ``HPREV``/``C``). ``s_*`` are row strides; columns are contiguous."""
    b = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    i, f, g, o, r, carry, c_prev = _gates(XG, HG, C, b * s_xg, b * s_hg, b * s_c, cols, m, H)
    c = f * c_prev + i * g
    h = r * o * _tanh(c) + (1.0 - r) * carry
    if HAS_DROP:
        h = h * tl.load(DROP + b * H + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_LEN:
        active = tl.load(LEN + b) > t
        h_prev = tl.load(HPREV + b * s_hp + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(OUT + b * s_out + cols, tl.where(active, h, 0.0).to(OUT.dtype.element_ty), mask=m)
        h = tl.where(active, h, h_prev)
        c = tl.where(active, c, c_prev)
    tl.store(H_OUT + b * s_ho + cols, h.to(H_OUT.dtype.element_ty), mask=m)
    tl.store(C_OUT + b * s_co + cols, c.to(C_OUT.dtype.element_ty), mask=m)


@triton.jit
def _cell_bwd_kernel(XG, s_xg, HG, s_hg, C, s_c, GH, GC, REC, GOUT, s_gout, DROP, GDROP, LEN, t,
                     DXG, s_dxg, DHG, s_dhg, H,
                     HAS_REC: tl.constexpr, HAS_GOUT: tl.constexpr, HAS_DROP: tl.constexpr,
                     HAS_LEN: tl.constexpr, BLOCK: tl.constexpr):
    """Backward of one step; recomputes the gates from ``XG, HG, C`` (nothing else saved).

    In: ``GH, GC`` fp32 ``[B,H]`` grads w.r.t. the state after the step (``GH`` excludes the
    recurrent part ``REC = d(hg_{t+1}) W_h``, which is added here), ``GOUT`` grad of the step output.
    Out: ``DXG [B,6H]``, ``DHG [B,5H]`` (0 for inactive rows); in place, ``GC`` <- grad w.r.t.
    ``c_{t-1}``, ``GH`` <- the pass-through part of the grad w.r.t. ``h_{t-1}`` (inactive rows),
    ``GDROP`` += grad of the dropout mask.
    """
    b = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = cols < H
    i, f, g, o, r, carry, c_prev = _gates(XG, HG, C, b * s_xg, b * s_hg, b * s_c, cols, m, H)
    c = f * c_prev + i * g
    tc = _tanh(c)
    gh = tl.load(GH + b * H + cols, mask=m, other=0.0)
    if HAS_REC:
        gh += tl.load(REC + b * H + cols, mask=m, other=0.0).to(tl.float32)
    gc = tl.load(GC + b * H + cols, mask=m, other=0.0)
    gh_new = gh
    if HAS_GOUT:
        gh_new += tl.load(GOUT + b * s_gout + cols, mask=m, other=0.0).to(tl.float32)
    active = True
    if HAS_LEN:
        active = tl.load(LEN + b) > t
    if HAS_DROP:
        h_raw = r * o * tc + (1.0 - r) * carry
        gd = tl.load(GDROP + b * H + cols, mask=m, other=0.0)
        tl.store(GDROP + b * H + cols, gd + tl.where(active, gh_new * h_raw, 0.0), mask=m)
        gh_new = gh_new * tl.load(DROP + b * H + cols, mask=m, other=0.0).to(tl.float32)
    g_carry = gh_new * (1.0 - r)
    d_r = gh_new * (o * tc - carry) * r * (1.0 - r)
    d_o = gh_new * r * tc * o * (1.0 - o)
    gcn = gc + gh_new * r * o * (1.0 - tc * tc)
    d_i = gcn * g * i * (1.0 - i)
    d_f = gcn * c_prev * f * (1.0 - f)
    d_g = gcn * i * (1.0 - g * g)
    zero = tl.zeros_like(d_i)
    d_i = tl.where(active, d_i, zero)
    d_f = tl.where(active, d_f, zero)
    d_g = tl.where(active, d_g, zero)
    d_o = tl.where(active, d_o, zero)
    d_r = tl.where(active, d_r, zero)
    g_carry = tl.where(active, g_carry, zero)
    tl.store(GC + b * H + cols, tl.where(active, gcn * f, gc), mask=m)
    tl.store(GH + b * H + cols, tl.where(active, zero, gh), mask=m)
    ty = DXG.dtype.element_ty
    rx = DXG + b * s_dxg + cols
    tl.store(rx, d_i.to(ty), mask=m)
    tl.store(rx + H, d_f.to(ty), mask=m)
    tl.store(rx + 2 * H, d_g.to(ty), mask=m)
    tl.store(rx + 3 * H, d_o.to(ty), mask=m)
    tl.store(rx + 4 * H, d_r.to(ty), mask=m)
    tl.store(rx + 5 * H, g_carry.to(ty), mask=m)
    rh = DHG + b * s_dhg + cols
    tl.store(rh, d_i.to(ty), mask=m)
    tl.store(rh + H, d_f.to(ty), mask=m)
    tl.store(rh + 2 * H, d_g.to(ty), mask=m)
    tl.store(rh + 3 * H, d_o.to(ty), mask=m)
    tl.store(rh + 4 * H, d_r.to(ty), mask=m)


def _block(H: int) -> int:
    return max(16, min(256, triton.next_power_of_2(H)))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """2-D with contiguous columns (row stride free)."""
    return x if x.stride(-1) == 1 else x.contiguous()


class HighwayLSTMCellFunction(torch.autograd.Function):
    """``x_gates [B,6H], h_gates [B,5H], c_prev [B,H] -> (h, c)``; forward and backward are one
    kernel each. Saves the three inputs; backward recomputes the gate activations."""

    @staticmethod
    def forward(ctx, x_gates, h_gates, c_prev):
        xg, hg, c = _rows(x_gates), _rows(h_gates), _rows(c_prev)
        B, H = c.shape
        h_out = torch.empty(B, H, device=c.device, dtype=xg.dtype)
        c_out = torch.empty_like(h_out)
        BLOCK = _block(H)
        _cell_fwd_kernel[(triton.cdiv(H, BLOCK), B)](
            xg, xg.stride(0), hg, hg.stride(0), c, c.stride(0), c, c.stride(0), h_out, H, c_out, H,
            h_out, H, c, c, 0, H, HAS_DROP=False, HAS_LEN=False, BLOCK=BLOCK)
        ctx.save_for_backward(xg, hg, c)
        return h_out, c_out

    @staticmethod
    def backward(ctx, gh, gc):
        xg, hg, c = ctx.saved_tensors
        B, H = c.shape
        gh = torch.zeros(B, H, device=c.device) if gh is None else gh.float().contiguous().clone()
        gc = torch.zeros(B, H, device=c.device) if gc is None else gc.float().contiguous().clone()
        dxg = torch.empty(B, 6 * H, device=c.device, dtype=torch.float32)
        dhg = torch.empty(B, 5 * H, device=c.device, dtype=torch.float32)
        BLOCK = _block(H)
        _cell_bwd_kernel[(triton.cdiv(H, BLOCK), B)](
            xg, xg.stride(0), hg, hg.stride(0), c, c.stride(0), gh, gc, gh, gh, 0, gh, gh, gh, 0,
            dxg, 6 * H, dhg, 5 * H, H,
            HAS_REC=False, HAS_GOUT=False, HAS_DROP=False, HAS_LEN=False, BLOCK=BLOCK)
        return dxg.to(xg.dtype), dhg.to(hg.dtype), gc.to(c.dtype)


def highway_lstm_cell(x_gates, h_gates, c_prev):
    """Triton highway-LSTM step; contract of :func:`stackft.kernels.reference.highway_lstm_cell`."""
    dt = x_gates.dtype
    return HighwayLSTMCellFunction.apply(x_gates, h_gates.to(dt), c_prev.to(dt))


class HighwayLSTMLayerFunction(torch.autograd.Function):
    """One layer over ``x [B,T,in]``; see the module docstring for what is saved and recomputed.

    Weights arrive already in ``x.dtype``; ``lengths`` is an int32 tensor on x's device.
    """

    @staticmethod
    def forward(ctx, x, W_x, W_h, b, h0, c0, drop, lengths, reverse):
        B, T, _ = x.shape
        H = W_h.shape[1]
        dev, dt = x.device, x.dtype
        xg = F.linear(x, W_x)  # [B, T, 6H]: the hoisted input projection, one GEMM
        hs = torch.empty(T, B, H, device=dev, dtype=dt)
        cs = torch.empty(T, B, H, device=dev, dtype=dt)
        out = torch.empty(B, T, H, device=dev, dtype=dt)
        hg = torch.empty(B, 5 * H, device=dev, dtype=dt)
        W_hT = W_h.t()
        BLOCK = _block(H)
        grid = (triton.cdiv(H, BLOCK), B)
        has_drop = drop is not None
        h, c = h0, c0
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            torch.addmm(b, h, W_hT, out=hg)
            _cell_fwd_kernel[grid](
                xg[:, t], xg.stride(0), hg, 5 * H, c, c.stride(0), h, h.stride(0), hs[t], H, cs[t], H,
                out[:, t], out.stride(0), drop if has_drop else c, lengths, t, H,
                HAS_DROP=has_drop, HAS_LEN=True, BLOCK=BLOCK)
            h, c = hs[t], cs[t]
        ctx.save_for_backward(x, W_x, W_h, b, h0, c0, drop, lengths, xg, hs, cs)
        ctx.reverse = reverse
        return out, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, g_out, g_hn, g_cn):
        x, W_x, W_h, b, h0, c0, drop, lengths, xg, hs, cs = ctx.saved_tensors
        B, T, _ = x.shape
        H = W_h.shape[1]
        dev, dt = x.device, x.dtype
        reverse = ctx.reverse
        # the state each step started from, in time order
        if reverse:
            h_prev = torch.cat([hs[1:], h0.unsqueeze(0)])
            c_prev = torch.cat([cs[1:], c0.unsqueeze(0)])
        else:
            h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
            c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])
        hg_all = torch.addmm(b, h_prev.reshape(T * B, H), W_h.t()).view(T, B, 5 * H)  # one GEMM
        gh = torch.zeros(B, H, device=dev) if g_hn is None else g_hn.float().clone()
        gc = torch.zeros(B, H, device=dev) if g_cn is None else g_cn.float().clone()
        has_gout = g_out is not None
        gout = g_out.contiguous() if has_gout else None
        has_drop = drop is not None
        gdrop = torch.zeros(B, H, device=dev) if has_drop else gh
        dxg = torch.empty(B, T, 6 * H, device=dev, dtype=dt)
        dhg = torch.empty(T, B, 5 * H, device=dev, dtype=dt)
        rec = torch.zeros(B, H, device=dev, dtype=dt)
        BLOCK = _block(H)
        grid = (triton.cdiv(H, BLOCK), B)
        steps = range(T) if reverse else range(T - 1, -1, -1)
        for t in steps:
            _cell_bwd_kernel[grid](
                xg[:, t], xg.stride(0), hg_all[t], 5 * H, c_prev[t], H, gh, gc, rec,
                gout[:, t] if has_gout else gh, gout.stride(0) if has_gout else 0, drop if has_drop else gh, gdrop, lengths, t,
                dxg[:, t], dxg.stride(0), dhg[t], 5 * H, H,
                HAS_REC=True, HAS_GOUT=has_gout, HAS_DROP=has_drop, HAS_LEN=True, BLOCK=BLOCK)
            torch.mm(dhg[t], W_h, out=rec)
        g_h0 = gh + rec.float()
        dW_h = dhg.reshape(T * B, 5 * H).t() @ h_prev.reshape(T * B, H)
        db = dhg.float().sum((0, 1))
        dxg2 = dxg.reshape(B * T, 6 * H)
        dW_x = dxg2.t() @ x.reshape(B * T, -1)
        dx = (dxg2 @ W_x).view_as(x)
        return (dx, dW_x, dW_h, db.to(b.dtype), g_h0.to(h0.dtype), gc.to(c0.dtype),
                gdrop.to(drop.dtype) if has_drop else None, None, None)


def highway_lstm(x, lengths, W_x, W_h, b, h0=None, c0=None, reverse=False, dropout_mask=None):
    """Triton highway-LSTM layer; contract of :func:`stackft.kernels.reference.highway_lstm`."""
    B, T, _ = x.shape
    H = W_h.shape[1]
    dt, dev = x.dtype, x.device
    h0 = x.new_zeros(B, H) if h0 is None else h0.to(dt).contiguous()
    c0 = x.new_zeros(B, H) if c0 is None else c0.to(dt).contiguous()
    drop = None if dropout_mask is None else dropout_mask.to(dt).contiguous()
    lengths = lengths.to(device=dev, dtype=torch.int32).contiguous()
    out, h_n, c_n = HighwayLSTMLayerFunction.apply(x.contiguous(), W_x.to(dt), W_h.to(dt), b.to(dt),
                                                   h0, c0, drop, lengths, reverse)
    return out, (h_n, c_n)


# 0.1 names (deprecated, removed in 0.3): "HighwayLSTMLayer" also named the head's nn.Module
# (now stackft.modeling.heads.highway_lstm.UnidirectionalHighwayLSTM).
_RENAMED = {"HighwayLSTMCell": "HighwayLSTMCellFunction", "HighwayLSTMLayer": "HighwayLSTMLayerFunction"}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        warnings.warn(f"{__name__}.{name} was renamed {_RENAMED[name]}; the old name goes away in stackft 0.3",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
