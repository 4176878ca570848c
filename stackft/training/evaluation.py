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


@torch.no_grad()
def probabilities(model, dataset, task: TaskSpec, labels: list[str], *, batch_size: int = 64, device=None,
                  on_batch=None) -> list[torch.Tensor]:
    """Class probabilities per item, in item order (the model's label order ``labels``).

    Sequence tasks: ``[C]`` per item. Token tasks: ``[n_words, C]`` per sentence, read at each word's
    first sub-token; words cut off by truncation get probability 1 on ``"O"``. ``on_batch(n)`` is
    called after each batch of ``n`` items (e.g. a progress bar's ``update``).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[int, torch.Tensor] = {}
    o = labels.index("O") if "O" in labels else 0
    for batch in loader(dataset, batch_size, model.encoder.pad_id, shuffle=False):
        batch = to_device(batch, device)
        probs = torch.softmax(model(batch).float(), dim=-1).cpu()
        for row, idx in enumerate(batch["index"].tolist()):
            if task.level == "token":
                starts = batch["word_starts"][row]
                p = probs[row, starts] if starts else probs.new_zeros((0, probs.size(-1)))
                missing = batch["n_words"][row] - len(starts)
                if missing:
                    cut = torch.zeros(missing, probs.size(-1))
                    cut[:, o] = 1.0
                    p = torch.cat([p, cut])
                out[idx] = p
            else:
                out[idx] = probs[row]
        if on_batch is not None:
            on_batch(len(batch["index"]))
    model.train(was_training)
    return [out[i] for i in range(len(dataset))]
