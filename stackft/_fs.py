"""File-system safety shared by checkpoints and feature caches (a leaf: imports nothing from stackft).

- **Owned temporary folders.** An atomic write builds its result in a temporary sibling named
  ``.{target}.tmp-{pid}@{host}-{8 hex}`` (an old copy being swapped out: ``.{target}.old-...``), so
  whoever finds one later can tell whether the process that made it is still alive.
  :func:`clean_stale` removes those of dead processes on this host (and, for names without an owner,
  written by older versions, those untouched for an hour).
- **Free space.** :func:`check_free_space` refuses a write that cannot fit (:class:`DiskSpaceError`);
  :func:`preallocate` reserves a file's blocks up front, so a full disk is an ``OSError`` at once
  instead of a ``SIGBUS`` when a memory-mapped page is first written.
- **Fault points.** :func:`fault_point` (``STACKFT_FAULT=name[@n][,name...]``) kills the process with
  SIGKILL the n-th time (default the first) it reaches the named point: the tests use it to stop a run
  at a precise moment. The points: ``checkpoint.swap.<folder>`` (between the two renames that replace
  a checkpoint folder, e.g. ``checkpoint.swap.last``) and ``cache.build`` (after each batch a cache
  build has written).
- **Locks.** :func:`exclusive_lock` holds an OS lock (``fcntl.flock``) on a lock file, so two
  processes never train into one run folder or build one cache at once. The kernel releases it when
  its holder dies, however it dies: a lock file left by a killed process is simply taken again
  (stale-lock recovery needs no clean-up, and a note says whose it was). The file names its holder
  (pid, host, start time) for the message the next process prints, and is deleted on a clean
  release. Where ``flock`` does not exist (Windows) nothing is locked.
- :func:`sha256_file`: the checksum caches and checkpoints record.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

FAULT_ENV = "STACKFT_FAULT"
_CHUNK = 1 << 24
#: owner-less temporary folders (older stackft versions) count as stale after this many seconds
LEGACY_STALE_AFTER = 3600.0

_hits: dict[str, int] = {}
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9_]*))?-[0-9a-f]{8}$")


class DiskSpaceError(OSError):
    """Not enough free space for a write (raised before anything is written)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class LockHeld(OSError):
    """Another live process holds the lock ``path`` (``holder``: its pid, host and start time, as it wrote them)."""

    def __init__(self, path, holder: str):
        super().__init__(errno.EWOULDBLOCK, f"{path} is held by {holder}")
        self.path, self.holder = Path(path), holder

    def __str__(self) -> str:
        return self.strerror


def lock_holder(path) -> str:
    """Who holds (or last held) the lock file ``path``: ``pid N on HOST since TIME``, or "another process"."""
    try:
        pid, host, since = (Path(path).read_text().split() + ["", "", ""])[:3]
    except OSError:
        return "another process"
    if not pid.isdigit():
        return "another process"
    return f"pid {pid}" + (f" on {host}" if host else "") + (f" since {since}" if since else "")


@contextmanager
def exclusive_lock(path, *, timeout: float = 0.0, on_wait=None, poll: float = 0.1):
    """Hold the OS lock on the file ``path`` (created if missing) for the ``with`` block.

    Waits at most ``timeout`` seconds for another holder (0: not at all), calling ``on_wait(holder)``
    once when it starts waiting, then raises :class:`LockHeld`. Yields the previous holder's
    description when the file was left by a process that ended without releasing it (a stale lock,
    taken over), else None. A clean release deletes the file (while still holding it, so a process
    that was waiting on the deleted file notices and locks the new one instead): a lock file only
    exists while it is held, or after its holder was killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield None
        return
    start, told = time.monotonic(), False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(path)
            if time.monotonic() - start >= timeout:
                raise LockHeld(path, holder) from None
            if not told and on_wait is not None:
                on_wait(holder)
            told = True
            time.sleep(poll)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder deleted this file as we got it: lock the one that is there now
    try:
        previous = os.read(fd, 200).decode(errors="replace").split()
        stale = lock_holder(path) if previous and previous[0].isdigit() else None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        os.write(fd, f"{os.getpid()} {host_tag()} {since}\n".encode())
        try:
            yield stale
        finally:
            try:
                path.unlink()
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the flock


def fault_point(name: str) -> None:
    """SIGKILL this process here if ``$STACKFT_FAULT`` names this point (``name`` or ``name@n``: the n-th hit)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, nth = item.strip().partition("@")
        if point != name:
            continue
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def host_tag() -> str:
    """This host's name as it appears in temporary folder names (letters, digits, ``_``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40]


def temp_name(target_name: str, kind: str = "tmp") -> str:
    """``.{target_name}.{kind}-{pid}@{host}-{8 hex}``: a temporary sibling owned by this process."""
    return f".{target_name}.{kind}-{os.getpid()}@{host_tag()}-{uuid.uuid4().hex[:8]}"


def parse_temp(name: str) -> dict | None:
    """``{"target", "kind", "pid", "host"}`` of a temporary folder name (host None: no owner host), else None."""
    m = _TEMP.match(name)
    if m is None:
        return None
    return {"target": m["target"], "kind": m["kind"], "pid": int(m["pid"]), "host": m["host"]}


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def is_stale(path: Path) -> bool:
    """Whether the temporary folder ``path`` (named by :func:`temp_name`) was left by a dead process.

    Folders of other hosts are never stale here (their owner cannot be checked from this host); a
    name without a host (older versions) is stale once its owner is gone and it is an hour old.
    """
    info = parse_temp(Path(path).name)
    if info is None:
        return False
    if info["host"] is not None:
        return info["host"] == host_tag() and not pid_alive(info["pid"])
    if pid_alive(info["pid"]):
        return False
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return False
    return age > LEGACY_STALE_AFTER


def clean_stale(folder, target_name: str | None = None) -> list[Path]:
    """Remove the temporary folders (and files) of dead processes in ``folder``; returns what was removed.

    ``target_name``: only those of that target (``.{target_name}.tmp-...``).
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        info = parse_temp(p.name)
        if info is None or (target_name is not None and info["target"] != target_name):
            continue
        if is_stale(p):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    continue
            removed.append(p)
    return removed


def disk_free(folder) -> int:
    """Free bytes on the file system of ``folder`` (the nearest existing parent)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_free_space(folder, needed: int, what: str, *, margin: int = 16 << 20) -> None:
    """DiskSpaceError naming ``what`` and ``folder`` unless ``needed`` bytes (+ ``margin``) are free there."""
    free = disk_free(folder)
    if needed + margin > free:
        raise DiskSpaceError(errno.ENOSPC, f"not enough free space for {what} in {folder}: it needs "
                                           f"{human_bytes(needed)} (and {human_bytes(margin)} kept free), "
                                           f"{human_bytes(free)} are free")


def preallocate(path, nbytes: int) -> None:
    """Create ``path`` with ``nbytes`` bytes whose blocks are reserved now (OSError when they do not fit)."""
    with open(path, "wb") as f:
        if nbytes <= 0:
            return
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except AttributeError:  # no posix_fallocate on this platform: allocate by writing
            _write_zeros(f, nbytes)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _write_zeros(f, nbytes)


def _write_zeros(f, nbytes: int) -> None:
    zeros = bytes(min(nbytes, 1 << 20))
    left = nbytes
    while left > 0:
        n = min(left, len(zeros))
        f.write(zeros[:n])
        left -= n
    f.flush()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def describe_os_error(e: OSError) -> str:
    """``strerror`` of an OSError with a hint for a full disk or a file-size limit."""
    text = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text += " (the disk, a quota or a file-size limit is full)"
    return text
