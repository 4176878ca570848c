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

CUDA graphs (launch reduction). The per-step loop is launch-bound at BiLSTM-head sizes: eagerly a
layer issues about ``4T + 20`` launches per forward+backward (forward: the hoisted GEMM, then per
step one ``addmm`` and one cell kernel, ``2T + 3``; backward: the recompute GEMM and set-up, then
per step one cell kernel and one ``mm``, then the weight-gradient GEMMs: ``2T + ~17``), i.e. ~530
at T=128, each a few µs of host time. On CUDA (and not in the Triton interpreter, nor inside
someone else's graph capture) the two per-step loops are instead captured once into CUDA graphs
and replayed:

* shapes are bucketed so that a handful of graphs serve every batch: ``T`` is rounded up to a
  multiple of :data:`T_BUCKET` (16) and ``B`` to a multiple of :data:`B_BUCKET` (8). The padded
  time steps and rows are inactive through the lengths (clamped to ``T``; padded rows get length
  0), which the kernels already handle: state copied through, output 0, zero gradients. The result
  equals the loop's up to GEMM rounding (cuBLAS may pick another algorithm for the padded ``B``);
  with ``B`` and ``T`` on the buckets the same kernels run in the same order on the same values;
* one forward graph and one backward graph per key :func:`graph_key` = (kind, bucketed B,
  bucketed T, H, dtype, device, direction, dropout mask or not, [output grad or not]), kept in an
  LRU cache (:data:`_GRAPHS`) of at most ``STACKFT_HIGHWAY_GRAPHS_MAX`` (64) entries whose static
  buffers total at most ``STACKFT_HIGHWAY_GRAPHS_MAX_MB`` (2048) MB: a training epoch with ragged
  batches meets ~8 T buckets x 2 directions x (forward, backward), and one shape whose buffers alone
  exceed the bound takes the loop;
* each graph owns static buffers: the call copies its inputs in (forward: ``xg``, ``W_h``, ``b``,
  ``h0``, ``c0``, the mask, the lengths; backward: ``xg``, the recomputed gates, ``c_{t-1}``, the
  incoming grads, the mask, the lengths), replays, and copies the results out (the next replay of
  the same graph overwrites the buffers, so nothing returned or saved aliases them). Backward's
  ``DXG``/``DHG`` are written in place over its ``xg``/gates buffers (each program reads its row
  block before it writes it), so a backward graph holds ``13 H`` values per (row, step), a
  forward graph ``10 H``: at B=64, T=128, H=768 fp32, 327 + 252 MB per direction;
* launches per layer forward+backward with graphs: forward 1 GEMM + 9 copies in + 1 graph launch
  + 5 copies out (16); backward 2 cats + 1 GEMM + ~3 for the incoming grads + 11 copies in + 1 graph
  launch + 6 copies out + ~10 for the weight gradients and casts (~34): about 50 in all,
  independent of T (the 4T kernels still run, inside the graphs, without per-launch host cost). ``bench/bench_highway_lstm.py`` counts them on a GPU (column
  ``launches``: host-side launch calls in one forward+backward, from the profiler; Triton's
  driver-API launches count only where the profiler records driver calls);
* fallback to the loop (same code as before) whenever capture is impossible: CPU tensors or the
  interpreter, a capture already under way on the stream, ``T == 0`` or ``B == 0``,
  ``STACKFT_HIGHWAY_GRAPHS=0``, ``graphs=False``, or a capture that failed once for that key
  (warned once, never retried).
The buffers of an entry are shared by every call with its key: calls are serialised on the host
(a lock held while the copies and the replay are enqueued) and, when a call comes from another
stream than the previous one, its stream first waits for the previous call's work (an event).
Backward's in-place ``DXG``/``DHG`` relies on each program reading its row block before writing
it: in program order every load comes first, and the compiler cannot move a store above a load it
cannot prove disjoint (Triton marks no pointer ``noalias``); the CUDA tests compare the graph path
with the loop, which writes separate buffers. A persistent kernel over the time
steps (the recurrent GEMM inside the cell kernel, for small H) would cut the launches further and
is not implemented.
"""

from __future__ import annotations

import collections
import os
import threading
import warnings

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["highway_lstm_cell", "highway_lstm", "HighwayLSTMCellFunction", "HighwayLSTMLayerFunction",
           "T_BUCKET", "B_BUCKET", "graph_key", "graphs_usable", "clear_graphs"]


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


def _fwd_loop(xg, W_h, b, h0, c0, drop, lengths, reverse, hs, cs, out, hg):
    """The forward recurrence: per step one ``addmm`` (into ``hg``) and one cell kernel, writing the
    states ``hs[t], cs[t]`` and the outputs ``out[:, t]``. The final state is ``hs/cs`` at the last
    step run (``0`` if ``reverse`` else ``T - 1``)."""
    T, B, H = hs.shape
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


def _bwd_loop(xg, hg_all, c_prev, gh, gc, rec, gout, drop, gdrop, lengths, dxg, dhg, W_h, reverse):
    """The backward recurrence (``rec`` must hold 0 on entry): per step one cell kernel and one
    ``mm``. ``dxg``/``dhg`` may be ``xg``/``hg_all`` themselves (in place, see the module docstring)."""
    T, B, H = c_prev.shape
    has_gout, has_drop = gout is not None, drop is not None
    BLOCK = _block(H)
    grid = (triton.cdiv(H, BLOCK), B)
    for t in (range(T) if reverse else range(T - 1, -1, -1)):
        _cell_bwd_kernel[grid](
            xg[:, t], xg.stride(0), hg_all[t], hg_all.stride(1), c_prev[t], c_prev.stride(1), gh, gc, rec,
            gout[:, t] if has_gout else gh, gout.stride(0) if has_gout else 0, drop if has_drop else gh,
            gdrop if has_drop else gh, lengths, t,
            dxg[:, t], dxg.stride(0), dhg[t], dhg.stride(1), H,
            HAS_REC=True, HAS_GOUT=has_gout, HAS_DROP=has_drop, HAS_LEN=True, BLOCK=BLOCK)
        torch.mm(dhg[t], W_h, out=rec)


# ---------------------------------------------------------------------------------------------
# CUDA graphs of the two recurrences (see the module docstring)

T_BUCKET = 16  # time steps are rounded up to a multiple of this
B_BUCKET = 8  # batch rows likewise
_GRAPHS_ENV, _GRAPHS_MAX_ENV = "STACKFT_HIGHWAY_GRAPHS", "STACKFT_HIGHWAY_GRAPHS_MAX"
_GRAPHS_MAX_MB_ENV = "STACKFT_HIGHWAY_GRAPHS_MAX_MB"


def bucket(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (0 stays 0)."""
    return -(-int(n) // multiple) * multiple


def graph_key(kind: str, B: int, T: int, H: int, dtype: torch.dtype, device, reverse: bool, has_drop: bool,
              has_gout: bool | None = None) -> tuple:
    """Cache key of a recurrence graph: ``kind`` is "fwd" or "bwd"; B and T are bucketed; ``has_gout``
    (backward only) says whether the output's gradient exists."""
    if kind not in ("fwd", "bwd"):
        raise ValueError(f"kind must be 'fwd' or 'bwd', got {kind!r}")
    dev = torch.device(device)
    return (kind, bucket(B, B_BUCKET), bucket(T, T_BUCKET), int(H), dtype, dev.type, dev.index, bool(reverse),
            bool(has_drop), None if kind == "fwd" else bool(has_gout))


def graphs_usable(device, B: int, T: int, graphs: bool | None = None) -> str | None:
    """None when the graph path may run for a call on ``device``; else the reason it does not."""
    if graphs is False:
        return "graphs=False"
    if os.environ.get(_GRAPHS_ENV, "1") in ("0", "false", "off"):
        return f"{_GRAPHS_ENV}=0"
    dev = torch.device(device)
    if dev.type != "cuda":
        return f"{dev.type} tensors"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return "the Triton interpreter is on"
    if B == 0 or T == 0:
        return "empty input"
    if torch.cuda.is_current_stream_capturing():
        return "a CUDA graph capture is already under way"
    return None


class _GraphCache:
    """LRU of built graphs, bounded by a count and by the bytes of their static buffers; a key whose
    build failed is remembered and never rebuilt."""

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None):
        self._max, self._max_bytes = max_entries, max_bytes
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self.failed: dict = {}
        self.lock = threading.Lock()
        self.builds = 0

    @property
    def max_entries(self) -> int:
        return self._max if self._max is not None else max(1, int(os.environ.get(_GRAPHS_MAX_ENV, "64")))

    @property
    def max_bytes(self) -> int:
        if self._max_bytes is not None:
            return self._max_bytes
        return int(float(os.environ.get(_GRAPHS_MAX_MB_ENV, "2048")) * 2**20)

    @property
    def nbytes(self) -> int:
        return sum(getattr(e, "nbytes", 0) for e in self._entries.values())

    def get(self, key, build, nbytes: int = 0):
        """The entry for ``key`` (built by ``build()`` on a miss), or None if building fails or its
        ``nbytes`` of static buffers alone exceed the byte bound (then the caller takes the loop)."""
        with self.lock:
            if key in self.failed:
                return None
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            if nbytes > self.max_bytes:
                return None
            while self._entries and (len(self._entries) >= self.max_entries
                                     or self.nbytes + nbytes > self.max_bytes):
                self._entries.popitem(last=False)  # evict before building: the memory comes back first
            try:
                entry = build()
            except Exception as exc:  # capture unsupported here: remember, warn once, use the loop
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"highway_lstm: CUDA graph capture failed for {key} ({self.failed[key][:200]}); "
                              "using the per-step loop for these shapes", RuntimeWarning, stacklevel=4)
                return None
            self.builds += 1
            self._entries[key] = entry
            return entry

    def keys(self) -> list:
        return list(self._entries)

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self.failed.clear()


def static_bytes(key: tuple) -> int:
    """Bytes of the static buffers of the graph for ``key`` (:func:`graph_key`)."""
    kind, Bb, Tb, H, dtype = key[:5]
    has_drop, has_gout = key[8], key[9]
    el = torch.empty((), dtype=dtype).element_size()
    if kind == "fwd":  # xg, hs, cs, out per (row, step); W_h, b, h0, c0, drop, hg, lengths
        return el * (Bb * Tb * 9 * H + 5 * H * H + 5 * H + Bb * (7 + has_drop) * H) + 4 * Bb
    # xg/dxg, gates/dhg, c_prev, gout per (row, step); W_h, rec, drop; fp32 gh, gc, gdrop; lengths
    return (el * (Bb * Tb * (12 + has_gout) * H + 5 * H * H + Bb * (1 + has_drop) * H)
            + 4 * Bb * (2 + has_drop) * H + 4 * Bb)


_GRAPHS = _GraphCache()


def clear_graphs() -> None:
    """Drop every cached graph and its buffers (and forget failed captures)."""
    _GRAPHS.clear()


def _capture(run) -> "torch.cuda.CUDAGraph":
    """Warm ``run`` up on a side stream (Triton JIT, cuBLAS handles), then capture it."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.autocast("cuda", enabled=False):
        run()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.autocast("cuda", enabled=False), torch.cuda.graph(g, capture_error_mode="thread_local"):
        run()
    return g


class _Entry:
    """What both graph kinds share: the capture and the guard of their static buffers."""

    def _build(self, device):
        self.lock = threading.Lock()
        self.graph = _capture(self._run)
        self.cuda = torch.device(device).type == "cuda"  # (the CPU tests drive entries with a fake capture)
        if self.cuda:
            self.stream = torch.cuda.current_stream()
            self.done = torch.cuda.Event()
            self.done.record(self.stream)

    def _enter(self):
        self.lock.acquire()
        if self.cuda:
            stream = torch.cuda.current_stream()
            if stream != self.stream:  # the previous call's copies out must finish before ours overwrite
                stream.wait_event(self.done)
                self.stream = stream

    def _exit(self):
        if self.cuda:
            self.done.record(self.stream)
        self.lock.release()


class _FwdGraph(_Entry):
    """Static buffers and the captured forward recurrence for one :func:`graph_key`."""

    def __init__(self, Bb, Tb, H, dtype, device, reverse, has_drop):
        z = lambda *shape, dt=dtype: torch.zeros(*shape, device=device, dtype=dt)  # noqa: E731
        self.reverse = reverse
        self.xg, self.W_h, self.b = z(Bb, Tb, 6 * H), z(5 * H, H), z(5 * H)
        self.h0, self.c0 = z(Bb, H), z(Bb, H)
        self.drop = z(Bb, H) if has_drop else None
        self.lengths = z(Bb, dt=torch.int32)
        self.hs, self.cs, self.out, self.hg = z(Tb, Bb, H), z(Tb, Bb, H), z(Bb, Tb, H), z(Bb, 5 * H)
        self.nbytes = sum(t.nbytes for t in (self.xg, self.W_h, self.b, self.h0, self.c0, self.drop, self.lengths,
                                             self.hs, self.cs, self.out, self.hg) if t is not None)
        self._build(device)

    def _run(self):
        _fwd_loop(self.xg, self.W_h, self.b, self.h0, self.c0, self.drop, self.lengths, self.reverse,
                  self.hs, self.cs, self.out, self.hg)

    def __call__(self, xg, W_h, b, h0, c0, drop, lengths):
        self._enter()
        try:
            return self._call(xg, W_h, b, h0, c0, drop, lengths)
        finally:
            self._exit()

    def _call(self, xg, W_h, b, h0, c0, drop, lengths):
        B, T = xg.shape[:2]
        self.xg[:B, :T].copy_(xg)
        self.W_h.copy_(W_h)
        self.b.copy_(b)
        self.h0[:B].copy_(h0)
        self.c0[:B].copy_(c0)
        if drop is not None:
            self.drop[:B].copy_(drop)
        self.lengths.zero_()  # padded rows: length 0, inactive at every step
        self.lengths[:B].copy_(lengths.clamp(max=T))  # padded steps: inactive for every row
        self.graph.replay()
        last = 0 if self.reverse else -1  # padded steps copy the state through
        return (self.out[:B, :T].clone(), self.hs[:T, :B].clone(), self.cs[:T, :B].clone(),
                self.hs[last, :B].clone(), self.cs[last, :B].clone())


class _BwdGraph(_Entry):
    """Static buffers and the captured backward recurrence for one :func:`graph_key`."""

    def __init__(self, Bb, Tb, H, dtype, device, reverse, has_drop, has_gout):
        z = lambda *shape, dt=dtype: torch.zeros(*shape, device=device, dtype=dt)  # noqa: E731
        f32 = torch.float32
        self.reverse = reverse
        self.xg, self.hg_all, self.c_prev = z(Bb, Tb, 6 * H), z(Tb, Bb, 5 * H), z(Tb, Bb, H)
        self.W_h = z(5 * H, H)
        self.gh, self.gc, self.rec = z(Bb, H, dt=f32), z(Bb, H, dt=f32), z(Bb, H)
        self.gout = z(Bb, Tb, H) if has_gout else None
        self.drop = z(Bb, H) if has_drop else None
        self.gdrop = z(Bb, H, dt=f32) if has_drop else None
        self.lengths = z(Bb, dt=torch.int32)
        self.nbytes = sum(t.nbytes for t in (self.xg, self.hg_all, self.c_prev, self.W_h, self.gh, self.gc, self.rec,
                                             self.gout, self.drop, self.gdrop, self.lengths) if t is not None)
        self._build(device)

    def _run(self):
        self.rec.zero_()
        if self.gdrop is not None:
            self.gdrop.zero_()
        # DXG / DHG in place over XG / the gates
        _bwd_loop(self.xg, self.hg_all, self.c_prev, self.gh, self.gc, self.rec, self.gout, self.drop, self.gdrop,
                  self.lengths, self.xg, self.hg_all, self.W_h, self.reverse)

    def __call__(self, xg, hg_all, c_prev, gh, gc, gout, drop, lengths, W_h):
        """-> ``(gh, gc, rec, gdrop, dxg, dhg)``; ``dxg``/``dhg`` are returned as clones too."""
        self._enter()
        try:
            return self._call(xg, hg_all, c_prev, gh, gc, gout, drop, lengths, W_h)
        finally:
            self._exit()

    def _call(self, xg, hg_all, c_prev, gh, gc, gout, drop, lengths, W_h):
        B, T = xg.shape[:2]
        self.xg[:B, :T].copy_(xg)
        self.hg_all[:T, :B].copy_(hg_all)
        self.c_prev[:T, :B].copy_(c_prev)
        self.gh[:B].copy_(gh)
        self.gc[:B].copy_(gc)
        if gout is not None:
            self.gout[:B, :T].copy_(gout)
        if drop is not None:
            self.drop[:B].copy_(drop)
        self.W_h.copy_(W_h)
        self.lengths.zero_()
        self.lengths[:B].copy_(lengths.clamp(max=T))
        self.graph.replay()
        gdrop = self.gdrop[:B].clone() if drop is not None else None
        return (self.gh[:B].clone(), self.gc[:B].clone(), self.rec[:B].clone(), gdrop,
                self.xg[:B, :T].clone(), self.hg_all[:T, :B].clone())


def _fwd_graph(B, T, H, dtype, device, reverse, has_drop):
    key = graph_key("fwd", B, T, H, dtype, device, reverse, has_drop)
    return _GRAPHS.get(key, lambda: _FwdGraph(key[1], key[2], H, dtype, device, reverse, has_drop),
                       static_bytes(key))


def _bwd_graph(B, T, H, dtype, device, reverse, has_drop, has_gout):
    key = graph_key("bwd", B, T, H, dtype, device, reverse, has_drop, has_gout)
    return _GRAPHS.get(key, lambda: _BwdGraph(key[1], key[2], H, dtype, device, reverse, has_drop, has_gout),
                       static_bytes(key))


class HighwayLSTMLayerFunction(torch.autograd.Function):
    """One layer over ``x [B,T,in]``; see the module docstring for what is saved and recomputed.

    Weights arrive already in ``x.dtype``; ``lengths`` is an int32 tensor on x's device.
    ``graphs``: None (auto: CUDA graphs where usable, see :func:`graphs_usable`), False (the loop).
    """

    @staticmethod
    def forward(ctx, x, W_x, W_h, b, h0, c0, drop, lengths, reverse, graphs=None):
        B, T, _ = x.shape
        H = W_h.shape[1]
        dev, dt = x.device, x.dtype
        xg = F.linear(x, W_x)  # [B, T, 6H]: the hoisted input projection, one GEMM
        has_drop = drop is not None
        entry = None
        ctx.graphs = graphs_usable(dev, B, T, graphs) is None
        if ctx.graphs:
            entry = _fwd_graph(B, T, H, dt, dev, reverse, has_drop)
        if entry is not None:
            out, hs, cs, h_n, c_n = entry(xg, W_h, b, h0, c0, drop, lengths)
        else:
            hs = torch.empty(T, B, H, device=dev, dtype=dt)
            cs = torch.empty(T, B, H, device=dev, dtype=dt)
            out = torch.empty(B, T, H, device=dev, dtype=dt)
            hg = torch.empty(B, 5 * H, device=dev, dtype=dt)
            _fwd_loop(xg, W_h, b, h0, c0, drop, lengths, reverse, hs, cs, out, hg)
            last = 0 if reverse else T - 1
            h_n, c_n = (hs[last].clone(), cs[last].clone()) if T else (h0.clone(), c0.clone())
        ctx.save_for_backward(x, W_x, W_h, b, h0, c0, drop, lengths, xg, hs, cs)
        ctx.reverse = reverse
        return out, h_n, c_n

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
        entry = None
        if ctx.graphs and graphs_usable(dev, B, T) is None:
            entry = _bwd_graph(B, T, H, dt, dev, reverse, has_drop, has_gout)
        if entry is not None:
            gh, gc, rec, gdrop, dxg, dhg = entry(xg, hg_all, c_prev, gh, gc, gout, drop, lengths, W_h)
        else:
            gdrop = torch.zeros(B, H, device=dev) if has_drop else None
            dxg = torch.empty(B, T, 6 * H, device=dev, dtype=dt)
            dhg = torch.empty(T, B, 5 * H, device=dev, dtype=dt)
            rec = torch.zeros(B, H, device=dev, dtype=dt)
            _bwd_loop(xg, hg_all, c_prev, gh, gc, rec, gout, drop, gdrop, lengths, dxg, dhg, W_h, reverse)
        g_h0 = gh + rec.float()
        dW_h = dhg.reshape(T * B, 5 * H).t() @ h_prev.reshape(T * B, H)
        db = dhg.float().sum((0, 1))
        dxg2 = dxg.reshape(B * T, 6 * H)
        dW_x = dxg2.t() @ x.reshape(B * T, -1)
        dx = (dxg2 @ W_x).view_as(x)
        return (dx, dW_x, dW_h, db.to(b.dtype), g_h0.to(h0.dtype), gc.to(c0.dtype),
                gdrop.to(drop.dtype) if has_drop else None, None, None, None)


def highway_lstm(x, lengths, W_x, W_h, b, h0=None, c0=None, reverse=False, dropout_mask=None, graphs=None):
    """Triton highway-LSTM layer; contract of :func:`stackft.kernels.reference.highway_lstm`.

    ``graphs``: None (default) replays CUDA graphs of the recurrence where usable (CUDA, static
    bucketed shapes; see the module docstring), False always runs the per-step loop.
    """
    B, T, _ = x.shape
    H = W_h.shape[1]
    dt, dev = x.dtype, x.device
    h0 = x.new_zeros(B, H) if h0 is None else h0.to(dt).contiguous()
    c0 = x.new_zeros(B, H) if c0 is None else c0.to(dt).contiguous()
    drop = None if dropout_mask is None else dropout_mask.to(dt).contiguous()
    lengths = lengths.to(device=dev, dtype=torch.int32).contiguous()
    out, h_n, c_n = HighwayLSTMLayerFunction.apply(x.contiguous(), W_x.to(dt), W_h.to(dt), b.to(dt),
                                                   h0, c0, drop, lengths, reverse, graphs)
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
