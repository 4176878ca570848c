"""CoNLL-style token-per-line reader with IOB1/IOB2 detection; tags are returned in IOB2.

File layout: one token per line, whitespace-separated columns (CoNLL-2003: ``TOKEN POS CHUNK NER``),
a blank line ends a sentence, ``-DOCSTART-`` lines are skipped. See spec §4.1 for the schemes:
IOB1 opens a chunk with ``I-X`` (``B-X`` only between two adjacent chunks of type X), IOB2 opens
every chunk with ``B-X``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import DataError, decode_lines

_TAG = re.compile(r"^(?:O|[BI]-\S+)$")
SCHEMES = ("auto", "iob1", "iob2")


@dataclass
class TaggedSentence:
    """One sentence: ``tokens[i]`` carries tag ``tags[i]`` (IOB2); ``line`` = 1-based line of tokens[0]."""

    tokens: list[str]
    tags: list[str]
    line: int


def check_tag(tag: str, path=None, line: int | None = None) -> None:
    """Raise DataError unless ``tag`` is ``O``, ``B-TYPE`` or ``I-TYPE``."""
    if not _TAG.match(tag):
        raise DataError(path, line, f"invalid tag {tag!r} (expected O, B-TYPE or I-TYPE)")


def opens_chunk_with_i(tags: list[str]) -> int | None:
    """Index of the first ``I-X`` that starts a chunk (IOB1 style), or None if the tags are IOB2.

    An ``I-X`` starts a chunk at sentence start, after ``O``, or after a tag of another type.
    """
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return i
        previous = tag
    return None


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Convert one sentence's tags to IOB2: ``I-X -> B-X`` when the previous tag is not B-X/I-X."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def to_iob2(sentences: list[TaggedSentence], scheme: str = "auto", path=None, *, token_lines=False) -> str:
    """Bring ``sentences`` (in place) to IOB2; returns the scheme found ("iob1" or "iob2").

    ``scheme="auto"`` detects IOB1 (any I-X opening a chunk) and converts; "iob1" always converts;
    "iob2" raises DataError at the first I-X that opens a chunk (at line ``sentence.line + i`` when
    ``token_lines``, i.e. one token per line as in CoNLL files, else ``sentence.line``).
    Tags must already be valid.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    found = "iob2"
    for sentence in sentences:
        at = opens_chunk_with_i(sentence.tags)
        if at is None:
            continue
        found = "iob1"
        if scheme == "iob2":
            raise DataError(
                path,
                sentence.line + at if token_lines else sentence.line,
                f"tag {sentence.tags[at]!r} opens a chunk, which IOB2 does not allow "
                "(the file looks like IOB1: use scheme='auto' or 'iob1')",
            )
        break
    if scheme == "iob1" or found == "iob1":
        for sentence in sentences:
            sentence.tags = iob1_to_iob2(sentence.tags)
    return found


def read_conll(
    path: str | os.PathLike,
    *,
    scheme: str = "auto",
    token_column: int = 0,
    tag_column: int = -1,
) -> list[TaggedSentence]:
    """Read a CoNLL file into sentences with IOB2 tags.

    Args:
        path: the file; UTF-8 (a non-UTF-8 line raises DataError naming that line).
        scheme: "auto" (detect IOB1 and convert), "iob1" (convert), or "iob2" (must already be IOB2).
        token_column, tag_column: column indices (negative counts from the end).

    Every token line must have as many columns as the file's first token line. Raises DataError
    (with path and line) on column-count mismatches, invalid tags, or a file with no sentences.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    with open(path, "rb") as f:
        lines = decode_lines(path, f.read())

    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    n_columns = None

    def flush():
        nonlocal tokens, tags
        if tokens:
            sentences.append(TaggedSentence(tokens, tags, start))
        tokens, tags = [], []

    for number, text in enumerate(lines, start=1):
        columns = text.split()
        if not columns:
            flush()
            continue
        if columns[0] == "-DOCSTART-":
            flush()
            continue
        if n_columns is None:
            n_columns = len(columns)
            for name, index in (("token_column", token_column), ("tag_column", tag_column)):
                if not -n_columns <= index < n_columns:
                    raise DataError(path, number, f"{name}={index} but the line has {n_columns} columns")
        elif len(columns) != n_columns:
            raise DataError(
                path, number, f"expected {n_columns} columns (as on the first token line), found {len(columns)}"
            )
        tag = columns[tag_column]
        check_tag(tag, path, number)
        if not tokens:
            start = number
        tokens.append(columns[token_column])
        tags.append(tag)
    flush()

    if not sentences:
        raise DataError(path, None, "no sentences found (empty file?)")
    to_iob2(sentences, scheme, path, token_lines=True)
    return sentences
