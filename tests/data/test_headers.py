"""Header rows never become classes (issue #16, item 5): the readers skip a first row that reads like
column names above rows whose labels are not like its own, with a DataWarning, and keep every other
first row."""

from __future__ import annotations

import warnings

import pytest

from stackft.data.errors import DataWarning, looks_like_header
from stackft.data.labels import LabelVocab
from stackft.data.pairs import read_pairs_tsv
from stackft.data.textcls import read_text_csv

PAIRS = ["1\thow do i learn python\twhat is the best way to learn python\t11",
         "0\twhat is the capital of france\thow tall is mount everest\t12",
         "1\thow can i lose weight fast\twhat is the quickest way to lose weight\t13",
         "0\tis coffee bad for you\twhy is the sky blue\t14"]
TOPICS = ["what is a touchdown,sports", "how do i bake bread,food", "who won the cup,sports", "best pizza dough,food"]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pairs_header_row_is_skipped_with_a_note(tmp_path):
    f = _write(tmp_path / "train.tsv", ["is_duplicate\tquestion1\tquestion2\tid", *PAIRS])
    with pytest.warns(DataWarning, match=r"train\.tsv:1: skipped a header row .*'is_duplicate'"):
        ex = read_pairs_tsv(f)
    assert len(ex) == 4 and ex[0].line == 2
    assert LabelVocab.from_examples(ex, "pairs").to_list() == ["0", "1"]  # no class named is_duplicate


def test_csv_header_row_is_skipped_with_a_note(tmp_path):
    f = _write(tmp_path / "train.csv", ["question,topic", *TOPICS])
    with pytest.warns(DataWarning, match=r"train\.csv:1: skipped a header row .*'topic'"):
        ex = read_text_csv(f)
    assert [e.label for e in ex] == ["sports", "food", "sports", "food"]
    assert "topic" not in LabelVocab.from_examples(ex, "classification").to_list()


def test_a_header_after_blank_lines_and_a_bom_is_still_the_first_row(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_bytes(b"\xef\xbb\xbf\n\n" + "\n".join(["label\ttext_a\ttext_b\tid", *PAIRS]).encode() + b"\n")
    with pytest.warns(DataWarning):
        assert len(read_pairs_tsv(f)) == 4


@pytest.mark.parametrize("first", [
    "1\twhy\twho\t10",                       # a short real pair: its label is like the others
    "2\tfoo\tbar\t10",                       # a number among numbers: a (rare) class, not a header
])
def test_a_first_row_like_the_others_is_kept(tmp_path, first):
    f = _write(tmp_path / "train.tsv", [first, *PAIRS])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(read_pairs_tsv(f)) == 5


@pytest.mark.parametrize("first", [
    "what is a touchdown,sports",            # a label the others share
    "a long text of several words here,music",  # a one-off class, but text no column name would be
])
def test_a_first_csv_row_like_an_example_is_kept(tmp_path, first):
    f = _write(tmp_path / "train.csv", [first, *TOPICS])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(read_text_csv(f)) == 5


def test_header_false_keeps_the_first_row_and_true_always_skips_it(tmp_path):
    f = _write(tmp_path / "train.tsv", ["is_duplicate\tquestion1\tquestion2\tid", *PAIRS])
    assert [e.label for e in read_pairs_tsv(f, header=False)][0] == "is_duplicate"
    g = _write(tmp_path / "plain.tsv", PAIRS)
    assert len(read_pairs_tsv(g, header=True)) == 3


def test_looks_like_header_rule():
    assert looks_like_header(["is_duplicate", "question1", "question2", "id"], "is_duplicate", ["0", "1", "0"])
    assert looks_like_header(["question", "topic"], "topic", ["a", "b", "a", "b"])
    assert not looks_like_header(["question", "topic"], "topic", ["a", "b", "c"])  # one-off classes everywhere
    assert not looks_like_header(["question", "topic"], "topic", ["a"])  # too few rows to tell
    assert not looks_like_header(["what is this?", "topic"], "topic", ["a", "a", "b", "b"])  # not a column name
    assert not looks_like_header(["question", "a"], "a", ["a", "b", "b"])  # its label occurs again
