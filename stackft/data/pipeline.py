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
HF_PREFIX = "hf:"  # "hf:ID": a datasets hub id, whatever a local path of that name would be
# a missing name with one of these endings was meant as a file, never as a datasets hub id
_FILE_SUFFIXES = {".txt", ".tsv", ".csv", ".conll", ".iob", ".bio", ".tags", *_HF_SUFFIXES}


def check_source(source) -> str:
    """What ``source`` is: ``"file"`` (a file in the task's own format), ``"datasets-file"`` (a local
    json/jsonl/parquet/arrow file) or ``"hub"`` (a ``datasets`` hub id); reads nothing.

    FileNotFoundError for a missing file (a path, or a name ending like a data file), ImportError
    (with the pip command) when ``datasets`` is needed but not installed.
    """
    import importlib.util

    path = Path(source).expanduser()
    if path.exists() and path.suffix not in _HF_SUFFIXES:
        return "file"
    kind = "datasets-file" if path.exists() else "hub"
    if kind == "hub" and (str(source).startswith((".", "/", "~")) or path.suffix.lower() in _FILE_SUFFIXES):
        raise FileNotFoundError(f"data file not found: {source} (stackft demo-data DIR writes the bundled "
                                f"CoNLL-2003 excerpt and toy sets as files)")
    if importlib.util.find_spec("datasets") is None:
        what = f"{path.suffix} files" if kind == "datasets-file" else \
            f"{source!r}, which is not a local file, as a Hugging Face datasets id"
        raise ImportError(f"reading {what} needs the datasets package: pip install datasets"
                          + ("" if kind == "datasets-file" else " (or check the path)"))
    return kind


def read_examples(task: str, source: str, *, split: str = "train", on_error: str = "raise",
                  max_line_chars: int = MAX_LINE_CHARS, **hf_options) -> list:
    """Examples of ``task`` from a file in the task's native format, or through ``datasets``.

    Native formats: CoNLL columns (ner), text,label CSV (classification), label/q1/q2/id TSV
    (pairs). Files ending in .json/.jsonl/.parquet/.arrow and hub ids go through
    :func:`stackft.data.hf.load_hf_examples` with ``split``.

    Which sources are hub ids (the rule, so that a mistyped path is never looked up on the hub):

    - ``hf:ID`` always is (``hf:conll2003``, ``hf:stanfordnlp/imdb``, even ``hf:name.txt``);
    - an existing local path never is: it is read as a file;
    - a missing source is a hub id only when it does not start with ``.``, ``/`` or ``~`` and does not
      end like a data file (``.txt .tsv .csv .conll .iob .bio .tags .json .jsonl .parquet .arrow``),
      e.g. ``conll2003``; anything else (``bad/nothere.txt``, ``./data``) is FileNotFoundError naming it.

    ``on_error="skip"`` drops malformed lines/rows (counted in the result's ``skipped``) instead of
    stopping at the first one.
    """
    spec = get_task(task)
    hub_id = str(source).startswith(HF_PREFIX)
    if hub_id:
        source = str(source)[len(HF_PREFIX):]
    path = Path(source).expanduser()
    if hf_options.pop("hf", False) or hub_id or path.suffix in _HF_SUFFIXES or not path.exists():
        if not hub_id:
            check_source(source)
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
    ``max_train``/``max_dev`` subsample deterministically (seed ``split_seed``). The label vocabulary
    (unless ``vocab`` is given) holds every label of the data read, train and dev, before subsampling.
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
    if vocab is None:  # from every example read, before subsampling: a rare label must not go missing
        names = getattr(train_ex, "label_names", None)
        vocab = LabelVocab.from_examples(train_ex if names else [*train_ex, *dev_ex], spec.name)
    train_ex = _subsample(train_ex, max_train, split_seed)
    dev_ex = _subsample(dev_ex, max_dev, split_seed)
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
