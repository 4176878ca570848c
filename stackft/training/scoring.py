"""Predictions from logits (:func:`decode_batch`) and task metrics of predictions (:func:`score`)."""

from __future__ import annotations

import torch

from stackft.data.encode import EncodedDataset
from stackft.data.labels import LabelVocab
from stackft.tasks import TaskSpec
from stackft.training.metrics import classification_scores, ner_scores


def decode_batch(task: TaskSpec, logits: torch.Tensor, batch: dict, vocab: LabelVocab) -> list:
    """Predictions of one batch: tag lists per sentence (ner) or label ids.

    NER predictions are read at each word's first sub-token; words cut off by truncation get "O".
    """
    pred = logits.argmax(-1).cpu()
    if task.name != "ner":
        return pred.tolist()
    out = []
    for row, starts, n_words in zip(pred, batch["word_starts"], batch["n_words"]):
        tags = [vocab.decode(int(row[s])) for s in starts]
        out.append(tags + ["O"] * (n_words - len(tags)))
    return out


def score(task: TaskSpec, dataset: EncodedDataset, predictions: list, vocab: LabelVocab, indices=None) -> dict:
    """Metrics of ``predictions`` (in the order of ``indices``, default all) against gold."""
    indices = range(len(dataset)) if indices is None else indices
    if task.name == "ner":
        gold = [dataset.examples[i].tags for i in indices]
        return ner_scores(gold, predictions)
    gold = [dataset.items[i]["labels"] for i in indices]
    return classification_scores(gold, predictions, len(vocab))


def f1_label(task: TaskSpec, vocab: LabelVocab) -> str:
    """What a score dict's ``f1`` is: entity F1 (ner), the F1 of the positive class (the second
    label) for two labels, else the macro average over the classes."""
    if task.name == "ner":
        return "entity F1"
    if len(vocab) == 2:
        return f"F1 of the positive class {vocab.decode(1)!r}"
    return f"macro F1 over {len(vocab)} classes"
