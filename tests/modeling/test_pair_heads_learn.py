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


def test_token_batch_norm_is_batch_norm_over_real_tokens_of_both_sides():
    from stackft.modeling.heads.sim_transformer import TokenBatchNorm

    g = torch.Generator().manual_seed(0)
    ours, ref = TokenBatchNorm(7), torch.nn.BatchNorm1d(7)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5, generator=g)
        ours.bias.uniform_(-1, 1, generator=g)
        ref.load_state_dict(ours.state_dict())
    xa = (torch.randn(5, 9, 7, generator=g) * 3 + 2).transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous
    xb = torch.randn(5, 4, 7, generator=g) - 1
    ma, mb = torch.rand(5, 9, generator=g) > 0.4, torch.rand(5, 4, generator=g) > 0.4
    ma[:, 0] = mb[:, 0] = True
    for _ in range(2):  # twice: the running statistics move as nn.BatchNorm1d's do
        ya, yb = ours((xa, xb), (ma, mb))
        want = ref(torch.cat([xa[ma], xb[mb]]))
        torch.testing.assert_close(torch.cat([ya[ma], yb[mb]]), want)
    assert ya[~ma].abs().max() == 0 and yb[~mb].abs().max() == 0
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours((xa,), (ma,))[0][ma], ref(xa[ma]))
    # a single real token in a training batch: running statistics, not a division by zero
    ours.train()
    one = torch.zeros(1, 3, dtype=torch.bool)
    one[0, 0] = True
    before = ours.running_mean.clone()
    y, = ours((xa[:1, :3],), (one,))
    assert torch.isfinite(y).all() and torch.equal(ours.running_mean, before)
    # bf16 in, bf16 out, statistics in float32
    yh, = ours((xa.bfloat16(),), (ma,))
    assert yh.dtype == torch.bfloat16
    torch.testing.assert_close(yh.float(), ours((xa,), (ma,))[0], atol=0.05, rtol=0.02)


def test_sim_transformer_checkpoints_of_head_revision_2_build_without_the_norm():
    from stackft.modeling.heads import HEAD_DEFAULTS, revision_options

    assert HEAD_DEFAULTS >= 3
    assert revision_options("sim-transformer", 2) == {"match_norm": "none", "d_model": 256, "dim_feedforward": 1024}
    assert build_head("sim-transformer", 32, 2, level="sequence").proj.out_features == 128
    old = build_head("sim-transformer", 32, 2, level="sequence",
                     **{**revision_options("sim-transformer", 2), **SMALL["sim-transformer"]})
    new = build_head("sim-transformer", 32, 2, level="sequence", **SMALL["sim-transformer"])
    assert old.match_norm is None and not any("match_norm" in k for k in old.state_dict())
    assert any(k.startswith("match_norm.running_mean") for k in new.state_dict())
    with pytest.raises(ValueError, match="match_norm"):
        build_head("sim-transformer", 32, 2, level="sequence", match_norm="layer")
