"""int8 quantisation of feature rows (symmetric per-token absmax, fp16 scale rounded up)."""

from __future__ import annotations

import torch
from torch import Tensor


def quantize_int8(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token symmetric absmax: ``x [L, d]`` float -> ``(q [L, d] int8, scale [L] fp16)``.

    The scale is rounded *up* to float16 so that ``|x - q * scale| <= scale / 2`` for every
    row, tiny ones included (the derivation is in the docstring of :mod:`stackft.cache.format`).
    Raises ValueError if a token's absmax exceeds 127 * 65504.
    """
    x = x.float()
    a = x.abs().amax(dim=1) if x.shape[1] else x.new_zeros(x.shape[0])
    s = a / 127.0
    s_h = s.half()
    low = s_h.float() < s
    if bool(low.any()):  # positive float16 bit patterns are ordered: +1 is the next value up
        s_h = torch.where(low, (s_h.view(torch.int16) + 1).view(torch.float16), s_h)
    if not bool(torch.isfinite(s_h).all()):
        raise ValueError("feature magnitude too large for an int8 cache (absmax > 127 * 65504); "
                         "use dtype='bf16' or 'fp32'")
    denom = torch.where(s_h > 0, s_h.double(), torch.ones_like(s_h, dtype=torch.float64))
    q = torch.round(x.double() / denom[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, s_h


def dequantize_int8(q: Tensor, scale: Tensor) -> Tensor:
    """``q [L, d] int8``, ``scale [L] fp16`` -> float32 ``[L, d]``."""
    return q.float() * scale.float()[:, None]
