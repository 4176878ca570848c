"""Multi-process training with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun --nproc_per_node=N -m stackft train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the
trainer then calls :func:`init` (NCCL on CUDA, gloo on CPU). ``--batch-size`` stays the *global*
batch: every global batch of the length-bucketed sampler is cut into ``world_size`` contiguous
chunks, one per rank, and the loss is normalised by the global count of labelled items, so N
processes take the same optimizer steps as one process with the same batch (up to float
reduction order). Rank 0 logs, evaluates the gathered predictions and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process)."""
    if env_world_size() <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, world, local = int(os.environ["RANK"]), env_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or str(device).startswith("cuda")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj, src: int = 0):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(info: DistInfo, t: torch.Tensor) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class ShardedBatchSampler(Sampler):
    """Rank ``rank``'s contiguous chunk of every global batch of ``batch_sampler``.

    Global batches smaller than ``world_size`` (at most the last one) are dropped, so every rank
    takes the same number of steps. ``set_epoch(epoch, start_batch)`` and ``len`` follow the
    wrapped sampler (``len`` minus the dropped batches).
    """

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.inner, self.rank, self.world = batch_sampler, rank, world_size
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.inner.set_epoch(epoch, 0)
        self.start_batch = start_batch  # counts kept (global) batches, i.e. steps taken

    def _global_batches(self, epoch: int | None = None) -> list:
        return [b for b in self.inner.batches(epoch) if len(b) >= self.world]

    def num_batches(self, epoch: int) -> int:
        return len(self._global_batches(epoch))

    def __iter__(self):
        for batch in self._global_batches()[self.start_batch:]:
            yield np.array_split(np.asarray(batch), self.world)[self.rank].tolist()

    def __len__(self) -> int:
        return len(self._global_batches())


def shard(indices, info: DistInfo) -> list:
    """This rank's strided share of ``indices`` (for evaluation and cache building)."""
    return list(indices)[info.rank::info.world_size]
