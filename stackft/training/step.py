"""One optimizer step: the training step the trainer, the studies and the benches all run.

:func:`train_step` takes a ``forward(micro_batch) -> logits`` callable, so the same step serves a
live encoder, cached features, or a DDP-wrapped model. It splits the batch into ``grad_accum``
micro-batches, normalises the summed loss by the global number of labelled items (so the
gradient equals that of the mean loss over the whole global batch, whatever the micro-batching
or world size), refuses a non-finite loss *before* the optimizer moves, clips, steps the
optimizer and the schedule, and returns the mean loss.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

from stackft import distributed as D
from stackft.modeling.model import task_loss
from stackft.training.loaders import to_device
from stackft.training.optim import clip_gradients


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (the optimizer was not stepped)."""


class NonFiniteWeights(NonFiniteLoss):
    """Weights or optimizer state became NaN or infinite (raised before they are evaluated or saved)."""


def split_batch(batch: dict, k: int) -> list[dict]:
    """``batch`` cut into at most ``k`` micro-batches along dim 0 (lists are cut alike)."""
    n = len(batch["labels"])
    k = max(1, min(k, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [{key: v[a:b] for key, v in batch.items()} for a, b in zip(bounds, bounds[1:])]


def labelled_count(labels: torch.Tensor) -> torch.Tensor:
    """Items the loss averages over: labelled tokens (``labels [B,T]``) or examples (``[B]``)."""
    return (labels != -100).sum() if labels.dim() > 1 else torch.tensor(labels.numel(), device=labels.device)


def train_step(forward: Callable[[dict], torch.Tensor], batch: dict, optimizer: torch.optim.Optimizer,
               scheduler=None, *, params: Iterable[torch.Tensor] | None = None, grad_accum: int = 1,
               clip: float = 0.0, clip_mode: str = "global", amp_dtype: torch.dtype | None = None,
               device=None, dist: D.DistInfo = D.DistInfo(), ddp=None, loss_fn=task_loss) -> float:
    """One optimizer step over ``batch`` (this rank's share of the global batch); returns the mean loss.

    - ``forward(micro_batch) -> logits`` (``[B,T,C]`` token level, ``[B,C]`` sequence level);
      ``batch["labels"]`` as :func:`task_loss` takes them.
    - ``grad_accum=k``: k micro-batches, one optimizer step. Under DDP (``ddp`` = the
      ``DistributedDataParallel`` module ``forward`` calls) gradients are synchronised on the last
      micro-batch only; the loss is scaled by the world size, which DDP's averaging divides out.
    - ``amp_dtype``: forward under ``torch.autocast`` with this dtype (None: no autocast).
    - ``clip > 0``: clip ``params`` (default: every parameter of ``optimizer``) by ``clip_mode``.
    - Raises :class:`NonFiniteLoss` with gradients cleared and nothing stepped when the loss is
      NaN or infinite.
    """
    device = torch.device(device) if device is not None else batch["labels"].device
    batch = to_device(batch, device)
    n_global = D.all_reduce_sum(dist, labelled_count(batch["labels"]).float()).clamp(min=1)
    micro = split_batch(batch, grad_accum)
    total = torch.zeros((), device=device)
    autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    for i, mb in enumerate(micro):
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
        with sync:
            with autocast:
                logits = forward(mb)
            loss_sum = loss_fn(logits, mb["labels"], reduction="sum")
            (loss_sum * (dist.world_size / n_global)).backward()
        total += loss_sum.detach()
    loss = D.all_reduce_sum(dist, total) / n_global
    if not torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"non-finite loss ({loss.item()})")
    if clip:
        if params is None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
        clip_gradients(params, clip, clip_mode)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
