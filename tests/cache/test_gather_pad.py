"""gather_pad: C++ extension vs pure-PyTorch fallback vs a slices + pad_sequence reference.

Inputs come from the ``gen`` fixture (conftest: the per-test seed, named in a failure's report).
The extension is built once per machine into its cache dir (session fixture); a failed build
fails these tests unless STACKFT_NO_EXT is set.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from stackft import _ext
from stackft.cache import ops

VALUE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int8]


@pytest.fixture(scope="session")
def ext():
    if _ext.disabled():
        pytest.skip("STACKFT_NO_EXT is set")
    info = _ext.load()
    assert info is not None, f"extension build failed: {_ext.load_error()!r}"
    return info


def ragged(gen, value_dtype, n=40, d=None, max_len=12, p_empty=0.2):
    """Random store: (values [N_tokens, d], offsets [n+1], scales or None)."""
    if d is None:
        d = [1, 3, 37, 129, 384, 385][int(torch.randint(0, 6, (1,), generator=gen))]
    lens = torch.randint(1, max_len + 1, (n,), generator=gen)
    lens[torch.rand(n, generator=gen) < p_empty] = 0
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    offsets[1:] = lens.cumsum(0)
    total = int(offsets[-1])
    if value_dtype == torch.int8:
        values = torch.randint(-127, 128, (total, d), generator=gen).to(torch.int8)
        scales = (torch.rand(total, generator=gen) * 0.1).half()
    else:
        values = (torch.randn(total, d, generator=gen) * 3).to(value_dtype)
        scales = None
    return values, offsets, scales


def reference(values, offsets, indices, scales, out_dtype):
    """The obvious Python loop: slice each sequence, convert, pad_sequence."""
    seqs = []
    for i in indices.tolist():
        a, b = int(offsets[i]), int(offsets[i + 1])
        x = values[a:b]
        x = x.float() * scales[a:b].float()[:, None] if scales is not None else x
        seqs.append(x.to(out_dtype))
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    T = int(lens.max()) if len(seqs) else 0
    if T == 0:
        return torch.zeros(len(seqs), 0, values.shape[1], dtype=out_dtype), torch.zeros(len(seqs), 0, dtype=torch.bool)
    padded = pad_sequence(seqs, batch_first=True)
    return padded, torch.arange(T)[None, :] < lens[:, None]


def random_indices(gen, n, B, index_dtype):
    """Unsorted, with repeats, as a non-contiguous view."""
    base = torch.randint(0, n, (2 * B,), generator=gen)
    base[1] = base[0]  # at least one repeat
    idx = base.to(index_dtype)[::2]
    assert not idx.is_contiguous() or B <= 1
    return idx


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("value_dtype", VALUE_DTYPES)
def test_extension_fallback_reference_agree(ext, gen, value_dtype, out_dtype):
    values, offsets, scales = ragged(gen, value_dtype)
    for B, index_dtype in [(17, torch.int64), (5, torch.int32), (1, torch.int64)]:
        idx = random_indices(gen, len(offsets) - 1, B, index_dtype)
        want = reference(values, offsets, idx, scales, out_dtype)
        got = ops.gather_pad(values, offsets, idx, scales, out_dtype=out_dtype)
        assert ops.last_backend() == "extension"
        fb = ops.gather_pad_fallback(values, offsets, idx, scales, out_dtype=out_dtype)
        for name, (p, m) in {"extension": got, "fallback": fb}.items():
            assert p.dtype == out_dtype and m.dtype == torch.bool, name
            assert p.shape == want[0].shape and m.shape == want[1].shape, name
            assert torch.equal(m, want[1]), name
            # one rounding per element in every path -> bit-identical
            assert torch.equal(p, want[0]), f"{name}: max diff {(p.float() - want[0].float()).abs().max()}"


def test_int8_dequantisation(ext, gen):
    values, offsets, scales = ragged(gen, torch.int8, d=64, p_empty=0.0)
    idx = torch.arange(len(offsets) - 1)
    p, m = ops.gather_pad(values, offsets, idx, scales)
    for i in range(len(idx)):
        a, b = int(offsets[i]), int(offsets[i + 1])
        want = values[a:b].float() * scales[a:b].float()[:, None]
        assert torch.equal(p[i, : b - a], want)
        assert not p[i, b - a :].any() and not m[i, b - a :].any() and m[i, : b - a].all()


def test_empty_batch_and_all_empty_sequences(ext):
    values = torch.randn(4, 6).half()
    offsets = torch.tensor([0, 0, 4, 4])
    p, m = ops.gather_pad(values, offsets, torch.tensor([], dtype=torch.int64))
    assert p.shape == (0, 0, 6) and m.shape == (0, 0)
    p, m = ops.gather_pad(values, offsets, torch.tensor([0, 2, 0]))
    assert p.shape == (3, 0, 6) and m.shape == (3, 0)
    p, m = ops.gather_pad(values, offsets, torch.tensor([0, 1]))
    assert p.shape == (2, 4, 6) and not p[0].any() and torch.equal(p[1], values.float())


def test_padding_is_overwritten(ext, gen):
    # the kernel allocates with empty(): every padded element must be written as zero
    values, offsets, _ = ragged(gen, torch.float32, d=384, p_empty=0.3)
    for _ in range(3):
        idx = torch.randint(0, len(offsets) - 1, (32,), generator=gen)
        p, m = ops.gather_pad(values, offsets, idx)
        assert not p[~m].any()


def _raw_ext(values, offsets, indices, scales=None, out_dtype=torch.float32):
    return torch.ops.stackft_C.gather_pad(values, offsets, indices, scales, out_dtype)


@pytest.mark.parametrize("impl", ["op", "fallback", "raw_extension"])
def test_errors(ext, impl):
    fn = {"op": ops.gather_pad, "fallback": ops.gather_pad_fallback, "raw_extension": _raw_ext}[impl]
    v = torch.randn(6, 4)
    off = torch.tensor([0, 2, 2, 6])
    q = torch.zeros(6, 4, dtype=torch.int8)
    i = torch.tensor([0, 2])
    with pytest.raises(TypeError, match="values must be"):
        fn(v.double(), off, i)
    with pytest.raises(TypeError, match="offsets must be int64"):
        fn(v, off.int(), i)
    with pytest.raises(TypeError, match="indices must be"):
        fn(v, off, i.float())
    with pytest.raises(TypeError, match="out_dtype"):
        fn(v, off, i, None, torch.float64)
    with pytest.raises(ValueError, match="int8 values need per-token scales"):
        fn(q, off, i)
    with pytest.raises(TypeError, match="scales must be float16"):
        fn(q, off, i, torch.ones(6))
    with pytest.raises(ValueError, match=r"scales must be 1-D \[N_tokens\]"):
        fn(q, off, i, torch.ones(5).half())
    with pytest.raises(ValueError, match="scales only apply to int8"):
        fn(v, off, i, torch.ones(6).half())
    with pytest.raises(ValueError, match="2-D"):
        fn(v[0], off, i)
    with pytest.raises(IndexError, match="out of range"):
        fn(v, off, torch.tensor([0, 3]))
    with pytest.raises(IndexError, match="out of range"):
        fn(v, off, torch.tensor([-1]))
    with pytest.raises(ValueError, match="non-decreasing"):
        fn(v, torch.tensor([0, 4, 2, 6]), torch.tensor([1]))
    with pytest.raises(ValueError, match="non-decreasing"):
        fn(v, torch.tensor([0, 2, 2, 7]), torch.tensor([2]))  # runs past N_tokens


def test_opcheck_and_fake_shapes(ext, gen):
    values, offsets, scales = ragged(gen, torch.int8, d=8)
    idx = torch.randint(0, len(offsets) - 1, (5,), generator=gen)
    torch.library.opcheck(ops._gather_pad_op, (values, offsets, idx, scales, torch.float32))
    values, offsets, _ = ragged(gen, torch.bfloat16, d=5)
    torch.library.opcheck(ops._gather_pad_op, (values, offsets, idx, None, torch.bfloat16))

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        fv, fo, fi = (mode.from_tensor(t) for t in (values, offsets, idx))
        p, m = ops.gather_pad(fv, fo, fi, out_dtype=torch.float16)
    assert p.shape[0] == 5 and p.shape[2] == 5 and p.dtype == torch.float16
    assert m.shape[0] == 5 and m.dtype == torch.bool
    assert not isinstance(p.shape[1], int)  # Tmax is data-dependent: an unbacked symbol


def test_torch_compile_fullgraph(ext, gen):
    values, offsets, _ = ragged(gen, torch.float16, d=7)
    idx = torch.randint(0, len(offsets) - 1, (6,), generator=gen)

    def pooled(v, o, i):
        p, m = ops.gather_pad(v, o, i)
        return (p * m[..., None]).sum(1)

    compiled = torch.compile(pooled, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(values, offsets, idx), pooled(values, offsets, idx))


def test_forced_fallback(monkeypatch, gen):
    monkeypatch.setenv("STACKFT_NO_EXT", "1")
    assert ops.backend("cpu") == "fallback"
    values, offsets, scales = ragged(gen, torch.int8)
    idx = random_indices(gen, len(offsets) - 1, 9, torch.int64)
    p, m = ops.gather_pad(values, offsets, idx, scales)
    assert ops.last_backend() == "fallback"
    want = reference(values, offsets, idx, scales, torch.float32)
    assert torch.equal(p, want[0]) and torch.equal(m, want[1])


# -- max_len: the caller knows the lengths (no host sync on CUDA, a static shape under compile) --

def _max_len_impls():
    return {"op": ops.gather_pad, "fallback": ops.gather_pad_fallback,
            "raw_extension": lambda *a, max_len=None: torch.ops.stackft_C.gather_pad(*a, max_len)}


@pytest.mark.parametrize("impl", ["op", "fallback", "raw_extension"])
@pytest.mark.parametrize("value_dtype", VALUE_DTYPES)
def test_max_len_same_result_and_extra_padding(ext, gen, impl, value_dtype):
    fn = _max_len_impls()[impl]
    values, offsets, scales = ragged(gen, value_dtype, d=37)
    idx = random_indices(gen, len(offsets) - 1, 11, torch.int64)
    want = reference(values, offsets, idx, scales, torch.bfloat16)
    longest = want[0].shape[1]
    got = fn(values, offsets, idx, scales, torch.bfloat16, max_len=longest)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    p, m = fn(values, offsets, idx, scales, torch.bfloat16, max_len=longest + 5)  # larger: more padding
    assert p.shape == (11, longest + 5, 37) and m.shape == (11, longest + 5)
    assert torch.equal(p[:, :longest], want[0]) and torch.equal(m[:, :longest], want[1])
    assert not p[:, longest:].any() and not m[:, longest:].any()


@pytest.mark.parametrize("impl", ["op", "fallback", "raw_extension"])
def test_max_len_too_small_or_negative_raises(ext, impl):
    fn = _max_len_impls()[impl]
    v = torch.randn(6, 4)
    off = torch.tensor([0, 2, 2, 6])
    with pytest.raises(ValueError, match="max_len"):
        fn(v, off, torch.tensor([0, 2]), None, torch.float32, max_len=3)  # sequence 2 has 4 rows
    with pytest.raises(ValueError, match="max_len"):
        fn(v, off, torch.tensor([0]), None, torch.float32, max_len=-1)
    p, m = fn(v, off, torch.tensor([1, 1]), None, torch.float32, max_len=0)  # empty rows fit in 0
    assert p.shape == (2, 0, 4) and m.shape == (2, 0)
    p, m = fn(v, off, torch.tensor([], dtype=torch.int64), None, torch.float32, max_len=3)
    assert p.shape == (0, 3, 4) and m.shape == (0, 3)


def test_max_len_fake_shape_is_static(ext, gen):
    values, offsets, scales = ragged(gen, torch.int8, d=8)
    idx = torch.randint(0, len(offsets) - 1, (5,), generator=gen)
    T = int((offsets[idx + 1] - offsets[idx]).max())
    torch.library.opcheck(ops._gather_pad_op, (values, offsets, idx, scales, torch.float32, T + 2))

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        fv, fo, fi, fs = (mode.from_tensor(t) for t in (values, offsets, idx, scales))
        p, m = ops.gather_pad(fv, fo, fi, fs, out_dtype=torch.float16, max_len=T + 2)
    assert tuple(p.shape) == (5, T + 2, 8) and tuple(m.shape) == (5, T + 2)  # no unbacked size

    def pooled(v, o, i, s):
        p, m = ops.gather_pad(v, o, i, s, max_len=T)
        return (p * m[..., None]).sum(1)

    compiled = torch.compile(pooled, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(values, offsets, idx, scales), pooled(values, offsets, idx, scales))


def test_feature_cache_gather_passes_max_len_only_for_cuda(monkeypatch, gen):
    """On CPU, FeatureCache.gather leaves max_len out (the CPU kernel sizes the output itself)."""
    from stackft.cache import format as fmt

    seen = []
    real = fmt.gather_pad
    monkeypatch.setattr(fmt, "gather_pad", lambda *a, **k: seen.append(a[5:]) or real(*a, **k))
    seqs = [torch.randn(int(n), 6) for n in torch.randint(0, 9, (12,), generator=gen)]
    cache = fmt.FeatureCache.from_tensors(seqs, dtype="fp16")
    idx = torch.tensor([3, 1, 3])
    p, m = cache.gather(idx)
    assert seen == [(None,)]
    assert p.shape[1] == max(int(cache.lengths[i]) for i in idx)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("value_dtype", [torch.bfloat16, torch.int8])
def test_cuda_max_len_matches_and_does_not_sync(ext, gen, value_dtype, monkeypatch):
    values, offsets, scales = ragged(gen, value_dtype, d=768, max_len=130)
    idx = random_indices(gen, len(offsets) - 1, 33, torch.int64)
    want = ops.gather_pad(values, offsets, idx, scales, out_dtype=torch.bfloat16)
    T = want[0].shape[1]
    dev = [t.cuda() if t is not None else None for t in (values, offsets, scales)]
    pinned = [t.pin_memory() if t is not None else None for t in (values, offsets, scales)]
    ic = idx.cuda()
    for store in (dev, pinned):
        ops.gather_pad(store[0], store[1], ic, store[2], out_dtype=torch.bfloat16, max_len=T)  # warm
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = ops.gather_pad(store[0], store[1], ic, store[2], out_dtype=torch.bfloat16, max_len=T)
            big = ops.gather_pad(store[0], store[1], ic, store[2], out_dtype=torch.bfloat16, max_len=T + 3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert ops.last_backend() == "extension"
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
        assert big[0].shape[1] == T + 3 and not big[0][:, T:].any() and not big[1][:, T:].any()
        assert torch.equal(big[0][:, :T].cpu(), want[0])
    # without max_len the call syncs once (to read Tmax): the sync-debug mode sees it
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            ops.gather_pad(dev[0], dev[1], ic, dev[2], out_dtype=torch.bfloat16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # a too-small max_len is the caller's contract on CUDA: truncated, memory-safe; the check env raises
    short = ops.gather_pad(dev[0], dev[1], ic, dev[2], out_dtype=torch.bfloat16, max_len=T - 1)
    assert torch.equal(short[0].cpu(), want[0][:, : T - 1])
    monkeypatch.setenv("STACKFT_GATHER_PAD_CHECK", "1")
    with pytest.raises(ValueError, match="max_len"):
        ops.gather_pad(dev[0], dev[1], ic, dev[2], out_dtype=torch.bfloat16, max_len=T - 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_feature_cache_gather_does_not_sync(ext, gen):
    from stackft.cache.format import FeatureCache

    seqs = [torch.randn(int(n), 64) for n in torch.randint(1, 40, (50,), generator=gen)]
    cache = FeatureCache.from_tensors(seqs, dtype="int8")
    idx = torch.tensor([7, 3, 7, 0, 49])
    want = cache.gather(idx)
    for c in (cache, cache.pin_memory(), cache.to("cuda")):  # host (compact path), pinned, GPU store
        c.gather(idx, device="cuda")  # the first gather of a GPU store copies its lengths to the host once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            p, m = c.gather(idx, device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.equal(p.cpu(), want[0]) and torch.equal(m.cpu(), want[1])
    with pytest.raises(IndexError, match="out of range"):
        cache.to("cuda").gather(torch.tensor([50]), device="cuda")


def _run_py(code, env_extra, tmp_path):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_no_compiler_warns_once_and_falls_back(tmp_path):
    code = """
        import warnings
        import torch
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from stackft.cache import ops
            v = torch.randn(5, 3); o = torch.tensor([0, 2, 5])
            for _ in range(3):
                p, m = ops.gather_pad(v, o, torch.tensor([1, 0]))
        assert ops.last_backend() == "fallback", ops.last_backend()
        assert torch.equal(p[0], v[2:5]) and torch.equal(p[1, :2], v[:2]) and not p[1, 2:].any()
        msgs = [str(x.message) for x in w if "C++ extension could not be built" in str(x.message)]
        assert len(msgs) == 1, [str(x.message) for x in w]
        print("ok")
    """
    env = {"STACKFT_EXT_DIR": str(tmp_path / "ext"), "CXX": str(tmp_path / "no-such-compiler"),
           "STACKFT_NO_EXT": "", "STACKFT_EXT_VERBOSE": ""}
    r = _run_py(code, env, tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_build_key_tracks_sources_and_torch(monkeypatch, tmp_path):
    k1 = _ext.build_key(with_cuda=False)
    assert torch.__version__.replace("+", "_") in k1 and "-cpu-" in k1
    assert _ext.build_key(with_cuda=True) != k1
    srcs = []
    for p in _ext.sources():
        q = tmp_path / p.name
        q.write_bytes(p.read_bytes())
        srcs.append(q)
    monkeypatch.setattr(_ext, "sources", lambda: srcs)
    assert _ext.build_key(with_cuda=False) == k1
    srcs[0].write_bytes(srcs[0].read_bytes() + b"\n// edit\n")
    assert _ext.build_key(with_cuda=False) != k1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("value_dtype", VALUE_DTYPES)
def test_cuda_matches_cpu(ext, gen, value_dtype):
    values, offsets, scales = ragged(gen, value_dtype, d=768, max_len=130)
    idx = random_indices(gen, len(offsets) - 1, 33, torch.int64)
    want = ops.gather_pad(values, offsets, idx, scales, out_dtype=torch.bfloat16)
    dev = [t.cuda() if t is not None else None for t in (values, offsets, scales)]
    got = ops.gather_pad(dev[0], dev[1], idx.cuda(), dev[2], out_dtype=torch.bfloat16)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
    pinned = [t.pin_memory() if t is not None else None for t in (values, offsets, scales)]
    got = ops.gather_pad(pinned[0], pinned[1], idx.cuda(), pinned[2], out_dtype=torch.bfloat16)
    assert got[0].is_cuda and torch.equal(got[0].cpu(), want[0])
