"""The two-phase training loop.

``Trainer(cfg).fit()`` runs the phases of ``cfg.strategy`` (stackft.strategies): for each phase it
freezes or unfreezes the encoder, builds fresh parameter groups, optimizer and schedule, trains
with evaluations ``evals_per_epoch`` times an epoch, applies the phase's stop rule, and keeps:

- ``best/``: the best dev checkpoint over the whole run (the final model);
- ``phase1_end/``: the phase-2 initialisation (two-phase strategies);
- ``last/``: model + optimizer + scheduler + RNG + sampler position, for ``resume=True``;
- ``metrics.jsonl`` (one line per evaluation) and ``summary.json``.

A non-finite loss stops the run with :class:`NonFiniteLoss`; the last good checkpoint is kept.
While the encoder is frozen its features can come from a :mod:`stackft.cache` feature cache
instead of running it every step (``cfg.cache``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import TrainConfig
from .encoders import Encoder, load_encoder
from .heads import build_head
from .model import StackModel, task_loss
from .optim import build_param_groups, clip_gradients, make_optimizer, make_scheduler
from .stopper import Phase1Stopper
from .strategies import Phase, default_head, plan_phases
from .evaluate import SubsetView, evaluate, loader, to_device
from .tasks import TaskData, get_task, load_task_data

log = logging.getLogger("stackft")


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.encoder = encoder or load_encoder(cfg.encoder, layers=cfg.layers, dropout=cfg.dropout)
        self.head_name = cfg.head or default_head(cfg.strategy, self.task)
        if data is None:
            if cfg.train_path is None:
                raise ValueError("TrainConfig.train_path is required (or pass data=)")
            from .heads import head_pair_input

            pair_mode = cfg.pair_mode or ("siamese" if head_pair_input(self.head_name) else "joint")
            data = load_task_data(cfg.task, cfg.train_path, cfg.dev_path, tokenizer=self.encoder.tokenizer,
                                  max_length=cfg.max_length, pair_mode=pair_mode, dev_size=cfg.dev_size,
                                  split_seed=cfg.split_seed, max_train=cfg.max_train, max_dev=cfg.max_dev)
        self.data = data
        self.model = build_model(cfg, self.encoder, len(data.vocab)).to(self.device)
        if self.model.pair_input != (data.train.kind == "pairs-siamese"):
            raise ValueError(f"head {self.head_name!r} needs {'siamese' if self.model.pair_input else 'joint'} "
                             f"pair encoding, data was encoded as {data.train.kind}")
        self.phases = plan_phases(cfg.strategy, cfg)
        self.pos = _Position()
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
        from .cache_features import CachedFeatures

        self.features = CachedFeatures.for_run(self)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, split: str = "dev") -> dict:
        """Metrics on dev, or on the fixed train probe (``split="train"``) used by the gap rule."""
        ds = self.data.dev if split == "dev" else SubsetView(self.data.train, self.train_probe)
        features = (lambda b: self.features(b, split)) if self.features is not None else None
        return evaluate(self.model, ds, self.task, self.data.vocab, batch_size=self.cfg.eval_batch_size,
                        device=self.device, features=features)

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
        state = {  # optimizer None: saved at a phase boundary
            "position": vars(self.pos).copy(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None,
            "stopper": stopper.state_dict() if stopper else None,
            "best": self.best,
            "phase_times": self.phase_times,
            "history": self.history,
            "rng": ckpt.rng_state(),
        }
        ckpt.save_checkpoint(self.out / "last", self.model, self._meta(), state)

    def _log(self, record: dict) -> None:
        self.history.append(record)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train all phases; returns the summary (also written to ``summary.json``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = None
        if resume and (self.out / "last" / "state.pt").exists():
            state = torch.load(self.out / "last" / "state.pt", weights_only=False)
            self.pos = _Position(**state["position"])
            if self.phases[self.pos.phase].pet and state["optimizer"] is not None:
                self._attach_pet(self.phases[self.pos.phase])  # the saved weights include the PET modules
            ckpt.load_weights(self.out / "last", self.model)
            self.best, self.phase_times, self.history = state["best"], state["phase_times"], state["history"]
            self._rewrite_log()
            log.info("resuming from %s at %s", self.out / "last", self.pos)
        else:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
            (self.out / "config.json").write_text(self.cfg.to_json())
            ckpt.save_encoder_files(self.encoder, self.out)
            torch.manual_seed(self.cfg.data_seed)  # dropout follows the data seed
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
        from . import pet

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
        steps_per_epoch = len(sampler)
        total = steps_per_epoch * phase.epochs
        scheduler = make_scheduler(optimizer, cfg.schedule, total_steps=total, warmup_proportion=cfg.warmup)
        n_evals = max(1, min(cfg.evals_per_epoch, steps_per_epoch))
        eval_points = {round(k * steps_per_epoch / n_evals) for k in range(1, n_evals + 1)}
        stopper = Phase1Stopper(mode=phase.stop_mode, gap_tol=cfg.gap_tol, patience=cfg.patience,
                                min_steps=min(eval_points))
        chosen_path = self.out / f"{phase.name}_chosen"
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stopper.load_state_dict(state["stopper"])
            ckpt.set_rng_state(state["rng"])
        t0 = time.perf_counter() - self.phase_times.get(phase.name, 0.0)
        model.train()
        stop = bool(stopper.reason)  # a resumed run whose stop rule had already fired
        for epoch in range(self.pos.epoch, phase.epochs if not stop else 0):
            self.pos.epoch = epoch
            sampler.set_epoch(epoch, self.pos.batch)
            bar = tqdm(train_dl, total=steps_per_epoch, initial=self.pos.batch, disable=not cfg.progress,
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
        if phase.restore_chosen and (chosen_path / "model.safetensors").exists():
            ckpt.load_weights(chosen_path, model)
            tqdm.write(f"[{phase.name}] ends on the evaluation at step {stopper.chosen_step} (stop rule: {phase.stop_mode})")
        self.phase_times[phase.name] = time.perf_counter() - t0
        if phase.pet:
            from . import pet

            pet.detach(model.encoder, phase.pet)
        if phase.restore_chosen:
            ckpt.save_checkpoint(self.out / f"{phase.name}_end", model, self._meta({"stop_reason": stopper.reason}))
        return True, steps_left

    def _train_step(self, batch, optimizer, scheduler) -> float:
        batch = to_device(batch, self.device)
        logits = self.model.forward_features(self._features(batch, "train"))
        loss = task_loss(logits, batch["labels"])
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"non-finite loss ({loss.item()}) at phase {self.pos.phase} step {self.pos.phase_step}; "
                f"the last good checkpoint is in {self.out / 'last'} (resume with resume=True after fixing "
                f"the cause, e.g. a lower learning rate)")
        loss.backward()
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
            ckpt.save_checkpoint(chosen_path, self.model, self._meta(dev))
        if dev[key] > self.best["score"] and not phase.pet:  # PET phases' models are not final models
            self.best = {"score": dev[key], "phase": phase.name, "step": self.pos.phase_step, "dev": dev}
            ckpt.save_checkpoint(self.out / "best", self.model, self._meta(dev))
            record["best"] = True
        self._log(record)
        gap = "" if train is None else f" train {key} {train[key]:.4f}"
        tqdm.write(f"[{phase.name}] epoch {epochs_done:.2f} step {self.pos.phase_step}: loss {loss:.4f} "
                   f"dev {key} {dev[key]:.4f}{gap}")
        return stop

    def _finish(self) -> dict:
        ckpt.load_weights(self.out / "best", self.model)
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
        }
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
