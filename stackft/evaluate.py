"""Prediction and scoring of a model on an encoded dataset (used by the trainer and ``stackft eval``)."""

from __future__ import annotations

import torch

from .data.batching import make_loader
from .tasks import TaskSpec, decode_batch, score


class SubsetView(torch.utils.data.Dataset):
    """Items ``indices`` of an EncodedDataset, keeping each item's original ``index``."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)
        self.lengths = [dataset.lengths[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def loader(dataset, batch_size: int, pad_id: int, *, shuffle: bool, seed: int = 0, max_tokens=None):
    """make_loader with a private generator: iterating must not draw from the global RNG,
    or a resumed run (which re-creates the iterator) would see different dropout masks."""
    dl = make_loader(dataset, batch_size, pad_id, shuffle=shuffle, seed=seed, max_tokens=max_tokens)
    dl.generator = torch.Generator().manual_seed(seed)
    return dl


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict(model, dataset, task: TaskSpec, vocab, *, batch_size: int = 64, device=None, features=None) -> list:
    """Predictions for every item of ``dataset`` (EncodedDataset or SubsetView), in item order.

    ``features(batch) -> dict`` replaces ``model.features`` (e.g. reading a feature cache).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds: dict[int, object] = {}
    for batch in loader(dataset, batch_size, model.encoder.pad_id, shuffle=False):
        batch = to_device(batch, device)
        logits = model.forward_features(features(batch) if features else model.features(batch))
        for idx, p in zip(batch["index"].tolist(), decode_batch(task, logits, batch, vocab)):
            preds[idx] = p
    model.train(was_training)
    order = dataset.indices if isinstance(dataset, SubsetView) else range(len(dataset))
    return [preds[i] for i in order]


def evaluate(model, dataset, task: TaskSpec, vocab, **kw) -> dict:
    """Task metrics of ``model`` on ``dataset`` (EncodedDataset, or SubsetView of one)."""
    preds = predict(model, dataset, task, vocab, **kw)
    if isinstance(dataset, SubsetView):
        return score(task, dataset.dataset, preds, vocab, indices=dataset.indices)
    return score(task, dataset, preds, vocab)
