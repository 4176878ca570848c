"""Behaviour tests for stackft.heads: shapes, gradients, masking, init, dropout, BiMPM full matching, learning."""

import math

import pytest
import torch
from torch import nn

from stackft.kernels import multi_perspective_cosine
from stackft.modeling import heads
from stackft.modeling.heads import (
    HEADS,
    BiLSTMTagger,
    BiMPMHead,
    DenseNetCNNClassifier,
    FCSequenceHead,
    FCTokenHead,
    HighwayLSTMClassifier,
    MultiPerspectiveMatching,
    build_head,
    head_level,
    head_pair_input,
    kaiming_init,
)
from stackft.modeling.heads.pooling import last_valid, masked_max, masked_mean

B, T, T2, H, C = 3, 7, 5, 16, 4
LENGTHS_A = [7, 4, 1]
LENGTHS_B = [3, 5, 2]

SMALL_MATCH = dict(perspectives=3, context_hidden=6)
CASES = {
    "fc-sequence": ("fc", "sequence", {}),
    "fc-token": ("fc", "token", {}),
    "linear-sequence": ("linear", "sequence", {}),
    "linear-token": ("linear", "token", {}),
    "bilstm": ("bilstm", "token", dict(lstm_hidden=8)),
    "highway-lstm": ("highway-lstm", "sequence", dict(lstm_hidden=8)),
    "densenet": ("densenet", "sequence", {}),
    "densenet-dense": ("densenet", "sequence", dict(connectivity="dense", channels=12, growth_rate=4)),
    "bimpm": ("bimpm", "sequence", dict(agg_hidden=5, **SMALL_MATCH)),
    "bimpm-noctx": ("bimpm-noctx", "sequence", dict(agg_hidden=5, perspectives=3)),
    "sim-transformer": ("sim-transformer", "sequence",
                        dict(d_model=8, num_heads=2, dim_feedforward=16, **SMALL_MATCH)),
}


def mask_of(lengths, total):
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def make_features(pair: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    if pair:
        return {"hidden_a": torch.randn(B, T, H, generator=g, requires_grad=True), "mask_a": mask_of(LENGTHS_A, T),
                "hidden_b": torch.randn(B, T2, H, generator=g, requires_grad=True), "mask_b": mask_of(LENGTHS_B, T2)}
    return {"hidden": torch.randn(B, T, H, generator=g, requires_grad=True), "mask": mask_of(LENGTHS_A, T)}


def build(case: str, **extra) -> nn.Module:
    name, level, options = CASES[case]
    return build_head(name, H, C, level=level, **{**options, **extra})


def hidden_keys(head):
    return [("hidden_a", "mask_a"), ("hidden_b", "mask_b")] if head.pair_input else [("hidden", "mask")]


@pytest.mark.parametrize("case", CASES)
def test_output_shape_dtype_finite(case):
    head = build(case)
    feats = make_features(head.pair_input)
    logits = head(feats)
    expected = (B, T, C) if head.level == "token" else (B, C)
    assert logits.shape == expected
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("case", CASES)
def test_gradient_reaches_every_parameter_and_input(case):
    head = build(case).eval()
    feats = make_features(head.pair_input)
    logits = head(feats)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    (logits * weights).sum().backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
    for key, mask_key in hidden_keys(head):
        grad = feats[key].grad
        assert grad is not None and grad[feats[mask_key]].abs().sum() > 0


@pytest.mark.parametrize("case", CASES)
def test_padded_positions_do_not_change_output(case):
    head = build(case).eval()
    feats = make_features(head.pair_input)
    with torch.no_grad():
        before = head(feats)
        noisy = dict(feats)
        for key, mask_key in hidden_keys(head):
            pad = ~feats[mask_key]
            noise = 100 * torch.randn_like(feats[key]) * pad.unsqueeze(-1)
            noisy[key] = feats[key] + noise
        after = head(noisy)
        # sanity: perturbing a real token does change the output
        real = dict(feats)
        key0, _ = hidden_keys(head)[0]
        real[key0] = feats[key0].clone()
        real[key0][0, 0] += 5.0  # [CLS] is used by every head
        changed = head(real)
    if head.level == "token":
        mask = feats["mask"]
        torch.testing.assert_close(after[mask], before[mask], rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, before)


@pytest.mark.parametrize("case", CASES)
def test_dropout_active_in_train_only(case):
    head = build(case, dropout=0.5)
    feats = make_features(head.pair_input)
    head.train()
    with torch.no_grad():
        assert not torch.allclose(head(feats), head(feats))
        head.eval()
        torch.testing.assert_close(head(feats), head(feats), rtol=0, atol=0)


def test_bilstm_padded_logits_are_zero():
    head = build("bilstm")
    feats = make_features(False)
    logits = head(feats)
    assert (logits[~feats["mask"]] == 0).all()
    assert (logits[feats["mask"]] != 0).any()


# ---- Kaiming init -------------------------------------------------------------------------------

def relu_std(fan_in):
    return math.sqrt(2.0 / fan_in)


def assert_block_orthogonal(weight, block):
    for chunk in weight.detach().split(block, dim=0):
        torch.testing.assert_close(chunk @ chunk.T, torch.eye(block), atol=1e-4, rtol=0)


def test_kaiming_linear_and_conv():
    head = FCSequenceHead(512, 300)
    for linear, fan_in in ((head.fc1, 512), (head.fc2, 512)):
        assert linear.weight.std().item() == pytest.approx(relu_std(fan_in), rel=0.05)
        assert (linear.bias == 0).all()
    dense = DenseNetCNNClassifier(64, 3, channels=96)
    conv = dense.blocks[3].convs[0]  # kernel 5: fan_in = 96 * 5
    assert conv.weight.std().item() == pytest.approx(relu_std(96 * 5), rel=0.05)
    assert (conv.bias == 0).all()


def test_kaiming_lstm():
    head = BiLSTMTagger(300, 5, lstm_hidden=64)
    for name, param in head.lstm.named_parameters():
        if name.startswith("weight_ih"):
            assert param.std().item() == pytest.approx(relu_std(300), rel=0.05)
        elif name.startswith("weight_hh"):
            assert_block_orthogonal(param, 64)
        else:
            assert (param == 0).all()


def test_kaiming_highway_lstm():
    head = HighwayLSTMClassifier(200, 2, lstm_hidden=32)
    for layer in head.layers:
        for direction in layer:
            assert direction.W_x.shape == (6 * 32, direction.W_x.shape[1])
            assert direction.W_x.std().item() == pytest.approx(relu_std(direction.W_x.shape[1]), rel=0.05)
            assert_block_orthogonal(direction.W_h, 32)
            b = direction.b.detach()
            assert (b[32:64] == 1).all()
            assert (b[:32] == 0).all() and (b[64:] == 0).all()
    assert head.layers[1][0].W_x.shape[1] == 64  # layer 2 input = concatenated directions


def test_kaiming_bimpm_weights():
    matching = MultiPerspectiveMatching(64, context_hidden=200, perspectives=50)
    assert len(matching.weights) == 8
    for weight in matching.weights.values():
        assert weight.shape == (50, 200)
        assert weight.std().item() == pytest.approx(relu_std(200), rel=0.08)
    assert len(MultiPerspectiveMatching(64, context_lstm=False, perspectives=5).weights) == 4


def test_kaiming_init_skips_encoder_modules():
    class FakeEncoderLayer(nn.Linear):
        pass

    FakeEncoderLayer.__module__ = "transformers.models.bert.modeling_bert"
    model = nn.Sequential(FakeEncoderLayer(8, 8), nn.Linear(8, 8))
    nn.init.constant_(model[0].weight, 0.5)
    nn.init.constant_(model[1].bias, 0.5)
    kaiming_init(model)
    assert (model[0].weight == 0.5).all()
    assert (model[1].bias == 0).all()


# ---- highway LSTM dropout mask -----------------------------------------------------------------

def test_highway_variational_dropout_mask(monkeypatch):
    import stackft.modeling.heads.highway_lstm as module

    seen = []
    real = module.highway_lstm

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dropout_mask"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "highway_lstm", spy)
    head = HighwayLSTMClassifier(H, C, lstm_hidden=8, recurrent_dropout=0.5)
    feats = make_features(False)
    head.train()(feats)
    assert len(seen) == 4  # 2 layers x 2 directions
    for mask in seen:
        assert mask.shape == (B, 8)
        assert set(mask.unique().tolist()) <= {0.0, 2.0}
    assert not all(torch.equal(seen[0], m) for m in seen[1:])  # independent masks
    seen.clear()
    head.eval()(feats)
    assert seen == [None] * 4


# ---- BiMPM matching ----------------------------------------------------------------------------

def test_bimpm_full_matching_uses_last_valid_state():
    matching = MultiPerspectiveMatching(H, perspectives=3, context_hidden=6).eval()
    feats = make_features(True)
    a, ma, b, mb = feats["hidden_a"], feats["mask_a"], feats["hidden_b"], feats["mask_b"]
    l = 3
    with torch.no_grad():
        match_a, match_b = matching(a, ma, b, mb)
        sa, sb = matching.context_states(a, ma), matching.context_states(b, mb)
        full_fw = matching.feature_names.index("full_fw")
        full_bw = matching.feature_names.index("full_bw")
        expected_fw = multi_perspective_cosine(sa["fw"], last_valid(sb["fw"], mb)[:, None], matching.weights["full_fw"])
        expected_bw = multi_perspective_cosine(sa["bw"], sb["bw"][:, :1], matching.weights["full_bw"])
        got_fw = match_a[..., full_fw * l:(full_fw + 1) * l]
        got_bw = match_a[..., full_bw * l:(full_bw + 1) * l]
        torch.testing.assert_close(got_fw[ma], expected_fw[ma])
        torch.testing.assert_close(got_bw[ma], expected_bw[ma])
        # Q->P uses P's last valid fw state (row 2 has a single token: position 0)
        expected_b = multi_perspective_cosine(sb["fw"], last_valid(sa["fw"], ma)[:, None], matching.weights["full_fw"])
        torch.testing.assert_close(match_b[..., full_fw * l:(full_fw + 1) * l][mb], expected_b[mb])

        # changing Q's padded rows leaves P's full_fw features alone; changing its last valid row does not
        b_pad = b.clone()
        b_pad[~mb] = 50.0
        torch.testing.assert_close(matching(a, ma, b_pad, mb)[0], match_a)
        b_last = b.clone()
        b_last[0, LENGTHS_B[0] - 1] += 3.0  # row 0 has length 3 < T2: its last valid row is not the last row
        moved = matching(a, ma, b_last, mb)[0][..., full_fw * l:(full_fw + 1) * l]
        assert not torch.allclose(moved[0], got_fw[0])
        torch.testing.assert_close(moved[1:], got_fw[1:])
    assert (match_a[~ma] == 0).all() and (match_b[~mb] == 0).all()
    assert match_a.shape == (B, T, 8 * l) and match_b.shape == (B, T2, 8 * l)


def test_bimpm_noctx_full_matching_uses_cls():
    matching = MultiPerspectiveMatching(H, context_lstm=False, perspectives=3).eval()
    feats = make_features(True)
    a, ma, b, mb = feats["hidden_a"], feats["mask_a"], feats["hidden_b"], feats["mask_b"]
    with torch.no_grad():
        match_a, _ = matching(a, ma, b, mb)
        expected = multi_perspective_cosine(a, b[:, :1], matching.weights["full_all"])
    assert match_a.shape == (B, T, 4 * 3)
    torch.testing.assert_close(match_a[..., :3][ma], expected[ma])


# ---- registry ----------------------------------------------------------------------------------

def test_registry():
    assert set(HEADS) == {"fc", "linear", "bilstm", "highway-lstm", "densenet", "bimpm", "bimpm-noctx", "sim-transformer"}
    assert isinstance(build_head("fc", H, C, level="token"), FCTokenHead)
    assert isinstance(build_head("fc", H, C), FCSequenceHead)
    assert isinstance(build_head("fc", H, C, level="sequence"), FCSequenceHead)
    assert build_head("linear", H, C, level="token").level == "token"
    assert build_head("linear", H, C).level == "sequence"
    assert isinstance(build_head("highway_lstm", H, C, lstm_hidden=4), HighwayLSTMClassifier)
    noctx = build_head("bimpm-noctx", H, C, perspectives=2)
    assert isinstance(noctx, BiMPMHead) and noctx.matching.context is None
    assert build_head("bimpm", H, C, perspectives=2).matching.context is not None
    with pytest.raises(ValueError, match="known heads: fc, linear, bilstm"):
        build_head("crf", H, C)
    with pytest.raises(ValueError, match="token-level"):
        build_head("bilstm", H, C, level="sequence")
    assert head_level("fc") == "sequence" and head_level("fc", "token") == "token"
    assert head_level("bilstm") == "token" and head_level("densenet") == "sequence"
    assert head_pair_input("bimpm") and head_pair_input("sim-transformer") and not head_pair_input("fc")
    assert heads.HEADS["sim-transformer"].pair_input


def test_pooling_helpers():
    x = torch.tensor([[[1.0], [5.0], [3.0]], [[-2.0], [9.0], [9.0]], [[4.0], [4.0], [4.0]]])
    mask = mask_of([2, 1, 0], 3)
    assert masked_max(x, mask).squeeze(-1).tolist() == [5.0, -2.0, 0.0]
    assert masked_mean(x, mask).squeeze(-1).tolist() == [3.0, -2.0, 0.0]
    assert last_valid(x, mask).squeeze(-1).tolist() == [5.0, -2.0, 4.0]


# ---- learning ----------------------------------------------------------------------------------

def test_densenet_learns_a_separable_task():
    """The label is whether a fixed pattern occurs somewhere after [CLS]; [CLS] itself is pure noise."""
    g = torch.Generator().manual_seed(0)
    n, t, h = 64, 8, 16
    hidden = torch.randn(n, t, h, generator=g)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None] < lengths[:, None]
    labels = torch.arange(n) % 2
    pattern = 3.0 * torch.randn(h, generator=g)
    for i in range(n):
        if labels[i]:
            pos = torch.randint(1, int(lengths[i]), (1,), generator=g).item()
            hidden[i, pos] += pattern
    head = DenseNetCNNClassifier(h, 2, kernel_sizes=(2, 3))
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)  # any init (the per-test seed) learns it in 40 steps
    feats = {"hidden": hidden, "mask": mask}

    def evaluate():
        head.eval()
        with torch.no_grad():
            logits = head(feats)
        head.train()
        return nn.functional.cross_entropy(logits, labels).item(), (logits.argmax(-1) == labels).float().mean().item()

    loss0, acc0 = evaluate()
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats), labels).backward()
        opt.step()
    loss1, acc1 = evaluate()
    assert loss1 < 0.5 * loss0
    assert acc1 >= 0.95 and acc1 > acc0
