"""CoNLL-style token-per-line reader with IOB1/IOB2 detection; tags are returned in IOB2.

File layout: one token per line, whitespace-separated columns (CoNLL-2003: ``TOKEN POS CHUNK NER``),
a blank line ends a sentence, ``-DOCSTART-`` lines are skipped. The schemes: IOB1 (the original
CoNLL-2003 files) opens a chunk with ``I-X`` (``B-X`` only between two adjacent chunks of type X),
IOB2 opens every chunk with ``B-X``. IOB1 is converted by ``I-X -> B-X`` wherever the previous tag
is neither ``B-X`` nor ``I-X`` (docs/methods.md, section 11).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from stackft.data.errors import (
    MAX_LINE_CHARS,
    DataError,
    ExampleList,
    Problems,
    check_options,
    iter_lines,
    open_data,
    usual_width,
    width_problem,
)

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


class _RawSentence:
    """The lines of one sentence as read (parallel lists), before checking."""

    __slots__ = ("numbers", "tokens", "tags", "widths", "problems")

    def __init__(self):
        self.numbers: list[int] = []
        self.tokens: list[str] = []
        self.tags: list[str] = []
        self.widths: list[int] = []  # column count per line (0 for a line with a problem)
        self.problems: dict[int, str] | None = None  # line index -> problem of the line

    def add(self, number: int, token: str, tag: str, width: int, problem: str | None = None) -> None:
        if problem is not None:
            if self.problems is None:
                self.problems = {}
            self.problems[len(self.numbers)] = problem
        self.numbers.append(number)
        self.tokens.append(token)
        self.tags.append(tag)
        self.widths.append(width)

    def problem(self, n_columns: int | None, wanted: dict[str, int], scheme: str) -> tuple[int, str] | None:
        """(line, problem) of the sentence's first bad line, or None when the sentence is good."""
        for i, (width, tag) in enumerate(zip(self.widths, self.tags)):
            if self.problems is not None and i in self.problems:
                return self.numbers[i], self.problems[i]
            if width != n_columns:
                return self.numbers[i], width_problem(width, n_columns, wanted, "token lines")
            if not _TAG.match(tag):
                return self.numbers[i], f"invalid tag {tag!r} (expected O, B-TYPE or I-TYPE)"
        if scheme == "iob2":
            at = opens_chunk_with_i(self.tags)
            if at is not None:
                return self.numbers[at], (f"tag {self.tags[at]!r} opens a chunk, which IOB2 does not allow "
                                          "(the file looks like IOB1: use scheme='auto' or 'iob1')")
        return None


def read_conll(
    path: str | os.PathLike,
    *,
    scheme: str = "auto",
    token_column: int = 0,
    tag_column: int = -1,
    on_error: str = "raise",
    max_line_chars: int = MAX_LINE_CHARS,
) -> ExampleList:
    """Read a CoNLL file into sentences with IOB2 tags.

    Args:
        path: the file; UTF-8 (a leading BOM is dropped, ``\\r\\n`` line ends are fine).
        scheme: "auto" (detect IOB1 and convert), "iob1" (convert), or "iob2" (must already be IOB2).
        token_column, tag_column: column indices (negative counts from the end).
        on_error: "raise" (default): DataError(path, line, problem) at the first bad line.
            "skip": drop every sentence that has a bad line, count it (``result.skipped``, the
            first problems in ``result.problems``) and warn once (DataWarning).
        max_line_chars: a longer line is bad (it is never handed to a tokenizer).

    Bad lines: not UTF-8, NUL bytes, over ``max_line_chars``, a column count other than the
    file's usual one (the most common count among token lines that have token_column and
    tag_column; ties go to the earliest), an invalid tag, and with scheme "iob2" an ``I-X`` that
    opens a chunk. Returns an ExampleList of TaggedSentence. Raises DataError when the file has no
    sentences (or none are left after skipping), FileNotFoundError when it is missing.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_options(on_error, max_line_chars)
    problems = Problems(path, on_error, "sentences")

    # pass 1: group the lines into sentences (parallel lists, few objects: this runs per token)
    raw: list[_RawSentence] = []
    current = _RawSentence()
    layouts: dict[int, list[int]] = {}  # column count -> [lines, first line]
    with open_data(path) as f:
        for number, text, problem in iter_lines(f, max_line_chars):
            if problem is None:
                columns = text.split()
                n = len(columns)
                if not n or columns[0] == "-DOCSTART-":
                    if current.numbers:
                        raw.append(current)
                        current = _RawSentence()
                    continue
                seen = layouts.setdefault(n, [0, number])
                seen[0] += 1
                current.add(number, columns[token_column] if -n <= token_column < n else "",
                            columns[tag_column] if -n <= tag_column < n else "", n)
            else:
                current.add(number, "", "", 0, problem)
    if current.numbers:
        raw.append(current)

    wanted = {"token_column": token_column, "tag_column": tag_column}
    n_columns = usual_width(layouts, wanted)

    # pass 2: check each sentence, in file order
    sentences: list[TaggedSentence] = []
    for raw_sentence in raw:
        bad = raw_sentence.problem(n_columns, wanted, scheme)
        if bad is not None:
            problems.report(*bad)
            continue
        sentences.append(TaggedSentence(raw_sentence.tokens, raw_sentence.tags, raw_sentence.numbers[0]))

    result = problems.finish(sentences, empty="no sentences found (empty file?)")
    to_iob2(result, scheme, path, token_lines=True)
    return result
