"""Feature source that feeds frozen-encoder phases from :mod:`stackft.cache` instead of the encoder.

``cfg.cache``: ``"auto"`` caches under ``$STACKFT_CACHE_DIR`` (default ``~/.cache/stackft/features``),
``"off"`` runs the encoder every step, anything else is a folder to cache in. One cache per split;
its fingerprint covers the encoder weights and tokenizer, the data files, the exact token sequences
(so max length, subsampling and splitting are covered), the layer selection and the dtype, so a
stale cache is rebuilt rather than read.
"""

from __future__ import annotations

import torch

from stackft import distributed as D
from stackft.cache.build import split_caches
from stackft.cache.prefetch import attached

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
    """``features(batch, split) -> dict`` read from the per-split caches (feature dicts as :meth:`stackft.modeling.model.StackModel.features` returns them).

    A batch that already carries its features (attached by :func:`stackft.cache.prefetch.prefetch`)
    is answered from them.
    """

    def __init__(self, caches: dict, *, pair_input: bool, device, placement: str = "mmap", segments: bool = False,
                 first_token: bool = False):
        """``pair_input``: the caches hold siamese pairs (sequence 2i = side a, 2i+1 = side b of example i);
        ``segments``: joint pairs for a pair head, so the batch's ``token_type_ids`` go with the features
        (the model splits them by segment); ``first_token``: the head reads only position 0 ([CLS]), so
        ``hidden`` is ``[B, 1, H]`` (:meth:`FeatureCache.gather_first`), not the whole padded batch."""
        if first_token and (pair_input or segments):
            raise ValueError("CachedFeatures: first_token is for single-sequence heads, not pair heads")
        self.caches, self.pair_input, self.device, self.placement = caches, pair_input, device, placement
        self.segments, self.first_token = segments, first_token

    @classmethod
    def for_data(cls, encoder, data, *, pair_input: bool, root, dtype: str, device, placement: str = "auto",
                 batch_size: int = 64, progress: bool = True, dist: D.DistInfo = D.DistInfo(),
                 segments: bool = False, first_token: bool = False) -> "CachedFeatures":
        """Open (or build once) the caches of ``data``'s train/dev splits and place them for ``device``."""
        caches = split_caches(encoder, data, root=root, dtype=dtype, batch_size=batch_size, device=device,
                              progress=progress, dist=dist)
        placement = choose_placement(placement, sum(c.nbytes for c in caches.values()), device)
        return cls(place(caches, placement, device), pair_input=pair_input, device=device, placement=placement,
                   segments=segments, first_token=first_token)

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
        if self.first_token:
            hidden, mask = cache.gather_first(index, device=self.device)
            return {"hidden": hidden, "mask": mask}
        hidden, mask = _to_width(*cache.gather(index, device=self.device), batch.get("attention_mask"))
        if self.segments:
            return {"hidden": hidden, "mask": mask, "token_type_ids": batch["token_type_ids"].to(self.device)}
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
