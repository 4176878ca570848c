"""Backend resolution for ``stackft.kernels``: ``backend="auto" | "triton" | "cpp" | "torch"``.

* ``"torch"``: the plain-PyTorch reference (:mod:`stackft.kernels.reference`).
* ``"triton"``: the Triton kernels, on CUDA tensors, or on CPU tensors when the Triton
  interpreter is on (``TRITON_INTERPRET=1`` set before the kernels are imported); this is how the
  tests run them without a GPU.
* ``"cpp"``: the C++ CPU kernels of the ``stackft_C`` extension (:mod:`stackft._ext`), for the ops
  in :data:`CPP_OPS` (today ``highway_lstm``), on CPU tensors of a supported dtype.
* ``"auto"``: Triton when every tensor is on CUDA, Triton imports, and we are not being traced by
  ``torch.compile``; for a :data:`CPP_OPS` op on CPU tensors, the C++ kernel when the extension
  builds (also under ``torch.compile``, once the extension is loaded: it is a custom op with a
  fake); the reference otherwise (apex-style fallback). The first fallback in a process emits one
  ``RuntimeWarning`` saying why (one for the Triton fallback, one for the C++ fallback).
"""

from __future__ import annotations

import os
import warnings

import torch

_BACKENDS = ("auto", "triton", "cpp", "torch")
#: ops with a C++ CPU kernel in the extension, and the module that wraps it
CPP_OPS = {"highway_lstm": "stackft.kernels.ops.highway_lstm_cpp"}  # op -> the module wrapping its kernel
_warned = False
_warned_cpp = False
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
    """Testing hook: forget that the fallback warnings were already emitted."""
    global _warned, _warned_cpp
    _warned = _warned_cpp = False


def _cpp_fallback(op: str, reason: str) -> str:
    global _warned_cpp
    if not _warned_cpp:
        _warned_cpp = True
        warnings.warn(
            f"stackft.kernels.{op}: using the PyTorch reference instead of the C++ kernel ({reason}); "
            "this warning is shown once per process.",
            RuntimeWarning,
            stacklevel=4,
        )
    return "torch"


def cpp_unavailable(op: str, *tensors: torch.Tensor | None, build: bool = True) -> str | None:
    """Why ``op`` cannot run its C++ kernel on ``tensors`` (None: it can); ``build=False`` never
    builds the extension (only one already loaded counts), which is what tracing needs."""
    if op not in CPP_OPS:
        return f"{op} has no C++ kernel"
    from stackft.kernels.ops import highway_lstm_cpp

    return highway_lstm_cpp.unavailable_reason(*tensors, build=build)


def _fallback(op: str, reason: str) -> str:
    global _warned
    # without a GPU the reference is the only path there is: nothing was given up, nothing to warn about
    if not _warned and torch.cuda.is_available():
        _warned = True
        warnings.warn(
            f"stackft.kernels.{op}: using the PyTorch reference instead of Triton ({reason}); "
            "this warning is shown once per process.",
            RuntimeWarning,
            stacklevel=4,
        )
    return "torch"


def resolve(backend: str, op: str, *tensors: torch.Tensor | None) -> str:
    """Return ``"triton"``, ``"cpp"`` or ``"torch"`` for ``op`` called on ``tensors`` (None entries ignored)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    on_cuda = all(t.is_cuda for t in ts)
    if backend == "cpp":
        reason = cpp_unavailable(op, *ts)
        if reason is not None:
            raise RuntimeError(f"backend='cpp' requested for {op} but {reason}")
        return "cpp"
    if backend == "auto" and op in CPP_OPS and ts and all(t.device.type == "cpu" for t in ts):
        compiling = torch.compiler.is_compiling()  # no build while tracing
        reason = cpp_unavailable(op, *ts, build=not compiling)
        return "cpp" if reason is None else _cpp_fallback(op, reason)
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
