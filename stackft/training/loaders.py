"""Data loaders with a private generator, and moving batches to a device."""

from __future__ import annotations

import torch

from stackft.data.batching import make_loader


def loader(dataset, batch_size: int, pad_id: int, *, shuffle: bool, seed: int = 0, max_tokens=None):
    """make_loader with a private generator: iterating must not draw from the global RNG,
    or a resumed run (which re-creates the iterator) would see different dropout masks."""
    dl = make_loader(dataset, batch_size, pad_id, shuffle=shuffle, seed=seed, max_tokens=max_tokens)
    dl.generator = torch.Generator().manual_seed(seed)
    return dl


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
