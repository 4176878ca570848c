"""Unlabelled input for prediction (``stackft predict``): read files or stdin into task examples.

Formats (``format=``; ``auto`` picks one from the file name and the task, see :func:`detect_format`):

- ``conll``: CoNLL words, one token per line, a blank line between sentences, ``-DOCSTART-`` skipped.
  The token is the first column; further columns (a tagged file's POS/chunk/tag) are ignored.
- ``lines``: one example per line: a sentence (ner: split on whitespace into words), a text
  (classification) or ``text_a<TAB>text_b`` (pairs). Blank lines are skipped.
- ``tsv`` (pairs): ``text_a<TAB>text_b``, ``text_a<TAB>text_b<TAB>id``, or the training layout
  ``label<TAB>text_a<TAB>text_b<TAB>id`` (the label is ignored).
- ``csv``: RFC 4180 rows; the text is column 0 (pairs: columns 0 and 1), further columns (a
  training file's label) are ignored; a first row whose text cell is ``text`` (pairs: ``text_a``,
  ``question1``, ``sentence1``, ``q1``) is a header and skipped.
- ``jsonl``: one JSON value per line: an object with ``text`` (or ``sentence``; ner also ``tokens`` or
  ``words``, a list), pairs ``text_a``/``text_b`` (or ``question1``/``question2``,
  ``sentence1``/``sentence2``, ``q1``/``q2``), and optionally ``id``; or a bare string (a text or
  sentence), or a two-string list (a pair).

Each reader returns an :class:`~stackft.data.errors.ExampleList` of the task's example type, with
placeholder labels (``label=None``; ner tags all ``"O"``) and ``ids`` (the input's ids, None where
it gave none). Malformed input raises :class:`~stackft.data.errors.DataError` naming the source
and line (``on_error="skip"`` drops and counts such lines instead), as the training readers do.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from stackft.data.conll import TaggedSentence
from stackft.data.errors import MAX_LINE_CHARS, ExampleList, Problems, check_options, iter_lines
from stackft.data.pairs import PairExample
from stackft.data.textcls import TextExample

FORMATS = ("auto", "conll", "lines", "tsv", "csv", "jsonl")
STDIN = "-"
_TAG = re.compile(r"^(?:O|[BI]-\S+)$")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv",
                   ".conll": "conll", ".iob": "conll", ".bio": "conll"}
_TEXT_KEYS = ("text", "sentence")
_WORD_KEYS = ("tokens", "words")
_PAIR_KEYS = (("text_a", "text_b"), ("question1", "question2"), ("sentence1", "sentence2"), ("q1", "q2"))
_CSV_HEADERS = {"text", "text_a", "question1", "sentence1", "q1", "sentence"}


def _task_name(task) -> str:
    name = getattr(task, "name", task)
    if name not in ("ner", "classification", "pairs"):
        raise ValueError(f"task must be ner, classification or pairs, got {name!r}")
    return name


def read_source(source) -> tuple[bytes, str]:
    """The bytes of ``source`` (a path, or ``"-"`` for stdin) and the name used in messages."""
    if str(source) == STDIN:
        import sys

        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        return data, "<stdin>"
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {source}")
    if path.is_dir():
        from stackft.data.errors import DataError

        raise DataError(str(source), None, "is a directory, not a data file")
    return path.read_bytes(), str(source)


def _lines(data: bytes, max_line_chars: int, keepends: bool = False):
    return iter_lines(io.BytesIO(data), max_line_chars, keepends=keepends)


def _text_lines(data: bytes, problems: Problems, max_line_chars: int):
    """``(line number, text)`` of the non-blank lines; an unreadable line is reported and skipped."""
    for number, text, problem in _lines(data, max_line_chars):
        if problem is not None:
            problems.report(number, problem)
        elif text.strip():
            yield number, text


def detect_format(task, source, data: bytes | None = None) -> str:
    """The format ``auto`` means for ``source``.

    By suffix: ``.jsonl``/``.json``/``.ndjson`` jsonl, ``.tsv`` tsv, ``.csv`` csv, ``.conll``/``.iob``/
    ``.bio`` conll. Otherwise (``.txt``, stdin, ...) by content: jsonl when every non-blank line starts
    with ``{``; pairs: tsv; classification: lines; ner: conll when the text is CoNLL-like (a
    ``-DOCSTART-`` line; or several lines of one word each; or lines that all have the same number of
    columns, at least two, the last one a tag), else lines (one sentence per line).
    """
    task = _task_name(task)
    suffix = Path(str(source)).suffix.lower() if str(source) != STDIN else ""
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    sample = [] if data is None else [
        text.strip() for _, text, problem in _lines(data[: 1 << 20], MAX_LINE_CHARS) if problem is None]
    filled = [t for t in sample if t]
    if filled and all(t.startswith("{") for t in filled):
        return "jsonl"
    if task == "pairs":
        return "tsv"
    if task == "classification":
        return "lines"
    if any(t.split()[0] == "-DOCSTART-" for t in filled):
        return "conll"
    widths = {len(t.split()) for t in filled}
    if len(filled) > 1 and widths == {1}:
        return "conll"
    if len(widths) == 1 and min(widths) >= 2 and all(_TAG.match(t.split()[-1]) for t in filled):
        return "conll"
    return "lines"


def read_unlabelled(task, source, format: str = "auto", *, on_error: str = "raise",
                    max_line_chars: int = MAX_LINE_CHARS) -> ExampleList:
    """Examples of ``task`` (ner / classification / pairs) from ``source`` (a path or ``"-"``)."""
    task = _task_name(task)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    check_options(on_error, max_line_chars)
    data, name = read_source(source)
    if format == "auto":
        format = detect_format(task, source, data)
    return parse_unlabelled(task, data, format, name=name, on_error=on_error, max_line_chars=max_line_chars)


def parse_unlabelled(task, data: bytes, format: str, *, name: str = "<input>", on_error: str = "raise",
                     max_line_chars: int = MAX_LINE_CHARS) -> ExampleList:
    """:func:`read_unlabelled` on bytes already read (``format`` must not be ``auto``)."""
    task = _task_name(task)
    if format not in FORMATS or format == "auto":
        raise ValueError(f"format must be one of {FORMATS[1:]}, got {format!r}")
    problems = Problems(name, on_error, "sentences" if format == "conll" else "lines")
    parse = {"conll": _conll, "lines": _line_examples, "tsv": _tsv, "csv": _csv, "jsonl": _jsonl}[format]
    if format == "conll" and task != "ner":
        raise ValueError(f"format conll holds words for ner, not {task} input")
    if format == "tsv" and task != "pairs":
        raise ValueError(f"format tsv holds pairs, not {task} input (use lines or csv)")
    rows = parse(task, data, problems, max_line_chars)
    examples = [example for example, _ in rows]
    result = problems.finish(examples, empty="no examples found (empty input?)", stacklevel=4)
    result.ids = [i for _, i in rows]
    return result


# -- the formats --------------------------------------------------------------------------------

def _words(tokens, line: int) -> TaggedSentence:
    return TaggedSentence(list(tokens), ["O"] * len(tokens), line)


def _text(text: str, line: int) -> TextExample:
    return TextExample(text, None, line)


def _pair(a: str, b: str, line: int, pair_id=None) -> PairExample:
    return PairExample(a, b, None, None if pair_id is None else str(pair_id), line)


def _conll(task, data, problems: Problems, max_line_chars):
    rows, tokens, first, bad = [], [], None, None

    def close():
        nonlocal tokens, first, bad
        if tokens or bad:
            if bad:
                problems.report(*bad)
            else:
                rows.append((_words(tokens, first), None))
        tokens, first, bad = [], None, None

    for number, text, problem in _lines(data, max_line_chars):
        if problem is not None:
            first = first or number
            bad = bad or (number, problem)
            continue
        columns = text.split()
        if not columns or columns[0] == "-DOCSTART-":
            close()
            continue
        first = first or number
        tokens.append(columns[0])
    close()
    return rows


def _line_examples(task, data, problems: Problems, max_line_chars):
    rows = []
    for number, text in _text_lines(data, problems, max_line_chars):
        if task == "ner":
            rows.append((_words(text.split(), number), None))
        elif task == "classification":
            rows.append((_text(text.strip(), number), None))
        else:
            fields = [f.strip() for f in text.split("\t")]
            if len(fields) != 2 or not all(fields):
                problems.report(number, f"expected text_a<TAB>text_b (2 non-empty tab-separated fields), "
                                        f"found {len(fields)} field(s)" + ("" if len(fields) != 2 else ", one empty"))
                continue
            rows.append((_pair(fields[0], fields[1], number), None))
    return rows


def _tsv(task, data, problems: Problems, max_line_chars):
    rows = []
    for number, text in _text_lines(data, problems, max_line_chars):
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) == 2:
            a, b, pair_id = fields[0], fields[1], None
        elif len(fields) == 3:
            a, b, pair_id = fields
        elif len(fields) == 4:  # the training layout: label, text_a, text_b, id
            _, a, b, pair_id = fields
        else:
            problems.report(number, f"expected 2 to 4 tab-separated fields (text_a, text_b[, id], or label, "
                                    f"text_a, text_b, id), found {len(fields)}")
            continue
        if not a or not b:
            problems.report(number, f"empty {'text_a' if not a else 'text_b'}")
            continue
        rows.append((_pair(a, b, number, pair_id or None), pair_id or None))
    return rows


def _csv(task, data, problems: Problems, max_line_chars):
    bad_lines: dict[int, str] = {}

    def lines():
        for number, text, problem in _lines(data, max_line_chars, keepends=True):
            if problem is not None:
                bad_lines.setdefault(number, problem)
            yield text

    field_limit = csv.field_size_limit(2**31 - 1)
    parsed = []
    try:
        reader = csv.reader(lines(), strict=True)
        start = 1
        while True:
            try:
                row = next(reader)
                problem = None
            except StopIteration:
                break
            except csv.Error as err:
                row, problem = None, f"malformed CSV: {err}"
            end = reader.line_num
            bad = next(((n, p) for n, p in sorted(bad_lines.items()) if start <= n <= end), None)
            if bad is None and problem is not None:
                bad = (start, problem)
            parsed.append((start, row, bad))
            start = end + 1
    finally:
        csv.field_size_limit(field_limit)

    need = 2 if task == "pairs" else 1
    rows = []
    for i, (start, row, bad) in enumerate(parsed):
        if bad is None and (not row or (len(row) == 1 and not row[0].strip())):
            continue
        if bad is None and i == 0 and row and row[0].strip().lower() in _CSV_HEADERS:
            continue  # a header
        if bad is None and len(row) < need:
            bad = (start, f"expected at least {need} columns (text_a, text_b), found {len(row)}")
        if bad is None:
            cells = [c.replace("\\n", " ").strip() for c in row[:need]]
            empty = next((j for j, c in enumerate(cells) if not c), None)
            if empty is not None:
                bad = (start, "empty text" if need == 1 else f"empty {('text_a', 'text_b')[empty]}")
            elif any(len(c) > max_line_chars for c in cells):
                bad = (start, f"text longer than {max_line_chars} characters (max_line_chars)")
        if bad is not None:
            problems.report(*bad)
            continue
        if task == "ner":
            rows.append((_words(cells[0].split(), start), None))
        elif task == "classification":
            rows.append((_text(cells[0], start), None))
        else:
            rows.append((_pair(cells[0], cells[1], start), None))
    return rows


def _string(value, what: str, max_line_chars: int) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{what} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise BadInput(f"empty {what}")
    if len(value) > max_line_chars:
        raise BadInput(f"{what} longer than {max_line_chars} characters (max_line_chars)")
    return value


class BadInput(ValueError):
    """One input value is unusable (the message says why); readers turn it into a DataError at its line."""


def example_from_value(task, value, number: int, max_line_chars: int = MAX_LINE_CHARS):
    """``(example, id)`` of one JSON-lines value (see the module docstring); BadInput when it is unusable."""
    pair_id = None
    if isinstance(value, dict):
        pair_id = next((value[k] for k in ("id", "idx") if value.get(k) is not None), None)
        if task == "pairs":
            keys = next(((a, b) for a, b in _PAIR_KEYS if a in value and b in value), None)
            if keys is None:
                raise BadInput(f"expected keys text_a and text_b (or question1/question2, sentence1/sentence2, q1/q2), "
                           f"found {', '.join(map(str, value)) or 'none'}")
            a = _string(value[keys[0]], keys[0], max_line_chars)
            b = _string(value[keys[1]], keys[1], max_line_chars)
            return _pair(a, b, number, pair_id), pair_id
        if task == "ner":
            key = next((k for k in _WORD_KEYS if k in value), None)
            if key is not None:
                words = value[key]
                if not isinstance(words, list) or not words:
                    raise BadInput(f"{key} must be a non-empty list of strings")
                words = [_string(w, f"{key}[{i}]", max_line_chars) for i, w in enumerate(words)]
                return _words(words, number), pair_id
        key = next((k for k in _TEXT_KEYS if k in value), None)
        if key is None:
            wanted = "text (or sentence, tokens, words)" if task == "ner" else "text (or sentence)"
            raise BadInput(f"expected the key {wanted}, found {', '.join(map(str, value)) or 'none'}")
        value = value[key]
        what = key
    else:
        what = "value"
    if task == "pairs":
        if isinstance(value, list) and len(value) == 2:
            return _pair(_string(value[0], "text_a", max_line_chars), _string(value[1], "text_b", max_line_chars),
                         number), None
        raise BadInput("expected an object with text_a and text_b, or a list of two strings")
    if task == "ner" and isinstance(value, list):
        words = [_string(w, f"{what}[{i}]", max_line_chars) for i, w in enumerate(value)]
        if not words:
            raise BadInput(f"empty {what}")
        return _words(words, number), pair_id
    text = _string(value, what, max_line_chars)
    return (_words(text.split(), number) if task == "ner" else _text(text, number)), pair_id


def _jsonl(task, data, problems: Problems, max_line_chars):
    rows = []
    for number, text in _text_lines(data, problems, max_line_chars):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            problems.report(number, f"not valid JSON: {err.msg} (column {err.colno})")
            continue
        try:
            rows.append(example_from_value(task, value, number, max_line_chars))
        except BadInput as err:
            problems.report(number, str(err))
    return rows


# -- encoding -------------------------------------------------------------------------------------

def encode_unlabelled(task, examples, tokenizer, labels, *, max_length: int, pair_mode: str = "joint"):
    """An EncodedDataset of unlabelled ``examples``, tokenised exactly as training data is.

    The examples' labels are ignored (placeholders are encoded and then dropped from the items), so
    the items hold no ``labels``; ner items keep ``word_starts`` and ``n_words``.
    """
    from dataclasses import replace

    from stackft.data.encode import encode_pairs, encode_tagged, encode_texts
    from stackft.data.labels import LabelVocab

    task = _task_name(task)
    vocab = LabelVocab(list(labels))
    if task == "ner":
        tag = "O" if "O" in vocab else vocab.decode(0)
        sentences = [TaggedSentence(list(s.tokens), [tag] * len(s.tokens), s.line) for s in examples]
        ds = encode_tagged(sentences, tokenizer, vocab, max_length=max_length)
    elif task == "pairs":
        ds = encode_pairs([replace(e, label=vocab.decode(0)) for e in examples], tokenizer, vocab,
                          max_length=max_length, mode=pair_mode)
    else:
        ds = encode_texts([replace(e, label=vocab.decode(0)) for e in examples], tokenizer, vocab,
                          max_length=max_length)
    for item in ds.items:
        item.pop("labels", None)
    return ds
