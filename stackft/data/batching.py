"""Batches: collate (padding to the docs/design.md batch contract) and a length-bucketing sampler."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from stackft.data.encode import IGNORE


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """[B, T] long tensor of ``rows`` right-padded with ``value`` (T = longest row)."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _mask(rows: list[list[int]]) -> torch.Tensor:
    """[B, T] long attention mask: 1 on real tokens, 0 on padding."""
    width = max((len(r) for r in rows), default=0)
    lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.long)
    return (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()


def collate(items: list[dict], pad_id: int) -> dict:
    """Stack EncodedDataset items (dicts from ``dataset[i]``) into a batch.

    Single-sequence items -> ``input_ids [B,T] long`` (padded with ``pad_id``),
    ``attention_mask [B,T] long``, ``token_type_ids [B,T] long`` (padded with 0), ``labels``
    (``[B] long``, or ``[B,T] long`` padded with -100 when item labels are lists, i.e. tagging),
    ``index [B] long``; tagging items also give ``word_starts`` (list of lists of int) and
    ``n_words`` (list of int) as plain python lists.
    Siamese items -> ``a_input_ids, a_attention_mask, b_input_ids, b_attention_mask [B,T*]``,
    ``labels [B]``, ``index [B]``.
    Items without ``labels`` (unlabelled prediction input) give no ``labels`` key.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    first = items[0]
    batch: dict = {}
    if "a_input_ids" in first:
        for side in ("a", "b"):
            rows = [item[f"{side}_input_ids"] for item in items]
            batch[f"{side}_input_ids"] = _pad(rows, pad_id)
            batch[f"{side}_attention_mask"] = _mask(rows)
    else:
        rows = [item["input_ids"] for item in items]
        batch["input_ids"] = _pad(rows, pad_id)
        batch["attention_mask"] = _mask(rows)
        if "token_type_ids" in first:
            batch["token_type_ids"] = _pad([item["token_type_ids"] for item in items], 0)
        else:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    if "labels" in first:
        if isinstance(first["labels"], (list, tuple)):
            batch["labels"] = _pad([item["labels"] for item in items], IGNORE)
        else:
            batch["labels"] = torch.as_tensor([item["labels"] for item in items], dtype=torch.long)
    if "index" in first:
        batch["index"] = torch.as_tensor([item["index"] for item in items], dtype=torch.long)
    if "word_starts" in first:
        batch["word_starts"] = [list(item["word_starts"]) for item in items]
        batch["n_words"] = [int(item["n_words"]) for item in items]
    return batch


class LengthBucketSampler(Sampler):
    """Batch sampler grouping examples of similar length, deterministic given (seed, epoch).

    shuffle=True: permute all indices, sort each chunk of ``bucket_mult * batch_size`` of them by
    length, cut into batches, then shuffle the batch order. shuffle=False: all indices sorted by
    length, longest first (fast evaluation; every index exactly once, in a fixed order).

    ``max_tokens`` (optional): a batch also stops growing before ``size * longest > max_tokens``
    (a single longer example still forms its own batch). ``drop_last`` drops the final short batch
    (only without ``max_tokens``, where batch sizes vary anyway).

    Yields lists of dataset indices. ``set_epoch(epoch, start_batch)`` selects the epoch's order and
    skips its first ``start_batch`` batches (resume mid-epoch). ``len()`` = batches per epoch (the
    full epoch, regardless of start_batch).
    """

    def __init__(self, lengths, batch_size: int, *, shuffle: bool = True, seed: int = 0, bucket_mult: int = 50,
                 drop_last: bool = False, max_tokens: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bucket_mult < 1:
            raise ValueError(f"bucket_mult must be >= 1, got {bucket_mult}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_mult = bucket_mult
        self.drop_last = drop_last
        self.max_tokens = max_tokens
        self.epoch = 0
        self.start_batch = 0
        self._cached: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Use epoch ``epoch``'s order and skip its first ``start_batch`` batches."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def _cut(self, order: np.ndarray) -> list[list[int]]:
        """Split an index order into batches (by count, or by count and token budget)."""
        if self.max_tokens is None:
            batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
            return batches
        batches, current, longest = [], [], 0
        for index in order.tolist():
            length = int(self.lengths[index])
            grown = max(longest, length)
            if current and (len(current) >= self.batch_size or grown * (len(current) + 1) > self.max_tokens):
                batches.append(current)
                current, grown = [], length
            current.append(index)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        n = len(self.lengths)
        if not self.shuffle:
            # stable sort, longest first; ties keep index order
            order = np.argsort(-self.lengths, kind="stable")
            result = self._cut(order)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(n)
            chunk = self.bucket_mult * self.batch_size
            pieces = []
            for start in range(0, n, chunk):
                part = order[start : start + chunk]
                pieces.append(part[np.argsort(self.lengths[part], kind="stable")])
            if self.max_tokens is None:
                # chunks hold whole numbers of batches, so cutting the concatenation never mixes
                # chunks, and drop_last has at most one short batch (the last) to drop
                result = self._cut(np.concatenate(pieces) if pieces else order)
            else:
                result = [batch for piece in pieces for batch in self._cut(piece)]
            result = [result[i] for i in rng.permutation(len(result))]
        self._cached = (epoch, result)
        return result

    def num_batches(self, epoch: int) -> int:
        """Batches in ``epoch`` (the same for every epoch unless ``max_tokens`` is set)."""
        if self.max_tokens is None:
            return len(self)
        return len(self.batches(epoch))

    def __iter__(self):
        yield from self.batches()[self.start_batch :]

    def __len__(self) -> int:
        if self.max_tokens is None:
            n = len(self.lengths)
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return len(self.batches())


def make_loader(dataset, batch_size: int, pad_id: int, *, shuffle: bool, seed: int = 0,
                max_tokens: int | None = None, num_workers: int = 0) -> DataLoader:
    """DataLoader over an EncodedDataset with a LengthBucketSampler (``loader.batch_sampler``) and collate.

    Call ``loader.batch_sampler.set_epoch(epoch, start_batch)`` before each epoch.
    """
    sampler = LengthBucketSampler(dataset.lengths, batch_size, shuffle=shuffle, seed=seed, max_tokens=max_tokens)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=functools.partial(collate, pad_id=pad_id),
                      num_workers=num_workers)
