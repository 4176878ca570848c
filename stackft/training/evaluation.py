"""Prediction and scoring of a model on an encoded dataset (used by the trainer and ``stackft eval``)."""

from __future__ import annotations

import torch

from stackft.data.subset import SubsetView
from stackft.tasks import TaskSpec
from stackft.training.loaders import loader, to_device
from stackft.training.scoring import decode_batch, score


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
