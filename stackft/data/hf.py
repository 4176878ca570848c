"""Examples from Hugging Face ``datasets``: hub ids, local csv/json/parquet files, saved datasets.

``datasets`` is an optional dependency (``pip install stackft[datasets]``), imported on first use.
"""

from __future__ import annotations

import os

from stackft.data.conll import SCHEMES, TaggedSentence, check_tag, opens_chunk_with_i, to_iob2
from stackft.data.errors import MAX_LINE_CHARS, DataError, ExampleList, Problems, check_options
from stackft.data.pairs import PairExample
from stackft.data.textcls import TextExample

#: the task names :func:`load_hf_examples` accepts (the task registry is :data:`stackft.tasks.TASKS`)
HF_TASK_NAMES = ("ner", "classification", "pairs")
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
             ".arrow": "arrow"}
_TEXT_COLUMNS = ("text", "sentence", "content", "document", "question")
_PAIR_COLUMNS = (("question1", "question2"), ("sentence1", "sentence2"), ("text_a", "text_b"),
                 ("premise", "hypothesis"), ("q1", "q2"), ("question", "sentence"))


def _import_datasets():
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "loading Hugging Face datasets needs the 'datasets' package: pip install 'stackft[datasets]'"
        ) from err
    return datasets


def _load(name_or_path, split: str, config, load_kwargs):
    datasets = _import_datasets()
    if isinstance(name_or_path, datasets.DatasetDict):
        return name_or_path[split]
    if isinstance(name_or_path, datasets.Dataset):
        return name_or_path
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in _BUILDERS:
            raise ValueError(f"{path}: unsupported file type {suffix!r} (use {', '.join(_BUILDERS)})")
        if suffix == ".tsv":
            load_kwargs = {"delimiter": "\t", **load_kwargs}
        return datasets.load_dataset(_BUILDERS[suffix], data_files={split: path}, split=split, **load_kwargs)
    if os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in ("dataset_info.json", "dataset_dict.json")
    ):
        loaded = datasets.load_from_disk(path)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(path, config, split=split, **load_kwargs)


def _class_names(feature):
    """ClassLabel names of a feature (or of a list-of-ClassLabel feature), else None."""
    datasets = _import_datasets()
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None


def _pick(columns, wanted, candidates, what, source):
    if wanted is not None:
        if wanted not in columns:
            raise DataError(source, None, f"no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(source, None, f"cannot guess the {what} column among {', '.join(columns)}: pass it explicitly")


def _as_label(value, names, source, row):
    if names is not None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
            raise DataError(source, row, f"label {value!r} is not a class id of {names}")
        return names[value]
    if value is None:
        raise DataError(source, row, "missing label (None)")
    label = str(value)
    if not label.strip():
        raise DataError(source, row, "empty label")
    return label


def _text(value, what: str, max_chars: int, source, row, *, newlines: bool = False) -> str:
    """A row's text, stripped (``newlines``: backslash-n becomes a space); DataError when it is
    missing, empty or longer than ``max_chars``."""
    if value is None:
        raise DataError(source, row, f"missing {what} (None)")
    text = str(value)
    if newlines:
        text = text.replace("\\n", " ")
    text = text.strip()
    if not text:
        raise DataError(source, row, f"empty {what}")
    if len(text) > max_chars:
        raise DataError(source, row, f"{what} longer than {max_chars} characters (max_line_chars)")
    return text


def _sentence(tokens, tags, names, scheme: str, max_chars: int, source, row) -> TaggedSentence | None:
    """A row's TaggedSentence (tags not yet converted to IOB2), None for an empty one; DataError
    when the row is malformed."""
    for what, value in (("tokens", tokens), ("tags", tags)):
        if value is None:
            raise DataError(source, row, f"missing {what} (None)")
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise DataError(source, row, f"{what} must be a list, got {type(value).__name__}")
    if len(tokens) != len(tags):
        raise DataError(source, row, f"{len(tokens)} tokens but {len(tags)} tags")
    if not len(tokens):
        return None
    words = []
    for i, token in enumerate(tokens):
        if token is None:
            raise DataError(source, row, f"missing token (None) at position {i}")
        word = str(token)
        if not word.strip():
            raise DataError(source, row, f"empty token at position {i}")
        words.append(word)
    if sum(len(word) for word in words) > max_chars:
        raise DataError(source, row, f"sentence longer than {max_chars} characters (max_line_chars)")
    labels = [_as_label(tag, names, source, row) for tag in tags]
    for label in labels:
        check_tag(label, source, row)
    if scheme == "iob2":
        at = opens_chunk_with_i(labels)
        if at is not None:
            raise DataError(source, row, f"tag {labels[at]!r} opens a chunk, which IOB2 does not allow "
                                         "(the data looks like IOB1: use scheme='auto' or 'iob1')")
    return TaggedSentence(words, labels, row)


def load_hf_examples(name_or_path, split: str, task: str, *, text_column: str | None = None,
                     text_pair_column: str | None = None, label_column: str | None = None,
                     tokens_column: str = "tokens", tags_column: str = "ner_tags",
                     config: str | None = None, scheme: str = "auto", on_error: str = "raise",
                     max_line_chars: int = MAX_LINE_CHARS, **load_kwargs) -> ExampleList:
    """Read one split of a Hugging Face dataset as stackft examples.

    Args:
        name_or_path: a hub id (``"conll2003"``), a local .csv/.tsv/.json/.jsonl/.parquet/.arrow file
            (loaded as split ``split``), a folder written by ``save_to_disk``, or a
            ``datasets.Dataset``/``DatasetDict`` object.
        split: split name ("train", "validation", ...).
        task: "ner" -> TaggedSentence (tokens_column: list of str, tags_column: list of tag names
            or ClassLabel ids; IOB1 is detected and converted to IOB2 as in read_conll, see
            ``scheme``); "classification" -> TextExample; "pairs" -> PairExample.
        text_column, text_pair_column, label_column: column names; guessed when None (text:
            text/sentence/content/...; pairs: question1+question2, sentence1+sentence2, ...;
            label: "label").
        config: dataset configuration name for hub datasets (``load_dataset(name, config)``).
        on_error: "raise" (default): DataError(source, row, problem) at the first bad row. "skip":
            drop and count bad rows (``result.skipped``, ``result.problems``), warn once
            (DataWarning). Bad rows: a missing (None) or empty text, token, tag or label, a label
            that is not a class id, tokens and tags of different lengths or not lists, an invalid
            tag (with scheme "iob2": an I-X opening a chunk), a text (or a sentence's tokens
            together) longer than ``max_line_chars`` characters.
        load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).

    ClassLabel ids become their names. ``line`` of each example is its 1-based row number; pair
    ids come from an ``id``/``idx`` column when there is one. Returns an ExampleList whose
    ``label_names`` holds the ClassLabel names (None when labels are plain values). Problems with
    the dataset as a whole (no rows, missing columns) raise DataError(source, None, ...) in both
    modes, as does a split left without examples.
    """
    if task not in HF_TASK_NAMES:
        raise ValueError(f"task must be one of {HF_TASK_NAMES}, got {task!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_options(on_error, max_line_chars)
    dataset = _load(name_or_path, split, config, load_kwargs)
    if isinstance(name_or_path, (str, os.PathLike)):
        source = f"{os.fspath(name_or_path)}[{split}]"
    else:
        source = f"{getattr(dataset.info, 'dataset_name', None) or 'dataset'}[{split}]"
    columns = list(dataset.column_names)
    if len(dataset) == 0:
        raise DataError(source, None, "the split has no rows")

    problems = Problems(source, on_error, "rows")

    if task == "ner":
        for name in (tokens_column, tags_column):
            if name not in columns:
                raise DataError(source, None, f"no column {name!r} (columns: {', '.join(columns)})")
        names = _class_names(dataset.features[tags_column])
        sentences = []
        for row, record in enumerate(dataset, start=1):
            try:
                sentence = _sentence(record[tokens_column], record[tags_column], names, scheme, max_line_chars,
                                     source, row)
            except DataError as err:
                problems.report(err.line, err.problem)
                continue
            if sentence is not None:
                sentences.append(sentence)
        sentences = problems.finish(sentences, empty="no sentences found")
        to_iob2(sentences, scheme, source)
        return sentences

    label_column = _pick(columns, label_column, ("label", "labels"), "label", source)
    names = _class_names(dataset.features[label_column])
    out = []
    if task == "classification":
        text_column = _pick(columns, text_column, _TEXT_COLUMNS, "text", source)
        for row, record in enumerate(dataset, start=1):
            try:
                text = _text(record[text_column], "text", max_line_chars, source, row, newlines=True)
                out.append(TextExample(text, _as_label(record[label_column], names, source, row), row))
            except DataError as err:
                problems.report(err.line, err.problem)
        return problems.finish(out, empty="no examples found", label_names=names)

    if text_column is None and text_pair_column is None:
        for a, b in _PAIR_COLUMNS:
            if a in columns and b in columns:
                text_column, text_pair_column = a, b
                break
    text_column = _pick(columns, text_column, (), "first text", source)
    text_pair_column = _pick(columns, text_pair_column, (), "second text", source)
    id_column = next((c for c in ("id", "idx", "pair_id") if c in columns), None)
    for row, record in enumerate(dataset, start=1):
        try:
            pair_id = str(row) if id_column is None or record[id_column] is None else str(record[id_column])
            out.append(PairExample(_text(record[text_column], "text_a", max_line_chars, source, row),
                                   _text(record[text_pair_column], "text_b", max_line_chars, source, row),
                                   _as_label(record[label_column], names, source, row), pair_id, row))
        except DataError as err:
            problems.report(err.line, err.problem)
    return problems.finish(out, empty="no examples found", label_names=names)


def __getattr__(name: str):
    # 0.1 name (deprecated, removed in 0.3): it shadowed the task registry stackft.tasks.TASKS
    if name == "TASKS":
        import warnings

        warnings.warn("stackft.data.hf.TASKS was renamed HF_TASK_NAMES (the task registry is stackft.tasks.TASKS); "
                      "the old name goes away in stackft 0.3", DeprecationWarning, stacklevel=2)
        return HF_TASK_NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
