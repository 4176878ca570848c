"""Feature source that feeds frozen-encoder phases from :mod:`stackft.cache` instead of the encoder.

``cfg.cache``: ``"auto"`` caches under ``$STACKFT_CACHE_DIR`` (default ``~/.cache/stackft/features``),
``"off"`` runs the encoder every step, anything else is a folder to cache in. One cache per split;
its fingerprint covers the encoder weights and tokenizer, the data files, the exact token sequences
(so max length, subsampling and splitting are covered), the layer selection and the dtype, so a
stale cache is rebuilt rather than read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from . import distributed as D
from .cache import FeatureCache, cache_fingerprint, get_or_build, open_valid, sequences_digest
from .prefetch import attached


def build_cache_cli(args) -> int:
    """``stackft cache build``: build the caches a ``stackft train`` with the same options would use."""
    from .cli import config_from_args
    from .trainer import Trainer

    cfg = config_from_args(args)
    if cfg.train_path is None:
        raise ValueError("--train-path is required")
    if cfg.cache == "off":
        raise ValueError("--cache off makes no cache")
    trainer = Trainer(cfg)
    caches = split_caches(trainer.encoder, trainer.data, root=cache_root(cfg.cache), dtype=cfg.cache_dtype,
                          batch_size=cfg.eval_batch_size, device=trainer.device)
    for split, c in caches.items():
        print(f"{split}: {c.path} ({len(c)} sequences, {c.total_tokens} tokens, {c.dtype}, {c.nbytes / 2**20:.1f} MiB)")
    return 0


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
        seqs = ds.sequences()
        fp = cache_fingerprint(encoder_fingerprint=enc_fp, data_files=data.files, max_length=data.max_length,
                               layers=list(encoder.layers), dtype=dtype,
                               extra=f"{split}:{ds.kind}:{sequences_digest(seqs)}")
        path = Path(root) / f"{split}-{fp[:16]}"
        kw = dict(dtype=dtype, batch_size=batch_size, device=device, pad_id=encoder.pad_id, progress=progress)
        if not dist.enabled:
            caches[split] = get_or_build(path, encoder, seqs, fingerprint=fp, verify=verify, **kw)
            continue
        valid = D.broadcast_object(
            dist, open_valid(path, fingerprint=fp, dtype=dtype, verify=verify) is not None if dist.is_main else None)
        if not valid:
            _build_sharded(path, encoder, seqs, fp, dist, kw)
        caches[split] = FeatureCache.open(path, expect_fingerprint=fp)
    return caches


def _build_sharded(path: Path, encoder, seqs, fingerprint: str, dist: D.DistInfo, kw: dict) -> None:
    mine = D.shard(range(len(seqs)), dist)
    part = path.parent / f".{path.name}.part{dist.rank}-of-{dist.world_size}"
    FeatureCache.build(encoder, [seqs[i] for i in mine], path=part, fingerprint=f"{fingerprint}:part{dist.rank}", **kw)
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


PLACEMENTS = ("auto", "device", "pinned", "mmap")


def check_placement(setting: str) -> None:
    if setting not in PLACEMENTS:
        raise ValueError(f"unknown cache_placement {setting!r}; choose one of {', '.join(PLACEMENTS)}")


def choose_placement(setting: str, nbytes: int, device, *, free_device: int | None = None,
                     free_host: int | None = None) -> str:
    """Where a cache of ``nbytes`` feeds a ``device`` run: "device", "pinned" or "mmap".

    - ``device``: the whole store in GPU memory; a gather never leaves the GPU.
    - ``pinned``: the store in page-locked host RAM; the CUDA kernel reads the batch's rows over
      PCIe in place (overlapped with compute by :mod:`stackft.prefetch`).
    - ``mmap``: the memory-mapped files; the batch's real rows are copied on the host, then
      padded on the GPU. The only choice on a CPU run, where the others mean the same thing.

    ``auto`` takes ``device`` if the store fits in a quarter of the free GPU memory, else
    ``pinned`` if it fits in half of the available host RAM, else ``mmap``.
    """
    check_placement(setting)
    device = torch.device(device)
    if device.type != "cuda":
        return "mmap"
    if setting != "auto":
        return setting
    if free_device is None:
        free_device = torch.cuda.mem_get_info(device)[0]
    if nbytes <= free_device // 4:
        return "device"
    if free_host is None:
        free_host = _available_host_bytes()
    return "pinned" if nbytes <= free_host // 2 else "mmap"


def _available_host_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # unknown: don't pin


def place(caches: dict, placement: str, device) -> dict:
    """``caches`` moved to ``placement`` (see :func:`choose_placement`)."""
    if placement == "device":
        return {k: c.to(device) for k, c in caches.items()}
    if placement == "pinned":
        return {k: c.pin_memory() for k, c in caches.items()}
    return caches


class CachedFeatures:
    """``features(batch, split) -> dict`` read from the per-split caches (see docs/design.md).

    A batch that already carries its features (attached by :func:`stackft.prefetch.prefetch`)
    is answered from them.
    """

    def __init__(self, caches: dict, *, pair_input: bool, device, placement: str = "mmap"):
        self.caches, self.pair_input, self.device, self.placement = caches, pair_input, device, placement

    @classmethod
    def for_run(cls, trainer) -> "CachedFeatures":
        cfg = trainer.cfg
        caches = split_caches(trainer.encoder, trainer.data, root=cache_root(cfg.cache), dtype=cfg.cache_dtype,
                              batch_size=cfg.eval_batch_size, device=trainer.device,
                              progress=cfg.progress and trainer.dist.is_main, dist=trainer.dist)
        placement = choose_placement(cfg.cache_placement, sum(c.nbytes for c in caches.values()), trainer.device)
        return cls(place(caches, placement, trainer.device), pair_input=trainer.model.pair_input,
                   device=trainer.device, placement=placement)

    def __call__(self, batch: dict, split: str) -> dict:
        feats = attached(batch)
        if feats is not None:
            return feats
        cache = self.caches["dev" if split == "dev" else "train"]
        index = batch["index"].cpu()
        if self.pair_input:
            ha, ma = _to_width(*cache.gather(2 * index, device=self.device), batch.get("a_attention_mask"))
            hb, mb = _to_width(*cache.gather(2 * index + 1, device=self.device), batch.get("b_attention_mask"))
            return {"hidden_a": ha, "mask_a": ma, "hidden_b": hb, "mask_b": mb}
        hidden, mask = _to_width(*cache.gather(index, device=self.device), batch.get("attention_mask"))
        return {"hidden": hidden, "mask": mask}


def _to_width(hidden, mask, like):
    """Zero-pad ``hidden [B,T,H]``/``mask [B,T]`` to the width of the collated batch's ``like [B,W]``.

    The cache pads to the longest of *these* sequences; a micro-batch cut from a wider batch keeps the
    batch's width in its labels, so the features must too (the live encoder's do).
    """
    if like is None or like.shape[1] <= hidden.shape[1]:
        return hidden, mask
    extra = like.shape[1] - hidden.shape[1]
    return (torch.nn.functional.pad(hidden, (0, 0, 0, extra)), torch.nn.functional.pad(mask, (0, extra)))
