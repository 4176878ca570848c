"""Triton BiMPM matching kernels vs the references (forward and gradients).

Without a GPU the kernels run in the Triton interpreter on CPU tensors (conftest sets
TRITON_INTERPRET=1). Inputs are fresh random tensors in every test, drawn from the per-test seed
(conftest); the generator's seed is in the failure message. Tolerances are the suite's one table,
``helpers.TOL`` (by the dtype computed in): bf16 results are compared with the fp32 reference
evaluated on the same bf16-rounded inputs, gradients relative to their largest magnitude.
"""


import pytest
import torch
from helpers import TOL, assert_close, fresh

import stackft.kernels as K
from stackft.kernels import reference as R

DEV = "cuda" if torch.cuda.is_available() else "cpu"

DTYPES = [torch.float32, torch.bfloat16]
assert set(DTYPES) <= set(TOL)


def randn(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(device=DEV, dtype=dtype)


def masks(B, T1, T2):
    """Mixed masks: a p row and a q row with exactly one valid token, a short q row."""
    pm = torch.ones(B, T1, dtype=torch.bool, device=DEV)
    qm = torch.ones(B, T2, dtype=torch.bool, device=DEV)
    pm[1, 1:] = False
    qm[0, 1:] = False
    qm[B - 1, T2 // 2:] = False
    return pm, qm


def check(fn_tri, fn_ref, inputs, dtype, seed, n_out):
    """Compare outputs and gradients (w.r.t. every float input) of Triton vs fp32 reference."""
    tri_in = [x.detach().clone().requires_grad_(True) for x in inputs]
    ref_in = [x.detach().float().clone().requires_grad_(True) for x in inputs]
    out_t, out_r = fn_tri(*tri_in), fn_ref(*ref_in)
    if n_out == 1:
        out_t, out_r = (out_t,), (out_r,)
    for a, b in zip(out_t, out_r):
        assert a.dtype == dtype
        assert_close(a, b, dtype, msg=lambda m: f"seed {seed}: {m}")
    grads = [torch.randn(o.shape, device=DEV) for o in out_r]
    g_t = torch.autograd.grad([o.float() for o in out_t], tri_in, grads)
    g_r = torch.autograd.grad(list(out_r), ref_in, grads)
    for k, (a, b) in enumerate(zip(g_t, g_r)):
        assert_close(a, b, dtype, scale="max", msg=lambda m: f"seed {seed}, grad of input {k}: {m}")


def separated(g, B, T1, T2, d, dtype):
    """p, q whose max-pool winners are separated by a wide margin in both directions, so a
    low-precision dot cannot flip an argmax: p_i ≈ q_{π(i)} (cos ≈ 0.99); each extra q_j is a
    noisier copy of one p (cos ≈ 0.75, well above the ~0.2 of unrelated pairs at d >= 33)."""
    base = torch.randn(B, T2, d, generator=g)
    perm = torch.randperm(T2, generator=g)
    p = base[:, perm[:T1]] + 0.1 * torch.randn(B, T1, d, generator=g)
    q = base.clone()
    for n, j in enumerate(perm[T1:].tolist()):
        q[:, j] = p[:, n % T1] + 0.9 * torch.randn(B, d, generator=g)
    W = 1 + 0.1 * torch.randn(3, d, generator=g)
    return p.to(DEV, dtype), q.to(DEV, dtype), W.to(DEV)


def attention_shift(g, B, T1, d):
    """(shift of p [B, T1, d], shift of q [d]): a shared direction u in every q and ±u in each p row, so a
    row's attention weights α_ij = cos(p_i, q_j) share one sign (either) and the mean-attentive
    denominator Σ_j α_ij stays away from 0. Plain random inputs put it near 0 now and then, where the
    fp32 summation order alone changes the gradients by far more than any tolerance."""
    u = torch.randn(d, generator=g)
    u = 1.5 * d**0.5 * u / u.norm()
    sign = torch.where(torch.rand(B, T1, 1, generator=g) < 0.5, -1.0, 1.0)
    return sign * u, u


# --------------------------------------------------------------------------- multi-perspective cosine


@pytest.mark.parametrize("dtype", DTYPES)
def test_mp_cosine_broadcast_noncontiguous(dtype):
    g, seed = fresh()
    B, T, d, l = 3, 5, 13, 3
    v1 = randn(g, B, d, T, dtype=dtype).transpose(1, 2)  # non-contiguous [B, T, d]
    v2 = randn(g, B, 1, d, dtype=dtype)  # full matching: one vector of q per example
    W = randn(g, l, d)
    check(lambda *a: K.multi_perspective_cosine(*a, backend="triton"), R.multi_perspective_cosine,
          [v1, v2, W], dtype, seed, 1)


def test_mp_cosine_multi_block_and_zero_vectors():
    g, seed = fresh()
    N, d, l = 70, 37, 5  # several row blocks and d chunks, l not a power of two
    v1, v2, W = randn(g, N, d), randn(g, N, d), randn(g, l, d)
    v1[3] = 0.0  # clamped norm: cosine 0, gradient finite
    W[2, :] = 0.0
    check(lambda *a: K.multi_perspective_cosine(*a, backend="triton"), R.multi_perspective_cosine,
          [v1, v2, W], torch.float32, seed, 1)
    out = K.multi_perspective_cosine(v1, v2, W, backend="triton")
    assert torch.all(out[3] == 0) and torch.all(out[:, 2] == 0)


# --------------------------------------------------------------------------- max-pooling matching


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_masks_noncontiguous(dtype):
    g, seed = fresh()
    B, T1, T2, d, l = 3, 5, 7, 13, 3
    if dtype == torch.float32:
        p = randn(g, B, d, T1).transpose(1, 2)  # non-contiguous
        q = randn(g, T2, B, d).transpose(0, 1)
        W = randn(g, l, d)
        pm, qm = masks(B, T1, T2)
    else:
        p, q, W = separated(g, B, T1, T2, 33, dtype)
        pm, qm = None, None
    check(lambda *a: K.maxpool_match(*a, pm, qm, backend="triton"),
          lambda *a: R.maxpool_match(*a, pm, qm), [p, q, W], dtype, seed, 2)


def test_maxpool_multi_tile():
    g, seed = fresh()
    B, T1, T2, d, l = 2, 67, 70, 70, 3  # > one 64-wide tile in i, j and d
    p, q, W = randn(g, B, T1, d), randn(g, B, T2, d), randn(g, l, d)
    pm, qm = masks(B, T1, T2)
    pm[0, 40:] = False
    check(lambda *a: K.maxpool_match(*a, pm, qm, backend="triton"),
          lambda *a: R.maxpool_match(*a, pm, qm), [p, q, W], torch.float32, seed, 2)


def test_maxpool_padded_rows_and_empty_side_are_zero():
    g, _ = fresh()
    B, T1, T2, d, l = 3, 5, 7, 13, 3
    p, q, W = randn(g, B, T1, d), randn(g, B, T2, d), randn(g, l, d)
    pm, qm = masks(B, T1, T2)
    qm[2] = False  # example 2: no valid q at all
    p_max, q_max = K.maxpool_match(p, q, W, pm, qm, backend="triton")
    assert torch.all(p_max[~pm] == 0) and torch.all(q_max[~qm] == 0)
    assert torch.all(p_max[2] == 0)
    assert torch.all(p_max[pm & qm.any(1, keepdim=True)] != 0)


# --------------------------------------------------------------------------- attentive matching


@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_attentive(mode, dtype):
    g, seed = fresh()
    B, T1, T2, d, l = 3, 5, 7, 13, 3
    sp, sq = attention_shift(g, B, T1, d)
    p = (torch.randn(B, d, T1, generator=g) + sp.transpose(1, 2)).to(DEV, dtype).transpose(1, 2)  # non-contiguous
    q, W = (torch.randn(B, T2, d, generator=g) + sq).to(DEV, dtype), randn(g, l, d)
    pm, qm = masks(B, T1, T2)
    check(lambda *a: K.attentive_match(*a, pm, qm, mode=mode, backend="triton"),
          lambda *a: R.attentive_match(*a, pm, qm, mode=mode), [p, q, W], dtype, seed, 1)


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_attentive_multi_tile_and_empty_rows(mode):
    g, seed = fresh()
    B, T1, T2, d, l = 2, 67, 66, 70, 3
    sp, sq = attention_shift(g, B, T1, d)
    p, q, W = randn(g, B, T1, d) + sp.to(DEV), randn(g, B, T2, d) + sq.to(DEV), randn(g, l, d)
    pm, qm = masks(B, T1, T2)
    qm[1] = False
    check(lambda *a: K.attentive_match(*a, pm, qm, mode=mode, backend="triton"),
          lambda *a: R.attentive_match(*a, pm, qm, mode=mode), [p, q, W], torch.float32, seed, 1)
    assert torch.all(K.attentive_match(p, q, W, pm, qm, mode=mode, backend="triton")[1] == 0)


def test_max_attentive_hand_case_on_triton():
    p = torch.tensor([[[1.0, 0.0]]], device=DEV)
    q = torch.tensor([[[1.0, 0.0], [1.0, 3.0]]], device=DEV)
    W = torch.tensor([[1.0, 1.0], [0.0, 1.0]], device=DEV)
    got = K.attentive_match(p, q, W, mode="max", backend="triton")[0, 0]
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0], device=DEV))  # argmax row, not max_j α q


# --------------------------------------------------------------------------- no materialisation


def _largest_saved(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(sizes)


def test_maxpool_saves_nothing_pairwise():
    g, _ = fresh()
    B, T1, T2, d, l = 3, 5, 7, 13, 5
    p, q = randn(g, B, T1, d).requires_grad_(), randn(g, B, T2, d).requires_grad_()
    W = randn(g, l, d).requires_grad_()
    pairwise = B * l * T1 * T2  # [B,l,T1,T2] = 525; the largest input is B*T2*d = 273
    assert _largest_saved(lambda: K.maxpool_match(p, q, W, backend="triton")) < pairwise
    assert _largest_saved(lambda: K.maxpool_match(p, q, W, backend="torch")) >= pairwise  # can fail


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_attentive_saves_nothing_btd(mode):
    g, _ = fresh()
    B, T1, T2, d, l = 3, 5, 7, 13, 5
    p, q = randn(g, B, T1, d).requires_grad_(), randn(g, B, T2, d).requires_grad_()
    W = randn(g, l, d).requires_grad_()
    largest = _largest_saved(lambda: K.attentive_match(p, q, W, mode=mode, backend="triton"))
    assert largest <= max(B * T1 * T2, B * max(T1, T2) * d)  # α and the inputs, never [B,T1,T2,d]


# --------------------------------------------------------------------------- real-GPU compilation


def test_all_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter accepts constructs the GPU compiler rejects: compile every kernel to a
    cubin (ptxas ships with Triton) in a subprocess without TRITON_INTERPRET."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "stackft.kernels.compile_check", "--arch", "90"],
                         env=env, capture_output=True, text=True, timeout=600)
    if "No module named" in res.stderr or "ptxas" in res.stderr and "not found" in res.stderr:
        pytest.skip("no Triton CUDA backend/ptxas: " + res.stderr[-300:])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("ok ") == 20
