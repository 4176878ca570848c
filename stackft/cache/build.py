"""Where feature caches live and how a run's train/dev caches are opened or built (sharded under DDP)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stackft import distributed as D
from stackft.cache.format import FeatureCache, cache_fingerprint, get_or_build, open_valid, sequences_digest


def default_cache_root() -> Path:
    return Path(os.environ.get("STACKFT_CACHE_DIR", Path.home() / ".cache" / "stackft" / "features"))


def split_caches(encoder, data, *, root, dtype: str, batch_size: int = 64, device=None, progress=True,
                 dist: D.DistInfo = D.DistInfo(), verify: bool = True) -> dict:
    """Open, or build once, the feature caches of ``data.train`` and ``data.dev`` under ``root``.

    An existing cache is checked against its checksums (``verify``) before it is trusted, so a
    corrupted one is rebuilt rather than read.

    Under DDP a missing or stale cache is built sharded: each rank encodes its strided share into a
    part, rank 0 assembles the parts into the cache (atomically), then every rank opens it.
    """
    enc_fp = encoder.fingerprint()
    caches = {}
    for split, ds in (("train", data.train), ("dev", data.dev)):
        seqs, segs = ds.sequences(), ds.segments()
        seg_digest = "" if segs is None else f":segments:{sequences_digest(segs)}"
        fp = cache_fingerprint(encoder_fingerprint=enc_fp, data_files=data.files, max_length=data.max_length,
                               layers=list(encoder.layers), dtype=dtype,
                               extra=f"{split}:{ds.kind}:{sequences_digest(seqs)}{seg_digest}")
        path = Path(root) / f"{split}-{fp[:16]}"
        kw = dict(dtype=dtype, batch_size=batch_size, device=device, pad_id=encoder.pad_id, progress=progress)
        if not dist.enabled:
            caches[split] = get_or_build(path, encoder, seqs, fingerprint=fp, verify=verify, segments=segs, **kw)
            continue
        valid = D.broadcast_object(
            dist, open_valid(path, fingerprint=fp, dtype=dtype, verify=verify) is not None if dist.is_main else None)
        if not valid:
            _build_sharded(path, encoder, seqs, segs, fp, dist, kw)
        caches[split] = FeatureCache.open(path, expect_fingerprint=fp)
    return caches


def _build_sharded(path: Path, encoder, seqs, segs, fingerprint: str, dist: D.DistInfo, kw: dict) -> None:
    mine = D.shard(range(len(seqs)), dist)
    part = path.parent / f".{path.name}.part{dist.rank}-of-{dist.world_size}"
    FeatureCache.build(encoder, [seqs[i] for i in mine], path=part, fingerprint=f"{fingerprint}:part{dist.rank}",
                       segments=None if segs is None else [segs[i] for i in mine], **kw)
    parts = D.all_gather_objects(dist, (str(part), mine))
    if dist.is_main:
        FeatureCache.assemble([(FeatureCache.open(p), ix) for p, ix in parts], path, fingerprint=fingerprint)
    D.barrier(dist)
    shutil.rmtree(part, ignore_errors=True)


def cache_root(setting: str) -> Path:
    """The folder of ``cfg.cache`` ("auto" = :func:`default_cache_root`)."""
    if setting == "off":
        raise ValueError("the feature cache is off (cache='off')")
    return default_cache_root() if setting == "auto" else Path(setting)
