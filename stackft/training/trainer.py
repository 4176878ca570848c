"""The two-phase training loop.

``Trainer(cfg).fit()`` runs the phases of ``cfg.strategy`` (stackft.strategies): for each phase it
freezes or unfreezes the encoder, builds fresh parameter groups, optimizer and schedule, trains
with evaluations ``evals_per_epoch`` times an epoch, applies the phase's stop rule, and keeps:

- ``best/``: the best dev checkpoint of the final phase (the model the strategy produces);
- ``phase1_end/``: the phase-2 initialisation (two-phase strategies);
- ``last/``: model + optimizer + scheduler + RNG + sampler position, for ``resume=True``;
- ``metrics.jsonl`` (one line per evaluation) and ``summary.json``.

A non-finite loss stops the run with :class:`NonFiniteLoss`; the last good checkpoint is kept.
While the encoder is frozen its features can come from a :mod:`stackft.cache` feature cache
instead of running it every step (``cfg.cache``).

Under ``torchrun`` (WORLD_SIZE > 1) the same loop runs data-parallel with
DistributedDataParallel (see :mod:`stackft.distributed`): ``batch_size`` is the global batch, the
loss is normalised by the global number of labelled items, evaluation predictions are gathered,
and rank 0 alone writes files. ``precision="bf16"`` runs forward passes under autocast (fp32
master weights and optimizer state); ``grad_accum=k`` splits every batch into k micro-batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from stackft import distributed as D
from stackft.cache.prefetch import prefetch
from stackft.cache.source import check_placement
from stackft.config import TrainConfig
from stackft.data.pipeline import TaskData, load_task_data
from stackft.data.subset import SubsetView
from stackft.modeling.encoders import Encoder, load_encoder
from stackft.modeling.heads import build_head
from stackft.modeling.model import StackModel, task_loss
from stackft.tasks import get_task
from stackft.training import checkpoint as ckpt
from stackft.training.evaluation import predict
from stackft.training.loaders import loader, to_device
from stackft.training.optim import build_param_groups, clip_gradients, make_optimizer, make_scheduler
from stackft.training.scoring import score
from stackft.training.stopper import Phase1Stopper
from stackft.training.strategies import Phase, default_head, plan_phases

log = logging.getLogger("stackft")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 (``auto`` on a bf16-capable GPU, or asked for), else None (fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    raise ValueError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")


def split_batch(batch: dict, k: int) -> list[dict]:
    """``batch`` cut into at most ``k`` micro-batches along dim 0 (lists are cut alike)."""
    n = len(batch["labels"])
    k = max(1, min(k, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [{key: v[a:b] for key, v in batch.items()} for a, b in zip(bounds, bounds[1:])]


def labelled_count(labels: torch.Tensor) -> torch.Tensor:
    """Items the loss averages over: labelled tokens (token level) or examples."""
    return (labels != -100).sum() if labels.dim() > 1 else torch.tensor(labels.numel(), device=labels.device)


class _TrainForward(torch.nn.Module):
    """What DistributedDataParallel wraps: batch -> logits, through the cache or the encoder."""

    def __init__(self, trainer: "Trainer"):
        super().__init__()
        self.model = trainer.model
        self._features = trainer._features  # a bound method, not a submodule

    def forward(self, batch):
        return self.model.forward_features(self._features(batch, "train"))


def build_model(cfg: TrainConfig, encoder: Encoder, num_labels: int) -> StackModel:
    """Encoder + the strategy's head, the head initialised under ``cfg.init_seed``."""
    task = get_task(cfg.task)
    head_name = cfg.head or default_head(cfg.strategy, task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        head = build_head(head_name, encoder.hidden_size, num_labels, level=task.level,
                          dropout=cfg.dropout, **cfg.head_options)
    return StackModel(encoder, head)


@dataclass
class _Position:
    phase: int = 0
    epoch: int = 0
    batch: int = 0  # batches done in this epoch
    phase_step: int = 0
    global_step: int = 0


class Trainer:
    """Runs one configuration end to end. ``encoder``/``data`` may be passed in pre-built.

    A passed-in encoder is trained in place (phase 2). Strategies that restart from the pretrained
    weights (eh-ft) snapshot the encoder as it is when the Trainer is built, so pass a pristine one.
    """

    def __init__(self, cfg: TrainConfig, *, encoder: Encoder | None = None, data: TaskData | None = None):
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.dist = D.init(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        if cfg.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {cfg.grad_accum}")
        check_placement(cfg.cache_placement)
        if cfg.cache_prefetch is not None and cfg.cache_prefetch < 0:
            raise ValueError(f"cache_prefetch must be >= 0, got {cfg.cache_prefetch}")
        self.out = Path(cfg.output_dir)
        self.encoder = encoder or load_encoder(cfg.encoder, layers=cfg.layers, dropout=cfg.dropout)
        self.head_name = cfg.head or default_head(cfg.strategy, self.task)
        if data is None:
            if cfg.train_path is None:
                raise ValueError("TrainConfig.train_path is required (or pass data=)")
            from stackft.modeling.heads import head_pair_input

            pair_mode = cfg.pair_mode or ("siamese" if head_pair_input(self.head_name) else "joint")
            data = load_task_data(cfg.task, cfg.train_path, cfg.dev_path, tokenizer=self.encoder.tokenizer,
                                  max_length=cfg.max_length, pair_mode=pair_mode, dev_size=cfg.dev_size,
                                  split_seed=cfg.split_seed, max_train=cfg.max_train, max_dev=cfg.max_dev,
                                  on_error=cfg.on_error, max_line_chars=cfg.max_line_chars)
        self.data = data
        self.model = build_model(cfg, self.encoder, len(data.vocab)).to(self.device)
        if self.model.pair_input != (data.train.kind == "pairs-siamese"):
            raise ValueError(f"head {self.head_name!r} needs {'siamese' if self.model.pair_input else 'joint'} "
                             f"pair encoding, data was encoded as {data.train.kind}")
        self.phases = plan_phases(cfg.strategy, cfg)
        if sum(p.epochs for p in self.phases) < 1:
            raise ValueError(f"strategy {cfg.strategy!r} with these epoch settings trains for 0 epochs")
        # best/ is chosen among the evaluations of the phase whose model the strategy produces
        # (phase 2 of two-phase strategies), never a phase-1 head the run went past
        self.final_phase = max(i for i, p in enumerate(self.phases) if p.epochs > 0)
        self.pos = _Position()
        self._forward = self._ddp = None  # set per phase in _run_phase
        self._saved_last = False
        self.best = {"score": -math.inf}
        self.phase_times: dict[str, float] = {}
        self.history: list[dict] = []
        n_sub = min(len(data.train), max(len(data.dev), 1))
        self.train_probe = sorted(random.Random(cfg.data_seed).sample(range(len(data.train)), n_sub))
        self.features = None  # set per phase: a cache-backed feature source, or None (live encoder)
        self._pretrained = None
        if any(p.reload_encoder for p in self.phases):  # EH-FT restarts phase 2 from these weights
            self._pretrained = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    # -- features ---------------------------------------------------------------------------
    def _features(self, batch: dict, split: str) -> dict:
        if self.features is not None:
            return self.features(batch, split)
        return self.model.features(batch)

    def _setup_features(self, phase: Phase) -> None:
        self.features = None
        if phase.train_encoder or phase.pet or self.cfg.cache == "off":
            return
        from stackft.cache.source import CachedFeatures

        self.features = CachedFeatures.for_run(self)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, split: str = "dev") -> dict:
        """Metrics on dev, or on the fixed train probe (``split="train"``) used by the gap rule.

        Under DDP each rank predicts a strided share; the predictions are gathered and every
        rank scores the whole set (so every rank takes the same stop decisions).
        """
        base = self.data.dev if split == "dev" else self.data.train
        indices = list(range(len(base))) if split == "dev" else self.train_probe
        mine = D.shard(indices, self.dist)
        features = (lambda b: self.features(b, split)) if self.features is not None else None
        with self._autocast():
            preds = predict(self.model, SubsetView(base, mine), self.task, self.data.vocab,
                            batch_size=self.cfg.eval_batch_size, device=self.device, features=features)
        merged = {}
        for idx, p in D.all_gather_objects(self.dist, (mine, preds)):
            merged.update(zip(idx, p))
        return score(self.task, base, [merged[i] for i in indices], self.data.vocab, indices=indices)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # -- checkpoints ------------------------------------------------------------------------
    def _meta(self, metrics: dict | None = None) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "head": self.head_name,
            "labels": self.data.vocab.to_list(),
            "task": self.task.name,
            "pair_mode": self.data.pair_mode,
            "max_length": self.data.max_length,
            "encoder_hidden_size": self.encoder.hidden_size,
            "metrics": metrics or {},
            "position": vars(self.pos).copy(),
        }

    def _save_last(self, optimizer, scheduler, stopper) -> None:
        rngs = D.all_gather_objects(self.dist, ckpt.rng_state())  # every rank's, for an exact resume
        self._saved_last = True
        if not self.dist.is_main:
            return
        state = {  # optimizer None: saved at a phase boundary
            "position": vars(self.pos).copy(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None,
            "stopper": stopper.state_dict() if stopper else None,
            "best": self.best,
            "phase_times": self.phase_times,
            "history": self.history,
            "rng": rngs[0],
            "rng_ranks": rngs,
        }
        self._save(self.out / "last", self._meta(), state)

    def _save(self, path, meta, state=None) -> None:
        """Rank 0 writes a checkpoint (atomically); other ranks do nothing."""
        if self.dist.is_main:
            ckpt.save_checkpoint(path, self.model, meta, state)

    def _load(self, path) -> None:
        D.barrier(self.dist)  # rank 0 may have just written it
        ckpt.load_weights(path, self.model)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop ---------------------------------------------------------------------------
    def _check_resume_config(self) -> None:
        """Resuming must not mix settings: a run saved with another training config is refused."""
        path = self.out / "config.json"
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        changed = self.cfg.changed_for_resume(saved)
        if changed:
            now = self.cfg.to_dict()
            what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {self.out}: it was trained with other settings ({what}). "
                             f"Resume with the saved settings ({path}), or train into another output_dir.")

    def fit(self, resume: bool = False) -> dict:
        """Train all phases; returns the summary (also written to ``summary.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = None
        if resume and (self.out / "last" / "state.pt").exists():
            self._check_resume_config()
            state = torch.load(self.out / "last" / "state.pt", weights_only=False)
            self.pos = _Position(**state["position"])
            if self.phases[self.pos.phase].pet and state["optimizer"] is not None:
                self._attach_pet(self.phases[self.pos.phase])  # the saved weights include the PET modules
            ckpt.load_weights(self.out / "last", self.model)
            self.best, self.phase_times, self.history = state["best"], state["phase_times"], state["history"]
            ranks = state.get("rng_ranks") or [state["rng"]]
            if len(ranks) == self.dist.world_size:
                state["rng"] = ranks[self.dist.rank]
            self._saved_last = True
            if self.dist.is_main:
                self._rewrite_log()
            log.info("resuming from %s at %s", self.out / "last", self.pos)
        else:
            if self.dist.is_main:
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
                (self.out / "config.json").write_text(self.cfg.to_json())
                ckpt.save_encoder_files(self.encoder, self.out)
            torch.manual_seed(self.cfg.data_seed + self.dist.rank)  # dropout follows the data seed
        D.barrier(self.dist)
        steps_left = self.cfg.max_steps_this_run
        for p_idx, phase in enumerate(self.phases):
            if p_idx < self.pos.phase:
                continue
            if p_idx > self.pos.phase:
                self.pos = _Position(phase=p_idx, global_step=self.pos.global_step)
            if state is not None and state["optimizer"] is None:
                state = None  # saved at a phase boundary: the phase starts fresh
            finished, steps_left = self._run_phase(phase, state, steps_left)
            state = None
            if not finished:
                return {"status": "interrupted", "position": vars(self.pos).copy()}
            if self.cfg.stop_after_phase == p_idx and p_idx + 1 < len(self.phases):
                self.pos = _Position(phase=p_idx + 1, global_step=self.pos.global_step)
                self._save_last(None, None, None)
                return {"status": "paused", "position": vars(self.pos).copy()}
        return self._finish()

    def _attach_pet(self, phase: Phase) -> None:
        from stackft.modeling import pet

        pet.attach(self.model.encoder, phase.pet, seed=self.cfg.init_seed)
        self.model.to(self.device)

    def _rewrite_log(self) -> None:
        with open(self.out / "metrics.jsonl", "w") as f:
            for rec in self.history:
                f.write(json.dumps(rec) + "\n")

    def _run_phase(self, phase: Phase, state: dict | None, steps_left: int | None):
        cfg, model = self.cfg, self.model
        if phase.reload_encoder and state is None and self.pos.phase_step == 0:
            model.encoder.load_state_dict(self._pretrained)
        if phase.train_encoder:
            model.unfreeze_encoder()
        else:
            model.freeze_encoder()
        if phase.pet:
            self._attach_pet(phase)
        t_cache = time.perf_counter()
        self._setup_features(phase)
        if self.features is not None:
            self.phase_times[f"{phase.name}_cache"] = time.perf_counter() - t_cache
        groups = build_param_groups(model, head_lr=phase.head_lr, encoder_lr=phase.encoder_lr,
                                    weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
        optimizer = make_optimizer(groups, kind=cfg.optimizer, lr=phase.head_lr)
        train_dl = loader(self.data.train, cfg.batch_size, self.encoder.pad_id, shuffle=True,
                          seed=cfg.data_seed * 1000 + self.pos.phase, max_tokens=cfg.max_tokens)
        sampler = train_dl.batch_sampler
        if self.dist.enabled:
            sampler = D.ShardedBatchSampler(sampler, self.dist.rank, self.dist.world_size)
            train_dl = torch.utils.data.DataLoader(self.data.train, batch_sampler=sampler,
                                                   collate_fn=train_dl.collate_fn, generator=train_dl.generator)
        # with max_tokens the number of batches differs between epochs
        epoch_steps = [sampler.num_batches(e) for e in range(phase.epochs)]
        scheduler = make_scheduler(optimizer, cfg.schedule, total_steps=sum(epoch_steps), warmup_proportion=cfg.warmup)
        stopper = Phase1Stopper(mode=phase.stop_mode, gap_tol=cfg.gap_tol, patience=cfg.patience,
                                min_steps=min(self._eval_points(epoch_steps[0])) if epoch_steps else 0)
        # what a train step calls; under DDP the wrapper built for this phase's trainable params
        self._forward, self._ddp = _TrainForward(self), None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = self._forward = DistributedDataParallel(self._forward, device_ids=ids)
        chosen_path = self.out / f"{phase.name}_chosen"
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["stopper"])
            ckpt.set_rng_state(state["rng"])
        t0 = time.perf_counter() - self.phase_times.get(phase.name, 0.0)
        model.train()
        stop = bool(stopper.reason)  # a resumed run whose stop rule had already fired
        depth = cfg.cache_prefetch if cfg.cache_prefetch is not None else 2 * (self.device.type == "cuda")
        for epoch in range(self.pos.epoch, phase.epochs if not stop else 0):
            self.pos.epoch = epoch
            steps_per_epoch = epoch_steps[epoch]
            eval_points = self._eval_points(steps_per_epoch)
            sampler.set_epoch(epoch, self.pos.batch)
            batches = train_dl
            if self.features is not None and depth > 0:
                # on a GPU the next batches' features are gathered on a side stream during this step
                batches = prefetch(train_dl, lambda b: self.features(b, "train"), self.device, depth=depth)
            bar = tqdm(batches, total=steps_per_epoch, initial=self.pos.batch, disable=not cfg.progress,
                       desc=f"{phase.name} epoch {epoch + 1}/{phase.epochs}", leave=False, dynamic_ncols=True)
            for batch in bar:
                if steps_left is not None and steps_left <= 0:
                    bar.close()
                    self.phase_times[phase.name] = time.perf_counter() - t0
                    self._save_last(optimizer, scheduler, stopper)
                    return False, steps_left
                lr = scheduler.get_last_lr()[0]  # the lr this step uses
                loss = self._train_step(batch, optimizer, scheduler)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                self.pos.batch += 1
                self.pos.phase_step += 1
                self.pos.global_step += 1
                if steps_left is not None:
                    steps_left -= 1
                if self.pos.batch in eval_points:
                    epochs_done = epoch + self.pos.batch / steps_per_epoch
                    if self.pos.batch == steps_per_epoch:
                        self.pos.epoch, self.pos.batch = epoch + 1, 0
                    self.phase_times[phase.name] = time.perf_counter() - t0
                    stop = self._evaluate_and_checkpoint(phase, stopper, loss, chosen_path, epochs_done)
                    self._save_last(optimizer, scheduler, stopper)
                    if stop:
                        break
                elif cfg.save_every and self.pos.global_step % cfg.save_every == 0:
                    self.phase_times[phase.name] = time.perf_counter() - t0
                    self._save_last(optimizer, scheduler, stopper)
            bar.close()
            self.pos.batch = 0
            if stop:
                tqdm.write(f"[{phase.name}] stopped early: {stopper.reason}")
                break
        D.barrier(self.dist)
        if phase.restore_chosen and (chosen_path / "model.safetensors").exists():
            self._load(chosen_path)
            tqdm.write(f"[{phase.name}] ends on the evaluation at step {stopper.chosen_step} (stop rule: {phase.stop_mode})")
        self.phase_times[phase.name] = time.perf_counter() - t0
        if phase.pet:
            from stackft.modeling import pet

            pet.detach(model.encoder, phase.pet)
        if phase.restore_chosen:
            self._save(self.out / f"{phase.name}_end", self._meta({"stop_reason": stopper.reason}))
        self._forward = self._ddp = None
        return True, steps_left

    def _eval_points(self, steps_per_epoch: int) -> set:
        n_evals = max(1, min(self.cfg.evals_per_epoch, steps_per_epoch))
        return {round(k * steps_per_epoch / n_evals) for k in range(1, n_evals + 1)}

    def _train_step(self, batch, optimizer, scheduler) -> float:
        """One optimizer step over ``batch`` (this rank's share), in ``grad_accum`` micro-batches.

        Each micro-batch's summed loss is divided by the global number of labelled items (times
        the world size, which DDP's gradient averaging divides out), so the gradient equals that
        of the mean loss over the whole global batch. Returns that mean loss.
        """
        batch = to_device(batch, self.device)
        n_global = D.all_reduce_sum(self.dist, labelled_count(batch["labels"]).float()).clamp(min=1)
        micro = split_batch(batch, self.cfg.grad_accum)
        total = torch.zeros((), device=self.device)
        for i, mb in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if self._ddp is None or last else self._ddp.no_sync()
            with sync:
                with self._autocast():
                    logits = self._forward(mb)
                loss_sum = task_loss(logits, mb["labels"], reduction="sum")
                (loss_sum * (self.dist.world_size / n_global)).backward()
            total += loss_sum.detach()
        loss = D.all_reduce_sum(self.dist, total) / n_global
        if not torch.isfinite(loss):
            where = (f"the last good checkpoint is in {self.out / 'last'} (resume with resume=True after fixing "
                     f"the cause, e.g. a lower learning rate)") if self._saved_last else \
                "no checkpoint of this run was written yet"
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at phase {self.pos.phase} "
                                f"step {self.pos.phase_step}; {where}")
        if self.cfg.clip:
            clip_gradients(self.model.parameters(), self.cfg.clip, self.cfg.clip_mode)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def _evaluate_and_checkpoint(self, phase: Phase, stopper: Phase1Stopper, loss: float, chosen_path: Path,
                                 epochs_done: float) -> bool:
        dev = self.evaluate("dev")
        train = self.evaluate("train") if phase.stop_mode == "gap" else None
        key = self.task.metric
        record = {
            "phase": phase.name, "epoch": round(epochs_done, 4), "step": self.pos.phase_step,
            "global_step": self.pos.global_step, "loss": loss,
            "dev": dev, "train": train, "time": round(self.phase_times.get(phase.name, 0.0), 3),
        }
        prev_chosen = stopper.chosen
        stop = stopper.update(self.pos.phase_step, None if train is None else train[key], dev[key])
        if phase.restore_chosen and stopper.chosen != prev_chosen:
            self._save(chosen_path, self._meta(dev))
        if dev[key] > self.best["score"] and phase is self.phases[self.final_phase]:
            self.best = {"score": dev[key], "phase": phase.name, "step": self.pos.phase_step, "dev": dev}
            self._save(self.out / "best", self._meta(dev))
            record["best"] = True
        self._log(record)
        gap = "" if train is None else f" train {key} {train[key]:.4f}"
        if self.dist.is_main:
            tqdm.write(f"[{phase.name}] epoch {epochs_done:.2f} step {self.pos.phase_step}: loss {loss:.4f} "
                       f"dev {key} {dev[key]:.4f}{gap}")
        return stop

    def _finish(self) -> dict:
        self._load(self.out / "best")
        summary = {
            "status": "finished",
            "strategy": self.cfg.strategy,
            "task": self.task.name,
            "head": self.head_name,
            "metric": self.task.metric,
            "best": self.best,
            "phase_times": self.phase_times,
            "init_seed": self.cfg.init_seed,
            "data_seed": self.cfg.data_seed,
            "output_dir": str(self.out),
            "world_size": self.dist.world_size,
            "skipped_input": self.data.skipped,
        }
        if self.dist.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary


def load_trained(path, *, device: str = "cpu") -> tuple[StackModel, dict]:
    """Rebuild a model from a checkpoint folder written by :class:`Trainer` (e.g. ``run/best``)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    meta = ckpt.read_meta(path)
    cfg = TrainConfig.from_dict(meta["config"])
    enc_dir = path.parent / "encoder"
    if not enc_dir.exists():
        raise FileNotFoundError(f"{enc_dir} missing: expected a run folder written by stackft train")
    config = AutoConfig.from_pretrained(enc_dir)
    try:
        hf_model = AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        hf_model = AutoModel.from_config(config)
    encoder = Encoder(hf_model, AutoTokenizer.from_pretrained(enc_dir), name_or_path=str(cfg.encoder), layers=cfg.layers)
    model = build_model(cfg, encoder, len(meta["labels"]))
    ckpt.load_weights(path, model)
    return model.to(device).eval(), meta
