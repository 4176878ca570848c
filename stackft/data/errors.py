"""DataError: a problem in an input file, reported with the file and line it came from."""

from __future__ import annotations

import os


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


def decode_lines(path: str | os.PathLike, data: bytes) -> list[str]:
    """Split ``data`` into lines and decode each as UTF-8.

    Returns the lines without their ``\\n`` / ``\\r\\n`` endings (a UTF-8 BOM at the start is
    dropped). Raises DataError naming the first line that is not valid UTF-8.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    lines = []
    for number, chunk in enumerate(raw, start=1):
        try:
            lines.append(chunk.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise DataError(
                path, number, f"not valid UTF-8 (byte 0x{chunk[err.start]:02x} at column {err.start + 1})"
            ) from None
    return lines
