"""Property-based fuzzing of the file readers (read_conll, read_pairs_tsv, read_text_csv).

Contract under test:
- files written entirely from valid units parse back to exactly what was written (round trip),
  whatever the line endings, BOM, blank/whitespace-only filler lines, final newline;
- with bad units mixed in, on_error="raise" raises DataError at the first bad line (message with
  the path and that line), on_error="skip" returns the valid units and counts every bad one
  (returned + skipped == written), with the problems in file order;
- on arbitrary bytes (random lines, wrong encodings, truncation, huge lines) the only exception
  is DataError naming the path and a line inside the file (or none, for "no ... found" / "no
  valid examples"), never an IndexError/UnicodeDecodeError/csv.Error from inside.

Files go to a module-scoped tmp_path_factory directory (function-scoped tmp_path and hypothesis
do not mix). max_line_chars is small (LIMIT) so "huge" lines stay cheap. More examples:
``STACKFT_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_readers.py``.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stackft.data import DataError, DataWarning, ExampleList, iob1_to_iob2, read_conll, read_pairs_tsv, read_text_csv

LIMIT = 100  # max_line_chars of the fuzzed reads; 4 * LIMIT + 2 bytes is where iter_lines stops reading a line
# STACKFT_FUZZ_EXAMPLES=2000 for a thorough run; the default keeps the file at a few seconds
FUZZ = settings(max_examples=int(os.environ.get("STACKFT_FUZZ_EXAMPLES", "50")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
TAG = re.compile(r"^(?:O|[BI]-\S+)$")  # what read_conll accepts as a tag
_names = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def write(directory, data: bytes, suffix: str):
    path = directory / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


def n_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def read(reader, path, on_error, **kwargs):
    """(result, DataError, warnings) of one read; any other exception fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = reader(path, on_error=on_error, max_line_chars=LIMIT, **kwargs)
        except DataError as err:
            return None, err, caught
    return result, None, caught


def check_error(err: DataError, path, data: bytes) -> None:
    """A clean DataError: names the path; a line inside the file, or none for file-wide problems."""
    assert err.path == str(path) and str(path) in str(err)
    if err.line is None:
        assert err.problem.startswith(("no valid examples", "no sentences found", "no pairs found", "no rows found"))
    else:
        assert 1 <= err.line <= n_lines(data), (err.line, n_lines(data))
        assert str(err).startswith(f"{path}:{err.line}: ")


def problem_lines(result, path) -> list[int]:
    """The line numbers of ``result.problems`` ("path:line: problem")."""
    return [int(problem[len(f"{path}:"):].split(":", 1)[0]) for problem in result.problems]


def check_skip_result(result, caught, path, data: bytes) -> None:
    assert isinstance(result, ExampleList) and len(result) > 0
    assert len(result.problems) == min(result.skipped, 20)
    assert all(problem.startswith(f"{path}:") for problem in result.problems)
    assert all(1 <= line <= n_lines(data) for line in problem_lines(result, path))
    ours = [w for w in caught if issubclass(w.category, DataWarning)]
    if result.skipped:
        assert len(ours) == 1
        message = str(ours[0].message)
        assert f"skipped {result.skipped} bad" in message and str(path) in message
        assert result.problems[0] in message
    else:
        assert not ours


# --- building blocks ---------------------------------------------------------------------------

CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
NEWLINE = st.sampled_from([b"\n", b"\r\n"])
FILLER = st.sampled_from([b"", b"  ", b"\t", b" \t "])  # blank / whitespace-only lines: accepted
HUGE_CHAR = st.sampled_from(["x", "\u00e9", "\U0001f600"])  # 1, 2, 4 bytes in UTF-8
HUGE_LENGTH = st.integers(LIMIT + 1, 6 * LIMIT)  # also past 4 * LIMIT + 2 bytes: the streaming path


def insert(text: str, at: int, what: str) -> str:
    at %= len(text) + 1
    return text[:at] + what + text[at:]


@st.composite
def broken_encoding(draw, text: str) -> bytes:
    """``text`` (non-blank) as a line that is certainly bad: a latin-1 byte, a NUL, or UTF-16."""
    how = draw(st.sampled_from(["latin-1", "nul", "utf-16", "invalid"]))
    at = draw(st.integers(0, len(text)))
    if how == "latin-1":  # an "é" saved as latin-1 in an otherwise UTF-8 line: 0xe9 then ASCII
        return insert(text, at, "\0").encode().replace(b"\0", b"\xe9x")
    if how == "nul":
        return insert(text, at, "\0").encode()
    if how == "utf-16":  # ASCII only: UTF-16 then has a NUL per character and no 0x0a byte
        return "".join(c if c.isascii() and c not in "\r\n" else "?" for c in text).encode("utf-16-le")
    bad = draw(st.sampled_from([b"\x80", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
    return insert(text, at, "\0").encode().replace(b"\0", bad + b"x")


# --- CoNLL -------------------------------------------------------------------------------------

WORD = st.text(CHARS.filter(lambda c: not c.isspace()), min_size=1, max_size=8).filter(lambda t: t != "-DOCSTART-")
TYPE = st.sampled_from(["PER", "LOC", "ORG", "MISC"]) | WORD
GOOD_TAG = st.just("O") | st.builds(lambda prefix, kind: f"{prefix}-{kind}", st.sampled_from("BI"), TYPE)
SEP = st.sampled_from([" ", "\t", "  "])
CONLL_ROW = st.tuples(WORD, WORD, WORD, GOOD_TAG)


@st.composite
def conll_bad_line(draw) -> bytes:
    """A non-blank token line that read_conll must reject (when the usual width is 4)."""
    kind = draw(st.sampled_from(["width", "tag", "encoding", "huge"]))
    sep = draw(SEP)
    if kind == "width":
        columns = draw(st.lists(WORD, min_size=0, max_size=6).filter(lambda c: len(c) != 3))
        return sep.join(columns + [draw(GOOD_TAG)]).encode()
    if kind == "tag":
        return sep.join(draw(st.tuples(WORD, WORD, WORD, WORD.filter(lambda t: not TAG.match(t))))).encode()
    if kind == "encoding":
        return draw(broken_encoding(sep.join(draw(CONLL_ROW))))
    token = draw(HUGE_CHAR) * draw(HUGE_LENGTH)
    return sep.join([token, "NN", "O", draw(GOOD_TAG)]).encode()


@st.composite
def conll_file(draw, with_bad: bool):
    """(bytes, sentences): each sentence is dict(tokens, tags, line, bad_line or None)."""
    nl = draw(NEWLINE)
    lines: list[bytes] = []
    if draw(st.booleans()):
        lines += [b"-DOCSTART- -X- -X- O", b""]
    sentences = []
    for _ in range(draw(st.integers(1, 6))):
        rows = draw(st.lists(CONLL_ROW, min_size=1, max_size=5))
        encoded = [draw(SEP).join(row).encode() for row in rows]
        bad_at = {}
        if with_bad and draw(st.integers(0, 2)) == 0:
            for _ in range(draw(st.integers(1, 2))):
                bad_at[draw(st.integers(0, len(encoded)))] = draw(conll_bad_line())
        start = len(lines) + 1
        first_bad = None
        for i in range(len(encoded) + 1):
            if i in bad_at:
                lines.append(bad_at[i])
                first_bad = first_bad or len(lines)
            if i < len(encoded):
                lines.append(encoded[i])
        sentences.append(dict(tokens=[r[0] for r in rows], tags=[r[3] for r in rows], line=start,
                              bad_line=first_bad, n_bad=len(bad_at), n_good=len(rows)))
        lines.append(draw(FILLER))
        if draw(st.integers(0, 4)) == 0:
            lines += [b"-DOCSTART- -X- -X- O", draw(FILLER)]
    lines += draw(st.lists(FILLER, max_size=2))
    data = b"".join(line + nl for line in lines)
    if draw(st.booleans()):
        data = data.rstrip(b"\r\n")  # no final line ending (and no trailing blank lines)
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, sentences


def _check_conll(got, sentences):
    assert [s.tokens for s in got] == [s["tokens"] for s in sentences]
    assert [s.tags for s in got] == [iob1_to_iob2(s["tags"]) for s in sentences]
    assert [s.line for s in got] == [s["line"] for s in sentences]


@FUZZ
@given(conll_file(with_bad=False))
def test_conll_round_trip(fuzz_dir, case):
    data, sentences = case
    path = write(fuzz_dir, data, ".txt")
    for on_error in ("raise", "skip"):
        got, err, caught = read(read_conll, path, on_error)
        assert err is None, err
        _check_conll(got, sentences)
        assert got.skipped == 0 and got.problems == []


@FUZZ
@given(conll_file(with_bad=True))
def test_conll_bad_lines_raise_or_skip(fuzz_dir, case):
    data, sentences = case
    assume(sum(s["n_good"] for s in sentences) > sum(s["n_bad"] for s in sentences))  # 4 columns stay usual
    path = write(fuzz_dir, data, ".txt")
    good = [s for s in sentences if s["bad_line"] is None]
    bad = [s for s in sentences if s["bad_line"] is not None]

    got, err, _ = read(read_conll, path, "raise")
    if bad:
        assert got is None and err is not None
        check_error(err, path, data)
        assert err.line == bad[0]["bad_line"]
    else:
        assert err is None, err
        _check_conll(got, sentences)

    got, err, caught = read(read_conll, path, "skip")
    if not good:
        assert err is not None and err.problem.startswith("no valid examples")
        check_error(err, path, data)
        return
    assert err is None, err
    check_skip_result(got, caught, path, data)
    _check_conll(got, good)
    assert len(got) + got.skipped == len(sentences)
    assert problem_lines(got, path) == [s["bad_line"] for s in bad[:20]]


# --- pairs TSV ---------------------------------------------------------------------------------

FIELD = st.text(st.characters(codec="utf-8", exclude_characters="\x00\t\n"), min_size=1, max_size=10).filter(
    lambda f: f == f.strip()
)
PAIR_ROW = st.tuples(FIELD, FIELD, FIELD, FIELD)


@st.composite
def tsv_bad_line(draw, n_fields: int) -> bytes:
    kind = draw(st.sampled_from(["width", "empty", "encoding", "huge"]))
    if kind == "width":
        return "\t".join(draw(st.lists(FIELD, min_size=1, max_size=7).filter(lambda f: len(f) != n_fields))).encode()
    fields = list(draw(PAIR_ROW))[:n_fields]
    if kind == "empty":
        fields[draw(st.integers(0, n_fields - 1))] = draw(st.sampled_from(["", " ", "\u3000"]))
    elif kind == "huge":
        fields[1] = draw(HUGE_CHAR) * draw(HUGE_LENGTH)
    else:
        return draw(broken_encoding("\t".join(fields)))
    return "\t".join(fields).encode()


@st.composite
def tsv_file(draw, with_bad: bool, has_id: bool):
    n_fields = 4 if has_id else 3
    nl = draw(NEWLINE)
    lines, rows = [], []
    for _ in range(draw(st.integers(1, 12))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            lines.append(draw(FILLER))
        elif choice == 1 and with_bad:
            lines.append(draw(tsv_bad_line(n_fields)))
            rows.append(dict(bad_line=len(lines)))
        else:
            fields = draw(PAIR_ROW)[:n_fields]
            lines.append("\t".join(fields).encode())
            pair_id = fields[3] if has_id else str(len(lines))
            rows.append(dict(fields=fields, id=pair_id, line=len(lines), bad_line=None))
    data = b"".join(line + nl for line in lines)
    if draw(st.booleans()):
        data = data[: -len(nl)]
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, rows


def _check_pairs(got, rows):
    assert [(p.label, p.text_a, p.text_b, p.id, p.line) for p in got] == [
        (r["fields"][0], r["fields"][1], r["fields"][2], r["id"], r["line"]) for r in rows
    ]


@FUZZ
@given(st.data(), st.booleans())
def test_pairs_round_trip(fuzz_dir, data_strategy, has_id):
    data, rows = data_strategy.draw(tsv_file(with_bad=False, has_id=has_id))
    path = write(fuzz_dir, data, ".tsv")
    if not rows:
        for on_error in ("raise", "skip"):
            _, err, _ = read(read_pairs_tsv, path, on_error, has_id=has_id)
            assert err is not None and err.problem.startswith("no pairs found")
        return
    for on_error in ("raise", "skip"):
        got, err, _ = read(read_pairs_tsv, path, on_error, has_id=has_id)
        assert err is None, err
        _check_pairs(got, rows)
        assert got.skipped == 0


@FUZZ
@given(st.data(), st.booleans())
def test_pairs_bad_lines_raise_or_skip(fuzz_dir, data_strategy, has_id):
    data, rows = data_strategy.draw(tsv_file(with_bad=True, has_id=has_id))
    path = write(fuzz_dir, data, ".tsv")
    good = [r for r in rows if r["bad_line"] is None]
    bad = [r for r in rows if r["bad_line"] is not None]

    got, err, _ = read(read_pairs_tsv, path, "raise", has_id=has_id)
    if bad:
        assert got is None
        check_error(err, path, data)
        assert err.line == bad[0]["bad_line"]
    elif good:
        _check_pairs(got, good)

    got, err, caught = read(read_pairs_tsv, path, "skip", has_id=has_id)
    if not good:
        assert err is not None and err.line is None
        assert err.problem.startswith("no valid examples" if bad else "no pairs found")
        return
    assert err is None, err
    check_skip_result(got, caught, path, data)
    _check_pairs(got, good)
    assert len(got) + got.skipped == len(rows)
    assert problem_lines(got, path) == [r["bad_line"] for r in bad[:20]]


# --- text CSV ----------------------------------------------------------------------------------

CSV_TEXT = st.text(CHARS, min_size=1, max_size=20).filter(lambda t: t.replace("\\n", " ").strip())
CSV_LABEL = st.text(CHARS, min_size=1, max_size=10).filter(lambda t: t.strip() and t.strip().lower() != "label")
PLAIN = st.text(st.characters(codec="ascii", exclude_characters='\x00",\r\n'), min_size=1, max_size=10).filter(
    lambda t: t.strip() and t.strip().lower() != "label" and "\\n" not in t
)


def quote(field: str, force: bool) -> str:
    if force or any(c in field for c in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


@st.composite
def csv_bad_row(draw) -> bytes:
    """One physical line that is one bad row (no quote left open)."""
    kind = draw(st.sampled_from(["width", "empty-text", "empty-label", "quote", "encoding", "huge"]))
    if kind == "width":
        return ",".join(draw(st.lists(PLAIN, min_size=1, max_size=5).filter(lambda f: len(f) != 2))).encode()
    text, label = draw(PLAIN), draw(PLAIN)
    if kind == "empty-text":
        text = draw(st.sampled_from(["", "  ", '" "', "\\n", '"\\n \\n"']))
    elif kind == "empty-label":
        label = draw(st.sampled_from(["", " ", '""', '" "']))
    elif kind == "quote":
        text = f'"{text}"{draw(PLAIN)}'  # text after the closing quote
    elif kind == "huge":
        text = draw(HUGE_CHAR) * draw(HUGE_LENGTH)
    else:
        return draw(broken_encoding(f"{text},{label}"))
    return f"{text},{label}".encode()


@st.composite
def csv_file(draw, with_bad: bool):
    nl = draw(NEWLINE)
    chunks: list[bytes] = []
    line = 1
    rows = []
    if draw(st.booleans()):
        chunks.append(b"text,label" + nl)
        line += 1
    for _ in range(draw(st.integers(1, 10))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            chunks.append(draw(FILLER) + nl)
            line += 1
        elif choice == 1 and with_bad:
            chunks.append(draw(csv_bad_row()) + nl)
            rows.append(dict(bad_line=line))
            line += 1
        else:
            text, label = draw(CSV_TEXT), draw(CSV_LABEL)
            row = f"{quote(text, draw(st.booleans()))},{quote(label, draw(st.booleans()))}".encode() + nl
            chunks.append(row)
            rows.append(dict(text=text.replace("\\n", " ").strip(), label=label.strip(), line=line, bad_line=None))
            line += row.count(b"\n")
    if with_bad and draw(st.integers(0, 3)) == 0:  # a quote never closed: runs to the end of the file
        chunks.append(f'"{draw(PLAIN)},{draw(PLAIN)}'.encode() + nl + draw(FILLER))
        rows.append(dict(bad_line=line))
    data = b"".join(chunks)
    if draw(st.booleans()) and data.endswith(nl):
        data = data[: -len(nl)]
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, rows


def _check_texts(got, rows):
    assert [(e.text, e.label, e.line) for e in got] == [(r["text"], r["label"], r["line"]) for r in rows]


@FUZZ
@given(csv_file(with_bad=False))
def test_text_csv_round_trip(fuzz_dir, case):
    data, rows = case
    path = write(fuzz_dir, data, ".csv")
    for on_error in ("raise", "skip"):
        got, err, _ = read(read_text_csv, path, on_error)
        if not rows:
            assert err is not None and err.line is None and err.problem.startswith("no rows found")
            continue
        assert err is None, err
        _check_texts(got, rows)
        assert got.skipped == 0


@FUZZ
@given(csv_file(with_bad=True))
def test_text_csv_bad_rows_raise_or_skip(fuzz_dir, case):
    data, rows = case
    good = [r for r in rows if r["bad_line"] is None]
    bad = [r for r in rows if r["bad_line"] is not None]
    assume(len(good) > len(bad))  # 2 columns stay usual
    path = write(fuzz_dir, data, ".csv")

    got, err, _ = read(read_text_csv, path, "raise")
    if bad:
        assert got is None
        check_error(err, path, data)
        assert err.line == bad[0]["bad_line"]
    else:
        _check_texts(got, good)

    got, err, caught = read(read_text_csv, path, "skip")
    if not good:
        assert err is not None and err.line is None
        assert err.problem.startswith("no valid examples" if bad else "no rows found")
        return
    assert err is None, err
    check_skip_result(got, caught, path, data)
    _check_texts(got, good)
    assert len(got) + got.skipped == len(rows)
    assert problem_lines(got, path) == [r["bad_line"] for r in bad[:20]]


# --- anything goes: random bytes, wrong encodings, truncation ------------------------------------

READERS = {"conll": (read_conll, ".txt"), "pairs": (read_pairs_tsv, ".tsv"), "csv": (read_text_csv, ".csv")}


@st.composite
def junk_file(draw, kind: str) -> bytes:
    valid = {
        "conll": st.builds(lambda r: " ".join(r).encode(), CONLL_ROW),
        "pairs": st.builds(lambda r: "\t".join(r).encode(), PAIR_ROW),
        "csv": st.builds(lambda t, lab: f"{quote(t, False)},{quote(lab, False)}".encode(), CSV_TEXT, CSV_LABEL),
    }[kind]
    bad = {"conll": conll_bad_line(), "pairs": tsv_bad_line(4), "csv": csv_bad_row()}[kind]
    latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30).map(
        lambda t: t.encode("latin-1"))
    utf16 = st.text(CHARS.filter(lambda c: c not in "\r\n"), max_size=20).map(lambda t: t.encode("utf-16"))
    line = st.one_of(valid, valid, bad, FILLER, st.binary(max_size=40), latin1, utf16,
                     st.text(CHARS, max_size=30).map(str.encode),
                     st.sampled_from([b'"', b'""', b'"a', b'a"b', b',', b'\t', b'\r', b'\x00', b'-DOCSTART-']))
    data = b"".join(draw(line) + draw(NEWLINE) for _ in range(draw(st.integers(0, 12))))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated, possibly mid-character
    prefix = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
    return prefix + data


@FUZZ
@given(st.sampled_from(sorted(READERS)), st.data())
def test_any_bytes_give_examples_or_a_clean_error(fuzz_dir, kind, data_strategy):
    reader, suffix = READERS[kind]
    data = data_strategy.draw(junk_file(kind))
    path = write(fuzz_dir, data, suffix)
    strict, strict_err, _ = read(reader, path, "raise")
    lenient, lenient_err, caught = read(reader, path, "skip")
    if strict_err is not None:
        check_error(strict_err, path, data)
    else:
        assert isinstance(strict, ExampleList) and len(strict) > 0 and strict.skipped == 0
    if lenient_err is not None:
        check_error(lenient_err, path, data)
        assert lenient_err.line is None  # skip mode fails only when nothing is left
    else:
        check_skip_result(lenient, caught, path, data)
    # skip mode skips exactly what raise mode stops at
    if strict_err is None:
        assert lenient_err is None and list(lenient) == list(strict) and lenient.skipped == 0
    elif strict_err.line is None:
        assert lenient_err is not None and str(lenient_err) == str(strict_err)
    elif lenient_err is not None:
        assert f"(first: {strict_err})" in str(lenient_err)
    else:
        assert lenient.problems[0] == str(strict_err)
