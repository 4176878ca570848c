"""Readers (CoNLL, pair TSV, text CSV, HF datasets), DataError reporting, and split_examples."""

import json
import warnings
from collections import Counter

import pytest
from helpers import DEMO_DATA, FIXTURES

from stackft.data import (
    DataError,
    DataWarning,
    ExampleList,
    PairExample,
    TaggedSentence,
    TextExample,
    iob1_to_iob2,
    load_hf_examples,
    read_conll,
    read_pairs_tsv,
    read_text_csv,
    split_examples,
)


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- DataError -------------------------------------------------------------------------------


def test_data_error_message_and_attributes():
    err = DataError("a/b.txt", 7, "bad thing")
    assert str(err) == "a/b.txt:7: bad thing"
    assert (err.path, err.line, err.problem) == ("a/b.txt", 7, "bad thing")
    assert str(DataError("a/b.txt", None, "empty")) == "a/b.txt: empty"
    assert isinstance(err, ValueError)


# --- CoNLL -----------------------------------------------------------------------------------


def test_read_conll_small_fixture():
    sentences = read_conll(FIXTURES / "conll_small.txt")
    assert len(sentences) == 4
    first = sentences[0]
    assert isinstance(first, TaggedSentence)
    assert first.tokens[:3] == ["EU", "rejects", "German"]
    assert first.tags[:3] == ["B-ORG", "O", "B-MISC"]
    assert first.line == 3  # line 1 is -DOCSTART-, line 2 blank
    assert sentences[1].tokens == ["Peter", "Blackburn"]
    assert sentences[1].tags == ["B-PER", "I-PER"]
    assert sentences[1].line == 13
    assert all(len(s.tokens) == len(s.tags) for s in sentences)


def test_read_conll_other_columns(tmp_path):
    path = write(tmp_path, "x.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    [sentence] = read_conll(path, token_column=1, tag_column=2)
    assert sentence.tokens == ["NNP", "VBZ"]
    assert sentence.tags == ["B-NP", "B-VP"]


def test_iob1_fixture_is_detected_and_converted():
    got = read_conll(FIXTURES / "conll_iob1.txt")
    want = read_conll(FIXTURES / "conll_iob1_expected_iob2.txt", scheme="iob2")
    assert [s.tags for s in got] == [s.tags for s in want]
    assert [s.tokens for s in got] == [s.tokens for s in want]
    # "Golan Heights Israel": I-LOC I-LOC B-LOC in IOB1 is two chunks
    golan = got[1]
    i = golan.tokens.index("Golan")
    assert golan.tags[i : i + 3] == ["B-LOC", "I-LOC", "B-LOC"]


def test_explicit_iob1_and_strict_iob2(tmp_path):
    path = write(tmp_path, "iob1.txt", "a I-PER\nb I-PER\nc O\nd I-LOC\n")
    assert read_conll(path, scheme="iob1")[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]
    with pytest.raises(DataError) as info:
        read_conll(path, scheme="iob2")
    assert info.value.line == 1 and str(path) in str(info.value)
    with pytest.raises(ValueError):
        read_conll(path, scheme="bioes")


@pytest.mark.parametrize(
    "tags, want",
    [
        (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),
        (["O", "I-LOC", "I-ORG", "I-ORG"], ["O", "B-LOC", "B-ORG", "I-ORG"]),
        (["I-MISC", "B-MISC", "I-MISC"], ["B-MISC", "B-MISC", "I-MISC"]),
        (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB2 unchanged
    ],
)
def test_iob1_to_iob2(tags, want):
    assert iob1_to_iob2(tags) == want


def test_conll_column_count_mismatch_names_line(tmp_path):
    path = write(tmp_path, "bad.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 4
    assert str(info.value).startswith(f"{path}:4:")
    assert "4" in info.value.problem and "3" in info.value.problem


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_conll_empty_file(tmp_path, content):
    path = write(tmp_path, "empty.txt", content)
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.path == str(path) and info.value.line is None


def test_conll_non_utf8_names_line(tmp_path):
    path = write(tmp_path, "latin1.txt", "EU B-ORG\n\n".encode() + "Kraków B-LOC\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 3
    assert "UTF-8" in info.value.problem


@pytest.mark.parametrize("bad", ["PER", "B_PER", "X-PER", "B-", "E-PER"])
def test_conll_bad_tag_names_line(tmp_path, bad):
    path = write(tmp_path, "badtag.txt", f"John B-PER\nSmith {bad}\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 2
    assert repr(bad) in info.value.problem


def test_demo_data_sizes():
    assert len(read_conll(DEMO_DATA / "conll_train.txt")) == 1200
    assert len(read_conll(DEMO_DATA / "conll_dev.txt")) == 300


# --- pairs -----------------------------------------------------------------------------------


def test_read_pairs_fixture():
    pairs = read_pairs_tsv(FIXTURES / "qqp_small.tsv")
    assert len(pairs) == 8
    assert pairs[0] == PairExample(
        "How do I get funding for my web based startup idea ?",
        "How do I get seed funding pre product ?",
        "1",
        "327970",
        1,
    )
    assert [p.line for p in pairs] == list(range(1, 9))
    assert {p.label for p in pairs} <= {"0", "1"}


def test_read_pairs_without_id(tmp_path):
    path = write(tmp_path, "p.tsv", "0\ta \"quoted\b\tb\n\n1\tc\td\n")
    pairs = read_pairs_tsv(path, has_id=False)
    assert [(p.text_a, p.label, p.id, p.line) for p in pairs] == [('a "quoted\b', "0", "1", 1), ("c", "1", "3", 3)]


def test_pairs_wrong_field_count(tmp_path):
    path = write(tmp_path, "p.tsv", "1\ta\tb\t7\n0\ta b\t8\n")
    with pytest.raises(DataError) as info:
        read_pairs_tsv(path)
    assert info.value.line == 2 and str(path) in str(info.value)
    assert "found 3" in info.value.problem


def test_pairs_empty_and_non_utf8(tmp_path):
    with pytest.raises(DataError):
        read_pairs_tsv(write(tmp_path, "e.tsv", ""))
    with pytest.raises(DataError) as info:
        read_pairs_tsv(write(tmp_path, "b.tsv", b"1\ta\tb\t1\n0\t\xff\tb\t2\n"))
    assert info.value.line == 2


# --- text CSV --------------------------------------------------------------------------------


def test_read_text_csv_fixture():
    examples = read_text_csv(FIXTURES / "yahoo_small.csv")
    assert len(examples) == 6
    assert isinstance(examples[0], TextExample)
    assert Counter(e.label for e in examples) == {"society_culture": 3, "science_mathematics": 3}
    assert all("\\n" not in e.text for e in examples)
    assert examples[0].text.startswith("religious ppl pray! what do they say? hello! if u pray")
    # RFC 4180 doubled quotes are unescaped
    assert '"the ' in examples[1].text and '""' not in examples[1].text
    assert [e.line for e in examples] == [1, 2, 3, 4, 5, 6]


def test_text_csv_header_and_multiline_rows(tmp_path):
    path = write(tmp_path, "t.csv", 'text,label\n"one\ntwo",a\nthree,b\n')
    examples = read_text_csv(path)
    assert [(e.text, e.label, e.line) for e in examples] == [("one\ntwo", "a", 2), ("three", "b", 4)]
    assert len(read_text_csv(path, header=False)) == 3  # the header becomes a row
    swapped = write(tmp_path, "s.csv", "x,hello world\ny,bye\n")
    got = read_text_csv(swapped, text_column=1, label_column=0)
    assert [(e.text, e.label) for e in got] == [("hello world", "x"), ("bye", "y")]


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("a,x\nb,y,z\n", 2, "columns"),
        ("a,x\n\" \",y\n", 2, "empty text"),
        ("a,x\nb,\n", 2, "empty label"),
        ('"a",x\n"b"c,y\n', 2, "malformed"),
    ],
)
def test_text_csv_malformed(tmp_path, content, line, words):
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(DataError) as info:
        read_text_csv(path)
    assert info.value.line == line and words in info.value.problem
    assert str(info.value).startswith(f"{path}:{line}:")


def test_text_csv_empty_and_non_utf8(tmp_path):
    with pytest.raises(DataError):
        read_text_csv(write(tmp_path, "e.csv", ""))
    with pytest.raises(DataError) as info:
        read_text_csv(write(tmp_path, "b.csv", b"ok,a\nok,b\nbad \xe9,a\n"))
    assert info.value.line == 3


# --- Hugging Face datasets (local files only) -------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path):
    pytest.importorskip("datasets")
    return str(tmp_path / "hf_cache")


def test_hf_ner_from_json(tmp_path, hf_cache):
    rows = [
        {"tokens": ["EU", "rejects", "German", "call"], "ner_tags": ["I-ORG", "O", "I-MISC", "O"]},
        {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]},
    ]
    path = tmp_path / "ner.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sentences = load_hf_examples(str(path), "train", "ner", cache_dir=hf_cache)
    assert [s.tokens for s in sentences] == [r["tokens"] for r in rows]
    assert sentences[0].tags == ["B-ORG", "O", "B-MISC", "O"]  # IOB1 detected, converted
    assert [s.line for s in sentences] == [1, 2]


def test_hf_classification_from_csv(tmp_path, hf_cache):
    path = tmp_path / "t.csv"
    path.write_text("sentence,label\nhello there,pos\nbad day,neg\n")
    examples = load_hf_examples(str(path), "validation", "classification", cache_dir=hf_cache)
    assert [(e.text, e.label, e.line) for e in examples] == [("hello there", "pos", 1), ("bad day", "neg", 2)]
    with pytest.raises(DataError):
        load_hf_examples(str(path), "validation", "classification", text_column="nope", cache_dir=hf_cache)


def test_hf_pairs_classlabel_names_keep_dataset_order(tmp_path, hf_cache):
    import datasets

    from stackft.data import LabelVocab

    features = datasets.Features(
        {
            "question1": datasets.Value("string"),
            "question2": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["not_duplicate", "duplicate"]),
            "idx": datasets.Value("int32"),
        }
    )
    data = {"question1": ["a?", "b?"], "question2": ["c?", "d?"], "label": [1, 0], "idx": [10, 11]}
    path = tmp_path / "qqp.parquet"
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    pairs = load_hf_examples(str(path), "train", "pairs", cache_dir=hf_cache)
    assert [(p.text_a, p.text_b, p.label, p.id) for p in pairs] == [
        ("a?", "c?", "duplicate", "10"),
        ("b?", "d?", "not_duplicate", "11"),
    ]
    vocab = LabelVocab.from_examples(pairs, "pairs")
    assert vocab.to_list() == ["not_duplicate", "duplicate"]  # ids = the dataset's ints
    train, dev = split_examples(pairs, 1, seed=0)
    assert LabelVocab.from_examples(train, "pairs") == vocab


def test_hf_ner_classlabel_tags_from_saved_dataset(tmp_path, hf_cache):
    import datasets

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))}
    )
    data = {"tokens": [["John", "Smith", "in", "Kraków"]], "ner_tags": [[1, 2, 0, 3]]}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(data, features=features)}).save_to_disk(
        str(tmp_path / "saved")
    )
    [sentence] = load_hf_examples(str(tmp_path / "saved"), "validation", "ner")
    assert sentence.tags == ["B-PER", "I-PER", "O", "B-LOC"]
    arrow = next((tmp_path / "saved" / "validation").glob("*.arrow"))
    [again] = load_hf_examples(str(arrow), "validation", "ner", cache_dir=hf_cache)
    assert again.tags == sentence.tags


def test_hf_unknown_task():
    with pytest.raises(ValueError):
        load_hf_examples("whatever", "train", "regression")


# --- bad input: on_error, max_line_chars, encodings, line endings ------------------------------

READERS = {
    "conll": (read_conll, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n", 2),
    "pairs": (read_pairs_tsv, "1\tq one\tq two\t7\n0\tq three\tq four\t8\n", 2),
    "csv": (read_text_csv, 'hello world,a\n"multi\nline, text",b\n', 2),
}


def read_quietly(reader, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reader(*args, **kwargs)
    return result, [w for w in caught if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("kind", sorted(READERS))
def test_bom_crlf_and_trailing_whitespace_lines_are_accepted(tmp_path, kind):
    reader, content, n = READERS[kind]
    plain = reader(write(tmp_path, "plain", content))
    variant = b"\xef\xbb\xbf" + content.replace("\n", "\r\n").encode() + b"  \r\n\t\n\n   "
    got = reader(write(tmp_path, "variant", variant))
    assert isinstance(got, ExampleList) and got.skipped == 0 and got.problems == []
    if kind == "csv":  # a quoted line break keeps its bytes (RFC 4180)
        for example in got:
            example.text = example.text.replace("\r\n", "\n")
    assert list(got) == list(plain) and len(got) == n


@pytest.mark.parametrize("kind", sorted(READERS))
def test_directory_and_missing_file(tmp_path, kind):
    reader = READERS[kind][0]
    with pytest.raises(DataError) as info:
        reader(tmp_path)
    assert info.value.path == str(tmp_path) and "directory" in info.value.problem
    with pytest.raises(FileNotFoundError) as missing:
        reader(tmp_path / "nope.txt")
    assert "nope.txt" in str(missing.value)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_on_error_and_max_line_chars_are_checked(tmp_path, kind):
    reader, content, _ = READERS[kind]
    path = write(tmp_path, "ok", content)
    with pytest.raises(ValueError, match="on_error"):
        reader(path, on_error="ignore")
    with pytest.raises(ValueError, match="max_line_chars"):
        reader(path, max_line_chars=0)


BAD_LINES = {  # kind -> (good line, [(bad bytes line, words in the problem)])
    "conll": (b"word NN B-NP O", [
        (b"w\xe9rd NN B-NP O", "UTF-8"),
        (b"wo\x00rd NN B-NP O", "NUL"),
        (b"x" * 5000 + b" NN B-NP O", "longer than 1000"),
        (b"word NN O", "columns"),
        (b"word NN B-NP PER", "invalid tag"),
    ]),
    "pairs": (b"1\tq one\tq two\t7", [
        (b"1\tq \xff\tq two\t7", "UTF-8"),
        (b"1\tq\x00\tq two\t7", "NUL"),
        (b"1\t" + b"x" * 5000 + b"\tq two\t7", "longer than 1000"),
        (b"1\tq one q two\t7", "fields"),
        (b" \tq one\tq two\t7", "empty label"),
        (b"1\t\tq two\t7", "empty text_a"),
        (b"1\tq one\t \t7", "empty text_b"),
        (b"1\tq one\tq two\t", "empty id"),
    ]),
    "csv": (b"some text,a", [
        (b"caf\xe9,a", "UTF-8"),
        (b"te\x00xt,a", "NUL"),
        (b"x" * 5000 + b",a", "longer than 1000"),
        (b"text,a,b", "columns"),
        (b'" ",a', "empty text"),
        (b"text, ", "empty label"),
        (b'"text"x,a', "malformed"),
        (b"te\rxt,a", "carriage return"),
    ]),
}


@pytest.mark.parametrize("kind, case", [(k, i) for k, (_, cases) in BAD_LINES.items() for i in range(len(cases))])
def test_bad_line_raises_or_is_skipped(tmp_path, kind, case):
    reader = READERS[kind][0]
    good, cases = BAD_LINES[kind]
    bad, words = cases[case]
    sep = b"\n\n" if kind == "conll" else b"\n"  # CoNLL: one sentence per line here
    path = write(tmp_path, "bad", sep.join([good, good, bad, good]) + b"\n")
    line = 5 if kind == "conll" else 3
    with pytest.raises(DataError) as info:
        reader(path, max_line_chars=1000)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert words in info.value.problem and str(info.value).startswith(f"{path}:{line}: ")

    got, caught = read_quietly(reader, path, on_error="skip", max_line_chars=1000)
    assert len(got) == 3 and got.skipped == 1
    assert got.problems == [str(info.value)]
    assert [e.line for e in got] == ([1, 3, 7] if kind == "conll" else [1, 2, 4])
    [warning] = caught
    assert str(warning.message) == f"skipped 1 bad {'sentences' if kind == 'conll' else 'rows' if kind == 'csv' else 'lines'} in {path} (first: {got.problems[0]})"


def test_conll_skip_drops_the_whole_sentence(tmp_path):
    path = write(tmp_path, "c.txt", "a O\nb B-PER\nc BAD\nd O\n\ne O\n\nf O\ng\tO\textra\n")
    got, caught = read_quietly(read_conll, path, on_error="skip")
    assert [s.tokens for s in got] == [["e"]] and got.skipped == 2
    assert got.problems == [f"{path}:3: invalid tag 'BAD' (expected O, B-TYPE or I-TYPE)",
                            f"{path}:9: expected 2 columns (like most token lines), found 3"]
    assert len(caught) == 1 and "skipped 2 bad sentences" in str(caught[0].message)


def test_conll_usual_width_is_the_most_common(tmp_path):
    # the first token line is the odd one out: it is reported, not the 3 lines after it
    path = write(tmp_path, "c.txt", "a X O\nb O\nc O\n\nd O\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert info.value.line == 1 and "expected 2 columns" in info.value.problem and "found 3" in info.value.problem
    assert [s.tokens for s in read_quietly(read_conll, path, on_error="skip")[0]] == [["d"]]


def test_conll_missing_tag_column(tmp_path):
    path = write(tmp_path, "c.txt", "a B-NP O\nb I-NP O\n")
    with pytest.raises(DataError) as info:
        read_conll(path, tag_column=5)
    assert info.value.line == 1 and "tag_column=5 needs at least 6" in info.value.problem
    with pytest.raises(DataError) as info:
        read_conll(path, tag_column=5, on_error="skip")
    assert info.value.line is None and "no valid examples" in info.value.problem


def test_conll_strict_iob2_skips_iob1_sentences(tmp_path):
    path = write(tmp_path, "c.txt", "a I-PER\nb O\n\nc B-PER\nd I-PER\n")
    got, _ = read_quietly(read_conll, path, scheme="iob2", on_error="skip")
    assert [s.tokens for s in got] == [["c", "d"]] and got.skipped == 1
    assert got.problems[0].startswith(f"{path}:1: tag 'I-PER' opens a chunk")


def test_problems_keep_the_first_20_and_one_warning(tmp_path):
    lines = ["1\ta\tb\t1"] + [f"1\ta\tb\t{i}\textra" for i in range(30)] + ["0\tc\td\t2"]
    path = write(tmp_path, "p.tsv", "\n".join(lines) + "\n")
    got, caught = read_quietly(read_pairs_tsv, path, on_error="skip")
    assert [p.id for p in got] == ["1", "2"] and got.skipped == 30
    assert len(got.problems) == 20 and got.problems[0].startswith(f"{path}:2: ")
    assert got.problems[-1].startswith(f"{path}:21: ")
    assert len(caught) == 1 and str(caught[0].message).startswith(f"skipped 30 bad lines in {path} (first: {path}:2: ")


@pytest.mark.parametrize("kind", sorted(READERS))
def test_nothing_valid_after_skipping(tmp_path, kind):
    reader = READERS[kind][0]
    path = write(tmp_path, "bad", b"\x00\n\xff\xfe\n")
    with pytest.raises(DataError) as info:
        reader(path, on_error="skip")
    assert info.value.path == str(path) and info.value.line is None
    assert info.value.problem.startswith("no valid examples") and f"(first: {path}:1: NUL byte" in str(info.value)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_utf16_file_is_named(tmp_path, kind):
    reader, content, _ = READERS[kind]
    path = write(tmp_path, "u16", content.encode("utf-16"))
    with pytest.raises(DataError) as info:
        reader(path)
    assert info.value.line == 1 and "UTF-16" in info.value.problem


@pytest.mark.parametrize("kind", sorted(READERS))
def test_default_line_limit_and_lines_too_long_to_read(tmp_path, kind):
    """A line over max_line_chars (default 1,000,000) is bad; one over 4 bytes per allowed
    character is not even read whole (and the lines after it keep their numbers)."""
    reader, content, n = READERS[kind]
    good = content.encode()
    last = reader(write(tmp_path, "good", good))[-1].line
    huge = {"conll": b"%s NN O O", "pairs": b"1\t%s\tb\t9", "csv": b"%s,a"}[kind]
    gap = b"\n" if kind == "conll" else b""  # CoNLL: the huge line is a sentence of its own
    for size, char in ((1_000_001, b"x"), (1_200_000, "\u00e9".encode()), (4_100_000, b"y")):
        path = write(tmp_path, "huge", good + gap + huge % (char * size) + b"\n" + gap + good)
        at = good.count(b"\n") + 1 + len(gap)
        with pytest.raises(DataError) as info:
            reader(path)
        assert info.value.line == at and "longer than 1000000 characters" in info.value.problem
        got, _ = read_quietly(reader, path, on_error="skip")
        assert len(got) == 2 * n and got.skipped == 1
        assert got[-1].line == at + len(gap) + last


def test_csv_unterminated_quote_names_the_row(tmp_path):
    path = write(tmp_path, "q.csv", 'ok,a\n"never closed,b\nmore,c\n')
    with pytest.raises(DataError) as info:
        read_text_csv(path)
    assert info.value.line == 2 and "unterminated quoted field" in info.value.problem
    got, _ = read_quietly(read_text_csv, path, on_error="skip")
    assert [e.text for e in got] == ["ok"] and got.skipped == 1


def test_csv_bad_line_inside_a_multiline_field(tmp_path):
    path = write(tmp_path, "m.csv", b'ok,a\n"first\nsec\xffond\nthird",b\nlast,c\n')
    with pytest.raises(DataError) as info:
        read_text_csv(path)
    assert info.value.line == 3 and "UTF-8" in info.value.problem
    got, _ = read_quietly(read_text_csv, path, on_error="skip")
    assert [(e.text, e.line) for e in got] == [("ok", 1), ("last", 5)]


def test_csv_long_multiline_text(tmp_path):
    path = write(tmp_path, "m.csv", 'ok,a\n"' + "word\n" * 30 + '",b\n')
    with pytest.raises(DataError) as info:
        read_text_csv(path, max_line_chars=100)
    assert info.value.line == 2 and "text longer than 100" in info.value.problem
    assert len(read_text_csv(path)) == 2  # default limit


def test_hf_rows_raise_or_skip():
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"text": ["good one", None, "   ", "fine", "x" * 50, "last"],
                                       "label": ["a", "b", "b", None, "a", ""]})
    with pytest.raises(DataError) as info:
        load_hf_examples(data, "train", "classification")
    assert info.value.line == 2 and "missing text" in info.value.problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_hf_examples(data, "train", "classification", on_error="skip", max_line_chars=40)
    assert [(e.text, e.line) for e in got] == [("good one", 1)] and got.skipped == 5
    assert [p.split(": ", 1)[1] for p in got.problems] == [
        "missing text (None)", "empty text", "missing label (None)", "text longer than 40 characters (max_line_chars)",
        "empty label"]
    assert len([w for w in caught if issubclass(w.category, DataWarning)]) == 1

    pairs = datasets.Dataset.from_dict({"question1": ["a?", None, "c?"], "question2": ["b?", "x?", ""],
                                        "label": [0, 1, 1]})
    with pytest.raises(DataError, match=r":2: missing text_a"):
        load_hf_examples(pairs, "train", "pairs")
    got, _ = read_quietly(load_hf_examples, pairs, "train", "pairs", on_error="skip")
    assert [p.text_a for p in got] == ["a?"] and got.skipped == 2

    ner = datasets.Dataset.from_dict({"tokens": [["a", "b"], None, ["c", None], ["d"], ["e", " "], ["f"]],
                                      "ner_tags": [["B-PER", "I-PER"], ["O"], ["O", "O"], ["X"], ["O", "O"], None]})
    with pytest.raises(DataError, match=r":2: missing tokens"):
        load_hf_examples(ner, "train", "ner")
    got, _ = read_quietly(load_hf_examples, ner, "train", "ner", on_error="skip")
    assert [s.tokens for s in got] == [["a", "b"]] and got.skipped == 5
    assert [p.split(": ", 1)[1] for p in got.problems] == [
        "missing tokens (None)", "missing token (None) at position 1",
        "invalid tag 'X' (expected O, B-TYPE or I-TYPE)", "empty token at position 1", "missing tags (None)"]
    with pytest.raises(DataError, match="no valid examples"):
        load_hf_examples(ner.select([1, 2]), "train", "ner", on_error="skip")


# --- split -----------------------------------------------------------------------------------


def _labelled(n_pos, n_neg):
    return [TextExample(f"t{i}", "1" if i < n_pos else "0", i + 1) for i in range(n_pos + n_neg)]


def test_split_stratified_and_deterministic():
    examples = _labelled(300, 700)
    train, dev = split_examples(examples, 100, seed=3)
    assert len(dev) == 100 and len(train) == 900
    assert Counter(e.label for e in dev) == {"1": 30, "0": 70}
    assert {e.line for e in train} | {e.line for e in dev} == set(range(1, 1001))
    assert not {e.line for e in train} & {e.line for e in dev}
    again = split_examples(examples, 100, seed=3)[1]
    assert [e.line for e in again] == [e.line for e in dev]
    other = split_examples(examples, 100, seed=4)[1]
    assert [e.line for e in other] != [e.line for e in dev]
    assert [e.line for e in dev] == sorted(e.line for e in dev)  # original order kept


def test_split_fraction_and_rounding():
    examples = _labelled(5, 6)
    train, dev = split_examples(examples, 0.5, seed=0)
    assert len(dev) == 6 and len(train) == 5  # round(5.5) = 6 by banker's rounding -> 6
    assert Counter(e.label for e in dev) == {"0": 3, "1": 3}


def test_split_unstratified_and_untyped():
    sentences = [TaggedSentence(["w"], ["O"], i) for i in range(50)]
    train, dev = split_examples(sentences, 10)
    assert len(dev) == 10 and len(train) == 40
    with pytest.raises(ValueError):
        split_examples(sentences, 50)
    with pytest.raises(ValueError):
        split_examples(sentences, 0)
    with pytest.raises(ValueError):
        split_examples(sentences, 1.5)
