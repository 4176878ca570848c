"""Training strategies as lists of phases.

A phase trains the head, and the encoder or not, at its own lrs for up to a number of epochs and
ends on a stop rule (:mod:`stackft.training.stopper`). The strategies:

- ``finetune-only``: one phase, encoder + the task's 2-layer FC head trained jointly at the small
  fine-tuning lr (``phase2_lr``) for ``phase2_epochs`` (the usual BERT fine-tuning baseline).
- ``stack-only``: one phase, frozen encoder (feature extraction), the task's stacked head (e.g. a
  BiLSTM for NER) trained at ``phase1_lr`` until the dev score plateaus, at most ``stack_epochs``.
- ``stack-and-finetune`` (the paper's method, Wang et al. 2019): phase 1 = stack-only at
  ``phase1_lr`` for at most ``phase1_epochs``, stopped by ``stop_mode`` (by default ``gap_se``, the gap
  rule with a tolerance from the scores' standard errors; ``gap``: the paper's, stop once the train
  score exceeds the dev score by more than ``gap_tol``) and ending on the
  evaluation that rule chose; phase 2 = fine-tune encoder and head at ``phase2_lr``.
- ``lp-ft`` (Kumar et al. 2022): phase 1 = a linear probe on the frozen encoder, stopped on a
  dev plateau; phase 2 = fine-tune all.
- ``eh-ft`` (Yang et al. 2022): phase 1 = the fine-tuning head plus a parameter-efficient method
  (``cfg.pet``: LoRA or BitFit, at ``pet_lr``) on the frozen encoder, stopped on a dev plateau;
  phase 2 drops the PET parameters, restarts from the pretrained encoder weights and fine-tunes all.

:func:`ignored_settings` names the settings of a config that its strategy does not read.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from stackft.config import STRATEGIES, TrainConfig
from stackft.tasks import TaskSpec

__all__ = ["STRATEGIES", "Phase", "default_head", "ignored_settings", "plan_phases"]


@dataclass(frozen=True)
class Phase:
    name: str
    train_encoder: bool
    head_lr: float
    encoder_lr: float
    epochs: int
    stop_mode: str  # one of stackft.config.STOP_MODES (see stackft.training.stopper)
    restore_chosen: bool = False  # end the phase on the stop rule's chosen evaluation
    pet: str | None = None  # parameter-efficient method trained with the head on the frozen encoder
    reload_encoder: bool = False  # start the phase from the pretrained encoder weights (EH-FT)


def default_head(strategy: str, task: TaskSpec) -> str:
    if strategy in ("finetune-only", "eh-ft"):  # EH-FT pre-trains the fine-tuning MLP head
        return task.finetune_head
    if strategy == "lp-ft":
        return "linear"
    return task.stack_head


def _check(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")


def plan_phases(strategy: str, cfg: TrainConfig) -> list[Phase]:
    """The phases ``strategy`` runs under ``cfg``."""
    _check(strategy)
    ft_head_lr = cfg.phase2_head_lr
    if ft_head_lr is None:  # a head trained in phase 1 moves on at a multiple of the encoder's lr (measured)
        ft_head_lr = cfg.phase2_lr * (cfg.phase2_head_lr_scale if strategy == "stack-and-finetune" else 1.0)
    if strategy == "finetune-only":
        return [Phase(name="finetune", train_encoder=True, head_lr=ft_head_lr, encoder_lr=cfg.phase2_lr,
                      epochs=cfg.phase2_epochs, stop_mode="fixed")]
    if strategy == "stack-only":
        return [Phase(name="stack", train_encoder=False, head_lr=cfg.phase1_lr, encoder_lr=0.0,
                      epochs=cfg.stack_epochs, stop_mode="val_plateau")]
    finetune = Phase(name="phase2", train_encoder=True, head_lr=ft_head_lr, encoder_lr=cfg.phase2_lr,
                     epochs=cfg.phase2_epochs, stop_mode="fixed", reload_encoder=strategy == "eh-ft")
    if strategy == "eh-ft":
        phase1 = Phase(name="phase1", train_encoder=False, head_lr=cfg.phase1_lr, encoder_lr=cfg.pet_lr,
                       epochs=cfg.phase1_epochs, stop_mode="val_plateau", restore_chosen=True, pet=cfg.pet)
    else:  # lp-ft, stack-and-finetune
        phase1 = Phase(name="phase1", train_encoder=False, head_lr=cfg.phase1_lr, encoder_lr=0.0,
                       epochs=cfg.phase1_epochs, stop_mode="val_plateau" if strategy == "lp-ft" else cfg.stop_mode,
                       restore_chosen=True)
    return [phase1, finetune]


# -- settings a strategy does not read ------------------------------------------------------------

_PHASE1 = ("phase1_lr", "phase1_epochs")
_PHASE2 = ("phase2_lr", "phase2_head_lr", "phase2_epochs")
_CACHE = ("cache", "cache_dtype", "cache_placement", "cache_prefetch")


def _unused(strategy: str, phases: list[Phase]) -> dict[str, str]:
    """Field name -> why ``strategy`` (running ``phases``) does not read it."""
    out: dict[str, str] = {}
    if strategy == "finetune-only":
        out.update(dict.fromkeys(_PHASE1, "it has no phase 1"))
    if strategy == "stack-only":
        out["phase1_epochs"] = "its one phase runs for at most stack_epochs"
        out.update(dict.fromkeys(_PHASE2, "it has no fine-tuning phase"))
        out["layer_decay"] = "it never trains the encoder"
    else:
        out["stack_epochs"] = "only stack-only reads it" + (
            "; phase 1 runs for at most phase1_epochs" if len(phases) > 1 else "")
    if strategy != "eh-ft":
        out.update(dict.fromkeys(("pet", "pet_lr"), "only eh-ft trains a PET method"))
    if strategy != "stack-and-finetune":
        out.setdefault("phase2_head_lr_scale", "only stack-and-finetune scales its head's phase-2 lr")
    if strategy != "stack-and-finetune":
        frozen = [p for p in phases if not p.train_encoder]
        out["stop_mode"] = (f"its {'phase 1' if frozen[0].name == 'phase1' else frozen[0].name + ' phase'} "
                            f"always uses {frozen[0].stop_mode}" if frozen
                            else "it has only a fixed-length fine-tuning phase")
    modes = {p.stop_mode for p in phases}
    if "gap" not in modes:
        out.setdefault("gap_tol", f"stop_mode is {phases[0].stop_mode!r}, not 'gap'"
                       if strategy == "stack-and-finetune" else "no phase uses the gap rule")
    if "gap_se" not in modes:
        out.setdefault("gap_z", "no phase uses the gap_se rule")
    if strategy not in ("stack-and-finetune", "lp-ft"):
        out["handoff"] = "only stack-and-finetune and lp-ft hand a frozen phase 1 over to phase 2"
    if strategy not in ("stack-and-finetune", "lp-ft"):
        out.update(dict.fromkeys(("handoff_candidates", "handoff_probe", "handoff_choice", "handoff_z"),
                                "it has no handoff to search"))
    if not modes & {"gap", "gap_se", "val_plateau"}:
        out.setdefault("patience", "no phase can stop early: every stop rule is 'fixed'")
    if not any(not p.train_encoder and not p.pet for p in phases):
        # (cache="off" asks for what happens anyway: not reported)
        out.update(dict.fromkeys(_CACHE, "no phase has a frozen encoder without PET modules, "
                                          "so no feature cache is used"))
    return out


def ignored_settings(cfg: TrainConfig) -> list[str]:
    """Why each field of ``cfg`` that is set away from its default goes unread by ``cfg.strategy``.

    One message per such field, in field order, e.g. ``"stop_mode='val_plateau' is ignored by
    strategy 'lp-ft' (its phase 1 always uses val_plateau)"``; empty when every setting counts.
    """
    _check(cfg.strategy)
    unused = _unused(cfg.strategy, plan_phases(cfg.strategy, cfg))
    default = TrainConfig()
    return [f"{f.name}={getattr(cfg, f.name)!r} is ignored by strategy {cfg.strategy!r} ({unused[f.name]})"
            for f in fields(TrainConfig)
            if f.name in unused and getattr(cfg, f.name) != getattr(default, f.name)
            and not (f.name == "cache" and cfg.cache == "off")]
