"""``gather_pad``: ragged token features -> padded batch, as one op.

``gather_pad`` is registered as ``torch.ops.stackft.gather_pad`` through
``torch.library.custom_op`` with a fake (meta) implementation, so it traces under
``torch.compile``. The real implementation dispatches to the C++/CUDA extension
(``torch.ops.stackft_C.gather_pad``, see ``stackft._ext``) and otherwise to
:func:`gather_pad_fallback`, a vectorised pure-PyTorch version with identical results.

Device rule: the output lives on ``indices.device``. With a CUDA output, ``values``/``offsets``/
``scales`` may be on that GPU or in pinned host memory (the CUDA kernel reads pinned memory in
place; the fallback gathers on the host and copies only the gathered rows).

``max_len``: the padded length, when the caller knows the lengths (a host copy of the offsets).
Then the output shape needs no data: the fake impl returns ``[B, max_len, d]`` (no unbacked size
under ``torch.compile``) and the CUDA kernel makes no host sync (without it, one read of the
longest length per call). Every gathered length must be ``<= max_len``: the CPU kernel and the
fallback raise ValueError for a longer one; the CUDA kernel, which cannot raise without syncing,
truncates it and leaves the check to the caller (``STACKFT_GATHER_PAD_CHECK=1`` makes it sync and
raise; see ``csrc/gather_pad_cuda.cu``). A larger ``max_len`` pads.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from stackft import _ext

VALUE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)
OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_last = {"backend": None}


def check_args(values: Tensor, offsets: Tensor, indices: Tensor, scales: Optional[Tensor],
               out_dtype: torch.dtype, max_len: Optional[int] = None) -> None:
    """Shape/dtype checks (TypeError for dtypes, ValueError for shapes and missing scales).

    Data checks (index range, monotone offsets) need the data and run inside the kernels:
    IndexError for an index out of range, ValueError for offsets that are not non-decreasing
    within ``[0, N_tokens]`` on a gathered sequence.
    """
    if values.dtype not in VALUE_DTYPES:
        raise TypeError(f"gather_pad: values must be float32, float16, bfloat16 or int8, got {values.dtype}")
    if values.dim() != 2:
        raise ValueError(f"gather_pad: values must be 2-D [N_tokens, d], got {values.dim()}-D")
    if offsets.dtype != torch.int64:
        raise TypeError(f"gather_pad: offsets must be int64, got {offsets.dtype}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError("gather_pad: offsets must be 1-D [N + 1] with N >= 0")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"gather_pad: indices must be int32 or int64, got {indices.dtype}")
    if indices.dim() != 1:
        raise ValueError(f"gather_pad: indices must be 1-D [B], got {indices.dim()}-D")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"gather_pad: out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    if values.dtype == torch.int8:
        if scales is None:
            raise ValueError("gather_pad: int8 values need per-token scales [N_tokens] (float16)")
        if scales.dtype != torch.float16:
            raise TypeError(f"gather_pad: scales must be float16, got {scales.dtype}")
        if scales.dim() != 1 or scales.shape[0] != values.shape[0]:
            raise ValueError(f"gather_pad: scales must be 1-D [N_tokens] = [{values.shape[0]}], "
                             f"got {tuple(scales.shape)}")
    elif scales is not None:
        raise ValueError(f"gather_pad: scales only apply to int8 values (got {values.dtype} values)")
    if max_len is not None and not isinstance(max_len, torch.SymInt) and int(max_len) < 0:
        raise ValueError(f"gather_pad: max_len must be >= 0, got {max_len}")


def gather_pad_fallback(values: Tensor, offsets: Tensor, indices: Tensor,
                        scales: Optional[Tensor] = None,
                        out_dtype: torch.dtype = torch.float32,
                        max_len: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch ``gather_pad`` (a handful of vectorised ops, no per-row Python).

    Same results as the extension bit for bit: each element is converted to float32, multiplied
    by its token's scale (int8 only) and rounded once to ``out_dtype``. With ``max_len`` the
    output is ``max_len`` long and a longer gathered sequence raises ValueError (on a GPU this
    path syncs anyway: its boolean-mask scatter does).
    """
    check_args(values, offsets, indices, scales, out_dtype, max_len)
    out_dev = indices.device
    idx = indices.to(device=offsets.device, dtype=torch.int64)
    n_seqs, n_tokens, d = offsets.numel() - 1, values.shape[0], values.shape[1]
    B = idx.numel()
    if B and (bool(idx.min() < 0) or bool(idx.max() >= n_seqs)):
        bad = idx[(idx < 0) | (idx >= n_seqs)][0].item()
        raise IndexError(f"gather_pad: index {bad} is out of range for {n_seqs} sequences")
    starts, ends = offsets[idx], offsets[idx + 1]
    lens = ends - starts
    if B and bool(((starts < 0) | (lens < 0) | (ends > n_tokens)).any()):
        raise ValueError(f"gather_pad: offsets must be non-decreasing within [0, N_tokens={n_tokens}]")
    longest = int(lens.max()) if B else 0
    if max_len is not None and longest > max_len:
        raise ValueError(f"gather_pad: a gathered sequence has length {longest} > max_len={max_len}")
    T = longest if max_len is None else int(max_len)
    t = torch.arange(T, device=offsets.device)
    mask = t[None, :] < lens[:, None]
    rows = (starts[:, None] + t[None, :])[mask].to(values.device)
    x = values.index_select(0, rows).to(out_dev, non_blocking=True)
    if values.dtype == torch.int8:
        s = scales.index_select(0, rows.to(scales.device)).to(out_dev, non_blocking=True)
        x = x.float() * s.float()[:, None]
    out = torch.zeros(B, T, d, dtype=out_dtype, device=out_dev)
    mask = mask.to(out_dev)
    out[mask] = x.to(out_dtype)
    return out, mask


def _ext_can_run(values: Tensor, offsets: Tensor, indices: Tensor, scales: Optional[Tensor]) -> bool:
    info = _ext.load()
    if info is None:
        return False
    tensors = [values, offsets, indices] + ([scales] if scales is not None else [])
    if indices.device.type == "cpu":
        return all(t.device.type == "cpu" for t in tensors)
    if indices.device.type == "cuda" and info.with_cuda:
        return all(t.device == indices.device or (t.device.type == "cpu" and t.is_pinned())
                   for t in tensors)
    return False


def backend(device: str | torch.device = "cpu") -> str:
    """Which implementation a call with all inputs on ``device`` uses: "extension" or "fallback"."""
    info = _ext.load()
    dev = torch.device(device)
    if info is None or (dev.type == "cuda" and not info.with_cuda) or dev.type not in ("cpu", "cuda"):
        return "fallback"
    return "extension"


def last_backend() -> str | None:
    """The implementation the last eager ``gather_pad`` call in this process ran."""
    return _last["backend"]


@torch.library.custom_op("stackft::gather_pad", mutates_args=())
def _gather_pad_op(values: Tensor, offsets: Tensor, indices: Tensor, scales: Optional[Tensor],
                   out_dtype: torch.dtype, max_len: Optional[int] = None) -> tuple[Tensor, Tensor]:
    if _ext_can_run(values, offsets, indices, scales):
        _last["backend"] = "extension"
        return torch.ops.stackft_C.gather_pad(values, offsets, indices, scales, out_dtype, max_len)
    _last["backend"] = "fallback"
    return gather_pad_fallback(values, offsets, indices, scales, out_dtype, max_len)


@_gather_pad_op.register_fake
def _gather_pad_fake(values, offsets, indices, scales, out_dtype, max_len=None):
    # Tmax is max_len when given; else the longest gathered sequence: data-dependent, hence an
    # unbacked size.
    T = torch.library.get_ctx().new_dynamic_size() if max_len is None else max_len
    B, d = indices.shape[0], values.shape[1]
    padded = values.new_empty((B, T, d), dtype=out_dtype, device=indices.device)
    mask = values.new_empty((B, T), dtype=torch.bool, device=indices.device)
    return padded, mask


def gather_pad(values: Tensor, offsets: Tensor, indices: Tensor, scales: Optional[Tensor] = None,
               out_dtype: torch.dtype = torch.float32, max_len: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Gather sequences ``indices`` of a ragged store into a zero-padded batch.

    Args:
        values: ``[N_tokens, d]`` float32 / float16 / bfloat16 / int8, rows contiguous.
        offsets: ``[N + 1]`` int64; sequence ``i`` is rows ``offsets[i]:offsets[i+1]``.
        indices: ``[B]`` int32/int64 sequence ids (any order, repeats allowed); its device is
            the output device.
        scales: ``[N_tokens]`` float16 per-token scales, required for (and only for) int8:
            the value is ``q * scale``.
        out_dtype: float32, float16 or bfloat16.
        max_len: the padded length ``Tmax`` when the caller knows the lengths (>= every
            gathered length; see the module docstring): no host sync on CUDA, a static shape
            under ``torch.compile``. Default: the longest gathered length.

    Returns:
        ``(padded [B, Tmax, d] out_dtype, mask [B, Tmax] bool)`` with ``Tmax`` the longest
        gathered length (or ``max_len``); padded rows are zero and ``mask`` is False there.
    """
    check_args(values, offsets, indices, scales, out_dtype, max_len)
    if max_len is not None and not isinstance(max_len, torch.SymInt):
        max_len = int(max_len)
    plain = all(type(t) is Tensor for t in (values, offsets, indices))  # not fake/meta/subclass
    if plain and not torch.compiler.is_compiling() and _ext_can_run(values, offsets, indices, scales):
        # eager fast path: the custom_op's Python dispatch costs tens of µs per call, a sizeable
        # share of a ~250 µs CPU batch; under torch.compile the registered op (with its fake) runs
        _last["backend"] = "extension"
        return torch.ops.stackft_C.gather_pad(values, offsets, indices, scales, out_dtype, max_len)
    return _gather_pad_op(values, offsets, indices, scales, out_dtype, max_len)
