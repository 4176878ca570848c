"""The label vocabulary holds every label of the data read, not just the subsample's (issue #15)."""

from helpers import DEMO_DATA

from stackft.data.conll import read_conll
from stackft.data.pipeline import load_task_data

TAGS = ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]


def test_ner_subsample_without_a_dev_file_knows_every_tag(tokenizer):
    # once stopped with "conll_train.txt:<line>: unknown label 'I-...'": the 10% dev split had tags
    # the 5 subsampled training sentences lack
    data = load_task_data("ner", str(DEMO_DATA / "conll_train.txt"), tokenizer=tokenizer, max_train=5, max_length=64)
    assert data.vocab.to_list() == TAGS
    assert len(data.train) == 5 and len(data.dev) == 120
    assert not {t for s in data.train.examples for t in s.tags} >= set(TAGS[1:])  # the subsample alone lacks some


def test_a_label_only_in_the_dev_file_or_the_unsampled_rest(tokenizer, tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("".join(f"text number {i},{'a' if i % 2 else 'b'}\n" for i in range(20)) + "a rare one,c\n")
    dev.write_text("first,a\nsecond,d\n")
    data = load_task_data("classification", str(train), str(dev), tokenizer=tokenizer, max_train=4, max_dev=2)
    assert data.vocab.to_list() == ["a", "b", "c", "d"]
    assert {data.vocab.decode(ex["labels"]) for ex in data.dev.items} == {"a", "d"}


def test_the_same_vocabulary_as_before_when_the_training_set_has_every_label(tokenizer):
    # the demo's setting: the full training file has all nine tags, so nothing changes for it
    data = load_task_data("ner", str(DEMO_DATA / "conll_train.txt"), str(DEMO_DATA / "conll_dev.txt"),
                          tokenizer=tokenizer, max_train=120, max_dev=40, max_length=64)
    assert data.vocab.to_list() == TAGS
    assert {t for s in read_conll(DEMO_DATA / "conll_train.txt") for t in s.tags} == set(TAGS)
