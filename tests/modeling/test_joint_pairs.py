"""Joint-encoded pairs for pair heads: the joint encoder's states split by segment (model.split_joint_pair)."""

from __future__ import annotations

import random

import pytest
import torch

from stackft.config import TrainConfig
from stackft.data.batching import collate
from stackft.data.pipeline import load_task_data
from stackft.modeling.encoders import tiny_random_encoder
from stackft.modeling.model import split_joint_pair
from stackft.training.trainer import Trainer

WORDS = "apple river stone cloud violin tiger piano ocean candle forest".split()


def write_pairs_tsv(path, n, seed):
    """A learnable QQP-layout TSV: duplicate (1) when both questions share their topic word."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            a = rng.choice(WORDS)
            b = a if i % 2 == 0 else rng.choice([w for w in WORDS if w != a])
            qa = " ".join(rng.sample(["what", "is", "a", "the", "how", "do"], rng.randint(1, 4)) + [a])
            qb = " ".join([b] + rng.sample(["why", "my", "one", "does", "so"], rng.randint(0, 3)))
            f.write(f"{int(a == b)}\t{qa} ?\t{qb} ?\t{i}\n")
    return str(path)


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    enc = tiny_random_encoder(hidden_size=32, num_layers=2, seed=0)
    data = load_task_data("pairs", write_pairs_tsv(d / "train.tsv", 40, 0), write_pairs_tsv(d / "dev.tsv", 16, 1),
                          tokenizer=enc.tokenizer, max_length=24, pair_mode="joint")
    return enc, data


def test_split_equals_the_joint_states_sliced_by_segment(joint):
    enc, data = joint
    items = [data.train[i] for i in range(9)]
    batch = collate(items, pad_id=enc.pad_id)
    enc.eval()
    with torch.no_grad():
        hidden = enc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    out = split_joint_pair(hidden, batch["attention_mask"], batch["token_type_ids"])
    for i, item in enumerate(items):
        tt = torch.tensor(item["token_type_ids"])
        la, lb = int((tt == 0).sum()), int((tt == 1).sum())
        assert la > 0 and lb > 0
        torch.testing.assert_close(out["hidden_a"][i, :la], hidden[i, :la], rtol=0, atol=0)
        torch.testing.assert_close(out["hidden_b"][i, :lb], hidden[i, la:la + lb], rtol=0, atol=0)
        assert out["mask_a"][i].tolist() == [True] * la + [False] * (out["mask_a"].shape[1] - la)
        assert out["mask_b"][i].tolist() == [True] * lb + [False] * (out["mask_b"].shape[1] - lb)
        assert not out["hidden_a"][i, la:].any() and not out["hidden_b"][i, lb:].any()
    # side a starts with [CLS], both sides end with [SEP]
    tok = enc.tokenizer
    first = batch["input_ids"][0]
    assert int(first[0]) == tok.cls_token_id
    lb0 = int(out["mask_b"][0].sum())
    la0 = int(out["mask_a"][0].sum())
    assert int(first[la0 - 1]) == tok.sep_token_id and int(first[la0 + lb0 - 1]) == tok.sep_token_id


def test_split_refuses_an_encoding_without_segments():
    hidden, mask = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="no segment-b tokens"):
        split_joint_pair(hidden, mask, torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.parametrize("head", ["bimpm-noctx", "sim-transformer"])
def test_cached_joint_phase1_equals_live_joint(joint, tmp_path, head):
    enc, data = joint
    base = dict(task="pairs", head=head, pair_mode="joint", strategy="stack-only", stack_epochs=1, batch_size=8,
                eval_batch_size=16, progress=False, device="cpu", evals_per_epoch=2, head_options={})
    if head == "bimpm-noctx":
        base["head_options"] = {"perspectives": 4}
    runs = {}
    for cache in ("off", str(tmp_path / "cache")):
        cfg = TrainConfig(output_dir=str(tmp_path / f"run-{len(runs)}"), cache=cache, cache_dtype="fp32", **base)
        tr = Trainer(cfg, encoder=enc, data=data)
        tr.fit()
        runs[cache] = tr
    live, cached = runs.values()
    assert cached.compute["cached_sequences"] > 0 and live.compute["cached_sequences"] == 0
    for a, b in zip(live.history, cached.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["dev"]["accuracy"] == b["dev"]["accuracy"]
