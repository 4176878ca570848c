"""The feature cache inside training: cached phase 1 equals live phase 1; stale caches rebuild."""

import json

import pytest
import torch
from helpers import DEMO_DATA

from stackft.cache.format import CacheError, FeatureCache
from stackft.cli import main
from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.training.trainer import Trainer

TRAIN = str(DEMO_DATA / "conll_train.txt")
DEV = str(DEMO_DATA / "conll_dev.txt")


def _cfg(tmp_path, name, cache, **kw):
    base = dict(task="ner", strategy="stack-only", train_path=TRAIN, dev_path=DEV, max_train=48, max_dev=16,
                stack_epochs=2, batch_size=8, evals_per_epoch=1, output_dir=str(tmp_path / name), cache=cache,
                cache_dtype="fp32", progress=False, init_seed=3, data_seed=5, dropout=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def enc(make_tiny_encoder):
    return make_tiny_encoder(seed=1)


@pytest.fixture(scope="module")
def data(enc):
    return load_task_data("ner", TRAIN, DEV, tokenizer=enc.tokenizer, max_train=48, max_dev=16)


def _head_state(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.head.state_dict().items()}


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_cached_phase1_matches_live_encoder(tmp_path, enc, data, grad_accum):
    """Same seeds: head weights after phase 1 from the fp32 cache equal those from the live frozen encoder.

    With micro-batches too: each keeps its batch's width, and the cached features must match it.
    """
    live = Trainer(_cfg(tmp_path, "live", "off", grad_accum=grad_accum), encoder=enc, data=data)
    live.fit()
    cached = Trainer(_cfg(tmp_path, "cached", str(tmp_path / "cache"), grad_accum=grad_accum), encoder=enc, data=data)
    cached.fit()
    assert cached.features is not None, "the cached run did not read the cache"
    a, b = _head_state(live), _head_state(cached)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=f"head tensor {k}")
    la = [r["loss"] for r in live.history]
    lb = [r["loss"] for r in cached.history]
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("head, pair_mode", [("fc", None), ("linear", None), ("fc", "joint")])
def test_cached_first_token_head_matches_live_encoder(tmp_path, enc, head, pair_mode):
    """A [CLS] head (fc, linear; texts and joint pairs) is served ``[B, 1, H]`` from the cache, and its
    phase 1 equals the live frozen encoder's."""
    task, name = ("pairs", "toy_pairs.tsv") if pair_mode else ("classification", "toy_classification.csv")
    path = str(DEMO_DATA / name)
    cdata = load_task_data(task, path, None, tokenizer=enc.tokenizer, dev_size=8, max_train=40, pair_mode=pair_mode)

    def cfg(run, cache):
        return _cfg(tmp_path, run, cache, task=task, head=head, train_path=path, dev_path=None, dev_size=8,
                    max_train=40, max_dev=None, pair_mode=pair_mode)

    live = Trainer(cfg("live", "off"), encoder=enc, data=cdata)
    live.fit()
    cached = Trainer(cfg("cached", str(tmp_path / "cache")), encoder=enc, data=cdata)
    seen = []
    served = cached.features_for
    cached.features_for = lambda batch, split: seen.append(served(batch, split)["hidden"].shape) or served(batch, split)
    cached.fit()
    assert cached.features is not None and cached.features.first_token
    assert seen and all(s[1] == 1 for s in seen), seen
    a, b = _head_state(live), _head_state(cached)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=f"head tensor {k}")


def test_stale_cache_is_rebuilt_not_read(tmp_path, enc, data):
    root = tmp_path / "cache"
    Trainer(_cfg(tmp_path, "a", str(root)), encoder=enc, data=data).fit()
    first = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert len(first) == 2  # train + dev
    # different data (max length): a new fingerprint, so new caches, never the old ones
    data2 = load_task_data("ner", TRAIN, DEV, tokenizer=enc.tokenizer, max_train=48, max_dev=16, max_length=16)
    t = Trainer(_cfg(tmp_path, "b", str(root), max_length=16), encoder=enc, data=data2)
    t.fit()
    second = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert len(second) == 4 and set(first) < set(second)
    for c in t.features.caches.values():
        assert int(c.lengths.max()) <= 16


def test_flipped_byte_in_cache_is_rebuilt_not_read(tmp_path, enc, data):
    root = tmp_path / "cache"
    Trainer(_cfg(tmp_path, "a", str(root)), encoder=enc, data=data).fit()
    train_dir = next(p for p in root.iterdir() if p.name.startswith("train-"))
    values = train_dir / "values.bin"
    raw = bytearray(values.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only the checksum can tell
    values.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="checksum mismatch in values.bin"):
        FeatureCache.open(train_dir, verify=True)
    Trainer(_cfg(tmp_path, "b", str(root)), encoder=enc, data=data).fit()
    FeatureCache.open(train_dir, verify=True)  # rebuilt: checksums hold again


def test_corrupted_cache_is_rebuilt(tmp_path, enc, data):
    root = tmp_path / "cache"
    Trainer(_cfg(tmp_path, "a", str(root)), encoder=enc, data=data).fit()
    train_dir = next(p for p in root.iterdir() if p.name.startswith("train-"))
    values = train_dir / "values.bin"
    values.write_bytes(values.read_bytes()[:-100])  # truncated
    t = Trainer(_cfg(tmp_path, "b", str(root)), encoder=enc, data=data)
    t.fit()
    reopened = FeatureCache.open(train_dir)  # rebuilt in place, valid again
    assert len(reopened) == len(data.train)


def test_cache_build_cli_makes_what_train_reads(tmp_path, tiny_encoder_dir, capsys):
    enc_dir = tiny_encoder_dir
    args = ["--task", "ner", "--train-path", TRAIN, "--dev-path", DEV, "--max-train", "24", "--max-dev", "8",
            "--encoder", str(enc_dir), "--cache", str(tmp_path / "c"), "--cache-dtype", "int8", "--no-progress"]
    # the build's options from a config file, as stackft train reads one
    conf = tmp_path / "build.json"
    conf.write_text(json.dumps({"task": "ner", "train_path": TRAIN, "dev_path": DEV, "max_train": 24, "max_dev": 8,
                                "encoder": str(enc_dir), "cache_dtype": "int8"}))
    assert main(["cache", "build", "--config", str(conf), "--cache", str(tmp_path / "c"), "--no-progress"]) == 0
    assert "caching features" not in capsys.readouterr().err  # --no-progress: no bar
    built = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(built) == 2
    assert main(["train", *args, "--strategy", "stack-only", "--stack-epochs", "1", "--batch-size", "8",
                 "--output-dir", str(tmp_path / "run")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == built  # reused, not rebuilt
    out = capsys.readouterr().out
    assert "int8" in out


def test_best_checkpoint_comes_from_the_final_phase(tmp_path, enc, data):
    """A two-phase run's best/ is a phase-2 model, even where a phase-1 evaluation scored higher."""
    t = Trainer(_cfg(tmp_path, "snf", "off", strategy="stack-and-finetune", phase1_epochs=2, phase2_epochs=1,
                     phase2_lr=1e-12, phase2_head_lr=1e-12), encoder=enc, data=data)
    t.fit()
    assert t.best["phase"] == "phase2"
    assert all(r["phase"] == "phase2" for r in t.history if r.get("best"))
    phase2 = [r["dev"]["f1"] for r in t.history if r["phase"] == "phase2"]
    assert t.best["score"] == max(phase2)
