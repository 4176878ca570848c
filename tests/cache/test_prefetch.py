"""Prefetching cached features ahead of the step, and where a cache is placed for a GPU run."""


import pytest
import torch
from helpers import DEMO_DATA

from stackft.cache.format import FeatureCache
from stackft.cache.prefetch import attach, attached, prefetch
from stackft.cache.source import CachedFeatures, choose_placement, place
from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.training.trainer import Trainer, split_batch

TRAIN = str(DEMO_DATA / "conll_train.txt")
DEV = str(DEMO_DATA / "conll_dev.txt")
GiB = 2**30


def _store(n=23, d=7, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, (1,))))
    seqs = [torch.randn(int(torch.randint(1, 9, (1,), generator=g)), d, generator=g) for _ in range(n)]
    return FeatureCache.from_tensors(seqs, dtype="fp32")


def _batches(n_seqs, n_batches, b=5):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))
    return [{"index": torch.randint(0, n_seqs, (b,), generator=g), "labels": torch.randint(0, 3, (b,), generator=g)}
            for _ in range(n_batches)]


@pytest.mark.parametrize("depth", [0, 1, 3, 10])
def test_prefetch_yields_every_batch_in_order_with_its_features(depth):
    cache = _store()
    feats = CachedFeatures({"train": cache, "dev": cache}, pair_input=False, device="cpu")
    batches = _batches(len(cache), 7)
    out = list(prefetch(batches, lambda b: feats(b, "train"), "cpu", depth=depth))
    assert len(out) == len(batches)
    for got, want in zip(out, batches):
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["labels"], want["labels"])
        h, m = cache.gather(want["index"])
        assert torch.equal(got["feat:hidden"], h) and torch.equal(got["feat:mask"], m)
        # the feature source answers from what is attached, without gathering again
        served = feats(got, "train")
        assert served["hidden"] is got["feat:hidden"]


def test_prefetch_runs_depth_batches_ahead():
    calls = []
    batches = [{"labels": torch.tensor([i])} for i in range(6)]

    def features(b):
        calls.append(int(b["labels"]))
        return {"x": b["labels"].float()}

    it = prefetch(batches, features, "cpu", depth=2)
    first = next(it)
    assert int(first["labels"]) == 0 and calls == [0, 1, 2]  # batches 1 and 2 fetched ahead of 0's step
    next(it)
    assert calls == [0, 1, 2, 3]
    it.close()  # stopping early is fine: what was fetched ahead is dropped
    assert calls == [0, 1, 2, 3]


def test_prefetch_rejects_negative_depth():
    with pytest.raises(ValueError, match="depth"):
        list(prefetch([], lambda b: {}, "cpu", depth=-1))


def test_attached_features_are_cut_with_the_micro_batches():
    cache = _store()
    batch = _batches(len(cache), 1, b=7)[0]
    h, m = cache.gather(batch["index"])
    full = attach(batch, {"hidden": h, "mask": m})
    parts = split_batch(full, 3)
    assert sum(len(p["labels"]) for p in parts) == 7
    assert torch.equal(torch.cat([attached(p)["hidden"] for p in parts]), h)
    assert torch.equal(torch.cat([attached(p)["mask"] for p in parts]), m)
    assert attached(batch) is None


def test_trainer_with_prefetch_equals_without(tmp_path, monkeypatch, make_tiny_encoder):
    """Cached phase 1 fed through the prefetcher (and cut into micro-batches) trains the same head."""
    enc = make_tiny_encoder(seed=1)
    data = load_task_data("ner", TRAIN, DEV, tokenizer=enc.tokenizer, max_train=40, max_dev=16)
    runs = {}
    for depth in (0, 2):
        cfg = TrainConfig(task="ner", strategy="stack-only", train_path=TRAIN, dev_path=DEV, stack_epochs=2,
                          batch_size=8, evals_per_epoch=1, output_dir=str(tmp_path / f"d{depth}"),
                          cache=str(tmp_path / "cache"), cache_dtype="fp32", cache_prefetch=depth, grad_accum=2,
                          progress=False, init_seed=3, data_seed=5)
        t = Trainer(cfg, encoder=enc, data=data)
        calls = []

        def counting(self, batch, split, _orig=CachedFeatures.__call__):
            calls.append(attached(batch) is not None)
            return _orig(self, batch, split)

        with monkeypatch.context() as m:
            m.setattr(CachedFeatures, "__call__", counting)
            t.fit()
        runs[depth] = (t, calls)
    (a, calls_a), (b, calls_b) = runs[0], runs[2]
    assert not any(calls_a) and any(calls_b), "the prefetching run did not use attached features"
    for k, v in a.model.head.state_dict().items():
        assert torch.equal(v, b.model.head.state_dict()[k]), k
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]


def test_placement_auto_picks_device_then_pinned_then_mmap():
    cuda = torch.device("cuda", 0)
    assert choose_placement("auto", 1 * GiB, cuda, free_device=80 * GiB, free_host=100 * GiB) == "device"
    assert choose_placement("auto", 30 * GiB, cuda, free_device=80 * GiB, free_host=100 * GiB) == "pinned"
    assert choose_placement("auto", 60 * GiB, cuda, free_device=80 * GiB, free_host=100 * GiB) == "mmap"
    assert choose_placement("auto", 1 * GiB, cuda, free_device=80 * GiB, free_host=0) == "device"
    assert choose_placement("pinned", 1 * GiB, cuda, free_device=80 * GiB) == "pinned"
    for setting in ("auto", "device", "pinned", "mmap"):
        assert choose_placement(setting, 1 * GiB, "cpu") == "mmap"
    with pytest.raises(ValueError, match="cache_placement"):
        choose_placement("gpu", 1, "cpu")


def test_trainer_rejects_bad_cache_options(tmp_path, make_tiny_encoder):
    enc = make_tiny_encoder(seed=1)
    data = load_task_data("ner", TRAIN, DEV, tokenizer=enc.tokenizer, max_train=8, max_dev=8)
    with pytest.raises(ValueError, match="cache_placement"):
        Trainer(TrainConfig(train_path=TRAIN, cache_placement="vram", output_dir=str(tmp_path)), encoder=enc, data=data)
    with pytest.raises(ValueError, match="cache_prefetch"):
        Trainer(TrainConfig(train_path=TRAIN, cache_prefetch=-1, output_dir=str(tmp_path)), encoder=enc, data=data)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("placement", ["device", "pinned", "mmap"])
def test_cuda_prefetch_on_side_stream_matches_direct_gather(placement):
    dev = torch.device("cuda", torch.cuda.current_device())
    cache = _store(n=64, d=64)
    caches = place({"train": cache, "dev": cache}, placement, dev)
    feats = CachedFeatures(caches, pair_input=False, device=dev, placement=placement)
    batches = _batches(64, 9, b=16)
    for got in prefetch(batches, lambda b: feats(b, "train"), dev, depth=2):
        # consume on the default stream right away, as a training step would
        s = (got["feat:hidden"] * 2).sum()
        h, m = cache.gather(got["index"])
        torch.testing.assert_close(s.cpu(), (h * 2).sum(), rtol=1e-5, atol=1e-4)
        assert torch.equal(got["feat:mask"].cpu(), m)
