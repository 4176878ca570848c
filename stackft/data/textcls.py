"""Text-classification CSV reader (RFC 4180, e.g. Yahoo! Answers ``text,label`` without header)."""

from __future__ import annotations

import csv
import os
from collections import deque
from dataclasses import dataclass

from stackft.data.errors import (
    MAX_LINE_CHARS,
    ExampleList,
    Problems,
    check_options,
    iter_lines,
    looks_like_header,
    open_data,
    usual_width,
    warn_header,
    width_problem,
)


@dataclass
class TextExample:
    """One text with its label (str) and the 1-based line its CSV row starts on."""

    text: str
    label: str
    line: int


def _csv_problem(err: csv.Error) -> tuple[bool, str]:
    """(is the error an unterminated quote at the end of the file, message) of a csv.Error."""
    message = str(err)
    if "unexpected end of data" in message:
        return True, "unterminated quoted field: a quote opened in this row is never closed before the end of the file"
    if "new-line character seen in unquoted field" in message:
        return False, "malformed CSV: carriage return inside an unquoted field (lines end with \\n or \\r\\n only)"
    return False, f"malformed CSV: {message}"


def _parse_rows(path, max_line_chars: int) -> list[tuple[int, list[str] | None, tuple[int, str] | None]]:
    """Non-blank rows of a CSV file as (first line, cells, None) or (first line, cells or None,
    (bad line, problem)) for rows with a bad line or a quoting error."""
    line_problems: deque = deque()

    def lines(f):
        # the lines keep their endings, as the csv module requires for quoted line breaks
        for number, text, problem in iter_lines(f, max_line_chars, keepends=True):
            if problem is not None:
                line_problems.append((number, problem))
            yield text

    rows = []
    with open_data(path) as f:
        reader = csv.reader(lines(f), strict=True)
        row_start = 1
        while True:
            try:
                row = next(reader)
                bad = None
            except StopIteration:
                break
            except csv.Error as err:  # the reader goes on with the next line
                row = None
                to_eof, message = _csv_problem(err)
                bad = (row_start if to_eof else reader.line_num, message)
            start, row_start = row_start, reader.line_num + 1
            if line_problems and line_problems[0][0] <= reader.line_num:
                bad = line_problems[0]  # a bad line comes first: the parser's complaint may stem from it
                while line_problems and line_problems[0][0] <= reader.line_num:
                    line_problems.popleft()
            if bad is None and (not row or (len(row) == 1 and not row[0].strip())):
                continue  # blank or whitespace-only row
            rows.append((start, row, bad))
    return rows


def read_text_csv(
    path: str | os.PathLike,
    *,
    text_column: int = 0,
    label_column: int = 1,
    header: str | bool = "auto",
    on_error: str = "raise",
    max_line_chars: int = MAX_LINE_CHARS,
) -> ExampleList:
    """Read a CSV of texts and labels.

    Args:
        path: UTF-8 CSV file, RFC 4180 quoting (quoted fields may contain commas, ``""``, newlines).
            A leading BOM is dropped; ``\\r\\n`` line ends and whitespace-only rows are fine.
        text_column, label_column: column indices of the text and the label.
        header: True = skip the first row, False = no header, "auto" = skip the first row when its
            label cell is ``label`` (case-insensitive) or it otherwise looks like a header
            (:func:`~stackft.data.errors.looks_like_header`: e.g. ``question,topic`` above rows whose
            labels each occur more than once), noted with a DataWarning; a header never becomes a class.
        on_error: "raise" (default): DataError(path, line, problem) at the first bad row. "skip":
            drop and count bad rows (``result.skipped``, ``result.problems``), warn once
            (DataWarning).
        max_line_chars: a longer line, or a longer text (quoted texts may span lines), is bad.

    The two-character sequence backslash-``n`` inside a text (Zhang et al.'s encoding of line
    breaks) becomes a space. Bad rows: a column count other than the file's usual one (the most
    common count among rows that have text_column and label_column; ties go to the earliest
    row), an empty text or label, malformed quoting (a row whose quote is never closed runs to
    the end of the file and is one bad row), a line that is not UTF-8, has NUL bytes or is too
    long. A bad row is reported at its bad line (quoting errors: where the parser failed;
    unterminated quotes: the row's first line). Returns an ExampleList of TextExample (``line`` =
    the row's first line); DataError when no rows are found (or none are left after skipping).
    """
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    check_options(on_error, max_line_chars)
    problems = Problems(path, on_error, "rows")

    # no csv field limit (131,072 characters by default): texts are checked against max_line_chars
    field_limit = csv.field_size_limit(2**31 - 1)
    try:
        rows = _parse_rows(path, max_line_chars)
    finally:
        csv.field_size_limit(field_limit)

    if rows and header is not False:
        start, row, bad = rows[0]
        fits = bad is None and -len(row) <= label_column < len(row)
        if header is True or (fits and row[label_column].strip().lower() == "label"):
            rows = rows[1:]
        elif fits:
            others = [r[label_column].strip() for _, r, b in rows[1:]
                      if b is None and -len(r) <= label_column < len(r)]
            if looks_like_header(row, row[label_column], others):
                rows = rows[1:]
                warn_header(path, start, row, row[label_column])

    layouts: dict[int, list[int]] = {}  # column count -> [rows, first line]
    for start, row, bad in rows:
        if bad is None:
            layouts.setdefault(len(row), [0, start])[0] += 1
    wanted = {"text_column": text_column, "label_column": label_column}
    n_columns = usual_width(layouts, wanted)

    # check each row, in file order
    examples = []
    for start, row, bad in rows:
        if bad is None:
            if len(row) != n_columns:
                bad = (start, width_problem(len(row), n_columns, wanted, "rows"))
            else:
                text = row[text_column].replace("\\n", " ").strip()
                label = row[label_column].strip()
                if not text:
                    bad = (start, "empty text")
                elif not label:
                    bad = (start, "empty label")
                elif len(text) > max_line_chars:
                    bad = (start, f"text longer than {max_line_chars} characters (max_line_chars)")
        if bad is not None:
            problems.report(*bad)
            continue
        examples.append(TextExample(text, label, start))
    return problems.finish(examples, empty="no rows found (empty file?)")
