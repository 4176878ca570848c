"""Text-classification CSV reader (RFC 4180, e.g. Yahoo! Answers ``text,label`` without header)."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

from .errors import DataError


@dataclass
class TextExample:
    """One text with its label (str) and the 1-based line its CSV row starts on."""

    text: str
    label: str
    line: int


def read_text_csv(
    path: str | os.PathLike,
    *,
    text_column: int = 0,
    label_column: int = 1,
    header: str | bool = "auto",
) -> list[TextExample]:
    """Read a CSV of texts and labels.

    Args:
        path: UTF-8 CSV file, RFC 4180 quoting (quoted fields may contain commas, ``""``, newlines).
        text_column, label_column: column indices of the text and the label.
        header: True = skip the first row, False = no header, "auto" = skip the first row when its
            label cell is ``label`` (case-insensitive).

    The two-character sequence backslash-``n`` inside a text (Zhang et al.'s encoding of line
    breaks) becomes a space. Every row must have as many columns as the first row. Raises DataError
    (path, line) on a wrong column count, an empty text or label, malformed quoting, non-UTF-8
    bytes, or a file without rows.
    """
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x})") from None

    # newline="" keeps quoted line breaks inside fields, as the csv module requires
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    examples = []
    n_columns = None
    row_start = 1
    first = True
    try:
        for row in reader:
            line, row_start = row_start, reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if n_columns is None:
                n_columns = len(row)
                for name, index in (("text_column", text_column), ("label_column", label_column)):
                    if not -n_columns <= index < n_columns:
                        raise DataError(path, line, f"{name}={index} but the row has {n_columns} columns")
            elif len(row) != n_columns:
                raise DataError(path, line, f"expected {n_columns} columns (as in the first row), found {len(row)}")
            if first:
                first = False
                if header is True or (header == "auto" and row[label_column].strip().lower() == "label"):
                    continue
            text = row[text_column].replace("\\n", " ").strip()
            label = row[label_column].strip()
            if not text:
                raise DataError(path, line, "empty text")
            if not label:
                raise DataError(path, line, "empty label")
            examples.append(TextExample(text, label, line))
    except csv.Error as err:
        raise DataError(path, row_start, f"malformed CSV: {err}") from None
    if not examples:
        raise DataError(path, None, "no rows found (empty file?)")
    return examples
