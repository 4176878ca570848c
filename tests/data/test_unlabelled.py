"""Unlabelled prediction input (stackft.data.unlabelled): every format, format detection, bad input,
and encoding exactly as the training data is encoded."""

import io
import sys

import pytest
from helpers import FIXTURES

from stackft.data.conll import read_conll
from stackft.data.errors import DataError
from stackft.data.unlabelled import FORMATS, detect_format, encode_unlabelled, parse_unlabelled, read_unlabelled


def _read(task, text, fmt, **kw):
    return parse_unlabelled(task, text.encode("utf-8"), fmt, name="in.txt", **kw)


def test_conll_words_with_or_without_tags():
    words_only = "-DOCSTART-\n\nJohn\nlives\nin\nParis\n\nHello\nworld\n"
    tagged = "John NNP B-NP B-PER\nlives VBZ B-VP O\n\nHello UH O O\n"
    a = _read("ner", words_only, "conll")
    assert [s.tokens for s in a] == [["John", "lives", "in", "Paris"], ["Hello", "world"]]
    assert [s.line for s in a] == [3, 8] and all(set(s.tags) == {"O"} for s in a)
    assert a.ids == [None, None]
    assert [s.tokens for s in _read("ner", tagged, "conll")] == [["John", "lives"], ["Hello"]]


def test_the_tagged_fixture_reads_as_its_words():
    text = (FIXTURES / "conll_small.txt").read_text()
    assert detect_format("ner", "x.txt", text.encode()) == "conll"
    got = _read("ner", text, "conll")
    assert [s.tokens for s in got] == [s.tokens for s in read_conll(FIXTURES / "conll_small.txt")]


def test_lines_per_task():
    assert [s.tokens for s in _read("ner", "John lives in Paris\n\n  Hello  world \n", "lines")] == \
        [["John", "lives", "in", "Paris"], ["Hello", "world"]]
    cls = _read("classification", "a good movie\n\nsad day\n", "lines")
    assert [e.text for e in cls] == ["a good movie", "sad day"] and cls[0].label is None
    pairs = _read("pairs", "how are you\thow do you do\n", "lines")
    assert (pairs[0].text_a, pairs[0].text_b) == ("how are you", "how do you do")
    with pytest.raises(DataError, match=r"in.txt:1: expected text_a<TAB>text_b"):
        _read("pairs", "no tab here\n", "lines")


def test_tsv_of_pairs_two_three_or_four_fields():
    text = "a1\tb1\nq2 a\tq2 b\tid-2\n1\tq3 a\tq3 b\t77\n"
    got = _read("pairs", text, "tsv")
    assert [(e.text_a, e.text_b, e.id) for e in got] == [("a1", "b1", None), ("q2 a", "q2 b", "id-2"),
                                                          ("q3 a", "q3 b", "77")]
    assert got.ids == [None, "id-2", "77"]
    with pytest.raises(DataError, match=r"in.txt:2: expected 2 to 4 tab-separated fields"):
        _read("pairs", "a\tb\nonly one\n", "tsv")
    with pytest.raises(DataError, match=r"in.txt:1: empty text_b"):
        _read("pairs", "a\t \n", "tsv")


def test_csv_texts_header_quotes_and_labels_ignored():
    text = 'text,label\n"a movie, with a comma",pos\nplain text\n"two\nlines",neg\n'
    got = _read("classification", text, "csv")
    assert [e.text for e in got] == ["a movie, with a comma", "plain text", "two\nlines"]
    assert [e.line for e in got] == [2, 3, 4]
    pairs = _read("pairs", "question1,question2\nq a,q b\n", "csv")
    assert (pairs[0].text_a, pairs[0].text_b) == ("q a", "q b")
    with pytest.raises(DataError, match=r"in.txt:2: empty text"):
        _read("classification", 'x\n"",pos\n', "csv")


def test_jsonl_objects_strings_and_lists():
    ner = _read("ner", '{"tokens": ["John", "Smith"], "id": 7}\n"Hello world"\n{"text": "a b c"}\n["x", "y"]\n',
                "jsonl")
    assert [s.tokens for s in ner] == [["John", "Smith"], ["Hello", "world"], ["a", "b", "c"], ["x", "y"]]
    assert ner.ids == [7, None, None, None]
    cls = _read("classification", '{"text": "t1"}\n{"sentence": "t2", "label": "pos"}\n"t3"\n', "jsonl")
    assert [e.text for e in cls] == ["t1", "t2", "t3"]
    pairs = _read("pairs", '{"question1": "a", "question2": "b", "id": "p1"}\n["c", "d"]\n', "jsonl")
    assert [(e.text_a, e.text_b, e.id) for e in pairs] == [("a", "b", "p1"), ("c", "d", None)]
    with pytest.raises(DataError, match=r"in.txt:2: not valid JSON"):
        _read("classification", '"ok"\n{"text": \n', "jsonl")
    with pytest.raises(DataError, match=r"in.txt:1: expected the key text"):
        _read("classification", '{"body": "x"}\n', "jsonl")


def test_skip_counts_bad_lines_and_an_empty_input_is_an_error():
    with pytest.warns(UserWarning, match="skipped 1 bad lines"):
        got = _read("pairs", "a\tb\nbad\nc\td\n", "tsv", on_error="skip")
    assert len(got) == 2 and got.skipped == 1
    with pytest.raises(DataError, match="no examples found"):
        _read("classification", "\n\n", "lines")
    with pytest.raises(DataError, match=r"in.txt:1: not valid UTF-8"):
        parse_unlabelled("classification", b"ok \xff bad\n", "lines", name="in.txt")


@pytest.mark.parametrize("task, name, text, expected", [
    ("ner", "x.jsonl", "", "jsonl"), ("pairs", "x.tsv", "", "tsv"), ("classification", "x.csv", "", "csv"),
    ("ner", "x.conll", "", "conll"),
    ("ner", "x.txt", "John lives in Paris\nHello world\n", "lines"),
    ("ner", "-", "John lives in Paris\n", "lines"),
    ("ner", "-", "John\nlives\n\nHello\n", "conll"),
    ("ner", "-", "John NNP B-PER\nlives VBZ O\n", "conll"),
    ("ner", "x.txt", "-DOCSTART- -X- O O\n\nJohn NNP B-NP B-PER\n", "conll"),
    ("classification", "-", "a text\n", "lines"),
    ("classification", "-", '{"text": "a"}\n\n{"text": "b"}\n', "jsonl"),
    ("pairs", "-", "a\tb\n", "tsv"),
])
def test_format_detection(task, name, text, expected):
    assert detect_format(task, name, text.encode()) == expected


def test_read_from_a_file_and_from_stdin(tmp_path, monkeypatch):
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert [e.text for e in read_unlabelled("classification", f)] == ["one", "two"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"three\nfour\n")))
    assert [e.text for e in read_unlabelled("classification", "-")] == ["three", "four"]
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_unlabelled("classification", tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        read_unlabelled("classification", f, format="xml")
    assert FORMATS[0] == "auto"


def test_encoding_matches_the_training_encoder(tokenizer):
    from stackft.data.encode import encode_tagged
    from stackft.data.labels import LabelVocab

    sentences = read_conll(FIXTURES / "conll_small.txt")
    vocab = LabelVocab.from_examples(sentences, "ner")
    gold = encode_tagged(sentences, tokenizer, vocab, max_length=16)
    got = encode_unlabelled("ner", _read("ner", (FIXTURES / "conll_small.txt").read_text(), "conll"), tokenizer,
                            vocab.to_list(), max_length=16)
    assert len(got) == len(gold)
    for a, b in zip(got.items, gold.items):
        assert "labels" not in a
        assert {k: v for k, v in b.items() if k != "labels"} == a


def test_the_command_lines_literals_agree_with_the_modules():
    from stackft.cli import export as cli_export
    from stackft.cli import predict as cli_predict
    from stackft.training.export import TRANSFORMERS_MODES

    assert cli_predict.FORMATS == FORMATS and cli_export.TRANSFORMERS_MODES == TRANSFORMERS_MODES
