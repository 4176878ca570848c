"""Read, split, subsample and encode a task's data: :func:`load_task_data` -> :class:`TaskData`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from stackft.data.conll import read_conll
from stackft.data.encode import EncodedDataset, encode_pairs, encode_tagged, encode_texts
from stackft.data.errors import MAX_LINE_CHARS
from stackft.data.labels import LabelVocab
from stackft.data.pairs import read_pairs_tsv
from stackft.data.split import split_examples
from stackft.data.textcls import read_text_csv
from stackft.tasks import TaskSpec, get_task

_HF_SUFFIXES = {".json", ".jsonl", ".parquet", ".arrow"}


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
        from stackft.data.hf import load_hf_examples

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
