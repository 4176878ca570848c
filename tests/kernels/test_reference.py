"""The references in ``stackft.kernels.reference`` are the spec: pin their semantics.

Hand-computed tiny cases for the paper math, float64 gradcheck, the highway-LSTM sequence
semantics (ragged lengths, reverse, variational dropout), and backend="auto" dispatch on CPU.
"""

import math
import warnings

import pytest
import torch

import stackft.kernels as K
from stackft.kernels import _backend
from stackft.kernels import reference as R


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# --------------------------------------------------------------------------- hand-computed cases


def test_multi_perspective_cosine_hand_case():
    v1, v2 = t([1.0, 0.0]), t([1.0, 1.0])
    W = t([1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 5.0])
    got = R.multi_perspective_cosine(v1, v2, W)[0]
    # W_3∘v1 = 0: the clamped norm makes the cosine 0, not NaN
    want = t(1 / math.sqrt(2), 1.0, 0.0, 4 / math.sqrt(4 * 29))
    torch.testing.assert_close(got, want)


def test_multi_perspective_cosine_broadcasts():
    v1, v2, W = torch.randn(3, 5, 4), torch.randn(3, 1, 4), torch.randn(2, 4)
    got = R.multi_perspective_cosine(v1, v2, W)
    assert got.shape == (3, 5, 2)
    one = R.multi_perspective_cosine(v1[1, 2], v2[1, 0], W)
    torch.testing.assert_close(got[1, 2], one)


def test_maxpool_hand_case_masks_and_padding():
    W = t([1.0, 1.0])
    p = t([1.0, 0.0], [0.0, 1.0], [7.0, 7.0]).unsqueeze(0)  # row 2 is padding
    q = t([1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]).unsqueeze(0)  # q_3 is padding
    pm = torch.tensor([[True, True, False]])
    qm = torch.tensor([[True, True, True, False]])
    p_max, q_max = R.maxpool_match(p, q, W, pm, qm)
    # cos(p_0, q_j) = [1, 0, -1], cos(p_1, q_j) = [0, 1, 0]; the padded q_3 = [1,1] is ignored
    torch.testing.assert_close(p_max[0, :, 0], t(1.0, 1.0, 0.0))
    # q_2 = [-1, 0]: max(cos(p_0,q_2), cos(p_1,q_2)) = max(-1, 0); the padded p_2 is ignored
    torch.testing.assert_close(q_max[0, :, 0], t(1.0, 1.0, 0.0, 0.0))
    # masking q_0 removes the only perfect match of p_0
    qm2 = torch.tensor([[False, True, True, False]])
    p_max, _ = R.maxpool_match(p, q, W, pm, qm2)
    torch.testing.assert_close(p_max[0, :, 0], t(0.0, 1.0, 0.0))


def test_maxpool_row_without_valid_other_side_is_zero():
    p, q, W = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 4)
    qm = torch.ones(2, 5, dtype=torch.bool)
    qm[1] = False
    p_max, q_max = R.maxpool_match(p, q, W, None, qm)
    assert torch.all(p_max[1] == 0) and torch.all(q_max[1] == 0)
    assert torch.all(p_max[0] != 0)


def test_attentive_mean_divides_by_signed_sum_of_alpha():
    p = t([1.0, 0.0]).unsqueeze(0)
    q = t([0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]).unsqueeze(0)
    W = t([1.0, 1.0])
    # α = [0, -1, 1/√2]; Σα < 0 flips h, so the match is negative (a softmax or a positive
    # normalisation would give +0.9239)
    a = 1 / math.sqrt(2)
    h = -torch.tensor([1 + a, a], dtype=torch.float64)
    want = h[0] / h.norm()
    got = R.attentive_match(p, q, W, mode="mean")
    torch.testing.assert_close(got[0, 0, 0], want)
    assert got[0, 0, 0] < -0.9


def test_attentive_mean_hand_value():
    p = t([1.0, 0.0]).unsqueeze(0)
    q = t([1.0, 0.0], [1.0, 3.0], [5.0, -5.0]).unsqueeze(0)
    qm = torch.tensor([[True, True, False]])
    W = t([1.0, 1.0], [1.0, 2.0])
    a = 1 / math.sqrt(10)
    h = (torch.tensor([1.0, 0.0]) + a * torch.tensor([1.0, 3.0])).double() / (1 + a)
    want = R.multi_perspective_cosine(p[0, 0], h, W)
    torch.testing.assert_close(R.attentive_match(p, q, W, None, qm, mode="mean")[0, 0], want)


def test_max_attentive_picks_argmax_row_not_elementwise_max():
    p = t([1.0, 0.0]).unsqueeze(0)
    q = t([1.0, 0.0], [1.0, 3.0]).unsqueeze(0)  # α = [1, 1/√10]
    W = t([1.0, 1.0], [0.0, 1.0])
    got = R.attentive_match(p, q, W, mode="max")[0, 0]
    # h = q_0 = [1, 0]: k0 = 1, k1 = 0 (W_1∘p = 0). The element-wise max of α_j q_j would be
    # [1, 3/√10] and give k0 = 0.725.
    torch.testing.assert_close(got, t(1.0, 0.0))


def test_max_attentive_ignores_masked_positions_and_pads_rows():
    p = t([1.0, 0.0], [3.0, 3.0]).unsqueeze(0)
    q = t([1.0, 0.0], [1.0, 1.0], [0.0, 1.0]).unsqueeze(0)
    pm = torch.tensor([[True, False]])
    qm = torch.tensor([[False, True, True]])  # the perfect match q_0 is padding
    W = t([1.0, 1.0])
    got = R.attentive_match(p, q, W, pm, qm, mode="max")
    torch.testing.assert_close(got[0, :, 0], t(1 / math.sqrt(2), 0.0))


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_attentive_row_without_valid_q_is_zero(mode):
    p, q, W = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 4)
    qm = torch.ones(2, 5, dtype=torch.bool)
    qm[0] = False
    got = R.attentive_match(p, q, W, None, qm, mode=mode)
    assert torch.all(got[0] == 0) and torch.all(got[1] != 0)


def test_attention_denominator_keeps_sign():
    s = t(0.5, -0.5, 0.0, 1e-9, -1e-9)
    torch.testing.assert_close(R.attention_denominator(s), t(0.5, -0.5, R.ATT_EPS, R.ATT_EPS, -R.ATT_EPS))


def test_highway_cell_hand_case():
    H = 1
    xg = torch.zeros(1, 6 * H, dtype=torch.float64)
    xg[0, 5] = 2.0  # carry
    hg = torch.zeros(1, 5 * H, dtype=torch.float64)
    c_prev = torch.ones(1, H, dtype=torch.float64)
    h, c = R.highway_lstm_cell(xg, hg, c_prev)
    # i = f = o = r = 0.5, g = 0: c = 0.5; h = 0.5·0.5·tanh(0.5) + 0.5·2
    torch.testing.assert_close(c, t([0.5]))
    torch.testing.assert_close(h, t([0.25 * math.tanh(0.5) + 1.0]))


def test_bf16_inputs_compute_in_fp32_and_return_bf16():
    p, q, W = torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(3, 8)
    out = R.maxpool_match(p.bfloat16(), q.bfloat16(), W)
    assert out[0].dtype == torch.bfloat16
    want = R.maxpool_match(p.bfloat16().float(), q.bfloat16().float(), W)
    assert torch.equal(out[0], want[0].bfloat16()) and torch.equal(out[1], want[1].bfloat16())  # one rounding


# --------------------------------------------------------------------------- highway_lstm sequence


def _layer_inputs(B=3, T=5, n_in=4, H=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(x=r(B, T, n_in), W_x=r(6 * H, n_in) * 0.5, W_h=r(5 * H, H) * 0.5, b=r(5 * H) * 0.1,
                h0=r(B, H), c0=r(B, H))


@pytest.mark.parametrize("reverse", [False, True])
def test_highway_lstm_ragged_equals_per_sequence_runs(reverse):
    a = _layer_inputs()
    lengths = torch.tensor([5, 1, 3])
    mask = (torch.rand(3, 3, generator=torch.Generator().manual_seed(1)) > 0.3).double() / 0.7
    out, (h_n, c_n) = R.highway_lstm(a["x"], lengths, a["W_x"], a["W_h"], a["b"], a["h0"], a["c0"],
                                     reverse=reverse, dropout_mask=mask)
    for bi, L in enumerate(lengths.tolist()):
        xs = a["x"][bi:bi + 1, :L]
        h, c = a["h0"][bi:bi + 1], a["c0"][bi:bi + 1]
        steps = range(L - 1, -1, -1) if reverse else range(L)
        for s in steps:
            hg = h @ a["W_h"].t() + a["b"]
            h, c = R.highway_lstm_cell(xs[:, s] @ a["W_x"].t(), hg, c)
            h = h * mask[bi]
            torch.testing.assert_close(out[bi, s], h[0])
        torch.testing.assert_close(h_n[bi], h[0])
        torch.testing.assert_close(c_n[bi], c[0])
        assert torch.all(out[bi, L:] == 0)


def test_highway_lstm_zero_initial_state_and_full_lengths():
    a = _layer_inputs(B=2, T=4)
    out, (h_n, _) = R.highway_lstm(a["x"], torch.tensor([4, 4]), a["W_x"], a["W_h"], a["b"])
    torch.testing.assert_close(out[:, -1], h_n)
    out_r, (h_r, _) = R.highway_lstm(a["x"], torch.tensor([4, 4]), a["W_x"], a["W_h"], a["b"], reverse=True)
    torch.testing.assert_close(out_r[:, 0], h_r)  # reverse: h_n is the state after step 0
    assert not torch.allclose(out, out_r)


# --------------------------------------------------------------------------- gradcheck (float64)


def _masks(B, T1, T2):
    pm = torch.ones(B, T1, dtype=torch.bool)
    qm = torch.ones(B, T2, dtype=torch.bool)
    pm[1, 1:] = False  # exactly one valid token
    qm[0, 1:] = False
    qm[2, 4:] = False
    return pm, qm


def _req(*ts):
    return [x.clone().requires_grad_(True) for x in ts]


def test_gradcheck_multi_perspective_cosine():
    v1, v2, W = _req(torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 1, 5, dtype=torch.float64),
                     torch.randn(2, 5, dtype=torch.float64))
    assert torch.autograd.gradcheck(R.multi_perspective_cosine, (v1, v2, W))


def test_gradcheck_maxpool():
    # continuous random inputs: ties in the max are impossible
    p, q, W = _req(torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 6, 5, dtype=torch.float64),
                   torch.randn(2, 5, dtype=torch.float64))
    pm, qm = _masks(3, 4, 6)
    assert torch.autograd.gradcheck(lambda *a: R.maxpool_match(*a, pm, qm), (p, q, W))


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_gradcheck_attentive(mode):
    p, q, W = _req(torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 6, 5, dtype=torch.float64),
                   torch.randn(2, 5, dtype=torch.float64))
    pm, qm = _masks(3, 4, 6)
    assert torch.autograd.gradcheck(lambda *a: R.attentive_match(*a, pm, qm, mode=mode), (p, q, W))


def test_gradcheck_highway_cell():
    xg, hg, c = _req(torch.randn(2, 18, dtype=torch.float64), torch.randn(2, 15, dtype=torch.float64),
                     torch.randn(2, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(R.highway_lstm_cell, (xg, hg, c))


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_highway_lstm(reverse):
    a = _layer_inputs(B=3, T=4, n_in=3, H=2)
    mask = _req(torch.tensor([[2.0, 0.0], [2.0, 2.0], [0.0, 2.0]], dtype=torch.float64))[0]
    x, W_x, W_h, b, h0, c0 = _req(a["x"], a["W_x"], a["W_h"], a["b"], a["h0"], a["c0"])
    lengths = torch.tensor([4, 1, 2])

    def f(x, W_x, W_h, b, h0, c0, mask):
        out, (h, c) = R.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=reverse, dropout_mask=mask)
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, W_x, W_h, b, h0, c0, mask))


# --------------------------------------------------------------------------- dispatch


def test_auto_on_cpu_uses_reference_and_warns_once():
    # once with a GPU (Triton was possible); never without one (the reference is all there is)
    _backend._reset_warning()
    p, q, W = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        a = K.maxpool_match(p, q, W)
        b = K.attentive_match(p, q, W)
        K.multi_perspective_cosine(p, p, W)
    fallback = [w for w in rec if "PyTorch reference" in str(w.message)]
    assert len(fallback) == int(torch.cuda.is_available())
    assert all(issubclass(w.category, RuntimeWarning) for w in fallback)
    torch.testing.assert_close(a[0], R.maxpool_match(p, q, W)[0], rtol=0, atol=0)
    torch.testing.assert_close(b, R.attentive_match(p, q, W), rtol=0, atol=0)


def test_torch_backend_does_not_warn_and_bad_backend_raises():
    _backend._reset_warning()
    p, W = torch.randn(2, 3, 4), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.multi_perspective_cosine(p, p, W, backend="torch")
    with pytest.raises(ValueError):
        K.multi_perspective_cosine(p, p, W, backend="cuda")
    with pytest.raises(ValueError):
        K.attentive_match(p, p, W, mode="softmax", backend="torch")
