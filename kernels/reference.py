"""Plain-PyTorch references: the spec of record for every kernel in ``stackft.kernels``.

Every Triton kernel is tested against the function of the same name here. These functions are
written for readability, not speed; they may materialise intermediates (e.g. the pairwise
``[B, l, T1, T2]`` cosine tensor in :func:`maxpool_match`).

Conventions shared by all cosines (BiMPM, Wang et al. 2017, arXiv 1702.03814):

* ``cos(a, b) = <a, b> / (max(|a|, 1e-8) * max(|b|, 1e-8))``, each norm clamped separately at
  :data:`NORM_EPS`. The clamp is applied to the squared norm (``1e-16``) so that the gradient of a
  zero vector is 0, not NaN.
* The multi-perspective cosine uses the identity
  ``cos(W_k∘a, W_k∘b) = Σ_d W_kd² a_d b_d / (|W_k∘a| |W_k∘b|)`` with ``|W_k∘a|² = (a∘a)·(W_k∘W_k)``.
* bf16/fp16 inputs are computed in fp32 (float64 stays float64); results are cast back to the
  input dtype. ``weight`` is cast to the compute dtype, so an fp32 parameter with bf16
  activations is fine.
* Masks are bool ``[B, T]`` with True = real token. ``None`` means every position is valid.
  Output rows of padded positions are 0, and so are rows whose other side has no valid token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "NORM_EPS",
    "ATT_EPS",
    "compute_dtype",
    "multi_perspective_cosine",
    "maxpool_match",
    "attentive_match",
    "attention_denominator",
    "highway_lstm_cell",
    "highway_lstm",
]

#: every vector norm inside a cosine is clamped at this value (fp32 and up).
NORM_EPS = 1e-8
#: attentive "mean" mode: |Σ_j α_ij| is clamped at this value, keeping its sign (0 counts as +).
ATT_EPS = 1e-6


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half types and fp32, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _clamped_norm(sq: torch.Tensor) -> torch.Tensor:
    return sq.clamp_min(NORM_EPS * NORM_EPS).sqrt()


def _full_mask(mask, B, T, device):
    if mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return mask.to(device=device, dtype=torch.bool)


def multi_perspective_cosine(v1: torch.Tensor, v2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BiMPM f_m: ``[..., d] x [..., d] (broadcastable), weight [l, d] -> [..., l]``.

    Element k is ``cos(W_k∘v1, W_k∘v2)``.
    """
    cd = compute_dtype(torch.promote_types(v1.dtype, v2.dtype))
    a, b = v1.to(cd), v2.to(cd)
    w2 = weight.to(cd).square().t()  # [d, l]
    num = (a * b) @ w2
    na = _clamped_norm(a.square() @ w2)
    nb = _clamped_norm(b.square() @ w2)
    return (num / (na * nb)).to(torch.promote_types(v1.dtype, v2.dtype))


def _pairwise_mp_cosine(p: torch.Tensor, q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``p [B,T1,d], q [B,T2,d] -> [B, l, T1, T2]`` multi-perspective cosines (materialised)."""
    B, T1, _ = p.shape
    l, T2 = weight.shape[0], q.shape[1]
    w2 = weight.square()  # [l, d]
    # one [B, l·T1, d] x [B, d, T2] bmm: broadcasting q over l would copy it l times (fwd and bwd)
    num = ((p.unsqueeze(1) * w2[None, :, None, :]).flatten(1, 2) @ q.transpose(1, 2)).view(B, l, T1, T2)
    np_ = _clamped_norm(p.square() @ w2.t()).transpose(1, 2)  # [B, l, T1]
    nq = _clamped_norm(q.square() @ w2.t()).transpose(1, 2)  # [B, l, T2]
    return num / (np_.unsqueeze(-1) * nq.unsqueeze(-2))


def maxpool_match(p, q, weight, p_mask=None, q_mask=None):
    """BiMPM max-pooling matching (paper: max only, one W for both directions).

    Shapes: p ``[B,T1,d]``, q ``[B,T2,d]``, weight ``[l,d]``, masks bool ``[B,T1]``/``[B,T2]``.
    Returns ``(p_max [B,T1,l], q_max [B,T2,l])`` with
    ``p_max[b,i,k] = max_{valid j} cos(W_k∘p_i, W_k∘q_j)`` and ``q_max`` the same with the roles
    swapped. Padded rows, and rows whose other side has no valid token, are 0.
    """
    B, T1, _ = p.shape
    T2 = q.shape[1]
    dtype = torch.promote_types(p.dtype, q.dtype)
    cd = compute_dtype(dtype)
    pm = _full_mask(p_mask, B, T1, p.device)
    qm = _full_mask(q_mask, B, T2, p.device)
    cos = _pairwise_mp_cosine(p.to(cd), q.to(cd), weight.to(cd))  # [B, l, T1, T2]
    valid = pm[:, None, :, None] & qm[:, None, None, :]
    scores = cos.masked_fill(~valid, float("-inf"))
    p_max = scores.max(dim=3).values.transpose(1, 2)  # [B, T1, l]
    q_max = scores.max(dim=2).values.transpose(1, 2)  # [B, T2, l]
    p_rows = (pm & qm.any(1, keepdim=True)).unsqueeze(-1)
    q_rows = (qm & pm.any(1, keepdim=True)).unsqueeze(-1)
    zero = cos.new_zeros(())
    return (torch.where(p_rows, p_max, zero).to(dtype), torch.where(q_rows, q_max, zero).to(dtype))


def attention_denominator(s: torch.Tensor) -> torch.Tensor:
    """Sign-preserving clamp of ``s = Σ_j α_ij`` away from 0: ``sign(s) * max(|s|, ATT_EPS)``.

    Cosines can be negative, so Σα can be ~0 or negative; ``s + eps`` would blow up at
    ``s = -eps``. The matched cosine is invariant to the *magnitude* of the denominator
    (only its sign matters), so this keeps paper semantics wherever they are defined.
    """
    return torch.where(s >= 0, s.clamp_min(ATT_EPS), s.clamp_max(-ATT_EPS))


def attentive_match(p, q, weight, p_mask=None, q_mask=None, mode: str = "mean"):
    """BiMPM attentive (``mode="mean"``) and max-attentive (``mode="max"``) matching, P -> Q.

    Shapes: p ``[B,T1,d]``, q ``[B,T2,d]``, weight ``[l,d]`` -> ``[B,T1,l]``.
    ``α_ij = cos(p_i, q_j)`` (plain cosine, no W) over valid j.
    ``mean``: ``h_i = Σ_j α_ij q_j / attention_denominator(Σ_j α_ij)`` (paper Σα normalisation).
    ``max``: ``h_i = q_{j*}``, ``j* = argmax_j α_ij`` (the paper's row pick, not an element-wise
    max); no gradient flows through the argmax itself.
    Result: ``multi_perspective_cosine(p_i, h_i, W)``. Padded rows, and rows with no valid j, are 0.
    """
    if mode not in ("mean", "max"):
        raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
    B, T1, _ = p.shape
    T2 = q.shape[1]
    dtype = torch.promote_types(p.dtype, q.dtype)
    cd = compute_dtype(dtype)
    pm = _full_mask(p_mask, B, T1, p.device)
    qm = _full_mask(q_mask, B, T2, p.device)
    pc, qc = p.to(cd), q.to(cd)
    pn = pc / _clamped_norm(pc.square().sum(-1, keepdim=True))
    qn = qc / _clamped_norm(qc.square().sum(-1, keepdim=True))
    alpha = pn @ qn.transpose(1, 2)  # [B, T1, T2]
    if mode == "mean":
        alpha = alpha.masked_fill(~qm[:, None, :], 0.0)
        h = (alpha @ qc) / attention_denominator(alpha.sum(-1, keepdim=True))
    else:
        j_star = alpha.masked_fill(~qm[:, None, :], float("-inf")).argmax(-1)  # [B, T1]
        h = torch.gather(qc, 1, j_star.unsqueeze(-1).expand(-1, -1, qc.shape[-1]))
    m = multi_perspective_cosine(pc, h, weight.to(cd))
    rows = (pm & qm.any(1, keepdim=True)).unsqueeze(-1)
    return torch.where(rows, m, m.new_zeros(())).to(dtype)


def highway_lstm_cell(x_gates: torch.Tensor, h_gates: torch.Tensor, c_prev: torch.Tensor):
    """One highway-LSTM step (He et al. 2017 / AllenNLP alternating highway LSTM).

    x_gates ``[B,6H]`` = ``x_t W_xᵀ`` split (i, f, g, o, r, carry); h_gates ``[B,5H]`` =
    ``h_{t-1} W_hᵀ + b`` split (i, f, g, o, r); c_prev ``[B,H]``. Returns ``(h, c)``, each ``[B,H]``:
    ``i,f,o,r = σ(x+h)``, ``g = tanh(x+h)``, ``c = f·c_prev + i·g``,
    ``h = r·o·tanh(c) + (1−r)·carry``. Computed in fp32, returned in ``x_gates.dtype``.
    """
    H = c_prev.shape[-1]
    cd = compute_dtype(x_gates.dtype)
    xg, hg, c = x_gates.to(cd), h_gates.to(cd), c_prev.to(cd)
    i, f, g, o, r = (xg[..., : 5 * H] + hg).split(H, dim=-1)
    i, f, o, r = i.sigmoid(), f.sigmoid(), o.sigmoid(), r.sigmoid()
    g = g.tanh()
    carry = xg[..., 5 * H :]
    c_new = f * c + i * g
    h = r * o * c_new.tanh() + (1 - r) * carry
    return h.to(x_gates.dtype), c_new.to(x_gates.dtype)


def highway_lstm(x, lengths, W_x, W_h, b, h0=None, c0=None, reverse=False, dropout_mask=None):
    """One highway-LSTM layer over a padded batch.

    x ``[B,T,in]``, lengths ``[B]`` long, W_x ``[6H,in]``, W_h ``[5H,H]``, b ``[5H]``,
    h0/c0 ``[B,H]`` (zeros if None), dropout_mask ``[B,H]`` (already scaled by 1/(1−p)).
    Returns ``(out [B,T,H], (h_n [B,H], c_n [B,H]))``.

    The input projection is one GEMM for all steps; steps ``t >= lengths[b]`` leave the state
    unchanged and output 0. ``reverse=True`` runs each sequence from its own last valid step
    back to 0. The dropout mask is variational: multiplied into h every step, and the masked h
    is both the output and the recurrent state.
    """
    B, T, _ = x.shape
    H = W_h.shape[1]
    dt = x.dtype
    xg = F.linear(x, W_x.to(dt))  # [B, T, 6H]
    h = x.new_zeros(B, H) if h0 is None else h0.to(dt)
    c = x.new_zeros(B, H) if c0 is None else c0.to(dt)
    lengths = lengths.to(x.device)
    outs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = highway_lstm_cell(xg[:, t], F.linear(h, W_h.to(dt), b.to(dt)), c)
        if dropout_mask is not None:
            h_new = h_new * dropout_mask.to(dt)
        active = (lengths > t).unsqueeze(-1)
        outs[t] = torch.where(active, h_new, h_new.new_zeros(()))
        h = torch.where(active, h_new, h)
        c = torch.where(active, c_new, c)
    return torch.stack(outs, dim=1), (h, c)
