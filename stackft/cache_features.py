"""Feature source that feeds frozen-encoder phases from :mod:`stackft.cache` instead of the encoder.

``cfg.cache``: ``"auto"`` caches under ``$STACKFT_CACHE_DIR`` (default ``~/.cache/stackft/features``),
``"off"`` runs the encoder every step, anything else is a folder to cache in. One cache per split;
its fingerprint covers the encoder weights and tokenizer, the data files, the exact token sequences
(so max length, subsampling and splitting are covered), the layer selection and the dtype, so a
stale cache is rebuilt rather than read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .cache import cache_fingerprint, get_or_build


def default_cache_root() -> Path:
    return Path(os.environ.get("STACKFT_CACHE_DIR", Path.home() / ".cache" / "stackft" / "features"))


def _sequences_digest(sequences) -> str:
    h = hashlib.sha256()
    for seq in sequences:
        h.update(len(seq).to_bytes(4, "little"))
        h.update(torch.as_tensor(seq, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


class CachedFeatures:
    """``features(batch, split) -> dict`` read from the per-split caches (see docs/design.md)."""

    def __init__(self, caches: dict, *, pair_input: bool, device):
        self.caches, self.pair_input, self.device = caches, pair_input, device

    @classmethod
    def for_run(cls, trainer) -> "CachedFeatures":
        cfg, enc = trainer.cfg, trainer.encoder
        root = default_cache_root() if cfg.cache == "auto" else Path(cfg.cache)
        enc_fp = enc.fingerprint()
        caches = {}
        for split, ds in (("train", trainer.data.train), ("dev", trainer.data.dev)):
            seqs = ds.sequences()
            fp = cache_fingerprint(encoder_fingerprint=enc_fp, data_files=trainer.data.files,
                                   max_length=trainer.data.max_length, layers=list(enc.layers),
                                   dtype=cfg.cache_dtype, extra=f"{split}:{_sequences_digest(seqs)}")
            caches[split] = get_or_build(root / f"{split}-{fp[:16]}", enc, seqs, fingerprint=fp,
                                         dtype=cfg.cache_dtype, batch_size=cfg.eval_batch_size,
                                         device=trainer.device, pad_id=enc.pad_id)
        return cls(caches, pair_input=trainer.model.pair_input, device=trainer.device)

    def __call__(self, batch: dict, split: str) -> dict:
        cache = self.caches["dev" if split == "dev" else "train"]
        index = batch["index"].cpu()
        if self.pair_input:
            ha, ma = cache.gather(2 * index, device=self.device)
            hb, mb = cache.gather(2 * index + 1, device=self.device)
            return {"hidden_a": ha, "mask_a": ma, "hidden_b": hb, "mask_b": mb}
        hidden, mask = cache.gather(index, device=self.device)
        return {"hidden": hidden, "mask": mask}
