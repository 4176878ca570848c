"""Sentence-pair reader for QQP-style TSV: ``label \\t text_a \\t text_b \\t id``, no quoting; a header row is skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass

from stackft.data.errors import (
    MAX_LINE_CHARS,
    ExampleList,
    Problems,
    check_options,
    iter_lines,
    looks_like_header,
    open_data,
    warn_header,
)


@dataclass
class PairExample:
    """One sentence pair with its label (str), pair id (str) and 1-based source line."""

    text_a: str
    text_b: str
    label: str
    id: str
    line: int


def read_pairs_tsv(path: str | os.PathLike, *, has_id: bool = True, header: str | bool = "auto",
                   on_error: str = "raise", max_line_chars: int = MAX_LINE_CHARS) -> ExampleList:
    """Read a tab-separated pair file.

    Each non-blank line is ``label \\t text_a \\t text_b \\t id`` (4 fields; 3 without ``has_id``,
    in which case the id is the line number). Fields are split on tabs only: no quoting; each field
    is stripped of surrounding whitespace. UTF-8; a leading BOM is dropped, ``\\r\\n`` line ends and
    whitespace-only lines are fine.

    ``header``: True = the first pair line is a header, False = there is none, "auto" (default) = it
    is one when :func:`~stackft.data.errors.looks_like_header` says so (e.g.
    ``is_duplicate \\t question1 \\t question2 \\t id`` above 0/1 labels). A skipped header is
    noted with a DataWarning; it never becomes a class.

    Bad lines: a wrong field count, an empty label, text or id, bytes that are not UTF-8, NUL
    bytes, more than ``max_line_chars`` characters. ``on_error="raise"`` (default) raises
    DataError(path, line, problem) at the first; ``"skip"`` drops and counts them
    (``result.skipped``, ``result.problems``) and warns once (DataWarning). Returns an ExampleList
    of PairExample; DataError when no pairs are found (or none are left after skipping).
    """
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    check_options(on_error, max_line_chars)
    problems = Problems(path, on_error, "lines")
    n_fields = 4 if has_id else 3
    names = ("label", "text_a", "text_b", "id")[:n_fields]
    examples = []
    first_line = None  # the first non-blank line: the only one that may be a header
    with open_data(path) as f:
        for number, text, problem in iter_lines(f, max_line_chars):
            if first_line is None and (problem is not None or text.strip()):
                first_line = number
            if problem is not None:
                problems.report(number, problem)
                continue
            if not text.strip():
                continue
            fields = text.split("\t")
            if len(fields) != n_fields:
                problems.report(number, f"expected {n_fields} tab-separated fields ({', '.join(names)}), "
                                        f"found {len(fields)}")
                continue
            fields = [field.strip() for field in fields]
            empty = next((name for name, field in zip(names, fields) if not field), None)
            if empty is not None:
                problems.report(number, f"empty {empty}")
                continue
            pair_id = fields[3] if has_id else str(number)
            examples.append(PairExample(fields[1], fields[2], fields[0], pair_id, number))
    if examples and header is not False and examples[0].line == first_line:
        first = examples[0]
        cells = [first.label, first.text_a, first.text_b] + ([first.id] if has_id else [])
        if header is True or looks_like_header(cells, first.label, [e.label for e in examples[1:]]):
            examples = examples[1:]
            if header == "auto":
                warn_header(path, first.line, cells, first.label)
    return problems.finish(examples, empty="no pairs found (empty file?)")
