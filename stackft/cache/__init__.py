"""Frozen-encoder feature caches: run the encoder once, train phase 1 from the stored features.

- :mod:`~stackft.cache.format`: :class:`FeatureCache`, the memory-mapped on-disk store (its layout
  is documented there and owned there alone), fingerprints, atomic builds, checksums.
- :mod:`~stackft.cache.quantize`: int8 per-token quantisation and its error bound.
- :mod:`~stackft.cache.ops`: the ``gather_pad`` op (C++/CUDA extension, pure-PyTorch fallback).
- :mod:`~stackft.cache.build`: where a run's caches live; open or build the train/dev caches.
- :mod:`~stackft.cache.source`: :class:`CachedFeatures`, the trainer's feature source; GPU placement.
- :mod:`~stackft.cache.prefetch`: gather the next batches' features on a side CUDA stream.
"""

from stackft.cache.format import (
                                  DTYPES,
                                  FORMAT_VERSION,
                                  MAGIC,
                                  CacheError,
                                  FeatureCache,
                                  StaleCacheError,
                                  cache_fingerprint,
                                  get_or_build,
                                  open_valid,
                                  sequences_digest,
)
from stackft.cache.quantize import dequantize_int8, quantize_int8

__all__ = ["DTYPES", "FORMAT_VERSION", "MAGIC", "CacheError", "FeatureCache", "StaleCacheError", "cache_fingerprint",
           "get_or_build", "open_valid", "sequences_digest", "dequantize_int8", "quantize_int8"]
