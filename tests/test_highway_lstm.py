"""Triton highway-LSTM cell and layer vs the references (forward and gradients).

fp32 uses a tolerance table; bf16 uses flash-attention's rule against a float64 reference:
the Triton error may be at most 2x the bf16 reference's own error, plus an atol of 4 bf16 ulps of
the tensor's largest magnitude (at least 1e-2). The layer accumulates rounding over the time
steps and sums weight gradients over B·T terms, so a fixed table would be loose or flaky.
"""


import pytest
import torch

import stackft.kernels as K
from stackft.kernels import reference as R
from stackft.kernels.ops import highway_lstm as HL  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(fwd=(1e-5, 1e-4), bwd=(1e-4, 1e-3)), torch.bfloat16: dict(atol=1e-2, ulps=4)}


def fresh():
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return torch.Generator().manual_seed(seed), seed


def run(fn, inputs, grads=None):
    """fn(*inputs) -> tuple of outputs; returns outputs and grads w.r.t. every input."""
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    outs = fn(*inputs)
    if grads is None:
        grads = [torch.randn(o.shape, device=DEV) for o in outs]
    gs = torch.autograd.grad([o.float() for o in outs], inputs, grads)
    return [o.detach() for o in outs], list(gs), grads


def compare(fn_tri, fn_ref, inputs, dtype, seed):
    low = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
    out_t, g_t, grads = run(fn_tri, low)
    if dtype == torch.float32:
        out_r, g_r, _ = run(fn_ref, low, grads)
        for (a, b), kind in [(p, "fwd") for p in zip(out_t, out_r)] + [(p, "bwd") for p in zip(g_t, g_r)]:
            atol, rtol = TOL[dtype][kind]
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=lambda m: f"seed {seed}: {m}")
        return
    # bf16: |tri - ref64| <= 2 |ref_bf16 - ref64| + atol, elementwise maxima per tensor
    out_l, g_l, _ = run(fn_ref, low, grads)
    out_h, g_h, _ = run(fn_ref, [x.double() for x in low], [g.double() for g in grads])
    for n, (t, lo, hi) in enumerate(zip(out_t + g_t, out_l + g_l, out_h + g_h)):
        err_t = (t.double() - hi).abs().max().item()
        err_l = (lo.double() - hi).abs().max().item()
        assert t.dtype == torch.bfloat16 or n >= len(out_t)
        atol = max(TOL[dtype]["atol"], TOL[dtype]["ulps"] * 2.0**-8 * hi.abs().max().item())
        assert err_t <= 2 * err_l + atol, f"seed {seed}, tensor {n}: {err_t} vs ref {err_l}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cell_noncontiguous(dtype):
    g, seed = fresh()
    B, H = 3, 7
    big = torch.randn(B, 4, 6 * H, generator=g).to(DEV)
    xg = big[:, 2]  # a time slice of [B, T, 6H]: row stride 4*6H
    hg = torch.randn(5 * H, B, generator=g).to(DEV).t()  # column stride != 1
    c = torch.randn(B, H, generator=g).to(DEV)
    compare(lambda *a: HL.highway_lstm_cell(*a), R.highway_lstm_cell, [xg, hg, c], dtype, seed)
    compare(lambda *a: K.highway_lstm_cell(*a, backend="triton"), R.highway_lstm_cell, [xg, hg, c], dtype, seed)


def _layer(B, T, n_in, H, g):
    r = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEV)  # noqa: E731
    return [r(B, T, n_in), r(6 * H, n_in, scale=0.4), r(5 * H, H, scale=0.4), r(5 * H, scale=0.1),
            r(B, H), r(B, H), ((torch.rand(B, H, generator=g) > 0.25).float() / 0.75).to(DEV)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_ragged_dropout(reverse, dtype):
    g, seed = fresh()
    B, T, n_in, H = 4, 6, 5, 7
    inputs = _layer(B, T, n_in, H, g)
    lengths = torch.tensor([6, 1, 3, 6])  # CPU lengths, full and length-1 rows

    def f(backend):
        def fn(x, W_x, W_h, b, h0, c0, mask):
            out, (h, c) = K.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=reverse,
                                         dropout_mask=mask, backend=backend)
            return out, h, c
        return fn

    compare(f("triton"), f("torch"), inputs, dtype, seed)


def test_layer_defaults_match_reference_and_pad_outputs():
    g, seed = fresh()
    B, T, n_in, H = 3, 5, 4, 9
    x, W_x, W_h, b, *_ = _layer(B, T, n_in, H, g)
    lengths = torch.tensor([2, 5, 4], device=DEV)
    out, (h, c) = K.highway_lstm(x, lengths, W_x, W_h, b, backend="triton")
    ref, (hr, cr) = R.highway_lstm(x, lengths, W_x, W_h, b)
    for a, r_ in [(out, ref), (h, hr), (c, cr)]:
        torch.testing.assert_close(a, r_, atol=1e-5, rtol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    assert torch.all(out[0, 2:] == 0) and torch.all(out[2, 4:] == 0)
    torch.testing.assert_close(h[0], out[0, 1])  # h_n is the state at the last valid step


def test_layer_equals_loop_of_triton_cells():
    g, seed = fresh()
    B, T, n_in, H = 2, 4, 3, 5
    x, W_x, W_h, b, h0, c0, mask = _layer(B, T, n_in, H, g)
    out, (h_n, c_n) = K.highway_lstm(x, torch.tensor([T, T]), W_x, W_h, b, h0, c0, dropout_mask=mask,
                                     backend="triton")
    h, c = h0, c0
    for t in range(T):
        h, c = K.highway_lstm_cell(x[:, t] @ W_x.t(), h @ W_h.t() + b, c, backend="triton")
        h = h * mask
        torch.testing.assert_close(out[:, t], h, atol=1e-5, rtol=1e-4, msg=lambda m: f"seed {seed}: {m}")
    torch.testing.assert_close(c_n, c, atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_auto_on_cpu_tensors_is_the_reference():
    if DEV == "cuda":
        pytest.skip("auto picks Triton on CUDA")
    g, _ = fresh()
    x, W_x, W_h, b, h0, c0, mask = _layer(2, 3, 4, 5, g)
    lengths = torch.tensor([3, 2])
    a = K.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, dropout_mask=mask)
    r = R.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, dropout_mask=mask)
    torch.testing.assert_close(a[0], r[0], atol=0, rtol=0)


def test_public_name_stays_the_function_after_triton_dispatch():
    # the submodule kernels/highway_lstm.py shares the public function's name
    g, _ = fresh()
    x, W_x, W_h, b, *_ = _layer(1, 2, 3, 4, g)
    K.highway_lstm(x, torch.tensor([2]), W_x, W_h, b, backend="triton")
    assert callable(K.highway_lstm) and K.highway_lstm.__module__ == "stackft.kernels"
