"""The C++ (CPU) highway-LSTM layer: ``torch.ops.stackft_C.highway_lstm_fwd/bwd`` as a custom op.

The extension ops (``csrc/highway_lstm.cpp``, built by :mod:`stackft._ext` with ``gather_pad``)
are composed here into ``torch.ops.stackft.highway_lstm_layer``, a ``torch.library.custom_op``
with a fake implementation and an autograd formula (``register_autograd``) whose backward is a
second custom op, ``torch.ops.stackft.highway_lstm_layer_backward`` (fake too): the pair traces
under ``torch.compile`` and ``opcheck``. Contract: :func:`stackft.kernels.reference.highway_lstm`.

What the forward keeps for the backward (all returned by the forward op, never differentiated):
the activated gates ``[B,T,6H]`` (they overwrite the input projection in place, so the backward
has no recompute GEMM; it recomputes only ``tanh(c_t)`` from them and ``c_prev``), the state each
step read, ``h_prev [B,T,H]`` and ``c_prev [B,T,H]``. Gate buffers are fp32 for fp32/bf16 inputs
and fp64 for fp64.

Dtypes: float32, float64 (exact math: the tests compare float64 gradients), bfloat16 (GEMMs in
bf16, gate math and the cell state in fp32, backward in fp32). Reach it through
:func:`stackft.kernels.highway_lstm` (``backend="auto"`` on CPU tensors, or ``backend="cpp"``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from stackft import _ext

DTYPES = (torch.float32, torch.float64, torch.bfloat16)

__all__ = ["DTYPES", "gemm", "highway_lstm", "isa", "unavailable_reason"]


def unavailable_reason(*tensors: Tensor | None, build: bool = True) -> str | None:
    """Why the C++ layer cannot run on these tensors (None: it can).

    ``build=True`` builds the extension on first use; ``build=False`` only accepts one this process
    has already loaded (for ``torch.compile`` tracing, where no build may start).
    """
    ts = [t for t in tensors if isinstance(t, Tensor)]
    if not all(t.device.type == "cpu" for t in ts):
        return "inputs are not CPU tensors"
    if ts and ts[0].dtype not in DTYPES:
        return f"dtype {ts[0].dtype} is not one of float32, float64, bfloat16"
    if _ext.disabled():
        return "the C++ extension is disabled (STACKFT_NO_EXT)"
    if not build:
        return None if _ext.loaded() is not None else "traced by torch.compile before the C++ extension was loaded"
    if _ext.load() is None:
        err = _ext.load_error()
        return f"the C++ extension did not build ({type(err).__name__})" if err else "the C++ extension is unavailable"
    return None


def isa(set_to: str | None = None) -> str:
    """The gate-math code path of the loaded extension ("avx512", "avx2" or "base"); ``set_to`` switches it."""
    return _ops().highway_lstm_isa(set_to)


def gemm() -> str:
    """Where the extension runs the large fp32 GEMMs (over all B·T rows): "onednn" (at::native::mkldnn_matmul) or "mm"."""
    return _ops().highway_lstm_gemm()


def step_gemm() -> str:
    """Where it runs the per-step fp32 GEMMs: "packed-avx512" / "packed-avx2" (its own micro-kernel on a packed copy
    of W_h, with the gate-math path of the same ISA; ``STACKFT_HL_PACKED=0`` turns it off) or "blas" (at::mm / the
    large-GEMM path; the base path, or with the micro-kernels turned off)."""
    return _ops().highway_lstm_step_gemm()


def mm(a: Tensor, b: Tensor, backend: str = "packed", repeat: int = 1) -> Tensor:
    """``a @ b`` (float32 ``[M, K] x [K, N]``, any strides) on one of the layer's GEMM paths: ``"packed-avx512"`` /
    ``"packed-avx2"`` (the micro-kernels; RuntimeError where the CPU cannot run one), ``"packed"`` (the best of them
    here), ``"onednn"`` or ``"mm"``, run ``repeat`` times with ``b`` packed once (as the layer's per-step GEMMs are).
    For tests and ``bench/bench_highway_gemm.py``."""
    return _ops().highway_lstm_mm(a, b, backend, repeat)


def _ops():
    """``torch.ops.stackft_C``, building/loading the extension first (RuntimeError if it cannot)."""
    if _ext.loaded() is None and _ext.load() is None:
        raise RuntimeError(f"stackft.kernels.ops.highway_lstm_cpp: {unavailable_reason()}")
    return torch.ops.stackft_C


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.custom_op("stackft::highway_lstm_layer", mutates_args=(), device_types="cpu")
def _layer(x: Tensor, lengths: Tensor, W_x: Tensor, W_h: Tensor, b: Tensor, h0: Optional[Tensor],
           c0: Optional[Tensor], dropout_mask: Optional[Tensor], reverse: bool
           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (out, h_n, c_n, gates, h_prev, c_prev); the last three are the backward's buffers."""
    return tuple(_ops().highway_lstm_fwd(x, lengths, W_x, W_h, b, h0, c0, dropout_mask, reverse))


@_layer.register_fake
def _layer_fake(x, lengths, W_x, W_h, b, h0, c0, dropout_mask, reverse):
    B, T, _ = x.shape
    H = W_h.shape[1]
    acc = _acc(x.dtype)
    return (x.new_empty(B, T, H), x.new_empty(B, H), x.new_empty(B, H), x.new_empty(B, T, 6 * H, dtype=acc),
            x.new_empty(B, T, H), x.new_empty(B, T, H, dtype=acc))


@torch.library.custom_op("stackft::highway_lstm_layer_backward", mutates_args=(), device_types="cpu")
def _layer_backward(grad_out: Optional[Tensor], grad_h_n: Optional[Tensor], grad_c_n: Optional[Tensor], x: Tensor,
                    lengths: Tensor, W_x: Tensor, W_h: Tensor, dropout_mask: Optional[Tensor], gates: Tensor,
                    h_prev: Tensor, c_prev: Tensor, reverse: bool, output_mask: list[bool]
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (dx, dW_x, dW_h, db, dh0, dc0, d_dropout_mask); d_dropout_mask is ``[0]`` without a mask.

    ``output_mask`` = [dx, dweights (W_x, W_h, b), dstate (h0, c0)]: what is not wanted is not
    computed (no dx GEMM for an input without grad) and comes back as ``[0]``.
    """
    return tuple(_ops().highway_lstm_bwd(grad_out, grad_h_n, grad_c_n, x, lengths, W_x, W_h,
                                                      dropout_mask, gates, h_prev, c_prev, reverse, output_mask))


@_layer_backward.register_fake
def _layer_backward_fake(grad_out, grad_h_n, grad_c_n, x, lengths, W_x, W_h, dropout_mask, gates, h_prev, c_prev,
                         reverse, output_mask):
    B, T, n_in = x.shape
    H = W_h.shape[1]
    need_dx, need_dw, need_state = output_mask
    shape = lambda want, *s: x.new_empty(*s) if want else x.new_empty(0)  # noqa: E731
    return (shape(need_dx, B, T, n_in), shape(need_dw, 6 * H, n_in), shape(need_dw, 5 * H, H), shape(need_dw, 5 * H),
            shape(need_state, B, H), shape(need_state, B, H), shape(dropout_mask is not None, B, H))


def _setup_context(ctx, inputs, output):
    x, lengths, W_x, W_h, b, h0, c0, dropout_mask, reverse = inputs
    _, _, _, gates, h_prev, c_prev = output
    ctx.save_for_backward(x, lengths, W_x, W_h, dropout_mask, gates, h_prev, c_prev)
    ctx.reverse = reverse


def _backward(ctx, g_out, g_hn, g_cn, *_buffers):
    x, lengths, W_x, W_h, dropout_mask, gates, h_prev, c_prev = ctx.saved_tensors
    need = ctx.needs_input_grad  # x, lengths, W_x, W_h, b, h0, c0, dropout_mask, reverse
    mask = [need[0], any(need[2:5]), need[5] or need[6]]
    dx, dW_x, dW_h, db, dh0, dc0, ddrop = _layer_backward(g_out, g_hn, g_cn, x, lengths, W_x, W_h, dropout_mask,
                                                          gates, h_prev, c_prev, ctx.reverse, mask)
    keep = lambda t, i: t if need[i] else None  # noqa: E731
    return (keep(dx, 0), None, keep(dW_x, 2), keep(dW_h, 3), keep(db, 4), keep(dh0, 5), keep(dc0, 6),
            keep(ddrop, 7), None)


_layer.register_autograd(_backward, setup_context=_setup_context)


def highway_lstm(x, lengths, W_x, W_h, b, h0=None, c0=None, reverse=False, dropout_mask=None):
    """C++ highway-LSTM layer on CPU tensors; contract of :func:`stackft.kernels.reference.highway_lstm`.

    Weights, bias, initial state and mask are cast to ``x.dtype`` (as the reference does), lengths
    to int64 on the CPU. Returns ``(out [B,T,H], (h_n [B,H], c_n [B,H]))``.
    """
    dt = x.dtype
    cast = (lambda t: None if t is None else t.to(dt))  # noqa: E731
    lengths = torch.as_tensor(lengths).to(device="cpu", dtype=torch.int64)
    out, h_n, c_n, *_ = _layer(x, lengths, W_x.to(dt), W_h.to(dt), b.to(dt), cast(h0), cast(c0), cast(dropout_mask),
                               bool(reverse))
    return out, (h_n, c_n)
