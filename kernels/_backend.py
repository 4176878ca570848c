"""Backend resolution for ``stackft.kernels``: ``backend="auto" | "triton" | "torch"``.

* ``"torch"``: the plain-PyTorch reference (:mod:`stackft.kernels.reference`).
* ``"triton"``: the Triton kernels, on CUDA tensors, or on CPU tensors when the Triton
  interpreter is on (``TRITON_INTERPRET=1`` set before the kernels are imported); this is how the
  tests run them without a GPU.
* ``"auto"``: Triton when every tensor is on CUDA, Triton imports, and we are not being traced by
  ``torch.compile``; the reference otherwise (apex-style fallback). The first fallback in a
  process emits one ``RuntimeWarning`` saying why.
"""

from __future__ import annotations

import os
import warnings

import torch

_BACKENDS = ("auto", "triton", "torch")
_warned = False
_triton_error: Exception | None = None
_triton_checked = False


def triton_available() -> bool:
    """True when ``import triton`` works (cached)."""
    global _triton_checked, _triton_error
    if not _triton_checked:
        _triton_checked = True
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install
            _triton_error = exc
    return _triton_error is None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _reset_warning() -> None:
    """Testing hook: forget that the fallback warning was already emitted."""
    global _warned
    _warned = False


def _fallback(op: str, reason: str) -> str:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"stackft.kernels.{op}: using the PyTorch reference instead of Triton ({reason}); "
            "this warning is shown once per process.",
            RuntimeWarning,
            stacklevel=4,
        )
    return "torch"


def resolve(backend: str, op: str, *tensors: torch.Tensor | None) -> str:
    """Return ``"triton"`` or ``"torch"`` for ``op`` called on ``tensors`` (None entries ignored)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    on_cuda = all(t.is_cuda for t in ts)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"backend='triton' requested but triton does not import: {_triton_error}")
        if not on_cuda and not interpreting():
            raise RuntimeError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before "
                "stackft.kernels is imported"
            )
        return "triton"
    if not triton_available():
        return _fallback(op, f"triton does not import: {_triton_error}")
    if not on_cuda:
        return _fallback(op, "inputs are not CUDA tensors")
    if torch.compiler.is_compiling():
        return _fallback(op, "traced by torch.compile")
    return "triton"
