"""Gather the next batches' cached features while the current batch computes.

``prefetch(batches, features, device, depth)`` yields each batch with its features attached
(keys ``"feat:<name>"``, so :func:`stackft.training.step.split_batch` cuts them into micro-batches like
any other tensor). On CUDA the gathers run on a side stream, ``depth`` batches ahead: a batch read
from a pinned host cache crosses PCIe while the previous step's kernels run; the consuming stream
waits on an event before it touches them. Elsewhere (CPU) the features are computed in the same
order, ``depth`` batches ahead, on the calling thread: there is nothing to overlap with, but the
code path and its results are the same.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

import torch

PREFIX = "feat:"


def attach(batch: dict, feats: dict) -> dict:
    """``batch`` plus ``feats`` under ``"feat:<name>"`` keys (a new dict)."""
    return {**batch, **{PREFIX + k: v for k, v in feats.items()}}


def attached(batch: dict) -> dict | None:
    """The features :func:`attach` put on ``batch`` (or a micro-batch cut from it), else None."""
    feats = {k[len(PREFIX):]: v for k, v in batch.items() if k.startswith(PREFIX)}
    return feats or None


def prefetch(batches: Iterable[dict], features: Callable[[dict], dict], device: torch.device | str,
             depth: int = 1) -> Iterator[dict]:
    """Yield every batch of ``batches`` with ``features(batch)`` attached, computed ``depth`` ahead.

    ``features`` returns a dict of tensors on ``device``. Batches come out in their order, one per
    input batch; stopping the iteration early just drops the batches fetched ahead.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    device = torch.device(device)
    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    pending: deque = deque()
    source = iter(batches)

    def issue(batch):
        if side is None:
            return batch, features(batch), None
        # No wait on the consumer stream: a gather reads only the immutable cache and the batch's
        # host indices, and writes memory the allocator hands to the side stream.
        with torch.cuda.stream(side):
            feats = features(batch)
            done = torch.cuda.Event()
            done.record(side)
        return batch, feats, done

    def take():
        batch, feats, done = pending.popleft()
        if done is not None:
            consumer = torch.cuda.current_stream(device)
            consumer.wait_event(done)
            for t in feats.values():
                if torch.is_tensor(t) and t.is_cuda:
                    t.record_stream(consumer)  # the allocator must not recycle it while the step runs
        return attach(batch, feats)

    for batch in source:
        pending.append(issue(batch))
        if len(pending) > depth:
            yield take()
    while pending:
        yield take()
