"""Triton kernels and their plain-PyTorch references (installed as ``stackft.kernels``).

Public functions (each takes ``backend="auto" | "triton" | "torch"``, see ``_backend``;
:func:`highway_lstm` also ``"cpp"``, the C++ CPU layer, which ``"auto"`` picks for CPU tensors):

* :func:`multi_perspective_cosine` ``(v1 [...,d], v2 [...,d], weight [l,d]) -> [..., l]``
* :func:`maxpool_match` ``(p [B,T1,d], q [B,T2,d], weight, p_mask, q_mask) -> ([B,T1,l], [B,T2,l])``
* :func:`attentive_match` ``(p, q, weight, p_mask, q_mask, mode="mean"|"max") -> [B,T1,l]``
* :func:`highway_lstm_cell` ``(x_gates [B,6H], h_gates [B,5H], c_prev [B,H]) -> (h, c)``
* :func:`highway_lstm` ``(x [B,T,in], lengths [B], W_x, W_h, b, ...) -> (out [B,T,H], (h_n, c_n))``

Semantics (eps conventions, masking, dtypes) are documented in :mod:`stackft.kernels.reference`,
which is the spec every kernel is tested against.
"""

from __future__ import annotations

from stackft.kernels import reference
from stackft.kernels._backend import resolve, triton_available
from stackft.kernels.ops import highway_lstm_cpp as _highway_lstm_cpp
from stackft.kernels.reference import ATT_EPS, NORM_EPS

# The Triton implementations live in stackft.kernels.ops.<op>, so no module shadows a public
# function of the same name.
if triton_available():
    from stackft.kernels.ops import highway_lstm as _highway_lstm
    from stackft.kernels.ops import mp_matching as _mp_matching
else:  # pragma: no cover - triton is optional
    _highway_lstm = _mp_matching = None

__all__ = [
    "NORM_EPS",
    "ATT_EPS",
    "reference",
    "multi_perspective_cosine",
    "maxpool_match",
    "attentive_match",
    "highway_lstm_cell",
    "highway_lstm",
]


def multi_perspective_cosine(v1, v2, weight, backend="auto"):
    """``[..., d] x [..., d] -> [..., l]``: element k is ``cos(W_k∘v1, W_k∘v2)``."""
    if resolve(backend, "multi_perspective_cosine", v1, v2, weight) == "triton":
        return _mp_matching.multi_perspective_cosine(v1, v2, weight)
    return reference.multi_perspective_cosine(v1, v2, weight)


def maxpool_match(p, q, weight, p_mask=None, q_mask=None, backend="auto"):
    """``(p_max [B,T1,l], q_max [B,T2,l])``: max over valid tokens of the other side."""
    if resolve(backend, "maxpool_match", p, q, weight) == "triton":
        return _mp_matching.maxpool_match(p, q, weight, p_mask, q_mask)
    return reference.maxpool_match(p, q, weight, p_mask, q_mask)


def attentive_match(p, q, weight, p_mask=None, q_mask=None, mode="mean", backend="auto"):
    """``[B,T1,l]``: attentive (``"mean"``, Σα-normalised) or max-attentive (``"max"``, argmax row)."""
    if resolve(backend, "attentive_match", p, q, weight) == "triton":
        return _mp_matching.attentive_match(p, q, weight, p_mask, q_mask, mode)
    return reference.attentive_match(p, q, weight, p_mask, q_mask, mode)


def highway_lstm_cell(x_gates, h_gates, c_prev, backend="auto"):
    """One fused highway-LSTM step -> ``(h [B,H], c [B,H])``."""
    if resolve(backend, "highway_lstm_cell", x_gates, h_gates, c_prev) == "triton":
        return _highway_lstm.highway_lstm_cell(x_gates, h_gates, c_prev)
    return reference.highway_lstm_cell(x_gates, h_gates, c_prev)


def highway_lstm(x, lengths, W_x, W_h, b, h0=None, c0=None, reverse=False, dropout_mask=None,
                 backend="auto"):
    """One highway-LSTM layer -> ``(out [B,T,H], (h_n [B,H], c_n [B,H]))``.

    ``backend="auto"``: Triton on CUDA, the C++ layer (:mod:`stackft.kernels.ops.highway_lstm_cpp`)
    on CPU when the extension builds, else the reference; ``"cpp"`` asks for the C++ layer.
    """
    impl = resolve(backend, "highway_lstm", x, W_x, W_h, b, h0, c0, dropout_mask)
    if impl == "triton":
        return _highway_lstm.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse, dropout_mask)
    if impl == "cpp":
        return _highway_lstm_cpp.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse, dropout_mask)
    return reference.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse, dropout_mask)
