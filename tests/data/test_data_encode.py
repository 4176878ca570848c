"""LabelVocab and encode_*: sub-word alignment, truncation counting, pair layouts, label errors."""

import warnings

import pytest
from helpers import FIXTURES

from stackft.data import (
    DataError,
    EncodedDataset,
    LabelVocab,
    PairExample,
    TaggedSentence,
    TextExample,
    encode_pairs,
    encode_tagged,
    encode_texts,
    read_conll,
    read_pairs_tsv,
    read_text_csv,
)

NER_VOCAB = LabelVocab(["O", "B-LOC", "B-PER", "I-PER"])


# --- LabelVocab ------------------------------------------------------------------------------


def test_label_vocab_ner_order_and_roundtrip():
    sentences = [TaggedSentence(["a", "b", "c"], ["I-PER", "B-PER", "B-LOC"], 1)]
    vocab = LabelVocab.from_examples(sentences, "ner")
    assert vocab.to_list() == ["O", "B-LOC", "B-PER", "I-PER"]  # O first, always, then sorted
    assert [vocab.encode(t) for t in vocab.to_list()] == [0, 1, 2, 3]
    assert vocab.decode(2) == "B-PER" and len(vocab) == 4
    assert LabelVocab.from_list(vocab.to_list()) == vocab


def test_label_vocab_sorted_labels_numeric_order():
    pairs = [PairExample("a", "b", label, str(i), i) for i, label in enumerate(["1", "0", "1", "10", "2"])]
    assert LabelVocab.from_examples(pairs, "pairs").to_list() == ["0", "1", "2", "10"]
    texts = [TextExample("t", label, 1) for label in ["society_culture", "science_mathematics"]]
    assert LabelVocab.from_examples(texts, "classification").to_list() == ["science_mathematics", "society_culture"]


def test_label_vocab_unknown_label_error():
    with pytest.raises(DataError) as info:
        NER_VOCAB.encode("B-MISC", path="data/dev.txt", line=12)
    assert str(info.value) == "data/dev.txt:12: unknown label 'B-MISC' (known: O, B-LOC, B-PER, I-PER)"
    with pytest.raises(ValueError):
        LabelVocab(["a", "a"])


# --- tagging ---------------------------------------------------------------------------------


def test_encode_tagged_labels_first_subtoken_only(tokenizer):
    sentence = TaggedSentence(["John", "Smithson", "lives", "in", "Kraków", "."],
                              ["B-PER", "I-PER", "O", "O", "B-LOC", "O"], 5)
    data = encode_tagged([sentence], tokenizer, NER_VOCAB)
    item = data[0]
    pieces = tokenizer.convert_ids_to_tokens(item["input_ids"])
    assert pieces == ["[CLS]", "john", "smith", "##son", "lives", "in", "krakow", ".", "[SEP]"]
    assert item["labels"] == [-100, 2, 3, -100, 0, 0, 1, 0, -100]
    assert item["word_starts"] == [1, 2, 4, 5, 6, 7]
    assert item["n_words"] == 6
    assert item["index"] == 0
    assert item["token_type_ids"] == [0] * 9
    assert data.kind == "tagging" and data.lengths == [9] and data.n_truncated == 0
    assert data.examples == [sentence]
    assert data.sequences() == [item["input_ids"]]


def test_words_without_subtokens_keep_alignment(tokenizer):
    # "\u200b" (zero-width space) and "\x07" tokenise to nothing in BERT's tokenizer
    sentence = TaggedSentence(["Peter", "\u200b", "Blackburn", "\x07", "Kraków"],
                              ["B-PER", "O", "B-PER", "O", "B-LOC"], 1)
    assert tokenizer.tokenize("\u200b") == [] and tokenizer.tokenize("\x07") == []
    item = encode_tagged([sentence], tokenizer, NER_VOCAB)[0]
    assert item["n_words"] == 5
    assert item["input_ids"].count(tokenizer.unk_token_id) == 2  # the empty words' placeholders
    labels_at_starts = [item["labels"][p] for p in item["word_starts"]]
    assert labels_at_starts == [NER_VOCAB.encode(t) for t in sentence.tags]
    assert sum(label != -100 for label in item["labels"]) == 5


def test_tagging_truncation_counted_and_warned(tokenizer):
    long = TaggedSentence(["word"] * 20, ["O"] * 20, 1)
    short = TaggedSentence(["word"] * 3, ["O"] * 3, 30)
    with pytest.warns(UserWarning, match=r"1 of 2 sequences truncated to max_length=10"):
        data = encode_tagged([long, short], tokenizer, NER_VOCAB, max_length=10)
    assert data.n_truncated == 1
    assert len(data[0]["input_ids"]) == 10 and data[0]["n_words"] == 20
    assert data[0]["word_starts"] == list(range(1, 9))  # 8 words survive
    assert data[1]["n_words"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_tagged([short], tokenizer, NER_VOCAB, max_length=10).n_truncated == 0


def test_unknown_tag_names_file_and_line(tokenizer):
    sentences = read_conll(FIXTURES / "conll_small.txt")
    with pytest.raises(DataError) as info:
        encode_tagged(sentences, tokenizer, NER_VOCAB, path="conll_small.txt")
    assert str(info.value).startswith("conll_small.txt:3: unknown label 'B-ORG'")


def test_encode_tagged_fixture_all_words_aligned(tokenizer):
    sentences = read_conll(FIXTURES / "conll_small.txt")
    vocab = LabelVocab.from_examples(sentences, "ner")
    data = encode_tagged(sentences, tokenizer, vocab)
    for sentence, item in zip(sentences, data.items):
        assert item["n_words"] == len(sentence.tokens)
        assert [vocab.decode(item["labels"][p]) for p in item["word_starts"]] == sentence.tags


# --- classification and pairs ----------------------------------------------------------------


def test_encode_texts(tokenizer):
    examples = read_text_csv(FIXTURES / "yahoo_small.csv")
    vocab = LabelVocab.from_examples(examples, "classification")
    with pytest.warns(UserWarning, match=r"of 6 sequences truncated to max_length=32"):
        data = encode_texts(examples, tokenizer, vocab, max_length=32)
    assert data.kind == "classification"
    assert data.n_truncated == sum(len(tokenizer(e.text)["input_ids"]) > 32 for e in examples) > 0
    assert all(len(item["input_ids"]) <= 32 for item in data.items)
    assert [item["labels"] for item in data.items] == [vocab.encode(e.label) for e in examples]
    assert data.lengths == [len(item["input_ids"]) for item in data.items]


def test_encode_texts_unknown_label(tokenizer):
    examples = [TextExample("hello", "a", 4), TextExample("bye", "c", 9)]
    with pytest.raises(DataError) as info:
        encode_texts(examples, tokenizer, LabelVocab(["a", "b"]), path="dev.csv")
    assert (info.value.path, info.value.line) == ("dev.csv", 9)


def test_encode_pairs_joint(tokenizer):
    pairs = read_pairs_tsv(FIXTURES / "qqp_small.tsv")
    vocab = LabelVocab(["0", "1"])
    data = encode_pairs(pairs, tokenizer, vocab)
    assert data.kind == "pairs-joint" and data.n_truncated == 0
    item = data[0]
    want = tokenizer(pairs[0].text_a, pairs[0].text_b)
    assert item["input_ids"] == want["input_ids"]
    assert item["token_type_ids"] == want["token_type_ids"] and 1 in item["token_type_ids"]
    assert item["labels"] == 1
    assert data.sequences()[3] == data.items[3]["input_ids"]


def test_encode_pairs_siamese_and_sequence_order(tokenizer):
    pairs = read_pairs_tsv(FIXTURES / "qqp_small.tsv")
    data = encode_pairs(pairs, tokenizer, LabelVocab(["0", "1"]), mode="siamese")
    assert data.kind == "pairs-siamese"
    item = data[2]
    assert set(item) == {"a_input_ids", "b_input_ids", "labels", "index"}
    assert item["a_input_ids"] == tokenizer(pairs[2].text_a)["input_ids"]
    assert item["b_input_ids"] == tokenizer(pairs[2].text_b)["input_ids"]
    sequences = data.sequences()
    assert len(sequences) == 2 * len(pairs)
    assert sequences[4] == item["a_input_ids"] and sequences[5] == item["b_input_ids"]
    assert data.lengths[2] == max(len(item["a_input_ids"]), len(item["b_input_ids"]))


def test_siamese_truncation_counts_each_side(tokenizer):
    pairs = [PairExample("one two three four five six seven eight", "short", "1", "x", 1),
             PairExample("short", "one two three four five six seven eight", "0", "y", 2)]
    with pytest.warns(UserWarning, match=r"2 of 4 sequences truncated to max_length=6"):
        data = encode_pairs(pairs, tokenizer, LabelVocab(["0", "1"]), max_length=6, mode="siamese")
    assert data.n_truncated == 2
    assert len(data[0]["a_input_ids"]) == 6 and data[0]["a_input_ids"][-1] == tokenizer.sep_token_id
    with pytest.warns(UserWarning, match=r"2 of 2 sequences truncated to max_length=8"):
        joint = encode_pairs(pairs, tokenizer, LabelVocab(["0", "1"]), max_length=8)
    assert all(len(item["input_ids"]) == 8 for item in joint.items)


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError):
        encode_pairs([], tokenizer, LabelVocab(["0"]), mode="cross")
    with pytest.raises(ValueError):
        encode_texts([TextExample("a", "0", 1)], tokenizer, LabelVocab(["0"]), max_length=2)
    empty = encode_texts([], tokenizer, LabelVocab(["0"]))
    assert isinstance(empty, EncodedDataset) and len(empty) == 0
