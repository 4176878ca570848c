"""Triton kernels vs the references at GPU-sized shapes (fp32 and bf16; values and gradients).

CUDA only (marked ``cuda``, skipped elsewhere): the interpreter runs on CPU would take hours at
these sizes, and the point is the compiled kernels' tiling, masking and dtype paths at the shapes
the benches time (B up to 64, T up to 130, d = 768, l = 20, H up to 768). Tolerances are the suite's
one table (``helpers.TOL``): bf16 results against the fp32 reference on the same bf16-rounded
inputs, gradients relative to their largest magnitude. ``bench/gpu_check.py`` runs this file.
"""

import pytest
import torch
from helpers import assert_close, fresh

import stackft.kernels as K
from stackft.kernels import reference as R

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEV = "cuda"
DTYPES = [torch.float32, torch.bfloat16]


def check(fn_tri, fn_ref, inputs, dtype, seed):
    """Outputs and gradients (w.r.t. every float input) of ``fn_tri`` vs the fp32 ``fn_ref``."""
    tri_in = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    ref_in = [x.detach().float().clone().requires_grad_(True) if x.is_floating_point() else x for x in inputs]
    out_t, out_r = fn_tri(*tri_in), fn_ref(*ref_in)
    out_t = out_t if isinstance(out_t, tuple) else (out_t,)
    out_r = out_r if isinstance(out_r, tuple) else (out_r,)
    for n, (a, b) in enumerate(zip(out_t, out_r)):
        assert a.dtype == dtype and a.shape == b.shape
        assert torch.isfinite(a).all(), f"seed {seed}: output {n} not finite"
        assert_close(a, b, dtype, msg=lambda m: f"seed {seed}, output {n}: {m}")
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=g).to(DEV) for o in out_r]
    t_leaves = [x for x in tri_in if x.requires_grad]
    r_leaves = [x for x in ref_in if x.requires_grad]
    g_t = torch.autograd.grad([o.float() for o in out_t], t_leaves, grads)
    g_r = torch.autograd.grad(list(out_r), r_leaves, grads)
    for n, (a, b) in enumerate(zip(g_t, g_r)):
        assert_close(a, b, dtype, scale="max", msg=lambda m: f"seed {seed}, grad of input {n}: {m}")


def ragged_masks(g, B, T1, T2):
    """Lengths uniform in [T/2, T] (as the benches draw them), one row of length 1 on each side."""
    lp = torch.randint(T1 // 2, T1 + 1, (B,), generator=g)
    lq = torch.randint(T2 // 2, T2 + 1, (B,), generator=g)
    lp[0], lq[1] = 1, 1
    pm = torch.arange(T1)[None, :] < lp[:, None]
    qm = torch.arange(T2)[None, :] < lq[:, None]
    return pm.to(DEV), qm.to(DEV)


def separated(g, B, T1, T2, d, dtype):
    """p, q whose max-pool winners are separated by a wide margin (see test_mp_matching.separated):
    bf16 dots cannot flip an argmax."""
    base = torch.randn(B, T2, d, generator=g)
    perm = torch.randperm(T2, generator=g)
    p = base[:, perm[:T1]] + 0.1 * torch.randn(B, T1, d, generator=g)
    q = base.clone()
    for n, j in enumerate(perm[T1:].tolist()):
        q[:, j] = p[:, n % T1] + 0.9 * torch.randn(B, d, generator=g)
    return p.to(DEV, dtype), q.to(DEV, dtype)


def shifted(g, B, T1, T2, d, dtype):
    """Attention weights of one sign per row (see test_mp_matching.attention_shift): the mean-attentive
    denominator stays away from 0."""
    u = torch.randn(d, generator=g)
    u = 1.5 * d**0.5 * u / u.norm()
    sign = torch.where(torch.rand(B, T1, 1, generator=g) < 0.5, -1.0, 1.0)
    p = torch.randn(B, T1, d, generator=g) + sign * u
    q = torch.randn(B, T2, d, generator=g) + u
    return p.to(DEV, dtype), q.to(DEV, dtype)


def weight(g, l, d):
    return (1 + 0.1 * torch.randn(l, d, generator=g)).to(DEV)


# --------------------------------------------------------------------------- BiMPM matching


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, d, l", [(64 * 128, 768, 20), (1000, 384, 20)])
def test_mp_cosine_gpu_shapes(dtype, N, d, l):
    g, seed = fresh()
    v1 = torch.randn(N, d, generator=g).to(DEV, dtype)
    v2 = torch.randn(N, d, generator=g).to(DEV, dtype)
    check(lambda *a: K.multi_perspective_cosine(*a, backend="triton"), R.multi_perspective_cosine,
          [v1, v2, weight(g, l, d)], dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T1, T2, d", [(64, 64, 64, 768), (16, 100, 130, 768), (32, 128, 128, 384)])
def test_maxpool_gpu_shapes(dtype, B, T1, T2, d):
    g, seed = fresh()
    p, q = separated(g, B, T1, T2, d, dtype)
    pm, qm = ragged_masks(g, B, T1, T2)
    check(lambda *a: K.maxpool_match(*a, pm, qm, backend="triton"), lambda *a: R.maxpool_match(*a, pm, qm),
          [p, q, weight(g, 20, d)], dtype, seed)


@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T1, T2, d", [(16, 64, 64, 768), (8, 100, 130, 768)])
def test_attentive_gpu_shapes(mode, dtype, B, T1, T2, d):
    g, seed = fresh()
    p, q = shifted(g, B, T1, T2, d, dtype)
    pm, qm = ragged_masks(g, B, T1, T2)
    check(lambda *a: K.attentive_match(*a, pm, qm, mode=mode, backend="triton"),
          lambda *a: R.attentive_match(*a, pm, qm, mode=mode), [p, q, weight(g, 20, d)], dtype, seed)


# --------------------------------------------------------------------------- highway LSTM


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, H", [(64, 384), (64, 768), (37, 100)])
def test_highway_cell_gpu_shapes(dtype, B, H):
    g, seed = fresh()
    xg = torch.randn(B, 6 * H, generator=g).to(DEV, dtype)
    hg = torch.randn(B, 5 * H, generator=g).to(DEV, dtype)
    c = torch.randn(B, H, generator=g).to(DEV, dtype)
    check(lambda *a: K.highway_lstm_cell(*a, backend="triton"), R.highway_lstm_cell, [xg, hg, c], dtype, seed)


@pytest.mark.parametrize("graphs", [None, False], ids=["graphs", "loop"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("B, T, H", [(64, 128, 384), (32, 100, 768), (13, 37, 256)])
def test_highway_layer_gpu_shapes(graphs, dtype, reverse, B, T, H):
    from stackft.kernels.ops import highway_lstm as HL

    g, seed = fresh()
    n_in = 768
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0], lengths[-1] = T, 1
    lengths = lengths.to(DEV)
    drop = ((torch.rand(B, H, generator=g) > 0.1).float() / 0.9).to(DEV)
    r = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEV, dtype)  # noqa: E731
    inputs = [r(B, T, n_in), r(6 * H, n_in, scale=n_in ** -0.5), r(5 * H, H, scale=H ** -0.5), r(5 * H, scale=0.1),
              r(B, H), r(B, H)]

    def tri(x, W_x, W_h, b, h0, c0):
        out, (h, c) = HL.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=reverse,
                                      dropout_mask=drop.to(dtype), graphs=graphs)
        return out, h, c

    def ref(x, W_x, W_h, b, h0, c0):
        out, (h, c) = R.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=reverse,
                                     dropout_mask=drop.to(dtype).float())
        return out, h, c

    check(tri, ref, inputs, dtype, seed)
