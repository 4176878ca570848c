"""The two-phase training loop.

``Trainer(cfg).fit()`` runs the phases of ``cfg.strategy`` (:mod:`stackft.training.strategies`):
for each phase it freezes or unfreezes the encoder, builds fresh parameter groups, optimizer and
schedule, trains with evaluations ``evals_per_epoch`` times an epoch, applies the phase's stop
rule, and keeps (file names: :mod:`stackft.run_dir`):

- ``best/``: the best dev checkpoint of the final phase (the model the strategy produces);
- ``{phase}_end/``: the next phase's initialisation (two-phase strategies);
- ``last/``: model + optimizer + scheduler + RNG + sampler position, for ``resume=True``;
- ``metrics.jsonl`` (one line per evaluation) and ``summary.json``.

Extension points are :class:`~stackft.training.callbacks.TrainerCallback` hooks
(``Trainer(cfg, callbacks=[...])``); one optimizer step is :func:`stackft.training.step.train_step`.

A non-finite loss stops the run with :class:`~stackft.training.step.NonFiniteLoss`; the last good
checkpoint is kept. While the encoder is frozen its features can come from a feature cache
(:mod:`stackft.cache`) instead of running it every step (``cfg.cache``).

Under ``torchrun`` (WORLD_SIZE > 1) the same loop runs data-parallel with
DistributedDataParallel (see :mod:`stackft.distributed`): ``batch_size`` is the global batch, the
loss is normalised by the global number of labelled items, evaluation predictions are gathered,
and rank 0 alone writes files. ``precision="bf16"`` runs forward passes under autocast (fp32
master weights and optimizer state); ``grad_accum=k`` splits every batch into k micro-batches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from stackft import distributed as D
from stackft.cache.build import cache_root
from stackft.cache.prefetch import prefetch
from stackft.cache.source import CachedFeatures, check_placement
from stackft.config import TrainConfig
from stackft.data.pipeline import TaskData, load_task_data
from stackft.data.subset import SubsetView
from stackft.modeling.encoders import Encoder, load_encoder
from stackft.modeling.heads import build_head, head_pair_input
from stackft.modeling.model import StackModel, task_loss
from stackft.run_dir import STATE_FILE, RunDir
from stackft.tasks import get_task
from stackft.training import checkpoint as ckpt
from stackft.training import strategies
from stackft.training.callbacks import CallbackList, TrainerCallback
from stackft.training.evaluation import predict
from stackft.training.loaders import loader
from stackft.training.optim import build_param_groups, make_optimizer, make_scheduler
from stackft.training.scoring import score
from stackft.training.step import NonFiniteLoss, labelled_count, split_batch, train_step
from stackft.training.stopper import PhaseStopper
from stackft.training.strategies import Phase, default_head, plan_phases

__all__ = ["Trainer", "TrainerCallback", "NonFiniteLoss", "build_model", "load_trained", "resolve_device",
           "resolve_precision", "resolve_pair_mode", "split_batch", "labelled_count"]

log = logging.getLogger("stackft")


def new_compute() -> dict:
    """The compute a run has used, as :class:`Trainer` tallies it (``summary["compute"]``).

    ``optimizer_steps``; sequences the encoder ran on: ``encoder_forward`` (no gradient: frozen
    phases without a cache, evaluations) and ``encoder_forward_backward`` (training it); and
    ``cached_sequences`` (features read from a cache instead). Counts are global (all ranks).
    """
    return {"optimizer_steps": 0, "encoder_forward": 0, "encoder_forward_backward": 0, "cached_sequences": 0}


class ConfigWarning(UserWarning):
    """A setting that has no effect with the chosen strategy."""


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


def resolve_head(cfg: TrainConfig) -> str:
    """The head ``cfg`` trains: ``cfg.head``, else the strategy's default for the task."""
    return cfg.head or default_head(cfg.strategy, get_task(cfg.task))


def resolve_pair_mode(cfg: TrainConfig) -> str:
    """Pair encoding: ``cfg.pair_mode``, else siamese for heads that take two sequences, else joint.

    A pair head (BiMPM, Sim-Transformer) on ``joint`` data reads the joint encoding split by segment
    (:func:`stackft.modeling.model.split_joint_pair`): both sides have attended to each other.
    """
    return cfg.pair_mode or ("siamese" if head_pair_input(resolve_head(cfg)) else "joint")


def load_run_data(cfg: TrainConfig, tokenizer) -> TaskData:
    """Read and encode the train/dev data ``cfg`` names, as :class:`Trainer` does."""
    if cfg.train_path is None:
        raise ValueError("TrainConfig.train_path is required (or pass data=)")
    return load_task_data(cfg.task, cfg.train_path, cfg.dev_path, tokenizer=tokenizer, max_length=cfg.max_length,
                          pair_mode=resolve_pair_mode(cfg), dev_size=cfg.dev_size, split_seed=cfg.split_seed,
                          max_train=cfg.max_train, max_dev=cfg.max_dev, on_error=cfg.on_error,
                          max_line_chars=cfg.max_line_chars)


class _TrainForward(torch.nn.Module):
    """What DistributedDataParallel wraps: batch -> logits, through the cache or the encoder."""

    def __init__(self, trainer: "Trainer"):
        super().__init__()
        self.model = trainer.model
        self._features = trainer.features_for  # a bound method, not a submodule

    def forward(self, batch):
        return self.model.forward_features(self._features(batch, "train"))


def build_model(cfg: TrainConfig, encoder: Encoder, num_labels: int) -> StackModel:
    """Encoder + the strategy's head, the head initialised under ``cfg.init_seed``."""
    task = get_task(cfg.task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        head = build_head(resolve_head(cfg), encoder.hidden_size, num_labels, level=task.level,
                          dropout=cfg.dropout, **cfg.head_options)
    return StackModel(encoder, head)


@dataclass
class Position:
    """Where the run is: phase index, epoch and batch within it, and step counters."""

    phase: int = 0
    epoch: int = 0
    batch: int = 0  # batches done in this epoch
    phase_step: int = 0
    global_step: int = 0


_Position = Position  # the 0.1 name


@dataclass
class _PhaseRun:
    """Everything one phase builds: optimizer, schedule, stop rule, loader."""

    phase: Phase
    optimizer: torch.optim.Optimizer
    scheduler: object
    stopper: PhaseStopper
    loader: torch.utils.data.DataLoader
    sampler: object
    epoch_steps: list
    t0: float = 0.0
    stop: bool = False
    extra: dict = field(default_factory=dict)


class Trainer:
    """Runs one configuration end to end. ``encoder``/``data`` may be passed in pre-built.

    A passed-in encoder is trained in place (phase 2). Strategies that restart from the pretrained
    weights (eh-ft) snapshot the encoder as it is when the Trainer is built, so pass a pristine one.
    ``callbacks``: :class:`~stackft.training.callbacks.TrainerCallback` instances, called in order.
    """

    def __init__(self, cfg: TrainConfig, *, encoder: Encoder | None = None, data: TaskData | None = None,
                 callbacks=()):
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
        self.phases = plan_phases(cfg.strategy, cfg)
        if sum(p.epochs for p in self.phases) < 1:
            raise ValueError(f"strategy {cfg.strategy!r} with these epoch settings trains for 0 epochs")
        ignored = getattr(strategies, "ignored_settings", None)
        for msg in (ignored(cfg) if ignored is not None else []):
            warnings.warn(msg, ConfigWarning, stacklevel=2)
        self.callbacks = CallbackList(callbacks)
        self.run_dir = RunDir(cfg.output_dir)
        self.out = self.run_dir.root
        self.encoder = encoder or load_encoder(cfg.encoder, layers=cfg.layers, dropout=cfg.dropout)
        self.head_name = resolve_head(cfg)
        self.data = data if data is not None else load_run_data(cfg, self.encoder.tokenizer)
        self.model = build_model(cfg, self.encoder, len(self.data.vocab)).to(self.device)
        kind = self.data.train.kind
        if (kind == "pairs-siamese" and not self.model.pair_input) or (self.model.pair_input and not kind.startswith("pairs")):
            raise ValueError(f"head {self.head_name!r} cannot read data encoded as {kind!r}: "
                             f"{'pair heads need pair data' if self.model.pair_input else 'siamese pairs need a pair head'}")
        # best/ is chosen among the evaluations of the phase whose model the strategy produces
        # (phase 2 of two-phase strategies), never a phase-1 head the run went past
        self.final_phase = max(i for i, p in enumerate(self.phases) if p.epochs > 0)
        self.pos = Position()
        self._forward = self._ddp = None  # set per phase
        self._saved_last = False
        self._stop_request: str | None = None
        self.best = {"score": -math.inf}
        self.phase_times: dict[str, float] = {}
        self.history: list[dict] = []
        self.compute = new_compute()
        n_sub = min(len(self.data.train), max(len(self.data.dev), 1))
        self.train_probe = sorted(random.Random(cfg.data_seed).sample(range(len(self.data.train)), n_sub))
        self.features = None  # set per phase: a cache-backed feature source, or None (live encoder)
        self._pretrained = None
        if any(p.reload_encoder for p in self.phases):  # EH-FT restarts phase 2 from these weights
            self._pretrained = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    # -- public controls ----------------------------------------------------------------------
    def request_phase_stop(self, reason: str) -> None:
        """End the current phase after this step, as if its stop rule had fired (for callbacks)."""
        self._stop_request = str(reason)

    @property
    def current_phase(self) -> Phase:
        return self.phases[min(self.pos.phase, len(self.phases) - 1)]

    # -- features ---------------------------------------------------------------------------
    def features_for(self, batch: dict, split: str) -> dict:
        """The head's input for ``batch``: from the phase's feature cache, else the live encoder."""
        if self.features is not None:
            return self.features(batch, split)
        return self.model.features(batch)

    _features = features_for  # the 0.1 name

    def _setup_features(self, phase: Phase) -> None:
        self.features = None
        if phase.train_encoder or phase.pet or self.cfg.cache == "off":
            return
        cfg = self.cfg
        siamese = self.data.train.kind == "pairs-siamese"
        self.features = CachedFeatures.for_data(
            self.encoder, self.data, pair_input=siamese, segments=self.model.pair_input and not siamese,
            root=cache_root(cfg.cache),
            dtype=cfg.cache_dtype, device=self.device, placement=cfg.cache_placement,
            batch_size=cfg.eval_batch_size, progress=cfg.progress and self.dist.is_main, dist=self.dist)

    def _count(self, batch: dict, split: str, *, grad: bool) -> None:
        self._count_examples(len(batch["labels"]) * self.dist.world_size, cached=self.features is not None,
                             grad=grad)

    def _count_examples(self, n: int, *, cached: bool, grad: bool) -> None:
        """Tally the encoder work of ``n`` examples (siamese pairs encode two sequences each)."""
        seqs = n * (2 if self.model.pair_input else 1)
        if cached:
            self.compute["cached_sequences"] += seqs
        elif grad:
            self.compute["encoder_forward_backward"] += seqs
        else:
            self.compute["encoder_forward"] += seqs

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, split: str = "dev", *, live: bool = False) -> dict:
        """Metrics on dev, or on the fixed train probe (``split="train"``) used by the gap rule.

        ``live=True`` runs the encoder even while a feature cache is set (e.g. to score a model
        whose encoder differs from the cached one). Under DDP each rank predicts a strided share;
        the predictions are gathered and every rank scores the whole set (so every rank takes the
        same stop decisions).
        """
        base = self.data.dev if split == "dev" else self.data.train
        indices = list(range(len(base))) if split == "dev" else self.train_probe
        mine = D.shard(indices, self.dist)
        features = (lambda b: self.features(b, split)) if self.features is not None and not live else None
        self._count_examples(len(indices), cached=features is not None, grad=False)
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

    def _save_last(self, run: _PhaseRun | None) -> None:
        rngs = D.all_gather_objects(self.dist, ckpt.rng_state())  # every rank's, for an exact resume
        self._saved_last = True
        if not self.dist.is_main:
            return
        state = {  # optimizer None: saved at a phase boundary
            "position": vars(self.pos).copy(),
            "optimizer": run.optimizer.state_dict() if run else None,
            "scheduler": run.scheduler.state_dict() if run else None,
            "stopper": run.stopper.state_dict() if run else None,
            "best": self.best,
            "phase_times": self.phase_times,
            "history": self.history,
            "compute": self.compute,
            "rng": rngs[0],
            "rng_ranks": rngs,
        }
        self._save("last", self.run_dir.last, self._meta(), state)

    def _save(self, kind: str, path, meta, state=None) -> None:
        """Rank 0 writes a checkpoint (atomically); other ranks do nothing. Every rank calls on_save."""
        if self.dist.is_main:
            ckpt.save_checkpoint(path, self.model, meta, state)
        self.callbacks("on_save", self, kind, Path(path))

    def _load(self, path) -> None:
        D.barrier(self.dist)  # rank 0 may have just written it
        ckpt.load_weights(path, self.model)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.dist.is_main:
            self.run_dir.append_metric(record)

    # -- the loop ---------------------------------------------------------------------------
    def _check_resume_config(self) -> None:
        """Resuming must not mix settings: a run saved with another training config is refused."""
        saved = self.run_dir.read_config()
        if saved is None:
            return
        changed = self.cfg.changed_for_resume(saved)
        if changed:
            now = self.cfg.to_dict()
            what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume {self.out}: it was trained with other settings ({what}). "
                             f"Resume with the saved settings ({self.run_dir.config}), or train into another "
                             f"output_dir.")

    def fit(self, resume: bool = False) -> dict:
        """Train all phases; returns the summary (also written to ``summary.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._resume() if resume and (self.run_dir.last / STATE_FILE).exists() else None
        if state is None:
            if self.dist.is_main:
                self.run_dir.metrics.unlink(missing_ok=True)
                self.run_dir.config.write_text(self.cfg.to_json())
                ckpt.save_encoder_files(self.encoder, self.out)
            torch.manual_seed(self.cfg.data_seed + self.dist.rank)  # dropout follows the data seed
        D.barrier(self.dist)
        self.callbacks("on_fit_start", self, resumed=state is not None)
        steps_left = self.cfg.max_steps_this_run
        for p_idx, phase in enumerate(self.phases):
            if p_idx < self.pos.phase:
                continue
            if p_idx > self.pos.phase:
                self.pos = Position(phase=p_idx, global_step=self.pos.global_step)
            if state is not None and state["optimizer"] is None:
                state = None  # saved at a phase boundary: the phase starts fresh
            finished, steps_left = self._run_phase(phase, state, steps_left)
            state = None
            if not finished:
                return {"status": "interrupted", "position": vars(self.pos).copy()}
            if self.cfg.stop_after_phase == p_idx and p_idx + 1 < len(self.phases):
                self.pos = Position(phase=p_idx + 1, global_step=self.pos.global_step)
                self._save_last(None)
                return {"status": "paused", "position": vars(self.pos).copy()}
        summary = self._finish()
        self.callbacks("on_fit_end", self, summary)
        return summary

    def _resume(self) -> dict:
        """Load ``last/``: weights, position, history; returns the saved trainer state."""
        self._check_resume_config()
        state = torch.load(self.run_dir.last / STATE_FILE, weights_only=False)
        self.pos = Position(**state["position"])
        if self.phases[self.pos.phase].pet and state["optimizer"] is not None:
            self._attach_pet(self.phases[self.pos.phase])  # the saved weights include the PET modules
        ckpt.load_weights(self.run_dir.last, self.model)
        self.best, self.phase_times, self.history = state["best"], state["phase_times"], state["history"]
        self.compute = {**new_compute(), **state.get("compute", {})}
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            state["rng"] = ranks[self.dist.rank]
        self._saved_last = True
        if self.dist.is_main:
            self.run_dir.write_metrics(self.history)
        log.info("resuming from %s at %s", self.run_dir.last, self.pos)
        return state

    def _attach_pet(self, phase: Phase) -> None:
        from stackft.modeling import pet

        pet.attach(self.model.encoder, phase.pet, seed=self.cfg.init_seed)
        self.model.to(self.device)

    def _enter_phase(self, phase: Phase, state: dict | None) -> None:
        """Encoder weights, freezing, PET modules and the feature source the phase trains with."""
        model = self.model
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

    def _build_phase(self, phase: Phase, state: dict | None) -> _PhaseRun:
        """Fresh parameter groups, optimizer, loader, schedule and stop rule (restored from ``state``)."""
        cfg = self.cfg
        groups = build_param_groups(self.model, head_lr=phase.head_lr, encoder_lr=phase.encoder_lr,
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
        stopper = PhaseStopper(mode=phase.stop_mode, gap_tol=cfg.gap_tol, patience=cfg.patience,
                               gap_z=getattr(cfg, "gap_z", PhaseStopper.gap_z),
                               min_steps=min(self._eval_points(epoch_steps[0])) if epoch_steps else 0)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["stopper"])
            ckpt.set_rng_state(state["rng"])
        return _PhaseRun(phase, optimizer, scheduler, stopper, train_dl, sampler, epoch_steps)

    def _wrap_forward(self) -> None:
        """What a train step calls; under DDP the wrapper built for this phase's trainable params."""
        self._forward, self._ddp = _TrainForward(self), None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = self._forward = DistributedDataParallel(self._forward, device_ids=ids)

    def _run_phase(self, phase: Phase, state: dict | None, steps_left: int | None):
        """Train one phase; returns (finished, steps_left). Not finished = the step budget ran out."""
        self._enter_phase(phase, state)
        run = self._build_phase(phase, state)
        self._wrap_forward()
        self._stop_request = None
        run.t0 = time.perf_counter() - self.phase_times.get(phase.name, 0.0)
        self.model.train()
        run.stop = bool(run.stopper.reason)  # a resumed run whose stop rule had already fired
        self.callbacks("on_phase_start", self, phase)
        finished, steps_left = self._run_epochs(run, steps_left)
        if not finished:
            return False, steps_left
        self._exit_phase(run)
        return True, steps_left

    def _run_epochs(self, run: _PhaseRun, steps_left: int | None):
        cfg, phase = self.cfg, run.phase
        depth = cfg.cache_prefetch if cfg.cache_prefetch is not None else 2 * (self.device.type == "cuda")
        for epoch in range(self.pos.epoch, phase.epochs if not run.stop else 0):
            self.pos.epoch = epoch
            steps_per_epoch = run.epoch_steps[epoch]
            eval_points = self._eval_points(steps_per_epoch)
            run.sampler.set_epoch(epoch, self.pos.batch)
            batches = run.loader
            if self.features is not None and depth > 0:
                # on a GPU the next batches' features are gathered on a side stream during this step
                batches = prefetch(run.loader, lambda b: self.features(b, "train"), self.device, depth=depth)
            bar = tqdm(batches, total=steps_per_epoch, initial=self.pos.batch, disable=not cfg.progress,
                       desc=f"{phase.name} epoch {epoch + 1}/{phase.epochs}", leave=False, dynamic_ncols=True)
            for batch in bar:
                if steps_left is not None and steps_left <= 0:
                    bar.close()
                    self.phase_times[phase.name] = time.perf_counter() - run.t0
                    self._save_last(run)
                    return False, steps_left
                lr = run.scheduler.get_last_lr()[0]  # the lr this step uses
                self.callbacks("on_step_start", self, phase, batch)
                loss = self._train_step(batch, run)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                self.pos.batch += 1
                self.pos.phase_step += 1
                self.pos.global_step += 1
                if steps_left is not None:
                    steps_left -= 1
                self.callbacks("on_step_end", self, phase, loss)
                if self.pos.batch in eval_points:
                    epochs_done = epoch + self.pos.batch / steps_per_epoch
                    if self.pos.batch == steps_per_epoch:
                        self.pos.epoch, self.pos.batch = epoch + 1, 0
                    self.phase_times[phase.name] = time.perf_counter() - run.t0
                    run.stop = self._evaluate_and_checkpoint(run, loss, epochs_done)
                    run.stop = self._take_stop_request(run) or run.stop
                    self._save_last(run)
                    if run.stop:
                        break
                elif self._take_stop_request(run):
                    run.stop = True
                    self.phase_times[phase.name] = time.perf_counter() - run.t0
                    self._save_last(run)
                    break
                elif cfg.save_every and self.pos.global_step % cfg.save_every == 0:
                    self.phase_times[phase.name] = time.perf_counter() - run.t0
                    self._save_last(run)
            bar.close()
            self.pos.batch = 0
            if run.stop:
                tqdm.write(f"[{phase.name}] stopped early: {run.stopper.reason}")
                break
        return True, steps_left

    def _take_stop_request(self, run: _PhaseRun) -> bool:
        if self._stop_request is None:
            return False
        run.stopper.reason = f"stopped by a callback: {self._stop_request}"
        self._stop_request = None
        return True

    def _exit_phase(self, run: _PhaseRun) -> None:
        phase, stopper = run.phase, run.stopper
        D.barrier(self.dist)
        chosen = self.run_dir.chosen(phase.name)
        if phase.restore_chosen and ckpt.has_weights(chosen):
            self._load(chosen)
            tqdm.write(f"[{phase.name}] ends on the evaluation at step {stopper.chosen_step} "
                       f"(stop rule: {phase.stop_mode})")
        self.phase_times[phase.name] = time.perf_counter() - run.t0
        if phase.pet:
            from stackft.modeling import pet

            pet.detach(self.model.encoder, phase.pet)
        if phase.restore_chosen:
            self._save("phase_end", self.run_dir.phase_end(phase.name), self._meta({"stop_reason": stopper.reason}))
        self._forward = self._ddp = None
        self.callbacks("on_phase_end", self, phase, stopper)

    def _eval_points(self, steps_per_epoch: int) -> set:
        n_evals = max(1, min(self.cfg.evals_per_epoch, steps_per_epoch))
        return {round(k * steps_per_epoch / n_evals) for k in range(1, n_evals + 1)}

    def _train_step(self, batch, run: _PhaseRun) -> float:
        """One optimizer step (:func:`~stackft.training.step.train_step`) with the run's settings."""
        cfg = self.cfg
        self._count(batch, "train", grad=run.phase.train_encoder or bool(run.phase.pet))
        self.compute["optimizer_steps"] += 1
        try:
            return train_step(self._forward, batch, run.optimizer, run.scheduler, params=self.model.parameters(),
                              grad_accum=cfg.grad_accum, clip=cfg.clip, clip_mode=cfg.clip_mode,
                              amp_dtype=self.amp_dtype, device=self.device, dist=self.dist, ddp=self._ddp,
                              loss_fn=task_loss)
        except NonFiniteLoss as exc:
            where = (f"the last good checkpoint is in {self.run_dir.last} (resume with resume=True after fixing "
                     f"the cause, e.g. a lower learning rate)") if self._saved_last else \
                "no checkpoint of this run was written yet"
            raise NonFiniteLoss(f"{exc} at phase {self.pos.phase} step {self.pos.phase_step}; {where}") from None

    def _evaluate_and_checkpoint(self, run: _PhaseRun, loss: float, epochs_done: float) -> bool:
        phase, stopper = run.phase, run.stopper
        dev = self.evaluate("dev")
        train = self.evaluate("train") if phase.stop_mode in ("gap", "gap_se") else None
        key = self.task.metric
        record = {
            "phase": phase.name, "epoch": round(epochs_done, 4), "step": self.pos.phase_step,
            "global_step": self.pos.global_step, "loss": loss,
            "dev": dev, "train": train, "time": round(self.phase_times.get(phase.name, 0.0), 3),
        }
        prev_chosen = stopper.chosen
        stop = stopper.update(self.pos.phase_step, None if train is None else train[key], dev[key],
                              train_se=None if train is None else train.get(f"{key}_se"), val_se=dev.get(f"{key}_se"))
        if phase.stop_mode != "fixed":
            record["stop_rule"] = stopper.decisions[-1]
        if phase.restore_chosen and stopper.chosen != prev_chosen:
            self._save("chosen", self.run_dir.chosen(phase.name), self._meta(dev))
        if dev[key] > self.best["score"] and phase is self.phases[self.final_phase]:
            self.best = {"score": dev[key], "phase": phase.name, "step": self.pos.phase_step, "dev": dev}
            self._save("best", self.run_dir.best, self._meta(dev))
            record["best"] = True
        self._log(record)
        self.callbacks("on_evaluate", self, phase, record)
        gap = "" if train is None else f" train {key} {train[key]:.4f}"
        if self.dist.is_main:
            tqdm.write(f"[{phase.name}] epoch {epochs_done:.2f} step {self.pos.phase_step}: loss {loss:.4f} "
                       f"dev {key} {dev[key]:.4f}{gap}")
        return stop

    def _finish(self) -> dict:
        self._load(self.run_dir.best)
        summary = {
            "status": "finished",
            "strategy": self.cfg.strategy,
            "task": self.task.name,
            "head": self.head_name,
            "metric": self.task.metric,
            "best": self.best,
            "phase_times": self.phase_times,
            "compute": self.compute,
            "init_seed": self.cfg.init_seed,
            "data_seed": self.cfg.data_seed,
            "output_dir": str(self.out),
            "world_size": self.dist.world_size,
            "skipped_input": self.data.skipped,
        }
        if self.dist.is_main:
            self.run_dir.write_summary(summary)
        return summary


def load_trained(path, *, device: str = "cpu") -> tuple[StackModel, dict]:
    """Rebuild a model from a checkpoint folder written by :class:`Trainer` (e.g. ``run/best``).

    Returns ``(model in eval mode on device, meta)``; the encoder's config and tokenizer come from
    the run folder's ``encoder/``, the weights from the checkpoint.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    meta = ckpt.read_meta(path)
    cfg = TrainConfig.from_dict(meta["config"])
    enc_dir = RunDir.of_checkpoint(path).encoder
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
