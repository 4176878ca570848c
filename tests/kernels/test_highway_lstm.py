"""Triton highway-LSTM cell and layer vs the references (forward and gradients).

Tolerances are the suite's one table, ``helpers.TOL``: every dtype is compared with the fp32
reference evaluated on the same (for bf16: bf16-rounded) inputs, outputs element-wise and gradients
relative to their largest magnitude (the layer sums weight gradients over B·T terms). Inputs come
from the per-test seed (conftest); the generator's seed is in the failure message.
"""


import pytest
import torch
from helpers import assert_close, fresh

import stackft.kernels as K
from stackft.kernels import reference as R
from stackft.kernels.ops import highway_lstm as HL

DEV = "cuda" if torch.cuda.is_available() else "cpu"


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
    out_r, g_r, _ = run(fn_ref, [x.float() if x.is_floating_point() else x for x in low], grads)
    for n, (a, b) in enumerate(zip(out_t, out_r)):
        assert a.dtype == dtype
        assert_close(a, b, dtype, msg=lambda m: f"seed {seed}, output {n}: {m}")
    for n, (a, b) in enumerate(zip(g_t, g_r)):
        assert_close(a, b, dtype, scale="max", msg=lambda m: f"seed {seed}, grad of input {n}: {m}")


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
        assert_close(a, r_, msg=lambda m: f"seed {seed}: {m}")
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
        assert_close(out[:, t], h, msg=lambda m: f"seed {seed}: {m}")
    assert_close(c_n, c)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_auto_on_cpu_tensors_is_the_reference(monkeypatch):
    if DEV == "cuda":
        pytest.skip("auto picks Triton on CUDA")
    # without the C++ extension (with it, auto is the C++ layer: tests/kernels/test_highway_lstm_cpp.py)
    monkeypatch.setenv("STACKFT_NO_EXT", "1")
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
