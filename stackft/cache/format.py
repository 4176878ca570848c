"""Frozen-encoder feature cache: run the encoder once, store per-token features compactly.

While the encoder is frozen (phase 1) its outputs never change, so the head can train from a
store instead of re-running the encoder every epoch.

On disk a cache is a directory in the fairseq ``.idx``/``.bin`` spirit (flat binary arrays plus
a small index), all little-endian::

    header.json   magic, format version, dtype, dim, count, total_tokens, fingerprint,
                  per-file byte counts and sha256, layers, creation info
    offsets.bin   int64 [count + 1]; sequence i is rows offsets[i]:offsets[i+1]
    values.bin    [total_tokens, dim] in the storage dtype (fp32 | fp16 | bf16 | int8)
    scales.bin    fp16 [total_tokens], int8 caches only (x = q * scale)

Sequence order follows docs/design.md (single tasks: sequence i = example i; siamese pairs:
2i = side a, 2i+1 = side b). ``values``/``scales`` are memory-mapped (copy-on-write, paged in
lazily); sizes and offsets are validated on every open, checksums on ``verify()``. Writes go to
a temporary directory next to the target (``.NAME.tmp-PID@HOST-*``, :mod:`stackft._fs`) that
replaces it only when complete, so an interrupted build never leaves something that opens as
valid. A killed process can leave such a temp dir behind: the next build in the same folder
removes those of dead processes. Before writing, a build checks that the cache fits in the free
space and reserves its files' blocks (``posix_fallocate``), so a full disk is a one-line
:class:`CacheWriteError` (an ``OSError``) with nothing left behind, not a ``SIGBUS`` in a
memory-mapped write.

int8 storage: symmetric per-token absmax. For a token row x with a = max_j |x_j|, s = a/127,
the stored scale s_h is float16(s) rounded *upward* (s_h >= s) and q_j = round(x_j / s_h),
clamped to [-127, 127]; x^_j = q_j * s_h.

Error bound, per element: |x_j - x^_j| <= s_h / 2.
  Since s_h >= s, |x_j| / s_h <= a / s_h <= 127 (up to the float32 rounding of a/127, which
  keeps it below 127.5), so the clamp never engages and rounding to the nearest integer is off
  by at most 1/2, i.e. s_h/2 after scaling. q_j * s_h is exact in float32 (8-bit times 11-bit
  significand), so dequantising to float32 adds nothing (bf16/fp16 output adds its own
  rounding). Against the exact scale: s_h <= s (1 + 2^-10) while s_h is a normal float16
  (s >= 2^-14, i.e. a >= ~7.8e-3), so |x - x^| <= a/254 (1 + 2^-10); below that s_h is a
  subnormal rounded up to a multiple of 2^-24, so |x - x^| <= a/254 + 2^-25.
  Why round up: with a round-to-nearest scale the general bound is
  |x - x^| <= s_h/2 + 127 |s - s_h| (the clamp at 127 adds the second term when s_h < s). In
  the normal range |s - s_h| <= 2^-11 s keeps a/s_h < 127.5, so that term happens to vanish,
  but for subnormal scales the relative rounding of s is large (down to s_h = 0 for
  a < ~4e-6, where every element would quantise to 0). Rounding up makes s_h/2 hold for every
  row at a cost of at most 2^-10 relative scale growth.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from stackft import _fs
from stackft.cache.ops import gather_pad
from stackft.cache.quantize import dequantize_int8, quantize_int8

log = logging.getLogger(__name__)
MAGIC = "stackft-feature-cache"
FORMAT_VERSION = 1


HEADER, OFFSETS, VALUES, SCALES = "header.json", "offsets.bin", "values.bin", "scales.bin"


# storage name -> (torch dtype, numpy dtype used for the raw file, bytes per element)
DTYPES = {
    "fp32": (torch.float32, np.float32, 4),
    "fp16": (torch.float16, np.float16, 2),
    "bf16": (torch.bfloat16, np.int16, 2),  # numpy has no bfloat16: raw bits, viewed by torch
    "int8": (torch.int8, np.int8, 1),
}
_CHUNK = 1 << 24


class CacheError(RuntimeError):
    """A cache that is missing, incomplete, truncated or corrupted: never read, rebuild it."""


class StaleCacheError(CacheError):
    """A valid cache built for something else (encoder, data, layers, dtype...)."""


class CacheWriteError(OSError):
    """A cache could not be written (no space, a file-size limit, permissions): nothing was left behind."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def _to_storage(x: Tensor, dtype: str) -> tuple[Tensor, Tensor | None]:
    """float features ``[L, d]`` -> (stored values in torch dtype, fp16 scales or None)."""
    if dtype == "int8":
        return quantize_int8(x)
    t = x.to(DTYPES[dtype][0])
    if dtype == "fp16" and not bool(torch.isfinite(t).all()) and bool(torch.isfinite(x).all()):
        raise ValueError("features overflow float16 (|x| > 65504); use dtype='bf16' or 'fp32'")
    return t, None


def _raw(t: Tensor) -> np.ndarray:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_fingerprint(*, encoder_fingerprint: str, data_files: Iterable[str | os.PathLike],
                      max_length: int, layers, dtype: str, extra: str = "") -> str:
    """sha256 over everything the cached features depend on.

    Data files count by content (a moved file keeps its fingerprint) in the order given;
    ``layers`` may be None (default layer) or a sequence of layer indices.
    """
    h = hashlib.sha256()
    meta = {
        "format": FORMAT_VERSION,
        "encoder": encoder_fingerprint,
        "max_length": int(max_length),
        "layers": None if layers is None else [int(i) for i in layers],
        "dtype": dtype,
        "extra": extra,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for f in data_files:
        h.update(b"\0file:" + _sha256_file(Path(f)).encode())
    return h.hexdigest()


def sequences_digest(seqs: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"\xff" * 8)  # separator: no int64 id is all-ones in practice (-1)
    return h.hexdigest()


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path``; an old cache there is swapped out, then removed."""
    old = None
    if path.exists() or path.is_symlink():
        old = path.parent / _fs.temp_name(path.name, "old")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Writer:
    """Writes one cache into a temp dir beside ``path``; ``commit()`` publishes it atomically."""

    def __init__(self, path: str | os.PathLike, dtype: str, dim: int, lengths: Sequence[int]):
        self.path = Path(path)
        self.dtype, self.dim = dtype, int(dim)
        self.values = self.scales = None
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=self.offsets[1:])
        self.total = int(self.offsets[-1])
        itemsize = DTYPES[dtype][2]
        needed = self.offsets.nbytes + self.total * self.dim * itemsize + (2 * self.total if dtype == "int8" else 0)
        self.tmp = self.path.parent / _fs.temp_name(self.path.name)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for p in _fs.clean_stale(self.path.parent):
                log.info("feature cache: removed %s, left by a killed build", p)
            _fs.check_free_space(self.path.parent, needed, f"the feature cache {self.path.name}")  # before any write
            self.tmp.mkdir()
            self.offsets.tofile(self.tmp / OFFSETS)
            np_dtype = DTYPES[dtype][1]
            self.values = self._alloc(VALUES, np_dtype, (self.total, self.dim))
            self.scales = self._alloc(SCALES, np.float16, (self.total,)) if dtype == "int8" else None
        except OSError as e:
            self.abort()
            raise self.error(e) from None

    def error(self, e: OSError) -> CacheWriteError:
        """The one-line error of a failed write (a full disk ...), naming the cache."""
        if isinstance(e, (_fs.DiskSpaceError, CacheWriteError)):
            return CacheWriteError(str(e))
        return CacheWriteError(f"cannot write the feature cache {self.path}: {_fs.describe_os_error(e)}"
                               f"{f' ({e.filename})' if e.filename else ''}")

    def _alloc(self, name: str, np_dtype, shape):
        f = self.tmp / name
        nbytes = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
        if nbytes == 0:
            f.touch()
            return np.zeros(shape, dtype=np_dtype)
        _fs.preallocate(f, nbytes)  # blocks reserved now: a full disk fails here, not as SIGBUS in a page write
        return np.memmap(f, dtype=np_dtype, mode="r+", shape=shape)

    def put(self, i: int, feats: Tensor) -> None:
        """Store sequence ``i`` (``feats [L_i, dim]`` float, any device)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        if tuple(feats.shape) != (b - a, self.dim):
            raise ValueError(f"sequence {i}: expected features of shape {(b - a, self.dim)}, "
                             f"got {tuple(feats.shape)}")
        if b == a:
            return
        v, s = _to_storage(feats.detach().float().cpu(), self.dtype)
        self.values[a:b] = _raw(v)
        if s is not None:
            self.scales[a:b] = _raw(s)

    def commit(self, *, fingerprint: str, extra: dict | None = None) -> Path:
        try:
            return self._commit(fingerprint=fingerprint, extra=extra)
        except OSError as e:
            raise self.error(e) from None

    def _commit(self, *, fingerprint: str, extra: dict | None = None) -> Path:
        for arr in (self.values, self.scales):
            if isinstance(arr, np.memmap):
                arr.flush()
        self.values = self.scales = None  # drop the maps before hashing/renaming
        files = {}
        for name in (OFFSETS, VALUES, SCALES):
            f = self.tmp / name
            if f.exists():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
                files[name] = {"bytes": f.stat().st_size, "sha256": _sha256_file(f)}
        header = {
            "magic": MAGIC,
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype,
            "dim": self.dim,
            "count": len(self.offsets) - 1,
            "total_tokens": self.total,
            "byteorder": "little",
            "fingerprint": fingerprint,
            "files": files,
            "created": {
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "host": platform.node(),
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
        }
        header.update(extra or {})
        hdr = self.tmp / HEADER
        with open(hdr, "w") as fh:
            json.dump(header, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.tmp)
        _replace_dir(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        self.values = self.scales = None
        shutil.rmtree(self.tmp, ignore_errors=True)


class FeatureCache:
    """Ragged per-token features: ``values [total_tokens, dim]``, ``offsets [N + 1]``.

    Build with :meth:`build` (runs an encoder) or :meth:`from_tensors`, open with :meth:`open`,
    read batches with :meth:`gather`.
    """

    def __init__(self, values: Tensor, offsets: Tensor, scales: Tensor | None = None, *,
                 dtype: str, fingerprint: str = "", header: dict | None = None,
                 path: Path | None = None):
        self.values, self.offsets, self.scales = values, offsets, scales
        self.dtype = dtype
        self.fingerprint = fingerprint
        self.header = header or {}
        self.path = path

    # -- construction --

    @classmethod
    def from_tensors(cls, seqs: Sequence[Tensor], dtype: str = "fp16",
                     path: str | os.PathLike | None = None, fingerprint: str = "") -> "FeatureCache":
        """Cache a list of ``[L_i, d]`` float tensors; on disk (atomically) if ``path`` is given."""
        _check_dtype(dtype)
        seqs = list(seqs)
        if not seqs:
            raise ValueError("from_tensors: need at least one sequence (the feature dim comes from it)")
        dims = {int(s.shape[1]) if s.dim() == 2 else -1 for s in seqs}
        if len(dims) != 1 or -1 in dims:
            raise ValueError(f"from_tensors: sequences must be 2-D [L_i, d] with one d, got dims {sorted(dims)}")
        d = dims.pop()
        lengths = [int(s.shape[0]) for s in seqs]
        if path is None:
            parts = [_to_storage(s.detach().float().cpu(), dtype) for s in seqs]
            values = torch.cat([p[0] for p in parts]) if parts else torch.empty(0, d)
            scales = torch.cat([p[1] for p in parts]) if dtype == "int8" else None
            offsets = torch.zeros(len(seqs) + 1, dtype=torch.int64)
            offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
            header = {"magic": MAGIC, "format_version": FORMAT_VERSION, "dtype": dtype, "dim": d,
                      "count": len(seqs), "total_tokens": int(offsets[-1]), "fingerprint": fingerprint}
            return cls(values.reshape(-1, d), offsets, scales, dtype=dtype, fingerprint=fingerprint,
                       header=header)
        w = _Writer(path, dtype, d, lengths)
        try:
            for i, s in enumerate(seqs):
                w.put(i, s)
            w.commit(fingerprint=fingerprint, extra={"source": "from_tensors"})
        except BaseException:
            w.abort()
            raise
        return cls.open(path)

    @classmethod
    def build(cls, encoder: torch.nn.Module, dataset, *, dtype: str = "fp16", layers=None,
              path: str | os.PathLike | None = None, batch_size: int = 64, device=None,
              fingerprint: str | None = None, pad_id: int = 0,
              progress: bool = True, segments=None) -> "FeatureCache":
        """Run ``encoder`` once over ``dataset`` and cache every token's features.

        ``encoder(input_ids [B, T] long, attention_mask [B, T] long) -> hidden [B, T, H]``
        (docs/design.md) is run in eval mode under ``torch.no_grad`` over length-sorted batches
        (longest first, so an out-of-memory shows up at once). All tokens of each sequence are
        stored, [CLS]/[SEP] included; padding never is. ``dataset``: a list of input-id lists,
        or an object whose ``.sequences()`` returns one. ``layers`` is recorded in the header
        (configure the encoder's layer selection itself). ``device``: where to run (the encoder
        is moved there); default: the encoder's own device. ``fingerprint=None``: derived from
        ``encoder.fingerprint()``, the token ids, ``layers`` and ``dtype``. ``segments``: token-type
        id lists aligned with the sequences (joint pairs: 0 for side a, 1 for side b), passed to the
        encoder as its third argument; default: ``dataset.segments()`` where it exists, else none.
        """
        _check_dtype(dtype)
        seqs = dataset.sequences() if hasattr(dataset, "sequences") else dataset
        seqs = [list(map(int, s)) for s in seqs]
        if segments is None and hasattr(dataset, "segments"):
            segments = dataset.segments()
        if segments is not None and len(segments) != len(seqs):
            raise ValueError(f"build: {len(segments)} segment lists for {len(seqs)} sequences")
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        if int(lengths.sum()) == 0:
            raise ValueError("build: the dataset has no tokens")
        if fingerprint is None:
            enc_fp = encoder.fingerprint() if hasattr(encoder, "fingerprint") else type(encoder).__name__
            fingerprint = cache_fingerprint(encoder_fingerprint=enc_fp, data_files=[],
                                            max_length=int(lengths.max()), layers=layers,
                                            dtype=dtype, extra=sequences_digest(seqs))
        if device is not None:
            encoder.to(device)
        else:
            p = next(iter(encoder.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        order = [int(i) for i in np.argsort(-lengths, kind="stable") if lengths[i] > 0]
        batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        extra = {"layers": None if layers is None else [int(i) for i in layers],
                 "encoder": getattr(encoder, "name_or_path", type(encoder).__name__),
                 "pad_id": int(pad_id), "source": "build"}

        was_training = encoder.training
        encoder.eval()
        writer = None
        kept: list[Tensor | None] = [None] * len(seqs)  # in-memory build (path is None)
        try:
            from tqdm import tqdm

            with torch.no_grad(), tqdm(total=len(order), desc="caching features", unit="seq",
                                       disable=not progress) as bar:
                for batch in batches:
                    hidden = _run_encoder(encoder, [seqs[i] for i in batch], pad_id, device,
                                          None if segments is None else [segments[i] for i in batch])
                    if path is not None and writer is None:
                        writer = _Writer(path, dtype, hidden.shape[-1], lengths.tolist())
                    for j, i in enumerate(batch):
                        feats = hidden[j, : lengths[i]]
                        if writer is not None:
                            writer.put(i, feats)
                        else:
                            kept[i] = feats
                    bar.update(len(batch))
                    if writer is not None:
                        _fs.fault_point("cache.build")  # tests: a kill in the middle of a build
            if writer is None:
                d = next(k for k in kept if k is not None).shape[-1]
                seq_feats = [k if k is not None else torch.empty(0, d) for k in kept]
                cache = cls.from_tensors(seq_feats, dtype=dtype, fingerprint=fingerprint)
                cache.header.update(extra)
                return cache
            writer.commit(fingerprint=fingerprint, extra=extra)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            encoder.train(was_training)
        return cls.open(path, expect_fingerprint=fingerprint)

    @classmethod
    def assemble(cls, parts: Sequence[tuple["FeatureCache", Sequence[int]]], path: str | os.PathLike, *,
                 fingerprint: str, extra: dict | None = None) -> "FeatureCache":
        """One cache at ``path`` from shards: ``parts[k] = (cache, global_indices)``, where sequence
        ``j`` of the shard is sequence ``global_indices[j]`` of the result (every index 0..N-1 exactly
        once). Rows are copied as stored (no requantisation); the write is atomic like :meth:`build`.
        Used by sharded builds: each rank encodes its share, one process assembles.
        """
        if not parts:
            raise ValueError("assemble: no parts")
        dtypes = {c.dtype for c, _ in parts}
        dims = {c.dim for c, _ in parts}
        if len(dtypes) != 1 or len(dims) != 1:
            raise ValueError(f"assemble: parts differ in dtype {sorted(dtypes)} or dim {sorted(dims)}")
        n = sum(len(ix) for _, ix in parts)
        lengths = np.full(n, -1, dtype=np.int64)
        for c, ix in parts:
            if len(ix) != len(c):
                raise ValueError(f"assemble: a part has {len(c)} sequences but {len(ix)} indices")
            lengths[np.asarray(ix, dtype=np.int64)] = c.lengths.numpy()
        if (lengths < 0).any():
            raise ValueError("assemble: the parts' indices must cover 0..N-1 exactly once")
        w = _Writer(path, dtypes.pop(), dims.pop(), lengths.tolist())
        try:
            for c, ix in parts:
                offs = c.offsets.numpy()
                for j, i in enumerate(ix):
                    a, b = int(offs[j]), int(offs[j + 1])
                    if b > a:
                        dst = slice(int(w.offsets[i]), int(w.offsets[i + 1]))
                        w.values[dst] = _raw(c.values[a:b])
                        if w.scales is not None:
                            w.scales[dst] = _raw(c.scales[a:b])
            hdr = {k: parts[0][0].header.get(k) for k in ("layers", "encoder", "pad_id")}
            w.commit(fingerprint=fingerprint, extra={**hdr, "source": "assemble", **(extra or {})})
        except BaseException:
            w.abort()
            raise
        return cls.open(path, expect_fingerprint=fingerprint)

    @classmethod
    def open(cls, path: str | os.PathLike, *, expect_fingerprint: str | None = None,
             verify: bool = False) -> "FeatureCache":
        """Memory-map a cache; sizes and offsets are always checked, checksums if ``verify``.

        Raises CacheError (missing/incomplete/truncated/corrupted) or StaleCacheError
        (``expect_fingerprint`` given and different).
        """
        path = Path(path)
        if not path.is_dir():
            raise CacheError(f"no feature cache at {path}")
        header = _read_header(path)
        dtype, d, n, total = header["dtype"], header["dim"], header["count"], header["total_tokens"]
        torch_dtype, np_dtype, itemsize = DTYPES[dtype]
        expected = {OFFSETS: (n + 1) * 8, VALUES: total * d * itemsize}
        if dtype == "int8":
            expected[SCALES] = total * 2
        for name, nbytes in expected.items():
            f = path / name
            if not f.is_file():
                raise CacheError(f"{path}: missing {name}")
            size = f.stat().st_size
            if size != nbytes:
                raise CacheError(f"{path}: {name} has {size} bytes, expected {nbytes} "
                                 f"(truncated or corrupted cache; rebuild it)")
            listed = header.get("files", {}).get(name, {}).get("bytes")
            if listed is not None and listed != nbytes:
                raise CacheError(f"{path}: header lists {listed} bytes for {name}, expected {nbytes}")
        offsets = np.fromfile(path / OFFSETS, dtype="<i8")
        if offsets[0] != 0 or offsets[-1] != total or (n and bool((np.diff(offsets) < 0).any())):
            raise CacheError(f"{path}: offsets are not a non-decreasing run from 0 to {total} "
                             "(corrupted cache; rebuild it)")
        fp = header.get("fingerprint", "")
        if expect_fingerprint is not None and fp != expect_fingerprint:
            raise StaleCacheError(f"{path}: built for fingerprint {fp[:16]}..., expected "
                                  f"{expect_fingerprint[:16]}... (stale cache; rebuild it)")
        values = _map(path / VALUES, np_dtype, (total, d)).view(torch_dtype)
        scales = _map(path / SCALES, np.float16, (total,)) if dtype == "int8" else None
        cache = cls(values, torch.from_numpy(offsets), scales, dtype=dtype, fingerprint=fp,
                    header=header, path=path)
        if verify:
            cache.verify()
        return cache

    # -- checks --

    def verify(self) -> bool:
        """Recompute every file's sha256 against the header; CacheError on any mismatch."""
        if self.path is None:
            return True
        files = self.header.get("files", {})
        for name in (OFFSETS, VALUES, SCALES):
            if (self.path / name).exists() and name not in files:
                raise CacheError(f"{self.path}: no checksum recorded for {name}")
        for name, meta in files.items():
            f = self.path / name
            if not f.is_file():
                raise CacheError(f"{self.path}: missing {name}")
            if _sha256_file(f) != meta.get("sha256"):
                raise CacheError(f"{self.path}: checksum mismatch in {name} (corrupted cache; rebuild it)")
        return True

    # -- reading --

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def total_tokens(self) -> int:
        return int(self.values.shape[0])

    @property
    def lengths(self) -> Tensor:
        """``[N]`` int64 tokens per sequence."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (values + scales + offsets), as on disk."""
        n = self.values.numel() * self.values.element_size() + self.offsets.numel() * 8
        if self.scales is not None:
            n += self.scales.numel() * 2
        return n

    @property
    def bytes_per_token(self) -> float:
        """Feature bytes per token (values + scale), offsets excluded."""
        return self.dim * DTYPES[self.dtype][2] + (2 if self.dtype == "int8" else 0)

    def __getitem__(self, i: int) -> Tensor:
        """Sequence ``i`` as float32 ``[L_i, dim]`` (dequantised)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        v = self.values[a:b]
        if self.dtype == "int8":
            return dequantize_int8(v, self.scales[a:b])
        return v.float()

    def gather(self, indices, device=None, out_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Padded batch of sequences ``indices``: ``(padded [B, Tmax, dim], mask [B, Tmax] bool)``.

        ``device`` defaults to where the cache lives. A cache on the host (memory-mapped or
        pinned) gathering onto a GPU: pinned -> the CUDA kernel reads it in place; memory-mapped
        -> the batch's rows are gathered on the host in the storage dtype (no padding), copied,
        and padded/dequantised on the GPU.

        A CUDA gather is given ``max_len`` (the batch's longest length, read from host-side
        lengths: the offsets themselves for a host store, else a host copy of the lengths made
        on the first gather) whenever ``indices`` are on the host, so the kernel never syncs;
        the indices are then range-checked here (IndexError), as the kernel cannot raise.
        """
        idx = torch.as_tensor(indices, dtype=torch.int64)
        dev = self.values.device if device is None else torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        here = self.values.device

        def host_max_len():
            # None unless a CUDA kernel will run and the lengths can be read without a sync
            if (dev.type != "cuda" and here.type != "cuda") or idx.device.type != "cpu":
                return None
            lens = self.__dict__.get("_host_lengths")
            if lens is None:  # one device->host copy per cache (a GPU store), none for a host one
                off = self.offsets.cpu()
                lens = self.__dict__["_host_lengths"] = off[1:] - off[:-1]
            if idx.numel() == 0:
                return 0
            if int(idx.min()) < 0 or int(idx.max()) >= lens.numel():
                bad = idx[(idx < 0) | (idx >= lens.numel())][0].item()
                raise IndexError(f"gather_pad: index {bad} is out of range for {lens.numel()} sequences")
            return int(lens[idx].max())

        # host -> GPU copies are non_blocking: a pageable source is staged by the driver before the
        # call returns (safe to free), and no stream sync is made
        if dev == here or (dev.type == "cuda" and here.type == "cpu" and self.values.is_pinned()):
            max_len = host_max_len()
            return gather_pad(self.values, self.offsets, idx.to(dev, non_blocking=True), self.scales, out_dtype,
                              max_len)
        if here.type != "cpu":
            max_len = host_max_len()
            p, m = gather_pad(self.values, self.offsets, idx.to(here, non_blocking=True), self.scales, out_dtype,
                              max_len)
            return p.to(dev), m.to(dev)
        # host store -> other device: ship only the batch's real rows, in the storage dtype
        vals, sub_off, sc = self.compact(idx)
        vals = vals.to(dev, non_blocking=True)
        sc = sc.to(dev, non_blocking=True) if sc is not None else None
        max_len = (int((sub_off[1:] - sub_off[:-1]).max()) if idx.numel() else 0) if dev.type == "cuda" else None
        return gather_pad(vals, sub_off.to(dev, non_blocking=True), torch.arange(idx.numel(), device=dev), sc,
                          out_dtype, max_len)

    # gather_first keeps every sequence's first row converted to float32 where that takes at most this
    # (64 MiB: 43k sequences of width 384); larger caches convert the batch's rows on each call
    FIRST_TABLE_MAX_BYTES = 64 * 2 ** 20

    def _nonempty(self) -> tuple[Tensor, bool, Tensor]:
        """``(has a first token [n] bool, all do, starts [n])``, computed once per cache."""
        ne = self.__dict__.get("_nonempty_")
        if ne is None:
            off = self.offsets
            has = off[1:] > off[:-1]
            ne = self.__dict__["_nonempty_"] = (has, bool(has.all()), off[:-1])
        return ne

    def _first_table(self) -> tuple[Tensor, Tensor | None] | None:
        """``(first rows [n, 1, dim] float32, has [n] bool | None if all)`` on the store's device, converted
        as gather_pad converts (times the scale for int8; zeros for an empty sequence), or None where
        it would exceed FIRST_TABLE_MAX_BYTES. Built on the first gather_first call."""
        table = self.__dict__.get("_first_table_", False)
        if table is False:
            table = None
            n, rows_total = len(self), self.values.shape[0]
            if 0 < rows_total and n * self.values.shape[1] * 4 <= self.FIRST_TABLE_MAX_BYTES:
                has, all_have, starts = self._nonempty()
                here = self.values.device
                has = None if all_have else has.to(here)
                x = self._first_rows(starts, has, here).float()
                table = (x.contiguous(), has)  # [n, 1, dim]: no unsqueeze per call
            self.__dict__["_first_table_"] = table
        return table

    def _first_rows(self, starts: Tensor, has: Tensor | None, dev) -> Tensor:
        """The rows at ``starts`` as features ``[B, 1, dim]`` on ``dev``, converted as gather_pad converts:
        times the token's scale in float32 (int8; other storage dtypes stay as stored, rounded once by the
        caller's cast), zeros where ``has`` ([B] bool on ``dev``, None: all) is False."""
        rows = (starts if has is None else starts.clamp(max=max(self.values.shape[0] - 1, 0))).to(self.values.device)
        x = self.values.index_select(0, rows).to(dev, non_blocking=True)
        if self.scales is not None:
            x = x.float() * self.scales.index_select(0, rows).to(dev, non_blocking=True).float().unsqueeze(1)
        if has is not None:
            x = x * has.unsqueeze(1)
        return x.unsqueeze(1)

    def gather_first(self, indices, device=None, out_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The first token ([CLS]) of sequences ``indices``: ``(hidden [B, 1, dim], mask [B, 1] bool)``.

        Equal to ``gather(indices)`` cut to its first position (an empty sequence: zeros, mask
        False), but it reads B rows instead of B × Tmax: what a head that reads only [CLS] needs.
        The first rows of a cache of at most FIRST_TABLE_MAX_BYTES (in float32) are converted once and
        kept, so a call is one row gather (a [CLS]-only head's cached step is ~0.1 ms, so the few µs
        each conversion op costs count).
        """
        idx = torch.as_tensor(indices, dtype=torch.int64)
        dev = self.values.device if device is None else torch.device(device)
        n = len(self)
        table = self._first_table()
        here = self.values.device if table is not None else self.offsets.device
        i = idx if idx.device == here else idx.to(here)
        # index_select range-checks on the host (IndexError); a CUDA one cannot raise, so only there are
        # the values checked first (on the host the two reductions would cost ~20% of this call)
        if here.type != "cpu" and i.numel() and not (int(i.min()) >= 0 and int(i.max()) < n):
            raise IndexError(f"gather_first: index out of range for {n} sequences")
        try:
            if table is not None:  # (each skipped no-op .to() saves ~0.7 µs of a ~6 µs call)
                x = table[0].index_select(0, i)
                x = x if x.device == dev else x.to(dev, non_blocking=True)
                has = None if table[1] is None else table[1].index_select(0, i)
            else:
                has_all, all_have, starts = self._nonempty()
                starts = starts.index_select(0, i)
                has = None if all_have else has_all.index_select(0, i)
        except IndexError:
            raise IndexError(f"gather_first: index out of range for {n} sequences") from None
        if has is not None:
            has = has.to(dev)
        if table is None:
            x = self._first_rows(starts, has, dev)
        mask = torch.ones(i.numel(), 1, dtype=torch.bool, device=dev) if has is None else has.unsqueeze(1)
        return (x if x.dtype == out_dtype else x.to(out_dtype)), mask

    def compact(self, indices) -> tuple[Tensor, Tensor, Tensor | None]:
        """The rows of sequences ``indices`` as a small ragged store of their own.

        Returns ``(values [n_rows, dim], offsets [B + 1], scales [n_rows] | None)`` in the
        storage dtype, sequence b of the result = sequence ``indices[b]`` (no padding: what a
        host-to-GPU copy of the batch needs to move).
        """
        idx = torch.as_tensor(indices, dtype=torch.int64).cpu()
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise IndexError(f"compact: index out of range for {n} sequences")
        offsets = self.offsets.cpu()
        starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
        sub_off = torch.zeros(idx.numel() + 1, dtype=torch.int64)
        sub_off[1:] = lens.cumsum(0)
        rows = torch.repeat_interleave(starts - sub_off[:-1], lens) + torch.arange(int(sub_off[-1]))
        rows = rows.to(self.values.device)
        sc = self.scales.index_select(0, rows) if self.scales is not None else None
        return self.values.index_select(0, rows), sub_off, sc

    def to(self, device) -> "FeatureCache":
        """A copy of the cache held on ``device`` (e.g. a whole int8 store on the GPU)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FeatureCache(mv(self.values), mv(self.offsets), mv(self.scales), dtype=self.dtype,
                            fingerprint=self.fingerprint, header=dict(self.header), path=None)

    def pin_memory(self) -> "FeatureCache":
        """A copy in pinned host RAM: CUDA gathers then read it in place, without a host pass."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return FeatureCache(pin(self.values), pin(self.offsets), pin(self.scales), dtype=self.dtype,
                            fingerprint=self.fingerprint, header=dict(self.header), path=None)

    def __repr__(self) -> str:
        where = str(self.path) if self.path else f"memory:{self.values.device}"
        return (f"FeatureCache(n={len(self)}, dim={self.dim}, dtype={self.dtype}, "
                f"tokens={self.total_tokens}, {where})")


def open_valid(path: str | os.PathLike, *, fingerprint: str, dtype: str,
               verify: bool = False) -> FeatureCache | None:
    """The cache at ``path`` if it is valid for ``fingerprint`` and ``dtype``, else None (logged)."""
    path = Path(path)
    try:
        cache = FeatureCache.open(path, expect_fingerprint=fingerprint, verify=verify)
        if cache.dtype != dtype:
            raise StaleCacheError(f"{path}: stored as {cache.dtype}, {dtype} requested")
        log.info("feature cache: using %s (%d sequences, %s)", path, len(cache), cache.dtype)
        return cache
    except StaleCacheError as e:
        log.warning("feature cache: %s; rebuilding", e)
    except CacheError as e:
        if path.exists():
            log.warning("feature cache: %s; rebuilding", e)
        else:
            log.info("feature cache: none at %s; building", path)
    return None


def get_or_build(path: str | os.PathLike, encoder: torch.nn.Module, dataset, *, fingerprint: str,
                 dtype: str = "fp16", verify: bool = False, **build_kwargs) -> FeatureCache:
    """Open the cache at ``path`` if valid for ``fingerprint`` (and ``dtype``); else rebuild it.

    A stale or corrupt cache is logged and replaced; ``build_kwargs`` go to :meth:`FeatureCache.build`.
    Builds are serialised by a lock beside the cache (``.{name}.lock``): a second process asking for
    the same cache waits for the first one's build (at most ``$STACKFT_CACHE_LOCK_TIMEOUT`` seconds,
    default 3600) and then opens it instead of building it again.
    """
    cache = open_valid(path, fingerprint=fingerprint, dtype=dtype, verify=verify)
    if cache is not None:
        return cache
    path = Path(path)
    timeout = float(os.environ.get("STACKFT_CACHE_LOCK_TIMEOUT", "3600"))

    def on_wait(holder):
        print(f"stackft: waiting for another process building the feature cache {path} ({holder}; at most "
              f"{timeout:.0f}s)", file=sys.stderr, flush=True)

    held = ExitStack()
    try:
        held.enter_context(_fs.exclusive_lock(path.parent / f".{path.name}.lock", timeout=timeout, on_wait=on_wait))
    except _fs.LockHeld as e:
        raise TimeoutError(f"waited {timeout:.0f}s for the build of the feature cache {path} by {e.holder}; if "
                           f"no build is running, delete {e.path}; set STACKFT_CACHE_LOCK_TIMEOUT to wait longer"
                           ) from None
    with held:
        cache = open_valid(path, fingerprint=fingerprint, dtype=dtype, verify=verify)  # built while we waited?
        if cache is not None:
            return cache
        return FeatureCache.build(encoder, dataset, dtype=dtype, path=path, fingerprint=fingerprint,
                                  **build_kwargs)


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def _read_header(path: Path) -> dict:
    try:
        header = json.loads((path / HEADER).read_text())
    except FileNotFoundError:
        raise CacheError(f"{path}: no {HEADER} (incomplete build or not a stackft cache)") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable {HEADER}: {e}") from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise CacheError(f"{path}: not a stackft feature cache (bad magic)")
    if header.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{path}: format version {header.get('format_version')} is not supported "
                         f"(this stackft reads {FORMAT_VERSION}); rebuild the cache")
    if header.get("dtype") not in DTYPES:
        raise CacheError(f"{path}: unknown dtype {header.get('dtype')!r}")
    for key in ("dim", "count", "total_tokens"):
        if not isinstance(header.get(key), int) or header[key] < 0:
            raise CacheError(f"{path}: bad {key!r} in header")
    return header


def _map(f: Path, np_dtype, shape) -> Tensor:
    """Lazily paged, copy-on-write view of a raw file (writes never reach the file)."""
    if int(np.prod(shape)) == 0:
        return torch.from_numpy(np.zeros(shape, dtype=np_dtype))
    return torch.from_numpy(np.memmap(f, dtype=np_dtype, mode="c", shape=shape))


def _run_encoder(encoder, batch: list[list[int]], pad_id: int, device, segments=None) -> Tensor:
    """Pad a batch of id lists (and their token types), run the encoder, return ``hidden [B, T, H]``
    float32 on CPU."""
    T = max(len(s) for s in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(batch), T), dtype=torch.int64)
    for j, s in enumerate(batch):
        ids[j, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[j, : len(s)] = 1
    if segments is None:
        hidden = encoder(ids.to(device), mask.to(device))
    else:
        types = torch.zeros_like(ids)
        for j, t in enumerate(segments):
            types[j, : len(t)] = torch.tensor(t, dtype=torch.int64)
        hidden = encoder(ids.to(device), mask.to(device), types.to(device))
    if not isinstance(hidden, Tensor) or hidden.dim() != 3 or tuple(hidden.shape[:2]) != (len(batch), T):
        got = tuple(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise ValueError(f"encoder must return hidden [B, T, H] = [{len(batch)}, {T}, H], got {got}")
    return hidden.float().cpu()
