"""The packed GEMM micro-kernels of the C++ highway-LSTM layer (``csrc/packed_gemm.cpp``).

Reached through ``highway_lstm_cpp.mm(a, b, "packed-avx512" | "packed-avx2")`` and compared with the
float64 product of the same fp32 inputs: sizes on both sides of every block edge (row blocks of at most
8 (AVX-512) or 6 (AVX2) rows, split evenly; 64-row chunks; 32-column panels, their 16-lane halves and
the AVX2 kernel's 8-lane quarters; 256-deep K blocks), operands that are transposed (A is then packed
first), sliced or strided views, an empty sum, and the oneDNN / at::mm paths on the same inputs. Each
ISA is skipped where the CPU cannot run it; the module without the extension.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close, fresh

from stackft import _ext
from stackft.kernels.ops import highway_lstm_cpp as C

if _ext.disabled() or _ext.load() is None:
    pytest.skip("the stackft_C extension is disabled or does not build here", allow_module_level=True)


def _can_run(backend: str) -> bool:
    try:
        C.mm(torch.ones(1, 1), torch.ones(1, 1), backend)
        return True
    except RuntimeError as e:
        assert "cannot run" in str(e), e
        return False


PACKED = [pytest.param(b, marks=pytest.mark.skipif(not _can_run(b), reason=f"this CPU cannot run {b}"))
          for b in ("packed-avx512", "packed-avx2")]


def _check(a, b, seed, backend="packed", repeat=1):
    out = C.mm(a, b, backend, repeat)
    assert out.shape == (a.shape[0], b.shape[1]) and out.dtype == torch.float32
    ref = a.double() @ b.double()
    # a K-term sum: compare relative to the largest entry (the error grows with K, not with each entry)
    assert_close(out, ref, torch.float32, scale="max", msg=lambda m: f"seed {seed}, {backend} {tuple(a.shape)}"
                 f"x{tuple(b.shape)}: {m}")


@pytest.mark.parametrize("backend", PACKED)
@pytest.mark.parametrize("M", [1, 6, 7, 8, 9, 65, 130])
@pytest.mark.parametrize("N", [1, 8, 9, 16, 17, 32, 33, 100])
@pytest.mark.parametrize("K", [1, 5, 256, 300])
def test_packed_matches_float64_product(backend, M, N, K):
    g, seed = fresh()
    _check(torch.randn(M, K, generator=g), torch.randn(K, N, generator=g), seed, backend)


@pytest.mark.parametrize("backend", PACKED)
@pytest.mark.parametrize("M", [2, 7, 65, 130])
@pytest.mark.parametrize("N", [9, 33, 100])
@pytest.mark.parametrize("K", [5, 300])
def test_transposed_a_is_packed_and_matches_float64_product(backend, M, N, K):
    """A read across rows (a transposed view, as the layer's weight gradients dGᵀ @ x): the kernel packs each
    64-row chunk's K block first. M over several chunks and uneven row blocks, K over two 256-deep blocks."""
    g, seed = fresh()
    a = torch.randn(K, M, generator=g).t()
    assert a.stride(1) != 1
    _check(a, torch.randn(K, N, generator=g), seed, backend)
    _check(a, torch.randn(K, N, generator=g), seed, backend, repeat=2)


@pytest.mark.parametrize("backend", PACKED)
def test_strided_and_transposed_operands(backend):
    """A read through element strides: a transposed view (the layer's dGᵀ), a row-strided view (one step of
    [B, T, H]); B packed from a transposed view (W_xᵀ) and from a column slice."""
    g, seed = fresh()
    big = torch.randn(40, 7, 90, generator=g)
    cases = [
        (torch.randn(300, 45, generator=g).t(), torch.randn(300, 37, generator=g)),  # A = Xᵀ, K = 300
        (big[:, 3, :], torch.randn(90, 70, generator=g)),  # rows 7·90 apart
        (torch.randn(33, 20, generator=g), torch.randn(50, 20, generator=g).t()),  # B = Wᵀ
        (torch.randn(9, 31, generator=g), torch.randn(31, 80, generator=g)[:, 5:66]),  # B a column slice
        (torch.randn(12, 40, generator=g)[::2, ::3], torch.randn(14, 19, generator=g)[:, ::2]),  # both strided
    ]
    for a, b in cases:
        assert not (a.is_contiguous() and b.is_contiguous())
        _check(a, b, seed, backend)


@pytest.mark.parametrize("backend", PACKED)
def test_accumulated_k_blocks_and_repeat(backend):
    """K over three 256-deep blocks (the second and third accumulate into C), B packed once, run 3 times."""
    g, seed = fresh()
    a, b = torch.randn(32, 700, generator=g)[:, :650], torch.randn(650, 70, generator=g)
    _check(a, b, seed, backend, repeat=3)


def test_packed_is_the_best_micro_kernel_and_other_backends_agree():
    g, seed = fresh()
    a, b = torch.randn(32, 256, generator=g)[:, :250], torch.randn(250, 70, generator=g)
    runnable = [b_ for b_ in ("packed-avx512", "packed-avx2") if _can_run(b_)]
    if not runnable:
        with pytest.raises(RuntimeError, match="cannot run"):
            C.mm(a, b, "packed")
    else:  # "packed" is the first runnable one: bitwise the same product
        assert torch.equal(C.mm(a, b, "packed"), C.mm(a, b, runnable[0]))
    for backend in ("mm", "onednn"):
        try:
            _check(a, b, seed, backend)
        except RuntimeError as e:  # oneDNN's matmul is looked up at run time and may be absent
            assert "oneDNN" in str(e) and backend == "onednn"


@pytest.mark.parametrize("backend", PACKED)
def test_empty_sum_is_zero(backend):
    out = C.mm(torch.randn(5, 0), torch.randn(0, 40), backend)
    assert out.shape == (5, 40) and not out.any()


def test_bad_input_raises():
    with pytest.raises(TypeError, match="float32"):
        C.mm(torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[M, K\]"):
        C.mm(torch.randn(3, 4), torch.randn(5, 6))
    with pytest.raises(ValueError, match="backend"):
        C.mm(torch.randn(3, 4), torch.randn(4, 5), "blas")
