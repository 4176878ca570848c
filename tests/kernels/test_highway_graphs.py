"""CUDA-graph path of the Triton highway-LSTM layer (kernels/ops/highway_lstm.py).

CPU: the bucketing, the cache key, when the graph path is refused (so CPU behaviour never changes)
and the LRU cache. CUDA (marked ``cuda``): graph path vs the per-step loop, values and gradients,
on bucketed and unbucketed shapes; cache hits; fewer host-side launches; use from another stream.
"""

import os

import pytest
import torch
from helpers import assert_close, fresh

from stackft.kernels.ops import highway_lstm as HL

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# --------------------------------------------------------------------------- CPU: keys and refusals


def test_bucket_rounds_up():
    assert [HL.bucket(n, 16) for n in (0, 1, 15, 16, 17, 128, 129)] == [0, 16, 16, 16, 32, 128, 144]
    assert [HL.bucket(n, 8) for n in (1, 8, 9, 64)] == [8, 8, 16, 64]


def test_graph_key_buckets_shapes_and_separates_everything_else():
    k = lambda **kw: HL.graph_key(**{**dict(kind="fwd", B=30, T=100, H=64, dtype=torch.float32,  # noqa: E731
                                            device="cuda:0", reverse=False, has_drop=True), **kw})
    assert k() == k(T=112) == k(T=97) == k(B=32) == k(B=25)  # T -> 112, B -> 32
    assert k() != k(T=113) and k() != k(B=33)
    assert len({k(), k(H=65), k(dtype=torch.bfloat16), k(device="cuda:1"), k(reverse=True), k(has_drop=False),
                k(kind="bwd", has_gout=True), k(kind="bwd", has_gout=False)}) == 8
    assert k(kind="bwd", has_gout=True)[1:3] == (32, 112)
    with pytest.raises(ValueError, match="kind"):
        k(kind="side")


def test_graphs_refused_on_cpu_interpreter_env_and_opt_out(monkeypatch):
    assert HL.graphs_usable("cpu", 4, 8) == "cpu tensors"
    assert HL.graphs_usable("cuda", 4, 8, graphs=False) == "graphs=False"
    monkeypatch.setenv("STACKFT_HIGHWAY_GRAPHS", "0")
    assert "STACKFT_HIGHWAY_GRAPHS" in HL.graphs_usable("cuda", 4, 8)
    monkeypatch.delenv("STACKFT_HIGHWAY_GRAPHS")
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert "interpreter" in HL.graphs_usable("cuda", 4, 8)
    elif torch.cuda.is_available():
        assert HL.graphs_usable("cuda", 4, 8) is None
        assert HL.graphs_usable("cuda", 0, 8) == "empty input"


def test_cache_lru_and_failed_builds_are_remembered():
    c = HL._GraphCache(max_entries=2, max_bytes=10**9)
    built = []
    mk = lambda key: lambda: built.append(key) or f"entry-{key}"  # noqa: E731
    assert c.get("a", mk("a")) == "entry-a" and c.get("b", mk("b")) == "entry-b"
    assert c.get("a", mk("a")) == "entry-a"  # hit: not rebuilt, "a" becomes the newest
    c.get("c", mk("c"))  # evicts "b", the least recently used
    assert built == ["a", "b", "c"] and c.keys() == ["a", "c"] and c.builds == 3

    def boom():
        raise RuntimeError("capture unsupported")

    with pytest.warns(RuntimeWarning, match="capture failed"):
        assert c.get("d", boom) is None
    assert c.get("d", mk("d")) is None and "d" not in built  # never retried
    assert "capture unsupported" in c.failed["d"]
    c.clear()
    assert c.keys() == [] and c.failed == {}


def test_cache_byte_bound_evicts_and_refuses_oversized_shapes():
    class E:
        def __init__(self, n):
            self.nbytes = n

    c = HL._GraphCache(max_entries=10, max_bytes=100)
    c.get("a", lambda: E(60), 60)
    c.get("b", lambda: E(30), 30)
    assert c.keys() == ["a", "b"] and c.nbytes == 90
    c.get("c", lambda: E(50), 50)  # 140 > 100: the least recently used goes first
    assert c.keys() == ["b", "c"] and c.nbytes == 80
    assert c.get("huge", lambda: E(101), 101) is None and "huge" not in c.keys() and "huge" not in c.failed


def test_static_bytes_matches_the_buffers_it_counts(monkeypatch):
    monkeypatch.setattr(HL._Entry, "_build", lambda self, device: None)  # no capture: count the buffers only
    for kind, has_gout in (("fwd", None), ("bwd", True), ("bwd", False)):
        for has_drop in (True, False):
            key = HL.graph_key(kind, 5, 20, 12, torch.float32, "cpu", False, has_drop, has_gout)
            extra = () if kind == "fwd" else (has_gout,)
            entry = (HL._FwdGraph if kind == "fwd" else HL._BwdGraph)(key[1], key[2], 12, torch.float32, "cpu",
                                                                      False, has_drop, *extra)
            assert entry.nbytes == HL.static_bytes(key), (kind, has_drop, has_gout, entry.nbytes, HL.static_bytes(key))


def test_cpu_layer_takes_the_loop_and_builds_no_graph():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on CPU tensors needs the interpreter (on a GPU machine the CUDA tests cover this)")
    g, _ = fresh()
    B, T, n_in, H = 3, 5, 4, 6
    x, W_x = torch.randn(B, T, n_in, generator=g), torch.randn(6 * H, n_in, generator=g) * 0.4
    W_h, b = torch.randn(5 * H, H, generator=g) * 0.4, torch.randn(5 * H, generator=g) * 0.1
    lengths = torch.tensor([5, 2, 4])
    builds = HL._GRAPHS.builds
    a = HL.highway_lstm(x, lengths, W_x, W_h, b)
    r = HL.highway_lstm(x, lengths, W_x, W_h, b, graphs=False)
    assert HL._GRAPHS.builds == builds
    for u, v in zip((a[0], *a[1]), (r[0], *r[1])):
        assert torch.equal(u, v)


class _ReplayEager:
    """Stands in for a captured CUDA graph: replay() runs the captured function again."""

    def __init__(self, run):
        self.run = run
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.run()


@pytest.mark.parametrize("B, T, drop_on, reverse", [(3, 5, True, False), (3, 5, True, True), (4, 8, False, False)])
def test_graph_entries_on_cpu_with_a_fake_capture(monkeypatch, reverse, B, T, drop_on):
    """The graph path's static buffers, bucket padding, copies in/out and in-place backward, run by
    the interpreter on CPU: a fake capture replays the same loop eagerly. Must equal the loop path.
    Buckets of 4 keep the interpreter's step count small: (3, 5) pads to (4, 8), (4, 8) does not pad."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("drives the entries on CPU tensors through the Triton interpreter")
    monkeypatch.setattr(HL, "T_BUCKET", 4)
    monkeypatch.setattr(HL, "B_BUCKET", 4)
    monkeypatch.setattr(HL, "_capture", _ReplayEager)
    monkeypatch.setattr(HL, "graphs_usable", lambda device, B, T, graphs=None: None if graphs is None else "off")
    monkeypatch.setattr(HL, "_GRAPHS", HL._GraphCache(max_entries=4))
    g, seed = fresh()
    inputs, drop, lengths = _inputs(g, B, T, 5, 7, torch.float32, dev="cpu")
    drop = drop if drop_on else None
    want_out, want_g = _run(inputs, drop, lengths, reverse, graphs=False)
    got_out, got_g = _run(inputs, drop, lengths, reverse, graphs=None)
    keys = HL._GRAPHS.keys()
    assert [k[0] for k in keys] == ["fwd", "bwd"] and keys[0][1:3] == (HL.bucket(B, 4), HL.bucket(T, 4))
    # a second call with other data through the same (already used) buffers: stale contents must not leak
    inputs2, drop2, lengths2 = _inputs(g, B, T, 5, 7, torch.float32, dev="cpu")
    drop2 = drop2 if drop_on else None
    want2 = _run(inputs2, drop2, lengths2, reverse, graphs=False)
    got2 = _run(inputs2, drop2, lengths2, reverse, graphs=None)
    assert len(HL._GRAPHS.keys()) == 2 and HL._GRAPHS.builds == 2
    for n, (a, w) in enumerate(zip(got_out + got_g + got2[0] + got2[1], want_out + want_g + want2[0] + want2[1])):
        assert a.shape == w.shape
        assert_close(a, w, torch.float32, scale="max" if n % 9 >= 3 else None, msg=lambda m: f"seed {seed}, {n}: {m}")


# --------------------------------------------------------------------------- CUDA: graph vs loop


def _inputs(g, B, T, n_in, H, dtype, dev="cuda"):
    r = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(dev, dtype)  # noqa: E731
    drop = ((torch.rand(B, H, generator=g) > 0.25).float() / 0.75).to(dev, dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return [r(B, T, n_in), r(6 * H, n_in, scale=n_in ** -0.5), r(5 * H, H, scale=H ** -0.5), r(5 * H, scale=0.1),
            r(B, H), r(B, H)], drop, lengths.to(dev)


def _run(inputs, drop, lengths, reverse, graphs, out_grad=True):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    x, W_x, W_h, b, h0, c0 = leaves
    out, (h, c) = HL.highway_lstm(x, lengths, W_x, W_h, b, h0, c0, reverse=reverse, dropout_mask=drop,
                                  graphs=graphs)
    g = torch.Generator(device="cpu").manual_seed(7)
    parts = [(h.float() * torch.randn(h.shape, generator=g).to(h.device)).sum(),
             (c.float() * torch.randn(c.shape, generator=g).to(c.device)).sum()]
    if out_grad:
        parts.append((out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum())
    grads = torch.autograd.grad(sum(parts), leaves)
    return [out.detach(), h.detach(), c.detach()], list(grads)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("B, T, H, drop_on, out_grad", [
    (16, 32, 64, True, True),  # on the buckets: no padding
    (13, 37, 96, True, True),  # padded rows and steps
    (5, 130, 384, False, True),
    (9, 20, 768, True, False),  # no output gradient (only h_n, c_n used)
])
def test_graph_path_matches_loop(dtype, reverse, B, T, H, drop_on, out_grad):
    g, seed = fresh()
    inputs, drop, lengths = _inputs(g, B, T, 48, H, dtype)
    drop = drop if drop_on else None
    HL.clear_graphs()  # an earlier test may have built these keys
    builds = HL._GRAPHS.builds
    want_out, want_g = _run(inputs, drop, lengths, reverse, graphs=False, out_grad=out_grad)
    assert HL._GRAPHS.builds == builds  # graphs=False never builds
    got_out, got_g = _run(inputs, drop, lengths, reverse, graphs=None, out_grad=out_grad)
    assert HL._GRAPHS.builds == builds + 2  # one forward and one backward graph
    again_out, again_g = _run(inputs, drop, lengths, reverse, graphs=None, out_grad=out_grad)
    assert HL._GRAPHS.builds == builds + 2  # cache hit: replayed, not recaptured
    for n, (a, w, a2) in enumerate(zip(got_out + got_g, want_out + want_g, again_out + again_g)):
        msg = lambda m: f"seed {seed}, item {n}: {m}"  # noqa: E731
        assert a.shape == w.shape and a.dtype == w.dtype, msg("shape/dtype")
        assert torch.equal(a, a2), msg("two replays differ")
        # outputs element-wise, gradients relative to their largest magnitude (helpers.TOL)
        assert_close(a, w, dtype, scale="max" if n >= 3 else None, msg=msg)
    assert not torch.any(got_out[0][torch.arange(T, device="cuda")[None, :] >= lengths[:, None]])



def _launch_calls(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    names = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync",
             "cudaLaunchKernelExC", "cuLaunchKernelEx")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.count for e in prof.key_averages() if e.key in names)


@pytest.mark.cuda
@needs_cuda
def test_graph_path_launches_far_fewer_kernels():
    """Host-side launch calls (kernels, copies, graph launches) of one forward+backward, the loss
    and the input clones included: the loop issues 4T for the recurrences alone, the graph path
    replaces them by two graph launches and a few dozen copies."""
    g, _ = fresh()
    T = 128
    inputs, drop, lengths = _inputs(g, 32, T, 64, 128, torch.float32)
    for graphs in (False, None):  # warm: Triton JIT, cuBLAS, the captures
        _run(inputs, drop, lengths, False, graphs)
    loop = _launch_calls(lambda: _run(inputs, drop, lengths, False, False))
    graph = _launch_calls(lambda: _run(inputs, drop, lengths, False, None))
    # the loop's 2T cuBLAS launches are runtime calls the profiler always sees; its 2T Triton launches
    # (driver API, cuLaunchKernelEx) show up where CUPTI records driver calls: bounds that hold either way
    assert loop >= 2 * T, loop
    assert graph < loop - 1.5 * T, (graph, loop)



@pytest.mark.cuda
@needs_cuda
def test_graph_entry_used_from_another_stream():
    g, seed = fresh()
    inputs, drop, lengths = _inputs(g, 8, 16, 32, 64, torch.float32)
    loop = _run(inputs, drop, lengths, True, False)
    want = _run(inputs, drop, lengths, True, None)  # captured and replayed on the default stream
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = _run(inputs, drop, lengths, True, None)
    torch.cuda.current_stream().wait_stream(s)
    for n, (a, w, r) in enumerate(zip(got[0] + got[1], want[0] + want[1], loop[0] + loop[1])):
        assert torch.equal(a, w), f"seed {seed}, item {n}: replays on two streams differ"
        assert_close(a, r, torch.float32, scale="max" if n >= 3 else None, msg=lambda m: f"seed {seed}, {n}: {m}")
