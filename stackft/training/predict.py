"""Predictions of a trained model on unlabelled input: labels and class probabilities.

``predict_texts(model, texts)`` is the Python API behind ``stackft predict``::

    from stackft import load_trained, predict_texts

    model, meta = load_trained("runs/ner/best")
    predict_texts(model, ["John lives in Paris ."])
    # [{"words": ["John", "lives", "in", "Paris", "."], "labels": ["B-PER", "O", "O", "B-LOC", "O"],
    #   "probs": [{"O": 0.01, "B-PER": 0.97, ...}, ...]}]

``model`` may be a model from :func:`~stackft.training.trainer.load_trained` or
:func:`~stackft.training.export.load_exported` (both attach their meta as ``model.stackft_meta``),
a ``(model, meta)`` pair, or a path: a checkpoint folder (``RUN/best``), a run folder (its
``best/``) or an export folder (:func:`load_model`). ``texts`` are, by task:

- ``ner``: sentences, each a string (split on whitespace into words) or a list of words;
- ``classification``: strings;
- ``pairs``: ``(text_a, text_b)`` pairs;

or the task's example objects (as :mod:`stackft.data.unlabelled` reads them from files), or dicts
with the JSON-lines keys (``{"text": ...}``, ``{"text_a": ..., "text_b": ...}``, ``{"tokens": [...]}``).

Each prediction is a JSON-serialisable dict: ``{"text", "label", "probs": {label: p}}``
(classification), ``{"text_a", "text_b", "label", "probs"}`` (pairs), ``{"words", "labels",
"probs": [{label: p} per word]}`` (ner, read at each word's first sub-token; words cut off by
``max_length`` get ``"O"`` with probability 1 and are counted in ``"truncated"``); ``"id"`` first
when the input had one. Inputs are tokenised exactly as the training data was (the checkpoint's
``max_length`` and pair encoding), batched by length, and come back in input order.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import torch

from stackft.data.conll import TaggedSentence
from stackft.data.pairs import PairExample
from stackft.data.textcls import TextExample
from stackft.data.unlabelled import BadInput, encode_unlabelled, example_from_value
from stackft.run_dir import META_FILE, RunDir
from stackft.tasks import get_task
from stackft.training.evaluation import probabilities

__all__ = ["predict_texts", "predict_examples", "iter_predictions", "as_examples", "load_model", "model_meta"]


def load_model(path, *, device: str = "cpu"):
    """``(model, meta)`` of a checkpoint folder, a run folder (its ``best/``) or an export folder.

    The model is in eval mode on ``device`` and carries ``meta`` as ``model.stackft_meta``.
    """
    from stackft.training.export import is_export, load_exported
    from stackft.training.trainer import load_trained

    path = Path(path)
    if is_export(path):
        return load_exported(path, device=device)
    if not (path / META_FILE).exists() and (RunDir(path).best / META_FILE).exists():
        path = RunDir(path).best
    if not (path / META_FILE).exists():
        raise FileNotFoundError(f"{path} is not a stackft checkpoint ({META_FILE}), run folder (best/{META_FILE}) "
                                f"or export folder")
    model, meta = load_trained(path, device=device)
    model.stackft_meta = meta
    return model, meta


def model_meta(model, meta: dict | None = None) -> tuple[object, dict]:
    """``(model, meta)`` from what :func:`predict_texts` accepts as ``model`` (see the module docstring)."""
    if isinstance(model, (str, Path)):
        return load_model(model)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], dict):
        model, meta = model[0], meta or model[1]
    meta = meta or getattr(model, "stackft_meta", None)
    if meta is None:
        raise TypeError("predict needs the model's meta (task, labels, max_length): pass meta= (the second value "
                        "load_trained returns), or a model from load_trained / load_exported / load_model")
    return model, meta


def as_examples(task, texts) -> list:
    """The task's example objects for ``texts`` (strings, word lists, pairs, dicts or examples)."""
    task = get_task(getattr(task, "name", task)).name
    if isinstance(texts, str):
        raise TypeError("texts must be a list of inputs, not one string (wrap it in a list)")
    out = []
    for i, value in enumerate(texts):
        line = i + 1
        if isinstance(value, (TaggedSentence, TextExample, PairExample)):
            expected = {"ner": TaggedSentence, "classification": TextExample, "pairs": PairExample}[task]
            if not isinstance(value, expected):
                raise TypeError(f"input {i}: a {type(value).__name__} is not {task} input")
            out.append(value)
            continue
        if task == "pairs" and isinstance(value, tuple):
            value = list(value)
        try:
            example, _ = example_from_value(task, value, line, sys.maxsize)
        except BadInput as err:
            raise ValueError(f"input {i}: {err}") from None
        out.append(example)
    return out


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _probabilities(model, ds, task, labels, batch_size, device, bar) -> list[torch.Tensor]:
    """Per item: ``[C]`` probabilities (sequence tasks) or ``[n_words, C]`` (ner), in item order."""
    return probabilities(model, ds, task, labels, batch_size=batch_size, device=device, on_batch=bar.update)


def _record(task, example, p: torch.Tensor, labels: list[str], item_id, n_kept: int | None) -> dict:
    rec = {} if item_id is None else {"id": item_id}
    if task.name == "ner":
        rows = p.tolist()
        rec["words"] = list(example.tokens)
        rec["labels"] = [labels[i] for i in p.argmax(-1).tolist()] if len(rows) else []
        rec["probs"] = [dict(zip(labels, row)) for row in rows]
        if n_kept is not None and n_kept < len(example.tokens):
            rec["truncated"] = len(example.tokens) - n_kept
        return rec
    if task.name == "pairs":
        if item_id is None and getattr(example, "id", None) is not None:
            rec["id"] = example.id
        rec["text_a"], rec["text_b"] = example.text_a, example.text_b
    else:
        rec["text"] = example.text
    rec["label"] = labels[int(p.argmax())]
    rec["probs"] = dict(zip(labels, p.tolist()))
    return rec


def iter_predictions(model, examples, *, meta: dict | None = None, ids=None, batch_size: int = 64, device=None,
                     progress: bool = False, chunk_size: int | None = None) -> Iterator[dict]:
    """Predictions for ``examples`` (the task's example objects), yielded in input order.

    Works through the input ``chunk_size`` examples at a time (default ``32 * batch_size``), so the
    first records come before the whole input is encoded. ``ids``: one per example (None: none).
    ``progress``: a tqdm bar on stderr.
    """
    from tqdm.auto import tqdm

    model, meta = model_meta(model, meta)
    task = get_task(meta["task"])
    labels = list(meta["labels"])
    examples = examples if isinstance(examples, list) else list(examples)
    ids = list(ids) if ids is not None else getattr(examples, "ids", None)
    if ids is not None and len(ids) != len(examples):
        raise ValueError(f"{len(ids)} ids for {len(examples)} examples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None and _device_of(model) != torch.device(device):
        model.to(device)
    device = _device_of(model)
    chunk_size = chunk_size or 32 * batch_size
    was_training = model.training
    model.eval()
    truncated = 0
    bar = tqdm(total=len(examples), desc="predict", unit="ex", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, leave=False)
    try:
        for start in range(0, len(examples), chunk_size):
            chunk = examples[start:start + chunk_size]
            with warnings.catch_warnings():  # one truncation warning for the whole input, below
                warnings.filterwarnings("ignore", message=r".* sequences truncated to max_length")
                ds = encode_unlabelled(task, chunk, model.encoder.tokenizer, labels, max_length=meta["max_length"],
                                       pair_mode=meta.get("pair_mode") or "joint")
            truncated += ds.n_truncated
            probs = _probabilities(model, ds, task, labels, batch_size, device, bar)
            for j, (example, p) in enumerate(zip(chunk, probs)):
                kept = len(ds.items[j]["word_starts"]) if task.name == "ner" else None
                yield _record(task, example, p, labels, None if ids is None else ids[start + j], kept)
    finally:
        bar.close()
        model.train(was_training)
    if truncated:
        warnings.warn(f"{truncated} of {len(examples)} inputs were truncated to max_length={meta['max_length']} "
                      f"tokens", stacklevel=2)


def predict_examples(model, examples, **kw) -> list[dict]:
    """:func:`iter_predictions` as a list."""
    return list(iter_predictions(model, examples, **kw))


def predict_texts(model, texts: Iterable, *, meta: dict | None = None, batch_size: int = 64, device=None,
                  progress: bool = False) -> list[dict]:
    """Labels and probabilities for ``texts`` (see the module docstring for what ``model`` and ``texts`` may be)."""
    model, meta = model_meta(model, meta)
    examples = as_examples(meta["task"], texts)
    return predict_examples(model, examples, meta=meta, batch_size=batch_size, device=device, progress=progress)
