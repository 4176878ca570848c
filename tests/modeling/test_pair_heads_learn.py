"""Pair heads learn: each fits a separable toy pair task from features alone (no majority-class collapse)."""

from __future__ import annotations

import pytest
import torch

from stackft.modeling.heads import build_head


def toy_pairs(n: int, *, d: int = 32, t: int = 6, seed: int = 0):
    """Side a and b are noisy copies of one of 8 topic vectors; label 1 when the topics agree.

    Half of the rows have two padded positions on side a (and the mirror rows on side b)."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.randn(8, d, generator=g)
    ta = torch.randint(0, 8, (n,), generator=g)
    same = torch.rand(n, generator=g) < 0.5
    tb = torch.where(same, ta, (ta + torch.randint(1, 8, (n,), generator=g)) % 8)
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[: n // 2, t - 2:] = False
    feats = {"hidden_a": torch.randn(n, t, d, generator=g) * 0.5 + topics[ta][:, None], "mask_a": mask,
             "hidden_b": torch.randn(n, t, d, generator=g) * 0.5 + topics[tb][:, None], "mask_b": mask.flip(0)}
    return feats, same.long()


SMALL = {"sim-transformer": dict(d_model=64, dim_feedforward=128, perspectives=8, context_hidden=32),
         "bimpm": dict(perspectives=8, context_hidden=32, aggregation_hidden=32),
         "bimpm-noctx": dict(perspectives=8, aggregation_hidden=32)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_pair_head_fits_a_separable_toy_task(name):
    try:
        head = build_head(name, 32, 2, level="sequence", **SMALL[name])
    except TypeError:  # an option this head does not take
        opts = {k: v for k, v in SMALL[name].items() if k != "aggregation_hidden"}
        head = build_head(name, 32, 2, level="sequence", **opts)
    train, y = toy_pairs(512)
    dev, y_dev = toy_pairs(256, seed=1)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        idx = torch.randint(0, 512, (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(head({k: v[idx] for k, v in train.items()}), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        pred = head(dev).argmax(-1)
    accuracy = (pred == y_dev).float().mean().item()
    assert accuracy > 0.85, f"{name}: dev accuracy {accuracy:.3f}"
    share = pred.float().mean().item()
    assert 0.3 < share < 0.7, f"{name} predicts class 1 for {share:.0%} of a balanced set (collapse)"
