"""TrainConfig: every knob of a run, saved with each checkpoint as JSON.

Defaults follow ../shared/spec/methods.md. Values the paper gives: phase-1 lr 1e-3, BERT-Adam,
weight decay 0.01, dropout 0.1, Kaiming heads. stackft's own choices (not the paper's, which are
not recoverable): phase-2 lr 2e-5, 10% warmup per phase, TF-BERT schedule, global clip 1.0,
gap tolerance 0.02 with patience 3, at most 3 phase-1 epochs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainConfig:
    # what to train
    task: str = "ner"
    strategy: str = "stack-and-finetune"
    head: str | None = None  # default: the task's stacked head, or "fc" for finetune-only
    head_options: dict = field(default_factory=dict)
    encoder: str | None = None  # HF id or folder; None = packaged all-MiniLM-L6-v2
    layers: tuple = (-1,)
    dropout: float = 0.1
    # data
    train_path: str | None = None
    dev_path: str | None = None
    max_length: int = 128
    pair_mode: str | None = None  # "joint" | "siamese"; default from the head
    dev_size: float | None = None
    split_seed: int = 0
    max_train: int | None = None
    max_dev: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    max_tokens: int | None = None
    on_error: str = "raise"  # malformed input lines: "raise" (file:line: problem) | "skip" (drop, count, warn once)
    max_line_chars: int = 1_000_000
    # phases
    phase1_lr: float = 1e-3
    phase1_epochs: int = 3
    stack_epochs: int = 6  # stack-only trains its head to convergence, capped here
    phase2_lr: float = 2e-5
    phase2_head_lr: float | None = None  # default: phase2_lr
    phase2_epochs: int = 3
    stop_mode: str = "gap"
    gap_tol: float = 0.02
    patience: int = 3
    evals_per_epoch: int = 2
    pet: str = "lora"  # eh-ft phase 1: "lora" | "bitfit"
    pet_lr: float = 5e-4  # eh-ft phase-1 lr of the PET parameters (EH-FT's value)
    # optimisation
    optimizer: str = "bert_adam"
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    warmup: float = 0.1
    schedule: str = "bert_tf"
    clip: float = 1.0
    clip_mode: str = "global"
    # seeds (Dodge et al.: head init and data order are separate)
    init_seed: int = 0
    data_seed: int = 0
    # feature cache for frozen-encoder phases: "auto" | "off" | a folder
    cache: str = "auto"
    cache_dtype: str = "fp16"
    cache_placement: str = "auto"  # GPU runs: "auto" | "device" | "pinned" | "mmap" (see cache_features)
    cache_prefetch: int | None = None  # batches of cached features gathered ahead; None: 2 on a GPU, 0 on CPU
    # running
    device: str = "auto"
    precision: str = "auto"  # "auto" (bf16 autocast on a bf16-capable GPU, else fp32) | "fp32" | "bf16"
    grad_accum: int = 1  # split every batch into this many micro-batches (same step, less memory)
    output_dir: str = "runs/stackft"
    save_every: int = 0  # also checkpoint every N optimizer steps (0: at evaluations only)
    max_steps_this_run: int | None = None  # checkpoint and return after N steps (time slicing)
    stop_after_phase: int | None = None  # checkpoint and return once phase N (0-based) has ended
    progress: bool = True

    # How a run is carried out rather than what it trains: these may change when a run is resumed.
    RESUMABLE_CHANGES = frozenset({
        "progress", "max_steps_this_run", "stop_after_phase", "save_every", "output_dir", "device",
        "cache", "cache_placement", "cache_prefetch", "eval_batch_size", "grad_accum",
    })

    def changed_for_resume(self, saved: dict) -> list[str]:
        """Fields of ``saved`` (a run's config.json) that differ from this config and decide what is trained."""
        now = self.to_dict()
        default = TrainConfig().to_dict()
        return sorted(k for k in set(now) | set(saved)
                      if k not in self.RESUMABLE_CHANGES and saved.get(k, default.get(k)) != now.get(k))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
