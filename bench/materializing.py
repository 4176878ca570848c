"""AllenNLP/galsang-style BiMPM matching: the materialising baseline the kernels are measured against.

Cost structure of ``allennlp/modules/bimpm_matching.py``:

* maxpool: ``W * v.unsqueeze(1).expand(-1, l, -1, -1)`` -> ``[B,l,T,d]`` per side, one batched
  ``matmul`` -> ``[B,l,T1,T2]``, divide by the norm product, masked max over both axes
  (one pairwise tensor gives both directions).
* attentive: the cosine matrix ``[B,T1,T2]`` times ``q`` expanded to **``[B,T1,T2,d]``**, summed
  over j and divided by Σα (paper normalisation here, not AllenNLP's softmax over d, so the
  outputs match :mod:`stackft.kernels.reference`). Max-attentive follows AllenNLP/galsang: an
  element-wise max over j of the same ``[B,T1,T2,d]`` tensor (a different semantics than the
  paper's argmax row; it is here for its cost only).
* multi-perspective cosine: ``W * v.unsqueeze(2)`` -> ``[B,T,l,d]`` per side and
  ``F.cosine_similarity``.

Masks are bool ``[B,T]``; eps is the stackft one (each norm clamped at 1e-8) so results are
comparable. Computed in the input dtype (AllenNLP itself refuses bf16; this version does not).
"""

from __future__ import annotations

import torch

EPS = 1e-8


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1).clamp_min(EPS)


def mp_cosine(v1: torch.Tensor, v2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``[B,T,d] x [B,T,d] -> [B,T,l]`` through ``[B,T,l,d]`` copies of both sides."""
    a = weight.to(v1.dtype) * v1.unsqueeze(-2)
    b = weight.to(v1.dtype) * v2.unsqueeze(-2)
    return (a * b).sum(-1) / (_norm(a) * _norm(b))


def maxpool_match(p, q, weight, p_mask, q_mask):
    """``(p_max [B,T1,l], q_max [B,T2,l])`` via ``[B,l,T,d]`` expansions and ``[B,l,T1,T2]``."""
    l = weight.shape[0]
    w = weight.to(p.dtype).unsqueeze(0).unsqueeze(2)  # [1, l, 1, d]
    pw = w * p.unsqueeze(1).expand(-1, l, -1, -1)  # [B, l, T1, d]
    qw = w * q.unsqueeze(1).expand(-1, l, -1, -1)  # [B, l, T2, d]
    cos = pw @ qw.transpose(-1, -2) / (_norm(pw).unsqueeze(-1) * _norm(qw).unsqueeze(-2))
    valid = p_mask[:, None, :, None] & q_mask[:, None, None, :]
    scores = cos.masked_fill(~valid, float("-inf"))
    p_max = scores.amax(dim=3).transpose(1, 2)
    q_max = scores.amax(dim=2).transpose(1, 2)
    p_max = torch.where(torch.isfinite(p_max), p_max, 0.0)
    q_max = torch.where(torch.isfinite(q_max), q_max, 0.0)
    return p_max, q_max


def attentive_match(p, q, weight, p_mask, q_mask, mode="mean"):
    """``[B,T1,l]`` via the ``[B,T1,T2,d]`` weighted-context tensor."""
    cos = (p @ q.transpose(1, 2)) / (_norm(p).unsqueeze(-1) * _norm(q).unsqueeze(-2))
    cos = cos.masked_fill(~q_mask[:, None, :], 0.0)
    att = q.unsqueeze(1) * cos.unsqueeze(-1)  # [B, T1, T2, d]
    if mode == "mean":
        s = cos.sum(-1, keepdim=True)
        s = torch.where(s >= 0, s.clamp_min(1e-6), s.clamp_max(-1e-6))
        h = att.sum(2) / s
    else:
        h = att.masked_fill(~q_mask[:, None, :, None], float("-inf")).amax(2)
        h = torch.where(torch.isfinite(h), h, 0.0)
    m = mp_cosine(p, h, weight)
    return m * p_mask.unsqueeze(-1)
