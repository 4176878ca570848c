"""DataError and the shared machinery of the file readers.

DataError is a problem in an input file, reported with the file and line it came from. The readers
share: option checks (``on_error``, ``max_line_chars``), opening a data file (a directory or an
unreadable file becomes a DataError naming the path), splitting bytes into checked lines
(:func:`iter_lines`: UTF-8, NUL bytes, line length, BOMs), and :class:`Problems`, which either
raises a DataError at the first bad unit (``on_error="raise"``) or skips and counts bad units
(``on_error="skip"``) and finally wraps the examples in an :class:`ExampleList` carrying the count.
:func:`looks_like_header` is the readers' shared test for a header row in files that have none.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from typing import BinaryIO, Iterator

ON_ERROR = ("raise", "skip")
MAX_LINE_CHARS = 1_000_000  # default per-line (and per-text) character limit of the readers
MAX_PROBLEMS = 20  # problems kept on an ExampleList
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # also the start of the UTF-32 LE BOM
_CHUNK = 1 << 20


class DataError(ValueError):
    """A malformed or unusable input record.

    Attributes:
        path: the file (str) the record came from, or None when unknown.
        line: 1-based line number (int) of the record, or None when the problem is file-wide.
        problem: what is wrong (str).

    ``str(err)`` is ``"{path}:{line}: {problem}"``, ``"{path}: {problem}"`` without a line, or just
    ``problem`` without a path.
    """

    def __init__(self, path: str | os.PathLike | None, line: int | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.problem = problem
        super().__init__(self._message())

    def _message(self) -> str:
        if self.path is None:
            return self.problem if self.line is None else f"line {self.line}: {self.problem}"
        if self.line is None:
            return f"{self.path}: {self.problem}"
        return f"{self.path}:{self.line}: {self.problem}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        # keep the exception picklable (DataLoader workers re-raise in the parent process)
        return (type(self), (self.path, self.line, self.problem))


class DataWarning(UserWarning):
    """Issued once per read when ``on_error="skip"`` dropped bad lines, rows or sentences."""


class ExampleList(list):
    """A list of examples, as returned by every reader.

    Attributes:
        label_names: the dataset's ClassLabel names (``load_hf_examples``), or None.
            LabelVocab.from_examples uses them as the label order, so label ids equal the dataset's
            integers (e.g. GLUE QQP: 0 = not_duplicate, 1 = duplicate).
        skipped: how many bad units (lines/rows, or whole sentences for CoNLL) ``on_error="skip"``
            dropped (0 when nothing was skipped, and always 0 with ``on_error="raise"``).
        problems: the first MAX_PROBLEMS (20) of them, one per skipped unit, each
            ``"path:line: problem"``.
    """

    def __init__(self, items=(), *, label_names: list[str] | None = None, skipped: int = 0,
                 problems: list[str] | None = None):
        super().__init__(items)
        self.label_names = label_names
        self.skipped = skipped
        self.problems = list(problems or [])


def check_options(on_error: str, max_line_chars: int) -> None:
    """ValueError unless ``on_error`` is "raise"/"skip" and ``max_line_chars`` a positive int."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(max_line_chars, bool) or not isinstance(max_line_chars, int) or max_line_chars < 1:
        raise ValueError(f"max_line_chars must be a positive int, got {max_line_chars!r}")


def open_data(path: str | os.PathLike) -> BinaryIO:
    """Open a data file for binary reading.

    A missing file raises FileNotFoundError (naming the path); a directory or another OS error
    (permissions, ...) raises DataError(path, None, ...).
    """
    if os.path.isdir(path):
        raise DataError(path, None, "is a directory, not a data file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DataError(path, None, f"cannot read the file: {err.strerror or err}") from None


_NOT_CSV_SYNTAX = re.compile(rb'[^",\r\n]+')
_COMMAS = re.compile(rb",+")


def _skeleton(data: bytes) -> bytes:
    """Stand-in for an unusable line that keeps what CSV parsing depends on (quotes, field
    starts, line ending): runs of other bytes become ``x``, runs of commas one comma."""
    return _COMMAS.sub(b",", _NOT_CSV_SYNTAX.sub(b"x", data))


def iter_lines(f: BinaryIO, max_line_chars: int = MAX_LINE_CHARS, *,
               keepends: bool = False) -> Iterator[tuple[int, str, str | None]]:
    """Lines of a binary file as ``(number, text, problem)``, numbered from 1.

    Lines end at ``\\n`` only (``\\r\\n`` is accepted: the ``\\r`` goes with the ending). A UTF-8
    BOM at the file start is dropped. ``text`` has no line ending unless ``keepends``.
    ``problem`` is None for a good line, else what is wrong with it: a UTF-16 byte-order mark,
    bytes that are not UTF-8, a NUL byte, or more than ``max_line_chars`` characters. A line over
    the limit is never held in memory whole. For a bad line ``text`` is a stand-in with the same
    CSV structure (quotes, commas, ending), so a CSV parser fed with it stays in step.
    """
    limit = 4 * max_line_chars + 2  # bytes: UTF-8 needs at most 4 per character, plus "\r\n"
    number = 0
    while True:
        data = f.readline(limit + 1)
        if not data:
            return
        number += 1
        cut = len(data) > limit and not data.endswith(b"\n")  # the line goes on
        if number == 1 and data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM):]
        problem = None
        if cut:
            # over the limit whatever the encoding: skip the rest of the line, keeping a skeleton
            parts = [_skeleton(data)]
            while not data.endswith(b"\n"):
                data = f.readline(_CHUNK)
                if not data:
                    break
                parts.append(_skeleton(data))
            problem = f"line longer than {max_line_chars} characters (max_line_chars)"
            text = _skeleton(b"".join(parts)).decode("ascii")
        elif number == 1 and data.startswith(_UTF16_BOMS):
            problem = "the file starts with a UTF-16 byte-order mark: it is UTF-16, not UTF-8 (re-save it as UTF-8)"
            text = _skeleton(data).decode("ascii")
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = f"not valid UTF-8 (byte 0x{data[err.start]:02x} at byte {err.start + 1} of the line)"
                # replacement never swallows ASCII bytes, so quotes and commas stay where they are
                text = data.decode("utf-8", "replace")
            else:
                nul = text.find("\x00")
                if nul >= 0:
                    problem = f"NUL byte at column {nul + 1} (binary or UTF-16 data?)"
                    text = text.replace("\x00", "\ufffd")
                elif len(text.rstrip("\r\n")) > max_line_chars:
                    problem = f"line longer than {max_line_chars} characters (max_line_chars)"
                    text = _skeleton(data).decode("ascii")
        if not keepends:
            text = text[:-2] if text.endswith("\r\n") else text.rstrip("\n")
        yield number, text, problem


def usual_width(layouts: dict[int, list[int]], columns: dict[str, int]) -> int | None:
    """The file's usual column count: the most common one (ties: the earliest) among the counts
    that have every column of ``columns`` (name -> index, negative from the end); None if none has.

    ``layouts`` maps a column count to ``[how many lines/rows have it, first line]``.
    """
    need = max(index + 1 if index >= 0 else -index for index in columns.values())
    fits = [n for n in layouts if n >= need]
    if not fits:
        return None
    return max(fits, key=lambda n: (layouts[n][0], -layouts[n][1]))


def width_problem(width: int, usual: int | None, columns: dict[str, int], like: str) -> str:
    """The problem of a line/row with ``width`` columns where ``usual`` (see usual_width) are expected."""
    if usual is None:
        name, index = max(columns.items(), key=lambda item: item[1] + 1 if item[1] >= 0 else -item[1])
        need = index + 1 if index >= 0 else -index
        return f"found {width} columns, but {name}={index} needs at least {need}"
    return f"expected {usual} columns (like most {like}), found {width}"


class Problems:
    """Bad units met while reading one source: raise at the first, or skip and count them.

    ``unit`` names what is skipped in the summary warning ("lines", "rows", "sentences").
    """

    def __init__(self, path, on_error: str, unit: str):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.path = None if path is None else os.fspath(path)
        self.on_error = on_error
        self.unit = unit
        self.skipped = 0
        self.problems: list[str] = []

    def report(self, line: int | None, problem: str) -> None:
        """One bad unit (``line``: where its first problem is): DataError, or count it."""
        error = DataError(self.path, line, problem)
        if self.on_error == "raise":
            raise error
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(str(error))

    def finish(self, examples, *, empty: str, label_names=None, stacklevel: int = 3) -> ExampleList:
        """Wrap ``examples`` in an ExampleList; warn once about skipped units.

        DataError(path, None, ...) when nothing is left: ``empty`` when nothing was skipped either
        (e.g. "no pairs found (empty file?)"), else "no valid examples ...".
        """
        if not examples:
            if self.skipped:
                raise DataError(self.path, None, f"no valid examples: skipped {self.skipped} bad {self.unit} "
                                                 f"and nothing was left (first: {self.problems[0]})")
            raise DataError(self.path, None, empty)
        if self.skipped:
            warnings.warn(f"skipped {self.skipped} bad {self.unit} in {self.path} (first: {self.problems[0]})",
                          DataWarning, stacklevel=stacklevel)
        return ExampleList(examples, label_names=label_names, skipped=self.skipped, problems=self.problems)


_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*(?: [A-Za-z0-9_.-]+){0,2}")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?")


def looks_like_header(cells: list[str], label: str, other_labels: list[str]) -> bool:
    """Whether a file's first row (``cells``, its ``label`` cell among them) is a header, not an example.

    The rule: every cell reads like a column name (1-3 words of letters, digits, ``_ . -``, at most 40
    characters, e.g. ``is_duplicate``, ``question1``, ``topic``), the label appears in no other row
    (``other_labels``, at least two), and the other labels are alike: all numbers while this one is not
    (QQP's 0/1 under ``is_duplicate``), or each shared by at least two rows (classes, where a one-off
    class named like a column is a header).
    """
    label = label.strip()
    if len(other_labels) < 2 or label in set(other_labels):
        return False
    if not all(len(c.strip()) <= 40 and _NAME_LIKE.fullmatch(c.strip()) for c in cells):
        return False
    if all(_NUMBER.fullmatch(x) for x in other_labels) and not _NUMBER.fullmatch(label):
        return True
    return min(Counter(other_labels).values()) >= 2


def warn_header(path, line: int, cells: list[str], label: str, *, stacklevel: int = 3) -> None:
    """The note a reader gives when it skips a header row."""
    warnings.warn(f"{path}:{line}: skipped a header row ({', '.join(repr(c.strip()) for c in cells)}): its label "
                  f"{label.strip()!r} is not like those of the other rows", DataWarning, stacklevel=stacklevel)
