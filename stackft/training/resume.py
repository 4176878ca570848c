"""What makes a resume safe: run ids, data fingerprints, the checks :class:`~stackft.training.trainer.Trainer` makes.

A run started in a folder gets a run id (``run.json``) that every checkpoint it writes carries in
its ``meta.json``, with the config it was trained with and a fingerprint of the encoded training
and dev data. ``fit(resume=True)`` resumes ``last/`` only if

- ``last/`` was written by the run started last in the folder (a run started there without
  ``resume`` that died before its first checkpoint leaves the previous run's ``last/`` behind:
  resuming it would report that run's results),
- the settings that decide what is trained equal those ``last/`` was trained with
  (:meth:`~stackft.config.TrainConfig.changed_for_resume`; learning rates may change after a
  non-finite loss, :data:`~stackft.config.TrainConfig.RESUMABLE_AFTER_NONFINITE`),
- the data encodes to the same examples and labels (:func:`data_fingerprint`).

Checkpoints of older versions (no run id, no data fingerprint) resume with a one-time warning.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from array import array
from itertools import chain

from stackft.training.checkpoint import warn_once


def new_run_info() -> dict:
    """A fresh ``run.json``: a random run id and the start time."""
    return {"run_id": uuid.uuid4().hex,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def data_fingerprint(data) -> dict:
    """Counts and a sha256 of the encoded train and dev examples (token ids, labels) and the label set.

    It changes whenever what a run trains on or is scored on does: an example added, dropped,
    reordered or edited, a label changed, another tokenizer or ``max_length``.
    """
    cached = getattr(data, "_stackft_fingerprint", None)
    if cached is not None:
        return dict(cached)
    h = hashlib.sha256()
    h.update(json.dumps(list(data.vocab.to_list())).encode())
    for split in (data.train, data.dev):
        h.update(b"\0split:" + split.kind.encode())
        _digest_items(h, split.items)
    fp = {"train": len(data.train), "dev": len(data.dev), "labels": len(data.vocab), "sha256": h.hexdigest()}
    try:
        data._stackft_fingerprint = dict(fp)  # studies share one TaskData among their trials
    except AttributeError:
        pass
    return fp


def _digest_items(h, items) -> None:
    """Feed ``items`` (dicts of ints and int lists) to ``h``, column by column (fast), else item by item."""
    keys = sorted(items[0]) if items else []
    try:
        key_set = set(keys)
        if any(it.keys() != key_set for it in items):
            raise TypeError("items with different keys")
        for k in keys:
            col = [it[k] for it in items]
            h.update(b"\0key:" + k.encode())
            if isinstance(col[0], int):
                h.update(array("q", col).tobytes())
            else:
                h.update(array("q", map(len, col)).tobytes())
                h.update(array("q", chain.from_iterable(col)).tobytes())
    except (TypeError, OverflowError):
        h.update(b"\0json")
        for item in items:
            h.update(json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode() + b"\n")


def data_change(saved: dict | None, now: dict, where) -> str | None:
    """What differs between the data ``where`` (a checkpoint) was trained on and the data now; None if nothing."""
    if not isinstance(saved, dict) or "sha256" not in saved:
        warn_once("no-data-fingerprint", f"{where}: written by an older stackft (no data fingerprint): "
                                         f"resuming without checking that the data is unchanged")
        return None
    if saved["sha256"] == now["sha256"]:
        return None
    counts = [f"{k} examples: {saved.get(k)} then, {now[k]} now" for k in ("train", "dev") if saved.get(k) != now[k]]
    if saved.get("labels") != now["labels"]:
        counts.append(f"labels: {saved.get('labels')} then, {now['labels']} now")
    return "; ".join(counts) or "the same counts, but other examples or labels"


def foreign_checkpoint(run_info: dict | None, meta: dict, where) -> str | None:
    """Why the checkpoint ``where`` (its ``meta``) does not belong to the run of ``run_info``; None if it does."""
    ck = meta.get("run_id")
    current = (run_info or {}).get("run_id")
    if ck is None and current is None:
        warn_once("no-run-id", f"{where}: written by an older stackft (no run id): resuming without checking "
                               f"that it belongs to the run started last in this folder")
        return None
    if current is None:  # run.json went missing: the checkpoint's own id is all there is
        return None
    if ck != current:
        started = (run_info or {}).get("started", "?")
        return (f"{where} was written by an earlier run (run id {str(ck)[:8] if ck else 'none'}) than the one "
                f"started in this folder last ({current[:8]}, at {started}), which ended before writing a "
                f"checkpoint of its own")
    return None


def retarget_lrs(optimizer, scheduler, base_lrs: list[float]) -> None:
    """Continue a restored optimizer and schedule at new base learning rates (same point of the schedule)."""
    for i, (group, base) in enumerate(zip(optimizer.param_groups, base_lrs)):
        group["initial_lr"] = base
        scheduler.base_lrs[i] = base
        group["lr"] = base * scheduler.lr_lambdas[i](scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def lr_field(phase) -> tuple[str, float]:
    """The TrainConfig field that sets ``phase``'s learning rate, and its value."""
    if phase.train_encoder:
        return "phase2_lr", phase.encoder_lr
    return "phase1_lr", phase.head_lr
