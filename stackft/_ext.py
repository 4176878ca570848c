"""Build and load the C++/CUDA op library ``stackft_C`` (sources in ``stackft.csrc``).

The library is compiled just in time with ninja through ``torch.utils.cpp_extension.load`` on
first use and cached under ``$STACKFT_EXT_DIR``, else ``$TORCH_EXTENSIONS_DIR/stackft``, else
``~/.cache/stackft/ext``, in a folder keyed by a hash of the sources, the torch version and the
build flavour, so a source edit or a torch upgrade gets a fresh build and never a stale binary.
It registers plain dispatcher ops (``torch.ops.stackft_C.gather_pad``, ``.build_info``) rather
than a pybind module: no Python headers, a faster build, and the ops are visible to the
dispatcher. :mod:`stackft.cache.ops` wraps them in a ``torch.library.custom_op`` with a fake impl.

CUDA sources are compiled only when torch itself has CUDA (``torch.version.cuda``) and a CUDA
toolkit is found (``CUDA_HOME``). When no compiler works, ``load()`` warns once and returns None
and callers use the pure-PyTorch fallback; importing this module never builds anything.

Concurrent builds. A build holds an OS lock (``fcntl.flock`` on ``<build dir>/stackft.lock``)
that the kernel releases when its holder dies, even by SIGKILL. Whoever takes it next removes the
lock file torch's own builder polls (``<build dir>/lock``, left behind by a killed build, which
would otherwise make every later build wait forever). A process that finds the lock held says so
on stderr once and waits at most ``$STACKFT_EXT_LOCK_TIMEOUT`` seconds (default 600); then the
build fails with a message naming the lock and its holder (``load()`` warns and falls back).

Environment: ``STACKFT_NO_EXT=1`` forces the fallback, ``STACKFT_EXT_VERBOSE=1`` shows the build
log, ``STACKFT_EXT_DIR`` moves the cache, ``STACKFT_EXT_NO_CUDA=1`` builds the CPU kernels only,
``STACKFT_EXT_LOCK_TIMEOUT`` bounds the wait for another process's build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from stackft import _fs

log = logging.getLogger(__name__)

NAME = "stackft_C"
SRC_DIR = Path(__file__).resolve().parent.parent / "csrc"
_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")

_lock = threading.Lock()
LOCK_FILE = "stackft.lock"  # ours (an flock); torch's cpp_extension polls for a file named "lock"
TORCH_BATON = "lock"
_state: dict = {"loaded": None, "error": None, "warned": False}


@dataclass(frozen=True)
class BuildInfo:
    """Where the library landed and what went into it."""

    path: str
    build_dir: str
    with_cuda: bool
    info: str


def _src_dir() -> Path:
    # Editable installs map stackft.csrc -> <repo>/csrc; an installed wheel ships it as a package.
    if (SRC_DIR / "gather_pad.cpp").is_file():
        return SRC_DIR
    import stackft.csrc

    return Path(stackft.csrc.__file__).resolve().parent


def sources() -> list[Path]:
    """All source files (sorted); the CUDA ones are compiled only when :func:`want_cuda`."""
    return sorted(p for p in _src_dir().iterdir() if p.suffix in _SUFFIXES)


def want_cuda() -> bool:
    """True when torch has CUDA and a CUDA toolkit is found (so .cu files are compiled)."""
    if os.environ.get("STACKFT_EXT_NO_CUDA") == "1" or not torch.version.cuda:
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None


def disabled() -> bool:
    return os.environ.get("STACKFT_NO_EXT", "") not in ("", "0")


def _verbose_env() -> bool:
    return os.environ.get("STACKFT_EXT_VERBOSE", "") not in ("", "0")


def build_root() -> Path:
    """Folder the builds are kept in (one subfolder per :func:`build_key`); see the module docstring.

    Not to be confused with :func:`stackft.cache.build.cache_root`, the feature caches' folder.
    """
    if os.environ.get("STACKFT_EXT_DIR"):
        return Path(os.environ["STACKFT_EXT_DIR"])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "stackft"
    return Path.home() / ".cache" / "stackft" / "ext"


def openmp_flags() -> list[str]:
    """``["-fopenmp"]`` when torch runs its intra-op threads on OpenMP and the compiler is GCC-like, else ``[]``.

    ``at::parallel_for`` is a header template: compiled without ``-fopenmp`` its ``#pragma omp parallel`` is
    ignored and every parallel loop of the extension runs on the calling thread (the C++ highway layer's
    gate math and packed GEMMs did so until this flag was added). ``STACKFT_EXT_NO_OPENMP=1`` leaves it out.
    """
    # MSVC spells it /openmp and Apple clang has none (torch's macOS wheels bring their own libomp)
    if os.environ.get("STACKFT_EXT_NO_OPENMP") == "1" or sys.platform in ("win32", "darwin"):
        return []
    return ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []


def build_key(with_cuda: bool, omp: list[str] | None = None) -> str:
    """Folder name: torch version, python version, flavour and a hash of all sources and compile flags
    (``omp``: the OpenMP flags, ``openmp_flags()`` unless given)."""
    h = hashlib.sha256()
    h.update(" ".join(openmp_flags() if omp is None else omp).encode())
    for p in sources():
        h.update(p.name.encode())
        h.update(p.read_bytes())
    flavour = f"cu{torch.version.cuda}" if with_cuda else "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"torch{torch.__version__}-{py}-{flavour}-{h.hexdigest()[:16]}".replace("+", "_")


def lock_timeout() -> float:
    """Seconds to wait for another process's build (``$STACKFT_EXT_LOCK_TIMEOUT``, default 600)."""
    try:
        return float(os.environ.get("STACKFT_EXT_LOCK_TIMEOUT", "600"))
    except ValueError:
        return 600.0


@contextmanager
def build_lock(build_dir, timeout: float | None = None):
    """Hold the build folder's OS lock (released by the kernel if this process dies); see the module docstring.

    Waits at most ``timeout`` seconds (default :func:`lock_timeout`) for another holder, then raises
    TimeoutError naming the lock file and the holder's pid. Once held, a torch lock file left in the
    folder by a killed build is removed.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    timeout = lock_timeout() if timeout is None else timeout

    def on_wait(holder):
        print(f"stackft: waiting for another process building the C++ extension in {build_dir} "
              f"({holder}; at most {timeout:.0f}s)", file=sys.stderr, flush=True)

    held = ExitStack()
    try:
        held.enter_context(_fs.exclusive_lock(build_dir / LOCK_FILE, timeout=timeout, on_wait=on_wait))
    except _fs.LockHeld as e:
        raise TimeoutError(
            f"waited {timeout:.0f}s for the C++ extension build lock {e.path} (held by {e.holder}); "
            f"if no build is running, delete the lock file; set STACKFT_EXT_LOCK_TIMEOUT to wait "
            f"longer, or STACKFT_NO_EXT=1 to use the PyTorch fallback") from None
    with held:
        baton = build_dir / TORCH_BATON
        if baton.exists():  # every builder holds our lock first: this one's holder is gone
            log.warning("stackft: removing %s, left by a build that was killed", baton)
            baton.unlink(missing_ok=True)
        yield


def _build_info() -> str:
    return torch.ops.stackft_C.build_info()


def _compile(verbose: bool) -> BuildInfo:
    from torch.utils import cpp_extension

    with_cuda = want_cuda()
    srcs = [str(p) for p in sources() if p.suffix == ".cpp" or (with_cuda and p.suffix == ".cu")]
    omp = openmp_flags()
    build_dir = build_root() / build_key(with_cuda, omp)
    build_dir.mkdir(parents=True, exist_ok=True)
    cflags = ["-O3", *omp] + (["-DSTACKFT_WITH_CUDA"] if with_cuda else [])
    with build_lock(build_dir):
        path = cpp_extension.load(
            name=NAME,
            sources=srcs,
            extra_cflags=cflags,
            extra_cuda_cflags=["-O3", "-lineinfo", "-DSTACKFT_WITH_CUDA"],
            extra_include_paths=[str(_src_dir())],
            extra_ldflags=omp,
            build_directory=str(build_dir),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=verbose,
        )
    return BuildInfo(str(path), str(build_dir), with_cuda, _build_info())


def load(verbose: bool | None = None) -> BuildInfo | None:
    """Build (first time) and load the op library; None when disabled or the build failed.

    A failure is warned about once per process; the error is kept in :func:`load_error`.
    """
    if disabled():
        return None
    if _state["loaded"] is not None:
        return _state["loaded"]
    if _state["error"] is not None:
        return None
    with _lock:
        if _state["loaded"] is None and _state["error"] is None:
            try:
                _state["loaded"] = _compile(_verbose_env() if verbose is None else verbose)
            except Exception as e:  # any compiler/linker/loader failure means: use the fallback
                _state["error"] = e
                if not _state["warned"]:
                    _state["warned"] = True
                    warnings.warn(
                        "stackft: the C++ extension could not be built or loaded "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}); "
                        "using the pure-PyTorch fallback (slower). Set STACKFT_EXT_VERBOSE=1 "
                        "for the build log, STACKFT_NO_EXT=1 to silence this.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    return _state["loaded"]


def loaded() -> BuildInfo | None:
    """The library if this process has already loaded it; never builds (safe while tracing)."""
    return _state["loaded"]


def load_error() -> BaseException | None:
    """The exception of the last failed build in this process, if any."""
    return _state["error"]


def available() -> bool:
    return load() is not None


def has_cuda_kernels() -> bool:
    info = load()
    return info is not None and info.with_cuda


def build(verbose: bool = True) -> BuildInfo:
    """Prebuild (``stackft build-ext``): like :func:`load` but raises on failure."""
    if _state["loaded"] is not None:
        return _state["loaded"]
    with _lock:
        if _state["loaded"] is None:
            _state["loaded"] = _compile(verbose)
            _state["error"] = None
    return _state["loaded"]
