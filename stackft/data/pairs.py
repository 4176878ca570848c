"""Sentence-pair reader for QQP-style TSV: ``label \\t text_a \\t text_b \\t id``, no header, no quoting."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import DataError, decode_lines


@dataclass
class PairExample:
    """One sentence pair with its label (str), pair id (str) and 1-based source line."""

    text_a: str
    text_b: str
    label: str
    id: str
    line: int


def read_pairs_tsv(path: str | os.PathLike, *, has_id: bool = True) -> list[PairExample]:
    """Read a tab-separated pair file.

    Each non-blank line is ``label \\t text_a \\t text_b \\t id`` (4 fields; 3 without ``has_id``,
    in which case the id is the line number). Fields are split on tabs only: no quoting, no header.
    Raises DataError (path, line) on a wrong field count, an empty label, non-UTF-8 bytes, or a
    file without pairs.
    """
    n_fields = 4 if has_id else 3
    with open(path, "rb") as f:
        lines = decode_lines(path, f.read())
    examples = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != n_fields:
            raise DataError(
                path, number,
                f"expected {n_fields} tab-separated fields (label, text_a, text_b{', id' if has_id else ''}), "
                f"found {len(fields)}",
            )
        label = fields[0].strip()
        if not label:
            raise DataError(path, number, "empty label")
        pair_id = fields[3].strip() if has_id else str(number)
        examples.append(PairExample(fields[1].strip(), fields[2].strip(), label, pair_id, number))
    if not examples:
        raise DataError(path, None, "no pairs found (empty file?)")
    return examples
