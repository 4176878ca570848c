"""Training strategies as lists of phases (../shared/spec/methods.md §1 and §3.4).

- ``finetune-only``: encoder + 2-FC head trained jointly at the small lr (Peters' fine-tuning).
- ``stack-only``: frozen encoder, the task's stacked head trained to convergence (feature extraction).
- ``stack-and-finetune``: phase 1 = stack-only stopped early by the gap rule, phase 2 = fine-tune all.
- ``lp-ft``: phase 1 = linear probe on the frozen encoder, phase 2 = fine-tune all (Kumar et al.).
- ``eh-ft``: phase 1 = head + a PET method (``cfg.pet``: lora | bitfit) on the frozen encoder; phase 2
  drops the PET parameters, restarts from the pretrained encoder and fine-tunes all (Yang et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

from stackft.config import TrainConfig
from stackft.tasks import TaskSpec

STRATEGIES = ("finetune-only", "stack-only", "stack-and-finetune", "lp-ft", "eh-ft")


@dataclass(frozen=True)
class Phase:
    name: str
    train_encoder: bool
    head_lr: float
    encoder_lr: float
    epochs: int
    stop_mode: str  # see stackft.stopper: "gap" | "val_plateau" | "fixed"
    restore_chosen: bool = False  # end the phase on the stop rule's chosen evaluation
    pet: str | None = None  # parameter-efficient method trained with the head on the frozen encoder
    reload_encoder: bool = False  # start the phase from the pretrained encoder weights (EH-FT)


def default_head(strategy: str, task: TaskSpec) -> str:
    if strategy in ("finetune-only", "eh-ft"):  # EH-FT pre-trains the fine-tuning MLP head (methods.md §3.1)
        return task.finetune_head
    if strategy == "lp-ft":
        return "linear"
    return task.stack_head


def plan_phases(strategy: str, cfg: TrainConfig) -> list[Phase]:
    """The phases ``strategy`` runs under ``cfg``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    ft_head_lr = cfg.phase2_head_lr if cfg.phase2_head_lr is not None else cfg.phase2_lr
    finetune = Phase("phase2", True, ft_head_lr, cfg.phase2_lr, cfg.phase2_epochs, "fixed")
    if strategy == "finetune-only":
        return [Phase("finetune", True, ft_head_lr, cfg.phase2_lr, cfg.phase2_epochs, "fixed")]
    if strategy == "stack-only":
        return [Phase("stack", False, cfg.phase1_lr, 0.0, cfg.stack_epochs, "val_plateau")]
    if strategy == "eh-ft":
        return [Phase("phase1", False, cfg.phase1_lr, cfg.pet_lr, cfg.phase1_epochs, "val_plateau", True, pet=cfg.pet),
                Phase("phase2", True, ft_head_lr, cfg.phase2_lr, cfg.phase2_epochs, "fixed", reload_encoder=True)]
    if strategy == "lp-ft":
        return [Phase("phase1", False, cfg.phase1_lr, 0.0, cfg.phase1_epochs, "val_plateau", True), finetune]
    return [Phase("phase1", False, cfg.phase1_lr, 0.0, cfg.phase1_epochs, cfg.stop_mode, True), finetune]
