"""Tasks: which reader, encoding, head level, metric and default heads go together.

``ner`` (CoNLL column files, entity F1), ``classification`` (text,label CSV, accuracy) and
``pairs`` (QQP-layout TSV, accuracy). Any ``datasets`` dataset or local json/jsonl/parquet file
works through :func:`stackft.data.hf.load_hf_examples`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data.conll import read_conll
from .data.errors import MAX_LINE_CHARS
from .data.encode import EncodedDataset, encode_pairs, encode_tagged, encode_texts
from .data.labels import LabelVocab
from .data.pairs import read_pairs_tsv
from .data.split import split_examples
from .data.textcls import read_text_csv
from .metrics import classification_scores, ner_scores


@dataclass(frozen=True)
class TaskSpec:
    name: str
    level: str  # head level: "token" or "sequence"
    metric: str  # selection metric key in the metrics dict
    stack_head: str  # the paper's stacked head for this task
    finetune_head: str = "fc"  # the finetune-only baseline head


TASKS = {
    "ner": TaskSpec("ner", "token", "f1", "bilstm"),
    "classification": TaskSpec("classification", "sequence", "accuracy", "densenet"),
    "pairs": TaskSpec("pairs", "sequence", "accuracy", "bimpm"),
}
ALIASES = {"conll": "ner", "tagging": "ner", "yahoo": "classification", "cls": "classification",
           "text": "classification", "qqp": "pairs", "pair": "pairs", "similarity": "pairs"}
_HF_SUFFIXES = {".json", ".jsonl", ".parquet", ".arrow"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name, name)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)} (aliases {sorted(ALIASES)})")
    return TASKS[key]


def read_examples(task: str, source: str, *, split: str = "train", on_error: str = "raise",
                  max_line_chars: int = MAX_LINE_CHARS, **hf_options) -> list:
    """Examples of ``task`` from a file in the task's native format, or through ``datasets``.

    Native formats: CoNLL columns (ner), text,label CSV (classification), label/q1/q2/id TSV
    (pairs). Files ending in .json/.jsonl/.parquet/.arrow and anything that is not a local path
    (a hub id) go through :func:`stackft.data.hf.load_hf_examples` with ``split``.
    ``on_error="skip"`` drops malformed lines/rows (counted in the result's ``skipped``) instead of
    stopping at the first one.
    """
    spec = get_task(task)
    path = Path(source).expanduser()
    if hf_options.pop("hf", False) or path.suffix in _HF_SUFFIXES or not path.exists():
        if not path.exists() and str(source).startswith((".", "/", "~")):
            raise FileNotFoundError(f"data file not found: {source}")
        from .data.hf import load_hf_examples

        return load_hf_examples(str(source), split, spec.name, on_error=on_error, max_line_chars=max_line_chars,
                                **hf_options)
    kw = dict(on_error=on_error, max_line_chars=max_line_chars)
    if spec.name == "ner":
        return read_conll(path, **kw)
    if spec.name == "pairs":
        return read_pairs_tsv(path, **kw)
    return read_text_csv(path, **kw)


@dataclass
class TaskData:
    """Encoded train/dev sets of one task, with the label vocabulary and the source files."""

    task: TaskSpec
    train: EncodedDataset
    dev: EncodedDataset
    vocab: LabelVocab
    files: list[str] = field(default_factory=list)
    max_length: int = 128
    pair_mode: str = "joint"
    skipped: dict = field(default_factory=dict)  # malformed units dropped per file (on_error="skip")


def encode_examples(task: TaskSpec, examples, tokenizer, vocab, *, max_length, pair_mode="joint", path=None):
    if task.name == "ner":
        return encode_tagged(examples, tokenizer, vocab, max_length=max_length, path=path)
    if task.name == "pairs":
        return encode_pairs(examples, tokenizer, vocab, max_length=max_length, mode=pair_mode, path=path)
    return encode_texts(examples, tokenizer, vocab, max_length=max_length, path=path)


def _subsample(examples: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(examples):
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


def load_task_data(
    task: str,
    train_path: str,
    dev_path: str | None = None,
    *,
    tokenizer,
    max_length: int = 128,
    pair_mode: str = "joint",
    dev_size: float | int | None = None,
    split_seed: int = 0,
    max_train: int | None = None,
    max_dev: int | None = None,
    vocab: LabelVocab | None = None,
    **hf_options,
) -> TaskData:
    """Read, (split,) subsample and encode a task's data.

    Without ``dev_path`` a stratified dev split is cut from the training file: ``dev_size``
    examples (or a fraction); default 1,000 for pairs (the QQP 9k/1k split) and 10% otherwise.
    ``max_train``/``max_dev`` subsample deterministically (seed ``split_seed``).
    """
    spec = get_task(task)
    train_ex = read_examples(spec.name, train_path, split=hf_options.pop("train_split", "train"), **hf_options)
    files = [str(train_path)]
    skipped = {str(train_path): getattr(train_ex, "skipped", 0)}
    if dev_path is not None:
        dev_ex = read_examples(spec.name, dev_path, split=hf_options.pop("dev_split", "validation"), **hf_options)
        files.append(str(dev_path))
        skipped[str(dev_path)] = getattr(dev_ex, "skipped", 0)
    else:
        if dev_size is None:
            dev_size = 1000 if spec.name == "pairs" and len(train_ex) >= 4000 else 0.1
        train_ex, dev_ex = split_examples(train_ex, dev_size, seed=split_seed, stratify=spec.name != "ner")
    train_ex = _subsample(train_ex, max_train, split_seed)
    dev_ex = _subsample(dev_ex, max_dev, split_seed)
    vocab = vocab or LabelVocab.from_examples(train_ex, spec.name)
    kw = dict(max_length=max_length, pair_mode=pair_mode)
    return TaskData(
        task=spec,
        train=encode_examples(spec, train_ex, tokenizer, vocab, path=train_path, **kw),
        dev=encode_examples(spec, dev_ex, tokenizer, vocab, path=dev_path or train_path, **kw),
        vocab=vocab,
        files=files,
        max_length=max_length,
        pair_mode=pair_mode,
        skipped=skipped,
    )


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
