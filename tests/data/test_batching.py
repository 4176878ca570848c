"""collate (batch contract of docs/design.md) and LengthBucketSampler / make_loader."""

import pickle

import pytest
import torch

from stackft.data import EncodedDataset, LengthBucketSampler, TextExample, collate, make_loader

PAD = 0


def tagging_items():
    return [
        {"input_ids": [101, 5, 6, 102], "token_type_ids": [0, 0, 0, 0], "labels": [-100, 1, -100, -100],
         "word_starts": [1], "n_words": 1, "index": 0},
        {"input_ids": [101, 7, 102], "token_type_ids": [0, 0, 0], "labels": [-100, 2, -100],
         "word_starts": [1], "n_words": 1, "index": 5},
        {"input_ids": [101, 8, 9, 10, 11, 102], "token_type_ids": [0] * 6, "labels": [-100, 0, 3, -100, 1, -100],
         "word_starts": [1, 2, 4], "n_words": 3, "index": 2},
    ]


def test_collate_tagging():
    batch = collate(tagging_items(), pad_id=PAD)
    assert batch["input_ids"].shape == (3, 6) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == [101, 7, 102, PAD, PAD, PAD]
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["token_type_ids"].shape == (3, 6)
    assert batch["labels"].shape == (3, 6)
    assert batch["labels"][0].tolist() == [-100, 1, -100, -100, -100, -100]
    assert batch["index"].tolist() == [0, 5, 2]
    assert batch["word_starts"] == [[1], [1], [1, 2, 4]]
    assert batch["n_words"] == [1, 1, 3]


def test_collate_classification_and_pad_id():
    items = [{"input_ids": [101, 3, 102], "token_type_ids": [0, 0, 0], "labels": 1, "index": 0},
             {"input_ids": [101, 102], "token_type_ids": [0, 0], "labels": 0, "index": 1}]
    batch = collate(items, pad_id=77)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "index"}
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == [101, 102, 77]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0]


def test_collate_siamese():
    items = [{"a_input_ids": [101, 1, 102], "b_input_ids": [101, 102], "labels": 1, "index": 3},
             {"a_input_ids": [101, 102], "b_input_ids": [101, 4, 5, 6, 102], "labels": 0, "index": 4}]
    batch = collate(items, pad_id=PAD)
    assert set(batch) == {"a_input_ids", "a_attention_mask", "b_input_ids", "b_attention_mask", "labels", "index"}
    assert batch["a_input_ids"].shape == (2, 3) and batch["b_input_ids"].shape == (2, 5)
    assert batch["b_attention_mask"][0].tolist() == [1, 1, 0, 0, 0]
    assert batch["labels"].tolist() == [1, 0]


def test_collate_empty_batch():
    with pytest.raises(ValueError):
        collate([], pad_id=0)


# --- sampler ---------------------------------------------------------------------------------

LENGTHS = [(i * 37) % 101 + 1 for i in range(1000)]


def flat(batches):
    return [i for batch in batches for i in batch]


def test_sampler_covers_every_index_once_per_epoch():
    sampler = LengthBucketSampler(LENGTHS, 32, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        assert sorted(flat(batches)) == list(range(1000))
        assert sum(len(b) < 32 for b in batches) == 1  # 1000 = 31 * 32 + 8


def test_sampler_deterministic_and_seed_dependent():
    def order(seed, epoch):
        sampler = LengthBucketSampler(LENGTHS, 16, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0)
    assert order(0, 0) != order(0, 1)


def test_sampler_batches_are_length_homogeneous():
    sampler = LengthBucketSampler(LENGTHS, 16, seed=0, bucket_mult=50)
    spread = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in sampler]
    # 800-example chunks sorted by length: neighbours in a batch differ by a few tokens, not ~100
    assert sum(spread) / len(spread) < 10
    unbucketed = LengthBucketSampler(LENGTHS, 16, seed=0, bucket_mult=1)
    spread_random = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in unbucketed]
    assert sum(spread_random) / len(spread_random) > 50


def test_set_epoch_start_batch_skips():
    sampler = LengthBucketSampler(LENGTHS, 32, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=10)
    assert list(sampler) == full[10:]
    assert len(sampler) == len(full)
    sampler.set_epoch(3)
    assert len(list(sampler)) == len(full)
    with pytest.raises(ValueError):
        sampler.set_epoch(0, start_batch=-1)


def test_sampler_no_shuffle_sorted_and_complete():
    sampler = LengthBucketSampler(LENGTHS, 64, shuffle=False)
    batches = list(sampler)
    order = flat(batches)
    assert sorted(order) == list(range(1000))
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS, reverse=True)
    assert batches == list(LengthBucketSampler(LENGTHS, 64, shuffle=False, seed=9))


def test_sampler_drop_last():
    sampler = LengthBucketSampler(LENGTHS, 32, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 31
    assert all(len(b) == 32 for b in batches)


def test_sampler_max_tokens_budget():
    sampler = LengthBucketSampler(LENGTHS, 64, seed=0, max_tokens=500)
    batches = list(sampler)
    assert sorted(flat(batches)) == list(range(1000))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * max(LENGTHS[i] for i in batch) <= 500
    assert len(sampler) == len(batches)
    # an example longer than the budget still gets a batch of its own
    lone = list(LengthBucketSampler([5, 900, 5], 8, shuffle=False, max_tokens=100))
    assert lone == [[1], [0, 2]]


# --- loader ----------------------------------------------------------------------------------


def test_make_loader_end_to_end():
    items = [{"input_ids": [101] + [7] * n + [102], "token_type_ids": [0] * (n + 2), "labels": n % 2}
             for n in range(40)]
    examples = [TextExample("x", str(n % 2), n + 1) for n in range(40)]
    dataset = EncodedDataset(items, [len(i["input_ids"]) for i in items], "classification", examples)
    loader = make_loader(dataset, 8, pad_id=PAD, shuffle=True, seed=3)
    assert len(loader) == 5
    seen = []
    for batch in loader:
        assert batch["input_ids"].shape[0] == batch["labels"].shape[0] <= 8
        for row, index in zip(batch["input_ids"], batch["index"].tolist()):
            assert row[: len(items[index]["input_ids"])].tolist() == items[index]["input_ids"]
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(40))
    loader.batch_sampler.set_epoch(1, start_batch=4)
    assert len(list(loader)) == 1
    pickle.dumps(loader.collate_fn)  # worker processes need a picklable collate
