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

A non-finite loss stops the run with :class:`~stackft.training.step.NonFiniteLoss`, and so do
non-finite weights or optimizer state about to be evaluated or saved
(:class:`~stackft.training.step.NonFiniteWeights`): no checkpoint ever holds a NaN or an inf, the
last good one is kept, and resuming from it may lower the learning rates. Resuming checks that
``last/`` belongs to the run started last in the folder and was trained with the same settings
and data (:mod:`stackft.training.resume`), and says what it found. While the encoder is frozen its features can come from a feature cache
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
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from stackft import distributed as D
from stackft.cache.build import cache_root
from stackft.cache.prefetch import prefetch
from stackft.cache.source import CachedFeatures
from stackft.config import TrainConfig
from stackft.data.pipeline import TaskData, load_task_data
from stackft.data.subset import SubsetView
from stackft.modeling.encoders import Encoder, is_pretrained, load_encoder
from stackft.modeling.heads import build_head, head_pair_input, revision_options
from stackft.modeling.model import StackModel, task_loss
from stackft.run_dir import STATE_FILE, RunDir, RunFolderInUse
from stackft.tasks import get_task
from stackft.training import checkpoint as ckpt
from stackft.training import preflight, strategies
from stackft.training import resume as resume_checks
from stackft.training.callbacks import CallbackList, TrainerCallback
from stackft.training.evaluation import predict
from stackft.training.loaders import loader
from stackft.training.optim import build_param_groups, make_optimizer, make_scheduler
from stackft.training.scoring import f1_label, score
from stackft.training.step import NonFiniteLoss, NonFiniteWeights, labelled_count, split_batch, train_step
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


def _positive_class_note(task, vocab) -> str:
    return "" if task.name == "ner" else f" (f1: {f1_label(task, vocab)})"


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
        name = resolve_head(cfg)
        options = {**revision_options(name, cfg.head_defaults), **cfg.head_options}
        head = build_head(name, encoder.hidden_size, num_labels, level=task.level, dropout=cfg.dropout, **options)
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
        # every setting checked before anything loads: a typo costs no encoder or data load
        preflight.check_config(cfg, data=data is None, encoder=encoder is None)
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.dist = D.init(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self.phases = plan_phases(cfg.strategy, cfg)
        if sum(p.epochs for p in self.phases) < 1:
            raise ValueError(f"strategy {cfg.strategy!r} with these epoch settings trains for 0 epochs")
        for msg in strategies.ignored_settings(cfg):
            warnings.warn(msg, ConfigWarning, stacklevel=2)
        self.callbacks = CallbackList(callbacks)
        from stackft.training.tensorboard import add_reporting_callbacks  # cfg.report_to
        add_reporting_callbacks(cfg, self.callbacks)
        self.optimizer = None  # the current phase's optimizer (for callbacks, e.g. per-group lrs)
        self.run_dir = RunDir(cfg.output_dir)
        self.out = self.run_dir.root
        self.encoder = encoder or load_encoder(cfg.encoder, layers=cfg.layers, dropout=cfg.dropout)
        preflight.check_encoder(cfg, self.encoder)
        # checkpoints of frozen phases leave the unchanged pretrained encoder out and refer to it: to the
        # encoder cfg names when this one is still exactly what it loads, else to a copy in RUN/encoder/
        local = cfg.encoder is not None and Path(cfg.encoder).expanduser().exists()
        self._reference = ({"kind": "source", "encoder": str(Path(cfg.encoder).expanduser().resolve()) if local
                            else cfg.encoder} if is_pretrained(self.encoder, cfg.encoder) else {"kind": "run"})
        self.head_name = resolve_head(cfg)
        self.data = data if data is not None else load_run_data(cfg, self.encoder.tokenizer)
        self.model = build_model(cfg, self.encoder, len(self.data.vocab)).to(self.device)
        self._encoder_keys = frozenset(k for k in self.model.state_dict() if k.startswith(ckpt.ENCODER_PREFIX))
        self._touched: set = set()  # encoder tensors some phase has trained (or loaded) since they were pristine
        self._digests: dict = {}  # frozenset of left-out tensors -> their sha256
        self._last_written = None  # (global step, tensor names, folder) of the last weights written
        self._running_phase: str | None = None
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
        self.run_id: str | None = None  # run.json's; set by fit()
        self._data_fp: dict | None = None
        self._lr_changes: dict = {}  # resumed after a non-finite loss with other lrs: field -> (then, now)
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

    def start_summary(self, resumed: bool = False) -> str:
        """What the run is about to do, as the lines ``fit()`` prints first: task, data, device, phases,
        folders."""
        cfg, data, task = self.cfg, self.data, self.task
        enc = self.encoder
        lines = [f"stackft: {cfg.strategy} on {task.name}{' (resumed)' if resumed else ''}: head {self.head_name}, "
                 f"encoder {enc.name_or_path} ({enc.num_layers} layers x {enc.hidden_size}), "
                 f"selection metric {task.metric}{_positive_class_note(task, data.vocab)}"]
        files = ", ".join(data.files) if data.files else "passed in"
        lines.append(f"  data:    {len(data.train):,} train / {len(data.dev):,} dev examples, {len(data.vocab)} labels "
                     f"({files}{'' if cfg.dev_path or not data.files else '; dev split from the training file'})")
        dev = self.device
        where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
        ranks = f", {self.dist.world_size} processes" if self.dist.enabled else ""
        lines.append(f"  device:  {dev} ({where}{ranks}), {'bf16 autocast' if self.amp_dtype else 'fp32'}")
        steps = loader(data.train, cfg.batch_size, enc.pad_id, shuffle=True, seed=cfg.data_seed * 1000,
                       max_tokens=cfg.max_tokens).batch_sampler.num_batches(0)
        for i, p in enumerate(self.phases):
            what = "fine-tune all" if p.train_encoder else (f"frozen encoder + {p.pet}" if p.pet else "frozen encoder")
            epochs = f"{p.epochs} epoch{'s' if p.epochs != 1 else ''} x {steps:,} steps of {cfg.batch_size}"
            stop = f"at most {epochs}, stop rule {p.stop_mode}" if p.stop_mode != "fixed" else epochs
            lines.append(f"  {'phases:' if i == 0 else '':<8} {p.name} ({what}, lr {p.head_lr:g}): {stop}")
        lines.append(f"  output:  {self.out}")
        if cfg.cache == "off":
            cache = "off"
        elif not any(not p.train_encoder and not p.pet for p in self.phases):
            cache = "not used (no phase with a frozen encoder)"
        else:
            cache = f"{cache_root(cfg.cache)} ({cfg.cache_dtype}; stackft cache list | clean)"
        lines.append(f"  cache:   {cache}")
        return "\n".join(lines)

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
            first_token=self.model.first_token_only,
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
            "run_id": self.run_id,
            "data": self._data_fingerprint(),
        }

    def _data_fingerprint(self) -> dict:
        if self._data_fp is None:
            self._data_fp = resume_checks.data_fingerprint(self.data)
        return self._data_fp

    def _note(self, message: str) -> None:
        """One line on stderr (rank 0): what resume found, what was recovered."""
        log.info("%s", message)
        if self.dist.is_main:
            print(f"stackft: {message}", file=sys.stderr, flush=True)

    def _check_finite(self, run: _PhaseRun | None = None) -> None:
        """NonFiniteWeights when the weights (or ``run``'s optimizer state) hold a NaN or an inf."""
        bad, what = ckpt.nonfinite(self.model.state_dict()), "weights"
        if not bad and run is not None:
            bad, what = ckpt.nonfinite(ckpt.optimizer_tensors(run.optimizer)), "optimizer state"
        if bad:
            raise self._nonfinite(NonFiniteWeights(f"non-finite {what} ({len(bad)} tensors, e.g. {bad[0]}; "
                                                   f"never evaluated or saved)"))

    def _nonfinite(self, exc: NonFiniteLoss) -> NonFiniteLoss:
        """``exc`` with where it happened and what the user can do; run.json notes it (resume may lower lrs)."""
        field, lr = resume_checks.lr_field(self.current_phase)
        flag = "--" + field.replace("_", "-")
        lr = min(lr / 10, getattr(TrainConfig, field))  # a tenth, and never above the default
        pos = self.run_dir.last_position() if self._saved_last else None
        if pos is not None:
            where = (f"the last good checkpoint is {self.run_dir.last} (phase {pos.get('phase')} step "
                     f"{pos.get('phase_step')}); to continue from it, resume with a lower learning rate, e.g. "
                     f"--resume {flag} {lr:g} (TrainConfig.{field}; learning rates may change when resuming "
                     f"after a non-finite loss)")
            if self.dist.is_main:
                info = self.run_dir.read_run_info() or {"run_id": self.run_id}
                info["nonfinite"] = {**vars(self.pos), "error": str(exc), "checkpoint": pos}
                self.run_dir.write_run_info(info)
        else:
            where = (f"no checkpoint of this run was written yet; train again with a lower learning rate, "
                     f"e.g. {flag} {lr:g} (TrainConfig.{field})")
        return type(exc)(f"{exc} at phase {self.pos.phase} step {self.pos.phase_step}; {where}")

    def _save_last(self, run: _PhaseRun | None) -> None:
        if run is not None:
            self._check_finite(run)
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
        if "nonfinite" in (info := self.run_dir.read_run_info() or {}):
            info.pop("nonfinite")  # resumed past it: last/ now holds the settings (lrs) to compare with
            self.run_dir.write_run_info(info)

    def save_model(self, path, *, kind: str = "extra", metrics: dict | None = None) -> None:
        """Write the model as it is now as a checkpoint folder ``path`` (loadable with :func:`load_trained`);
        for callbacks that keep extra checkpoints. ``on_save`` is called with ``kind``."""
        self._save(kind, path, self._meta(metrics))

    def _save(self, kind: str, path, meta, state=None) -> None:
        """Rank 0 writes a checkpoint (atomically); other ranks do nothing. Every rank calls on_save.

        Never with non-finite weights (NonFiniteWeights instead: the previous checkpoint stays)."""
        self._check_finite()
        if self.dist.is_main:
            skip, link = self._weights_plan()
            if skip:
                meta = {**meta, ckpt.WEIGHTS_KEY: ckpt.weights_entry(skip, self._digest(skip), self._reference)}
            ckpt.save_checkpoint(path, self.model, meta, state, skip=skip, link_weights=link)
            self._last_written = (self.pos.global_step, frozenset(self.model.state_dict()), frozenset(skip), Path(path))
            self._prune_checkpoints()
        self.callbacks("on_save", self, kind, Path(path))

    def _weights_plan(self) -> tuple[set, Path | None]:
        """What a checkpoint written now leaves out (the pretrained encoder tensors no phase has trained,
        when there is a reference to take them from) and the folder whose weights it can hard-link
        (the one written last, when nothing has changed since)."""
        names = frozenset(self.model.state_dict())
        skip = set(self._encoder_keys & names) - self._touched
        if skip and self._reference["kind"] == "run" and not (self.run_dir.encoder / ckpt.WEIGHTS_FILE).exists():
            skip = set()  # no copy of the pretrained encoder in this run folder (a run of an older version)
        link = None
        if self._last_written is not None:
            step, was_names, was_skip, folder = self._last_written
            if (step, was_names, was_skip) == (self.pos.global_step, names, frozenset(skip)) and ckpt.has_weights(folder):
                link = folder
        return skip, link

    def _digest(self, skip) -> str:
        key = frozenset(skip)
        if key not in self._digests:  # the left-out tensors never change while they are left out
            self._digests[key] = ckpt.tensors_digest(self.model.state_dict(), key)
        return self._digests[key]

    def _prune_checkpoints(self) -> None:
        """Keep at most ``cfg.save_total_limit`` checkpoint folders: best/ and last/, then the newest others
        (never the running phase's chosen/, which the phase ends on)."""
        limit = self.cfg.save_total_limit
        if not limit or not self.dist.is_main:
            return
        protected = self.run_dir.chosen(self._running_phase) if self._running_phase else None
        others = [d for p in self.phases for d in (self.run_dir.chosen(p.name), self.run_dir.phase_end(p.name))
                  if d != protected and d.is_dir()]
        others.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        keep = max(0, limit - 2 - (protected is not None and protected.is_dir()))
        for d in others[keep:]:
            shutil.rmtree(d, ignore_errors=True)

    def _load(self, path) -> None:
        D.barrier(self.dist)  # rank 0 may have just written it
        ckpt.load_weights(path, self.model)
        self._last_written = None  # the weights changed without a step
        stored = ckpt.stored_names(path)
        if ckpt.weights_info(path) is None:
            self._touched |= self._encoder_keys
        elif self._touched - stored:  # left out of the checkpoint, but trained since: not the pretrained ones
            raise RuntimeError(f"{path} leaves out encoder tensors this run has trained since "
                               f"(e.g. {sorted(self._touched - stored)[0]}); it cannot be loaded here")

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.dist.is_main:
            self.run_dir.append_metric(record)

    # -- the loop ---------------------------------------------------------------------------
    def _check_resume_config(self, meta: dict | None = None) -> None:
        """Resuming must not mix runs, settings or data (:mod:`stackft.training.resume`): ``last/`` of
        another run, or trained with other settings or on other data, is refused. ``meta``: ``last/``'s."""
        last = self.run_dir.last
        meta = ckpt.read_meta(last) if meta is None else meta
        info = self.run_dir.read_run_info()
        foreign = resume_checks.foreign_checkpoint(info, meta, last)
        if foreign:
            raise ValueError(f"cannot resume {self.out}: {foreign}. Start that run again with --overwrite "
                             f"(fit(overwrite=True)), or train into another output_dir.")
        saved = meta["config"] if isinstance(meta.get("config"), dict) else self.run_dir.read_config()
        if saved is None:
            return
        changed = self.cfg.changed_for_resume(saved)
        lr_fields = TrainConfig.RESUMABLE_AFTER_NONFINITE
        nonfinite = (info or {}).get("nonfinite")
        if nonfinite is not None:  # the run stopped on a non-finite loss: its lrs may change
            self._lr_changes = {k: (saved.get(k), getattr(self.cfg, k)) for k in changed if k in lr_fields}
            changed = [k for k in changed if k not in lr_fields]
        if changed:
            now = self.cfg.to_dict()
            what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
            lr_note = ("; learning rates may change only when resuming a run that stopped on a non-finite loss"
                       if nonfinite is None and any(k in lr_fields for k in changed) else "")
            raise ValueError(f"cannot resume {self.out}: {last} was trained with other settings ({what}{lr_note}). "
                             f"Resume with the saved settings ({self.run_dir.config}), or train into another "
                             f"output_dir.")
        change = resume_checks.data_change(meta.get("data"), self._data_fingerprint(), last)
        if change:
            raise ValueError(f"cannot resume {self.out}: the data differs from what {last} was trained on "
                             f"({change}). Resume with the data it was trained on, or train into another output_dir.")

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train all phases; returns the summary (also written to ``summary.json``).

        ``resume``: continue the run in ``output_dir`` from ``last/`` (a folder without one starts from
        scratch). A folder that already holds a run is otherwise refused (:class:`RunFolderInUse`,
        naming both options) unless ``overwrite``, which deletes that run's files first
        (:meth:`RunDir.clear`; other files stay). While it trains, the folder's lock is held: a second
        process training into it fails at once with :class:`RunFolderInUse`; the lock of a process
        that died is taken over (with a note).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        with self._hold_run_folder(resume, overwrite):
            return self._fit(resume)

    @contextlib.contextmanager
    def _hold_run_folder(self, resume: bool, overwrite: bool):
        """Rank 0 takes the run folder's lock and applies the resume/overwrite rule; every rank learns the verdict."""
        held, error = contextlib.ExitStack(), None
        if self.dist.is_main:
            try:
                stale = held.enter_context(self.run_dir.lock())
                if stale:
                    self._note(f"{self.out}: the previous training ({stale}) ended without releasing its lock; "
                               f"taking it over")
                if not resume and self.run_dir.holds_run():
                    if not overwrite:
                        raise RunFolderInUse(
                            f"{self.out} already holds {self.run_dir.describe()}. Pass --resume (fit(resume=True)) "
                            f"to continue it, --overwrite (fit(overwrite=True)) to delete it and start again, or "
                            f"train into another output_dir")
                    gone = self.run_dir.clear()
                    self._note(f"--overwrite: deleted the previous run in {self.out} ({len(gone)} entries)")
            except RunFolderInUse as e:
                held.close()
                error = str(e)
        error = D.broadcast_object(self.dist, error)
        if error:
            raise RunFolderInUse(error)
        with held:
            yield

    def _fit(self, resume: bool) -> dict:
        state = self._resume() if resume else None
        if state is None:
            info = resume_checks.new_run_info()  # a new run: its checkpoints carry this id
            if self.dist.is_main:
                self.run_dir.metrics.unlink(missing_ok=True)
                self.run_dir.write_run_info(info)
                self.run_dir.config.write_text(self.cfg.to_json())
                ckpt.save_encoder_files(self.encoder, self.out)
                if self._reference["kind"] == "run" and any(not p.train_encoder and p.pet != "lora"
                                                            for p in self.phases):
                    ckpt.save_reference_encoder(self.encoder, self.out)  # what frozen phases' checkpoints refer to
            self.run_id = D.broadcast_object(self.dist, info["run_id"])
            torch.manual_seed(self.cfg.data_seed + self.dist.rank)  # dropout follows the data seed
        D.barrier(self.dist)
        if self.dist.is_main:
            print(self.start_summary(resumed=state is not None), flush=True)
        self.callbacks("on_fit_start", self, resumed=state is not None)
        steps_left = self.cfg.max_steps_this_run
        for p_idx, phase in enumerate(self.phases):
            if p_idx < self.pos.phase:
                continue
            if p_idx > self.pos.phase:
                self.pos = Position(phase=p_idx, global_step=self.pos.global_step)
            if state is not None and state["optimizer"] is None:
                ckpt.set_rng_state(state["rng"])  # dropout continues as it would have
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

    def _resume(self) -> dict | None:
        """Load ``last/``: weights, position, history; returns the saved trainer state (None: nothing to resume).

        First repairs what a kill while a checkpoint was being replaced left (:func:`checkpoint.recover`);
        says on stderr what it found; refuses ``last/`` when :meth:`_check_resume_config` does.
        """
        last = self.run_dir.last
        if self.dist.is_main:
            for note in ckpt.recover_all(self.out):
                self._note(note)
        D.barrier(self.dist)
        if not (last / STATE_FILE).exists():
            found = f"{last} has no {STATE_FILE}" if last.exists() else f"no checkpoint in {last}"
            self._note(f"resume: {found}; starting {self.out} from scratch")
            return None
        meta = ckpt.verify(last)  # checksums of the weights and the trainer state
        self._check_resume_config(meta)
        try:
            state = torch.load(last / STATE_FILE, weights_only=False)
            self.pos = Position(**state["position"])
        except Exception as e:
            raise ckpt.CheckpointError(last, f"cannot read {STATE_FILE}: {ckpt._first_line(e)}") from None
        if self.phases[self.pos.phase].pet and state["optimizer"] is not None:
            self._attach_pet(self.phases[self.pos.phase])  # the saved weights include the PET modules
        ckpt.load_weights(last, self.model, check=False)  # verified above
        if ckpt.weights_info(last) is None:
            self._touched = set(self._encoder_keys)
        else:  # the encoder tensors last/ leaves out must be the pretrained ones this run started from
            ckpt.check_reference(last, self.model)
            self._touched = set(self._encoder_keys & ckpt.stored_names(last))
        self._adopt_run_id(meta)
        self.best, self.phase_times, self.history = state["best"], state["phase_times"], state["history"]
        self.compute = {**new_compute(), **state.get("compute", {})}
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            state["rng"] = ranks[self.dist.rank]
        self._saved_last = True
        if self.dist.is_main:
            self.run_dir.write_metrics(self.history)
        p = self.pos
        lrs = "".join(f"; {k} {a!r} -> {b!r}" for k, (a, b) in self._lr_changes.items())
        self._note(f"resuming {self.out} from {last}: phase {p.phase} ({self.phases[p.phase].name}) step "
                   f"{p.phase_step}, epoch {p.epoch} batch {p.batch}, global step {p.global_step}{lrs}")
        return state

    def _adopt_run_id(self, meta: dict) -> None:
        """The resumed run's id: ``last/``'s (an older checkpoint without one gets a new id)."""
        info = self.run_dir.read_run_info()
        self.run_id = meta.get("run_id") or (info or {}).get("run_id") or resume_checks.new_run_info()["run_id"]
        if not self.dist.is_main:
            return
        new = dict(info or resume_checks.new_run_info(), run_id=self.run_id)
        if self._lr_changes:
            new["lr_changes"] = [*new.get("lr_changes", []), {
                "position": vars(self.pos).copy(), "reason": "resumed after a non-finite loss",
                **{k: {"then": a, "now": b} for k, (a, b) in self._lr_changes.items()}}]
        if new != info:
            self.run_dir.write_run_info(new)

    def _attach_pet(self, phase: Phase) -> None:
        from stackft.modeling import pet

        pet.attach(self.model.encoder, phase.pet, seed=self.cfg.init_seed)
        self.model.to(self.device)

    def _enter_phase(self, phase: Phase, state: dict | None) -> None:
        """Encoder weights, freezing, PET modules and the feature source the phase trains with."""
        model = self.model
        self._running_phase, self._last_written = phase.name, None
        if phase.reload_encoder and state is None and self.pos.phase_step == 0:
            model.encoder.load_state_dict(self._pretrained)
            self._touched = set()  # the pretrained weights again
        if phase.train_encoder:
            model.unfreeze_encoder()
        else:
            model.freeze_encoder()
        if phase.pet:
            self._attach_pet(phase)
        self._touched |= {n for n, p in model.named_parameters() if p.requires_grad and n in self._encoder_keys}
        t_cache = time.perf_counter()
        self._setup_features(phase)
        if self.features is not None:
            self.phase_times[f"{phase.name}_cache"] = time.perf_counter() - t_cache
            if self.dist.is_main:
                paths = ", ".join(str(c.path) for c in self.features.caches.values())
                tqdm.write(f"[{phase.name}] encoder features from the cache: {paths} "
                           f"({self.phase_times[f'{phase.name}_cache']:.1f} s to open or build)")

    def _build_phase(self, phase: Phase, state: dict | None) -> _PhaseRun:
        """Fresh parameter groups, optimizer, loader, schedule and stop rule (restored from ``state``)."""
        cfg = self.cfg
        groups = build_param_groups(self.model, head_lr=phase.head_lr, encoder_lr=phase.encoder_lr,
                                    weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
        base_lrs = [g["lr"] for g in groups]
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
                               gap_z=cfg.gap_z,
                               min_steps=min(self._eval_points(epoch_steps[0])) if epoch_steps else 0)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["stopper"])
            ckpt.set_rng_state(state["rng"])
            if self._lr_changes:  # resumed after a non-finite loss at other lrs: same schedule point, new rates
                resume_checks.retarget_lrs(optimizer, scheduler, base_lrs)
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
        self.optimizer = run.optimizer
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
        self._running_phase = None  # its chosen/ has done its job
        if phase.restore_chosen:
            self._save("phase_end", self.run_dir.phase_end(phase.name), self._meta({"stop_reason": stopper.reason}))
        self._prune_checkpoints()
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
            raise self._nonfinite(exc) from None

    def _evaluate_and_checkpoint(self, run: _PhaseRun, loss: float, epochs_done: float) -> bool:
        phase, stopper = run.phase, run.stopper
        self._check_finite(run)  # NaN/inf weights would score garbage and be saved
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
        f1 = "" if key == "f1" or "f1" not in dev else f" ({f1_label(self.task, self.data.vocab)} {dev['f1']:.4f})"
        if self.dist.is_main:
            tqdm.write(f"[{phase.name}] epoch {epochs_done:.2f} step {self.pos.phase_step}: loss {loss:.4f} "
                       f"dev {key} {dev[key]:.4f}{f1}{gap}")
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
    the run folder's ``encoder/``, the weights from the checkpoint (checksums verified). A damaged or
    foreign checkpoint (unreadable or inconsistent meta.json, a truncated, altered or non-finite
    model.safetensors, weights of another task or label set, a damaged ``encoder/``) raises
    :class:`~stackft.training.checkpoint.CheckpointError`: one line naming the folder and the problem.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(path)
    if not path.exists():
        ckpt.recover(path)  # a kill while it was being replaced leaves a complete copy beside it
    meta = ckpt.check_meta(path, ckpt.read_meta(path))
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        get_task(meta["task"])
        head = resolve_head(cfg)
        head_pair_input(meta["head"]), head_pair_input(head)  # known heads (ValueError otherwise)
    except (TypeError, ValueError, KeyError) as e:
        raise ckpt.CheckpointError(path, f"meta.json does not describe a model this stackft can build: {e}") from None
    if head.replace("_", "-") != meta["head"].replace("_", "-"):
        raise ckpt.CheckpointError(path, f"meta.json names the head {meta['head']!r}, but its config builds {head!r}")
    enc_dir = RunDir.of_checkpoint(path).encoder
    if not enc_dir.exists():
        raise FileNotFoundError(f"{enc_dir} missing: expected a run folder written by stackft train")
    info = ckpt.weights_info(path)  # a frozen phase's checkpoint: the encoder weights are the pretrained ones
    try:
        config = AutoConfig.from_pretrained(enc_dir)
        if info is not None:
            hf_model = _reference_encoder(path, enc_dir, config, info)
        else:
            try:
                hf_model = AutoModel.from_config(config, add_pooling_layer=False)
            except TypeError:
                hf_model = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(enc_dir)
    except ckpt.CheckpointError:
        raise
    except Exception as e:  # garbage config.json, a missing or damaged tokenizer
        raise ckpt.CheckpointError(enc_dir, f"cannot rebuild the encoder from its config and tokenizer: "
                                            f"{ckpt._first_line(e)}") from None
    encoder = Encoder(hf_model, tokenizer, name_or_path=str(cfg.encoder), layers=cfg.layers)
    try:
        model = build_model(cfg, encoder, len(meta["labels"]))
    except (TypeError, ValueError, KeyError) as e:
        raise ckpt.CheckpointError(path, f"cannot build the head {head!r} that meta.json describes: {e}") from None
    ckpt.load_weights(path, model)
    ckpt.check_reference(path, model, info)  # the pretrained tensors are the ones the run trained with
    bad = ckpt.nonfinite(model.state_dict())
    if bad:
        raise ckpt.CheckpointError(path, f"{len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}): "
                                         f"the checkpoint is not usable")
    model.stackft_meta = meta  # what stackft.predict_texts(model, texts) reads
    return model.to(device).eval(), meta


def _reference_encoder(path, enc_dir: Path, config, info: dict):
    """The pretrained HF encoder a partial checkpoint refers to: the run's copy (``encoder/model.safetensors``)
    or the encoder the run was configured with, loaded again."""
    from transformers import AutoModel

    from stackft.modeling.encoders import _quiet_transformers, resolve_encoder

    ref = info.get("reference") or {}
    if ref.get("kind") == "run":
        source = enc_dir
        if not (enc_dir / ckpt.WEIGHTS_FILE).exists():
            raise ckpt.CheckpointError(path, f"stores only the weights trained on a frozen encoder, whose pretrained "
                                             f"weights should be in {enc_dir / ckpt.WEIGHTS_FILE}, which is missing")
    else:
        source = resolve_encoder(ref.get("encoder"))
    try:
        with _quiet_transformers():
            try:
                return AutoModel.from_pretrained(source, config=config, add_pooling_layer=False)
            except TypeError:
                return AutoModel.from_pretrained(source, config=config)
    except Exception as e:  # not installed, not on this machine and no network, ...
        raise ckpt.CheckpointError(path, f"stores only the weights trained on a frozen encoder; loading its pretrained "
                                         f"encoder {ref.get('encoder') or 'minilm'!r} failed: {ckpt._first_line(e)}"
                                  ) from None
