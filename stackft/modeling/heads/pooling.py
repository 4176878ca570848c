"""Masked pooling over time and small mask helpers shared by the heads.

Masks are bool ``[B, T]``, True = real token, and are assumed left-aligned (a prefix of each row).
"""

import torch


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask [B, T] bool`` -> ``lengths [B] long`` (number of real tokens per row)."""
    return mask.long().sum(dim=1)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of real positions: ``x [B, T, D]``, ``mask [B, T]`` -> ``[B, D]`` (0 for empty rows)."""
    m = mask.unsqueeze(-1)
    # finfo.min rather than -inf keeps gradients of fully masked rows finite.
    pooled = x.masked_fill(~m, torch.finfo(x.dtype).min).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of real positions: ``x [B, T, D]``, ``mask [B, T]`` -> ``[B, D]`` (0 for empty rows)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row at each sequence's last real position: ``x [B, T, D]`` -> ``[B, D]`` (position 0 for empty rows)."""
    index = (lengths_from_mask(mask) - 1).clamp(min=0)
    return x[torch.arange(x.size(0), device=x.device), index]


def zero_padded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, T, D]`` with padded positions set to 0."""
    return x * mask.unsqueeze(-1).to(x.dtype)
