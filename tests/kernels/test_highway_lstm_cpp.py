"""The C++ CPU highway-LSTM layer (``stackft.kernels.ops.highway_lstm_cpp``) vs the reference.

The op supports float64, so its outputs and the gradients of every input are compared with the
float64 reference at float64 tolerance; float32 and bf16 are compared with the fp32/float64
reference under the suite's ``helpers.TOL``. Shapes are odd (B=3, T=7, in=11, H=5: no SIMD chunk
is full; H=21: one full 16-lane chunk and a tail), lengths ragged with a length-1 row, a full
row and a length-0 row, both directions, with and without dropout mask and h0/c0, and
non-contiguous inputs. Every gate-math code path the CPU can run (base / avx2 / avx512) is
tested. The whole module is skipped, with the reason, when the extension does not build.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from helpers import assert_close, fresh

import stackft.kernels as K
from stackft import _ext
from stackft.kernels import _backend
from stackft.kernels import reference as R
from stackft.kernels.ops import highway_lstm_cpp as C


def _require_ext():
    if _ext.disabled():
        pytest.skip("STACKFT_NO_EXT is set", allow_module_level=True)
    if _ext.load() is None:
        pytest.skip(f"the stackft_C extension does not build here: {_ext.load_error()!r}", allow_module_level=True)


_require_ext()

ISAS = ["base", "avx2", "avx512"]


def _runnable(isa: str) -> bool:
    best = C.isa("auto")
    return ISAS.index(isa) <= ISAS.index(best)


@pytest.fixture
def isa(request):
    """Run the test under one gate-math code path, then restore the best one."""
    name = getattr(request, "param", "auto")
    if name != "auto" and not _runnable(name):
        pytest.skip(f"this CPU cannot run the {name} code path")
    C.isa(name)
    yield name
    C.isa("auto")


def _inputs(B, T, n_in, H, g, dtype=torch.float64):
    r = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g, dtype=torch.float64)).to(dtype)  # noqa: E731
    return dict(x=r(B, T, n_in), W_x=r(6 * H, n_in, scale=0.4), W_h=r(5 * H, H, scale=0.4), b=r(5 * H, scale=0.3),
                h0=r(B, H), c0=r(B, H),
                mask=((torch.rand(B, H, generator=g, dtype=torch.float64) > 0.25) / 0.75).to(dtype))


def _run(impl, a, lengths, reverse, use_mask, use_state, grads=None):
    """Outputs and the grads of every float input (x, W_x, W_h, b, h0, c0, mask) of one call."""
    names = ["x", "W_x", "W_h", "b"] + (["h0", "c0"] if use_state else []) + (["mask"] if use_mask else [])
    leaves = {k: a[k].detach().clone().requires_grad_(True) for k in names}
    kw = dict(h0=leaves.get("h0"), c0=leaves.get("c0"), reverse=reverse, dropout_mask=leaves.get("mask"))
    if impl == "ref":
        out, (h, c) = R.highway_lstm(leaves["x"], lengths, leaves["W_x"], leaves["W_h"], leaves["b"], **kw)
    else:
        out, (h, c) = K.highway_lstm(leaves["x"], lengths, leaves["W_x"], leaves["W_h"], leaves["b"], backend=impl,
                                     **kw)
    outs = [out, h, c]
    if grads is None:
        grads = [torch.randn(o.shape, dtype=torch.float64) for o in outs]
    gs = torch.autograd.grad([o.double() for o in outs], [leaves[k] for k in names], grads)
    return [o.detach() for o in outs], dict(zip(names, gs)), grads


def _compare(a, lengths, reverse, use_mask, use_state, dtype, seed, ref_dtype=torch.float64):
    low = {k: v.to(dtype) for k, v in a.items()}
    outs, gs, grads = _run("cpp", low, lengths, reverse, use_mask, use_state)
    ref_in = {k: v.to(ref_dtype) for k, v in low.items()}  # bf16: the same rounded inputs
    routs, rgs, _ = _run("ref", ref_in, lengths, reverse, use_mask, use_state, grads)
    for n, (o, r) in enumerate(zip(outs, routs)):
        assert o.dtype == dtype
        assert_close(o, r, dtype, msg=lambda m: f"seed {seed}, output {n}: {m}")
    for k in gs:
        assert gs[k].dtype == dtype
        assert_close(gs[k], rgs[k], dtype, scale="max", msg=lambda m: f"seed {seed}, grad of {k}: {m}")


LENGTHS = torch.tensor([7, 1, 0, 4])  # a full row, a length-1 row, an empty row, a middle one


@pytest.mark.parametrize("use_state", [False, True], ids=["zero-state", "h0c0"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_float64_matches_reference(reverse, use_mask, use_state):
    g, seed = fresh()
    a = _inputs(4, 7, 11, 5, g)
    _compare(a, LENGTHS, reverse, use_mask, use_state, torch.float64, seed)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("H", [5, 21])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_float32_matches_float64_reference(isa, H, reverse):
    g, seed = fresh()
    a = _inputs(3, 7, 11, H, g)
    _compare(a, torch.tensor([7, 1, 4]), reverse, True, True, torch.float32, seed)


def test_layer_runs_where_onednn_matmul_refuses_fp32():
    """torch's mkldnn_matmul raises on CPUs whose oneDNN lacks bf16 support, even for fp32 operands (every
    AVX2-only x86 CPU); the layer must then fall back to at::mm, not fail. Emulated in a fresh process with
    ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN reads it once, at its first use)."""
    import subprocess
    import sys

    code = (
        "import torch; from stackft.kernels.ops import highway_lstm_cpp as C\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(3, 5, 7, generator=g, requires_grad=True); L = torch.tensor([5, 2, 4])\n"
        "W_x = torch.randn(6 * 4, 7, generator=g, requires_grad=True); W_h = torch.randn(5 * 4, 4, generator=g)\n"
        "b = torch.randn(5 * 4, generator=g)\n"
        "out = C.highway_lstm(x, L, W_x, W_h, b)[0]; out.sum().backward()\n"
        "from stackft.kernels import reference as R\n"
        "ref = R.highway_lstm(x.double(), L, W_x.double(), W_h.double(), b.double())[0]\n"
        "print(C.gemm(), bool(torch.isfinite(x.grad).all()), float((out.double() - ref).abs().max()))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    gemm, finite, err = r.stdout.split()
    assert finite == "True" and float(err) < 1e-4, r.stdout
    with torch.backends.mkldnn.flags(enabled=True):
        here = C.mm(torch.ones(1, 1), torch.ones(1, 1), "onednn") if C.gemm() == "onednn" else None
    if here is not None:  # oneDNN's matmul runs in this process: AVX2 made it refuse, and the layer noticed
        assert gemm == "mm"


def test_float32_with_onednn_off_uses_at_mm_and_matches():
    """The large fp32 GEMMs run in oneDNN when torch has it; torch.backends.mkldnn off -> at::mm."""
    g, seed = fresh()
    a = _inputs(3, 7, 11, 21, g)
    with torch.backends.mkldnn.flags(enabled=False):
        assert C.gemm() == "mm"
        _compare(a, torch.tensor([7, 1, 4]), True, True, True, torch.float32, seed)
    assert C.gemm() in ("onednn", "mm")


@pytest.mark.parametrize("step_gemm", ["packed-avx512", "packed-avx2", "blas"])
def test_float32_step_gemms_packed_and_blas_match_float64_reference(step_gemm, monkeypatch):
    """The per-step GEMMs run in the packed AVX-512 or AVX2 micro-kernel (csrc/packed_gemm.cpp) or in BLAS.

    Shapes that reach the micro-kernels' edges inside the layer: 5H = 300 columns forward (9 full 32-column
    panels and a 12-column tail), H = 60 backward (a panel and a tail reaching into the second 16-lane half),
    B = 10 rows (AVX-512: a block of 8 and one of 2; AVX2: two of 5), a backward sum over 5H = 300 (two K blocks
    of at most 256), ragged lengths. (tests/kernels/test_packed_gemm.py tests the micro-kernels on their own.)
    """
    if step_gemm == "blas":
        monkeypatch.setenv("STACKFT_HL_PACKED", "0")
    else:
        isa = step_gemm.removeprefix("packed-")
        if not _runnable(isa):
            pytest.skip(f"this CPU cannot run the {isa} path")
        C.isa(isa)
        monkeypatch.delenv("STACKFT_HL_PACKED", raising=False)
    try:
        assert C.step_gemm() == step_gemm
        g, seed = fresh()
        a = _inputs(10, 23, 13, 60, g)
        lengths = torch.randint(1, 24, (10,), generator=g)
        lengths[0] = 23
        for reverse in (False, True):
            _compare(a, lengths, reverse, True, True, torch.float32, seed)
    finally:
        C.isa("auto")


def test_extension_is_built_with_openmp_when_torch_uses_it():
    """at::parallel_for is a header template: without -fopenmp its loops (gate math, packed GEMMs) run serially."""
    import sys

    if sys.platform != "linux" or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch runs no OpenMP here, or the platform's compiler has no -fopenmp")
    if os.environ.get("STACKFT_EXT_NO_OPENMP") == "1":
        pytest.skip("STACKFT_EXT_NO_OPENMP=1")
    assert "openmp=1" in _ext.load().info.split()


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_bfloat16_matches_fp32_reference_on_rounded_inputs(reverse):
    g, seed = fresh()
    a = _inputs(3, 6, 11, 21, g)
    _compare(a, torch.tensor([6, 1, 3]), reverse, True, True, torch.bfloat16, seed, ref_dtype=torch.float32)


def test_gradcheck_float64():
    g, _ = fresh()
    a = _inputs(3, 4, 3, 2, g)
    lengths = torch.tensor([4, 1, 2])
    leaves = [a[k].clone().requires_grad_(True) for k in ("x", "W_x", "W_h", "b", "h0", "c0", "mask")]

    def f(x, W_x, W_h, b, h0, c0, mask):
        out, (h, c) = C.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=True, dropout_mask=mask)
        return out, h, c

    assert torch.autograd.gradcheck(f, leaves)


def test_noncontiguous_inputs():
    g, seed = fresh()
    B, T, n_in, H = 3, 5, 7, 6
    a = _inputs(B, T, n_in, H, g, torch.float32)
    x = a["x"].transpose(0, 1).contiguous().transpose(0, 1)  # [B,T,in] with batch stride in
    W_x = a["W_x"].t().contiguous().t()  # column-major
    W_h = torch.cat([a["W_h"], a["W_h"]], 1)[:, ::2]  # column stride 2
    h0 = a["h0"].t().contiguous().t()
    mask = torch.stack([a["mask"], a["mask"]], -1)[..., 0]
    assert not any(t.is_contiguous() for t in (x, W_x, W_h, h0, mask))
    lengths = torch.tensor([5, 2, 1], dtype=torch.int32)
    out, (h, c) = K.highway_lstm(x, lengths, W_x, W_h, a["b"], h0, a["c0"], dropout_mask=mask, backend="cpp")
    ro, (rh, rc) = R.highway_lstm(x.double(), lengths, W_x.double(), W_h.double(), a["b"].double(), h0.double(),
                                  a["c0"].double(), dropout_mask=mask.double())
    for o, r in [(out, ro), (h, rh), (c, rc)]:
        assert_close(o, r, torch.float32, msg=lambda m: f"seed {seed}: {m}")


def test_padding_outputs_zero_and_final_state_is_last_valid_step():
    g, _ = fresh()
    a = _inputs(3, 5, 4, 9, g, torch.float32)
    lengths = torch.tensor([2, 5, 4])
    out, (h, c) = C.highway_lstm(a["x"], lengths, a["W_x"], a["W_h"], a["b"])
    assert torch.all(out[0, 2:] == 0) and torch.all(out[2, 4:] == 0)
    torch.testing.assert_close(h[0], out[0, 1], rtol=0, atol=0)
    rev, (hr, _) = C.highway_lstm(a["x"], lengths, a["W_x"], a["W_h"], a["b"], reverse=True)
    assert torch.all(rev[0, 2:] == 0)
    torch.testing.assert_close(hr, rev[:, 0], rtol=0, atol=0)  # reverse ends at t = 0


def test_frozen_input_and_weights_skip_their_grads():
    g, seed = fresh()
    a = _inputs(3, 7, 11, 5, g)
    lengths = torch.tensor([7, 1, 4])
    W_x = a["W_x"].clone().requires_grad_(True)
    out, _ = C.highway_lstm(a["x"], lengths, W_x, a["W_h"], a["b"])  # only W_x needs a grad
    (gw,) = torch.autograd.grad(out.sum(), [W_x])
    W_r = a["W_x"].clone().requires_grad_(True)
    ro, _ = R.highway_lstm(a["x"], lengths, W_r, a["W_h"], a["b"])
    (gr,) = torch.autograd.grad(ro.sum(), [W_r])
    assert_close(gw, gr, scale="max", msg=lambda m: f"seed {seed}: {m}")
    x = a["x"].clone().requires_grad_(True)  # only x: the weight GEMMs are skipped
    out, _ = C.highway_lstm(x, lengths, a["W_x"], a["W_h"], a["b"])
    (gx,) = torch.autograd.grad(out.sum(), [x])
    xr = a["x"].clone().requires_grad_(True)
    (gxr,) = torch.autograd.grad(R.highway_lstm(xr, lengths, a["W_x"], a["W_h"], a["b"])[0].sum(), [xr])
    assert_close(gx, gxr, scale="max", msg=lambda m: f"seed {seed}: {m}")


def test_backward_twice_with_retained_graph_is_the_same():
    g, _ = fresh()
    a = _inputs(3, 7, 11, 5, g, torch.float32)
    W = a["W_h"].clone().requires_grad_(True)
    out, (h, _) = C.highway_lstm(a["x"], torch.tensor([7, 1, 4]), a["W_x"], W, a["b"], dropout_mask=a["mask"])
    loss = out.sum() + h.square().sum()
    (g1,) = torch.autograd.grad(loss, [W], retain_graph=True)
    (g2,) = torch.autograd.grad(loss, [W])
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_fake_impl_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    B, T, n_in, H = 3, 7, 11, 5
    with FakeTensorMode():
        x = torch.empty(B, T, n_in)
        W_x, W_h, b = torch.empty(6 * H, n_in), torch.empty(5 * H, H), torch.empty(5 * H)
        outs = torch.ops.stackft.highway_lstm_layer(x, torch.zeros(B, dtype=torch.long), W_x, W_h, b, None, None,
                                                    None, False)
        assert [tuple(o.shape) for o in outs] == [(B, T, H), (B, H), (B, H), (B, T, 6 * H), (B, T, H), (B, T, H)]
        xb = torch.empty(B, T, n_in, dtype=torch.bfloat16)
        outs = torch.ops.stackft.highway_lstm_layer(xb, torch.zeros(B, dtype=torch.long), W_x.bfloat16(),
                                                    W_h.bfloat16(), b.bfloat16(), None, None, None, True)
        assert [o.dtype for o in outs] == [torch.bfloat16] * 3 + [torch.float32, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("with_optional", [False, True], ids=["minimal", "h0c0-dropout"])
def test_opcheck(with_optional):
    g, _ = fresh()
    a = _inputs(2, 4, 3, 5, g, torch.float32)
    opt = [a["h0"], a["c0"], a["mask"]] if with_optional else [None, None, None]
    args = (a["x"].requires_grad_(True), torch.tensor([4, 2]), a["W_x"].requires_grad_(True),
            a["W_h"].requires_grad_(True), a["b"].requires_grad_(True), *opt, with_optional)
    torch.library.opcheck(torch.ops.stackft.highway_lstm_layer.default, args)


def test_parallel_gate_math_matches_reference(tmp_path):
    """Two threads and one batch row per task (STACKFT_HL_GRAIN=1, read once per process: a subprocess)."""
    import subprocess
    import sys

    code = """
import torch
torch.set_num_threads(2)
from stackft.kernels import reference as R
from stackft.kernels.ops import highway_lstm_cpp as C
g = torch.Generator().manual_seed(0)
B, T, n_in, H = 6, 5, 7, 21
r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
x, Wx, Wh, b = r(B, T, n_in), 0.4 * r(6 * H, n_in), 0.4 * r(5 * H, H), 0.3 * r(5 * H)
lengths = torch.tensor([5, 1, 0, 3, 5, 2])
for reverse in (False, True):
    leaves = [t.clone().requires_grad_(True) for t in (x, Wx, Wh, b)]
    out, (h, c) = C.highway_lstm(leaves[0], lengths, *leaves[1:], reverse=reverse)
    ga = torch.autograd.grad(out.sum() + h.sum() + c.sum(), leaves)
    ref = [t.clone().requires_grad_(True) for t in (x, Wx, Wh, b)]
    ro, (rh, rc) = R.highway_lstm(ref[0], lengths, *ref[1:], reverse=reverse)
    gr = torch.autograd.grad(ro.sum() + rh.sum() + rc.sum(), ref)
    for a_, b_ in zip([out, h, c, *ga], [ro, rh, rc, *gr]):
        torch.testing.assert_close(a_, b_, rtol=1e-9, atol=1e-9)
print("ok")
"""
    env = dict(os.environ, STACKFT_HL_GRAIN="1", OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# --------------------------------------------------------------------------- dispatch


def test_auto_on_cpu_is_the_cpp_layer():
    g, _ = fresh()
    a = _inputs(2, 3, 4, 5, g, torch.float32)
    lengths = torch.tensor([3, 2])
    args = (a["x"], lengths, a["W_x"], a["W_h"], a["b"], a["h0"], a["c0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        auto = K.highway_lstm(*args, dropout_mask=a["mask"])
    cpp = C.highway_lstm(*args, dropout_mask=a["mask"])
    torch.testing.assert_close(auto[0], cpp[0], rtol=0, atol=0)
    assert _backend.resolve("auto", "highway_lstm", a["x"]) == "cpp"


def test_without_extension_auto_falls_back_once_and_cpp_raises(monkeypatch):
    monkeypatch.setenv("STACKFT_NO_EXT", "1")
    _backend._reset_warning()
    g, _ = fresh()
    a = _inputs(2, 3, 4, 5, g, torch.float32)
    args = (a["x"], torch.tensor([3, 2]), a["W_x"], a["W_h"], a["b"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = K.highway_lstm(*args)
        K.highway_lstm(*args, reverse=True)
    fallback = [w for w in rec if "instead of the C++ kernel" in str(w.message)]
    assert len(fallback) == 1 and "STACKFT_NO_EXT" in str(fallback[0].message)
    torch.testing.assert_close(out[0], R.highway_lstm(*args)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="backend='cpp'"):
        K.highway_lstm(*args, backend="cpp")
    _backend._reset_warning()


def test_float16_auto_uses_the_reference():
    _backend._reset_warning()
    g, _ = fresh()
    a = _inputs(2, 3, 4, 5, g, torch.float16)
    with pytest.warns(RuntimeWarning, match="float16"):
        assert _backend.resolve("auto", "highway_lstm", a["x"]) == "torch"
    with pytest.raises(RuntimeError, match="float16"):
        _backend.resolve("cpp", "highway_lstm", a["x"])
    _backend._reset_warning()


def test_head_with_cpp_layer_matches_reference_head(monkeypatch):
    import stackft.modeling.heads.highway_lstm as module
    from stackft.modeling.heads import build_head

    torch.manual_seed(0)
    head = build_head("highway-lstm", 12, 3, level="sequence", lstm_hidden=7, dropout=0.0)
    feats = {"hidden": torch.randn(3, 6, 12), "mask": torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] * 5 + [0]]).bool()}

    def run():
        head.zero_grad()
        logits = head(feats)
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in head.parameters()]

    cpp_logits, cpp_grads = run()
    real = module.highway_lstm
    monkeypatch.setattr(module, "highway_lstm", lambda *a, **k: real(*a, **k, backend="torch"))
    ref_logits, ref_grads = run()
    assert_close(cpp_logits, ref_logits)
    for gc, gr in zip(cpp_grads, ref_grads):
        assert_close(gc, gr, scale="max")
