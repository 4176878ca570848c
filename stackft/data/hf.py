"""Examples from Hugging Face ``datasets``: hub ids, local csv/json/parquet files, saved datasets.

``datasets`` is an optional dependency (``pip install stackft[datasets]``), imported on first use.
"""

from __future__ import annotations

import os

from .conll import TaggedSentence, check_tag, to_iob2
from .errors import DataError
from .pairs import PairExample
from .textcls import TextExample

TASKS = ("ner", "classification", "pairs")
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
             ".arrow": "arrow"}
_TEXT_COLUMNS = ("text", "sentence", "content", "document", "question")
_PAIR_COLUMNS = (("question1", "question2"), ("sentence1", "sentence2"), ("text_a", "text_b"),
                 ("premise", "hypothesis"), ("q1", "q2"), ("question", "sentence"))


class ExampleList(list):
    """A list of examples that remembers the dataset's ClassLabel names (``label_names``, or None).

    LabelVocab.from_examples uses ``label_names`` as the label order, so label ids equal the
    dataset's integers (e.g. GLUE QQP: 0 = not_duplicate, 1 = duplicate).
    """

    def __init__(self, items=(), *, label_names: list[str] | None = None):
        super().__init__(items)
        self.label_names = label_names


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
        raise DataError(source, row, "missing label")
    return str(value)


def load_hf_examples(name_or_path, split: str, task: str, *, text_column: str | None = None,
                     text_pair_column: str | None = None, label_column: str | None = None,
                     tokens_column: str = "tokens", tags_column: str = "ner_tags",
                     config: str | None = None, scheme: str = "auto", **load_kwargs) -> ExampleList:
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
        load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``cache_dir``).

    ClassLabel ids become their names. ``line`` of each example is its 1-based row number; pair
    ids come from an ``id``/``idx`` column when there is one. Returns an ExampleList whose
    ``label_names`` holds the ClassLabel names (None when labels are plain values).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    dataset = _load(name_or_path, split, config, load_kwargs)
    if isinstance(name_or_path, (str, os.PathLike)):
        source = f"{os.fspath(name_or_path)}[{split}]"
    else:
        source = f"{getattr(dataset.info, 'dataset_name', None) or 'dataset'}[{split}]"
    columns = list(dataset.column_names)
    if len(dataset) == 0:
        raise DataError(source, None, "the split has no rows")

    if task == "ner":
        for name in (tokens_column, tags_column):
            if name not in columns:
                raise DataError(source, None, f"no column {name!r} (columns: {', '.join(columns)})")
        names = _class_names(dataset.features[tags_column])
        sentences = []
        for row, record in enumerate(dataset, start=1):
            tokens = [str(t) for t in record[tokens_column]]
            tags = [_as_label(t, names, source, row) for t in record[tags_column]]
            if len(tokens) != len(tags):
                raise DataError(source, row, f"{len(tokens)} tokens but {len(tags)} tags")
            if not tokens:
                continue
            for tag in tags:
                check_tag(tag, source, row)
            sentences.append(TaggedSentence(tokens, tags, row))
        if not sentences:
            raise DataError(source, None, "no sentences found")
        to_iob2(sentences, scheme, source)
        return ExampleList(sentences)

    label_column = _pick(columns, label_column, ("label", "labels"), "label", source)
    names = _class_names(dataset.features[label_column])
    out = ExampleList(label_names=names)
    if task == "classification":
        text_column = _pick(columns, text_column, _TEXT_COLUMNS, "text", source)
        for row, record in enumerate(dataset, start=1):
            text = str(record[text_column] or "").replace("\\n", " ").strip()
            if not text:
                raise DataError(source, row, "empty text")
            out.append(TextExample(text, _as_label(record[label_column], names, source, row), row))
        return out

    if text_column is None and text_pair_column is None:
        for a, b in _PAIR_COLUMNS:
            if a in columns and b in columns:
                text_column, text_pair_column = a, b
                break
    text_column = _pick(columns, text_column, (), "first text", source)
    text_pair_column = _pick(columns, text_pair_column, (), "second text", source)
    id_column = next((c for c in ("id", "idx", "pair_id") if c in columns), None)
    for row, record in enumerate(dataset, start=1):
        pair_id = str(record[id_column]) if id_column else str(row)
        out.append(PairExample(str(record[text_column] or "").strip(), str(record[text_pair_column] or "").strip(),
                               _as_label(record[label_column], names, source, row), pair_id, row))
    return out
