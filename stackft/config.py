"""TrainConfig: every knob of a run, saved with each checkpoint as JSON.

Where the defaults come from. The paper (Wang et al. 2019, arXiv 1907.05338) gives: phase-1 lr
1e-3, the BERT-Adam optimizer (no bias correction), weight decay 0.01, dropout 0.1 and
Kaiming-initialised heads. The rest are stackft's own choices, since the paper does not state
them: phase-2 lr 2e-5, 10% linear warm-up in every phase, the TF-BERT schedule (``bert_tf``),
global gradient-norm clipping at 1.0, the phase-1 gap rule with tolerance 0.02 and patience 3,
and at most 3 phase-1 epochs.

Every field carries its documentation in ``dataclasses.field(metadata=...)``: ``help`` (one
line), ``group`` (one of :data:`GROUPS`) and, for fields with a fixed set of values,
``choices``. The command line (``stackft.cli.args``) builds its options from them. The choice
tuples below are literals so that this module stays import-light (no torch, nothing from
stackft); tests check them against the modules that implement each setting.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields

#: the option groups, in the order ``stackft train --help`` shows them
GROUPS = ("task and data", "phases", "optimisation", "cache", "running")

#: the allowed values of the fields with a fixed set of them (each agrees with its owning module)
STRATEGIES = ("finetune-only", "stack-only", "stack-and-finetune", "lp-ft", "eh-ft")  # training.strategies
PAIR_MODES = ("joint", "siamese")  # data.encode.KINDS "pairs-<mode>"
ON_ERROR = ("raise", "skip")  # data.errors.ON_ERROR
STOP_MODES = ("gap", "gap_se", "val_plateau", "fixed")  # training.stopper.MODES
PET_METHODS = ("lora", "bitfit")  # modeling.pet.METHODS
OPTIMIZERS = ("bert_adam", "adamw", "torch_adamw")  # training.optim.make_optimizer
SCHEDULES = ("bert_tf", "linear_hf", "constant", "cosine")  # training.optim.SCHEDULES
CLIP_MODES = ("global", "per_tensor")  # training.optim.clip_gradients
CACHE_DTYPES = ("fp32", "fp16", "bf16", "int8")  # cache.format.DTYPES
CACHE_PLACEMENTS = ("auto", "device", "pinned", "mmap")  # cache.source.PLACEMENTS
PRECISIONS = ("auto", "fp32", "bf16")  # training.trainer.resolve_precision
HANDOFFS = ("rule", "search")  # studies.handoff
HANDOFF_CHOICES = ("best", "se")  # studies.handoff.choose_probe
HEAD_REVISIONS = (1, 2, 3)  # modeling.heads: 1 .. HEAD_DEFAULTS (revisions of the heads' default options)
#: what TrainConfig.validate accepts without importing the modules that own them (tests keep them in step)
TASK_NAMES = ("ner", "classification", "pairs")  # tasks.TASKS
TASK_ALIASES = ("cls", "conll", "pair", "qqp", "similarity", "tagging", "text", "yahoo")  # tasks.ALIASES
HEAD_NAMES = ("fc", "linear", "bilstm", "highway-lstm", "densenet", "bimpm", "bimpm-noctx",
              "sim-transformer")  # modeling.heads.HEADS
REPORT_TO = ("none", "tensorboard")  # training.tensorboard.REPORT_TO


def _field(default=MISSING, *, group: str, help: str, choices: tuple | None = None, default_factory=MISSING):
    meta = {"help": help, "group": group}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, default_factory=default_factory, metadata=meta)


_TASK = "task and data"
_PHASES = "phases"
_OPT = "optimisation"
_CACHE = "cache"
_RUN = "running"


@dataclass
class TrainConfig:
    # what to train
    task: str = _field(
        "ner", group=_TASK,
        help="ner | classification | pairs (aliases such as conll, yahoo, qqp): the data reader, "
             "selection metric and default heads")
    strategy: str = _field(
        "stack-and-finetune", group=_TASK, choices=STRATEGIES,
        help="finetune-only: encoder and FC head together at the small lr; stack-only: the stacked head on "
             "the frozen encoder; stack-and-finetune: stack-only stopped early by the gap rule, then "
             "fine-tune all; lp-ft: linear probe, then fine-tune all; eh-ft: head + PET, then fine-tune all")
    head: str | None = _field(
        None, group=_TASK,
        help="fc | linear | bilstm | highway-lstm | densenet | bimpm | bimpm-noctx | sim-transformer "
             "(default: the task's stacked head; fc for finetune-only and eh-ft, linear for lp-ft)")
    head_options: dict = _field(
        default_factory=dict, group=_TASK,
        help="JSON object of head options, e.g. '{\"perspectives\": 10}'")
    head_defaults: int = _field(
        3, group=_TASK, choices=HEAD_REVISIONS,
        help="revision of the heads' default options the run builds: 3 (Sim-Transformer batch-normalises its "
             "matching features, d_model 128), 2 (no norm, d_model 256; DenseNet 128 channels) or 1 (DenseNet "
             "as wide as the "
             "encoder); a config.json written before revisions existed reads as 1")
    encoder: str | None = _field(
        None, group=_TASK, help="HF hub id or local folder (default: packaged all-MiniLM-L6-v2)")
    layers: tuple[int, ...] = _field(
        (-1,), group=_TASK,
        help="comma-separated hidden-state indices whose average the head reads (default -1, the last)")
    dropout: float = _field(0.1, group=_TASK, help="dropout probability of the encoder and the head")
    # data
    train_path: str | None = _field(
        None, group=_TASK,
        help="training data file (CoNLL / TSV / CSV / json / parquet) or a datasets hub id (required)")
    dev_path: str | None = _field(
        None, group=_TASK,
        help="dev file (default: a stratified split of the training file, see --dev-size)")
    max_length: int = _field(128, group=_TASK, help="tokens per sequence; longer inputs are truncated")
    pair_mode: str | None = _field(
        None, group=_TASK, choices=PAIR_MODES,
        help="pairs task: joint (both texts in one sequence) or siamese (each text encoded alone) "
             "(default: what the head takes)")
    dev_size: float | int | None = _field(
        None, group=_TASK,
        help="dev split cut from the training file when there is no dev file: a count (1000) or a fraction "
             "(0.1) (default: 1000 for pairs training sets of 4000+ examples, else 0.1)")
    split_seed: int = _field(0, group=_TASK, help="seed of the dev split and of the --max-train/--max-dev subsamples")
    max_train: int | None = _field(
        None, group=_TASK, help="subsample the training set to this many examples (default: all)")
    max_dev: int | None = _field(None, group=_TASK, help="subsample the dev set to this many examples (default: all)")
    batch_size: int = _field(32, group=_TASK, help="training examples per optimizer step")
    eval_batch_size: int = _field(64, group=_TASK, help="batch size of evaluations and of cache building")
    max_tokens: int | None = _field(
        None, group=_TASK,
        help="also end a training batch before it exceeds this many tokens (examples x longest) "
             "(default: no limit)")
    on_error: str = _field(
        "raise", group=_TASK, choices=ON_ERROR,
        help="malformed input lines: raise (stop at file:line: problem) or skip (drop and count them, warn once)")
    max_line_chars: int = _field(
        1_000_000, group=_TASK,
        help="longest input line (and text) the readers accept, in characters; a longer one is malformed")
    # phases
    phase1_lr: float = _field(
        1e-3, group=_PHASES, help="lr of the head on the frozen encoder (phase 1, and stack-only's phase)")
    phase1_epochs: int = _field(
        3, group=_PHASES, help="most epochs of phase 1 of two-phase strategies (its stop rule may end it sooner)")
    stack_epochs: int = _field(
        6, group=_PHASES,
        help="stack-only: most epochs of its head training (it stops once the dev score plateaus)")
    phase2_lr: float = _field(
        2e-5, group=_PHASES, help="lr of the fine-tuning phase (phase 2, or finetune-only's one phase)")
    phase2_head_lr: float | None = _field(
        None, group=_PHASES, help="head lr of the fine-tuning phase (default: --phase2-lr, times "
                                  "--phase2-head-lr-scale for stack-and-finetune)")
    phase2_head_lr_scale: float = _field(
        10.0, group=_PHASES,
        help="stack-and-finetune without --phase2-head-lr: the head's phase-2 lr is this multiple of --phase2-lr "
             "(its head was trained in phase 1; 10 measured best on dev, docs/methods.md 4; 1: the encoder's lr)")
    phase2_epochs: int = _field(3, group=_PHASES, help="epochs of the fine-tuning phase (always run in full)")
    stop_mode: str = _field(
        "gap_se", group=_PHASES, choices=STOP_MODES,
        help="stack-and-finetune's phase-1 stop rule: gap_se (the default: the gap rule with a tolerance from "
             "the scores' standard errors, once dev stopped improving beyond its own; measured on dev, "
             "docs/methods.md 3.1), gap (the paper's: train - dev score above --gap-tol, or no dev "
             "improvement for --patience evaluations), val_plateau (no improvement for --patience "
             "evaluations) or fixed (all --phase1-epochs)")
    gap_tol: float = _field(
        0.02, group=_PHASES, help="gap rule: phase 1 stops once the train score exceeds the dev score by more")
    gap_z: float = _field(
        2.5, group=_PHASES, help="gap_se rule: a train - dev gap is real above this many standard errors of the "
                                 "difference (2.5: about 6% false stops over 10 evaluations of pure noise)")
    handoff: str = _field(
        "rule", group=_PHASES, choices=HANDOFFS,
        help="two-phase strategies with a frozen phase 1: rule (phase 2 starts where the stop rule chose) or "
             "search (phase 2 probes from --handoff-candidates phase-1 checkpoints; the best probe continues)")
    handoff_candidates: int = _field(3, group=_PHASES, help="handoff search: phase-1 checkpoints to probe from")
    handoff_probe: float = _field(
        0.1, group=_PHASES, help="handoff search: fraction of phase 2's optimizer steps each probe runs")
    handoff_choice: str = _field(
        "best", group=_PHASES, choices=HANDOFF_CHOICES,
        help="handoff search: which probe continues: best (the best by dev) or se (the stop rule's candidate "
             "unless another probe beats it by more than --handoff-z standard errors of the difference)")
    handoff_z: float = _field(
        1.0, group=_PHASES, help="handoff search, --handoff-choice se: standard errors a probe must win by")
    patience: int = _field(
        3, group=_PHASES, help="gap, gap_se and val_plateau rules: stop after this many evaluations without dev improvement")
    evals_per_epoch: int = _field(
        2, group=_PHASES, help="dev evaluations per epoch (each can stop a phase and save the best checkpoint)")
    pet: str = _field(
        "lora", group=_PHASES, choices=PET_METHODS,
        help="eh-ft: the parameter-efficient method trained with the head in phase 1")
    pet_lr: float = _field(5e-4, group=_PHASES, help="eh-ft: phase-1 lr of the PET parameters (EH-FT's value)")
    # optimisation
    optimizer: str = _field(
        "bert_adam", group=_OPT, choices=OPTIMIZERS,
        help="bert_adam (BERT's AdamW, no bias correction), adamw (bias-corrected) or torch_adamw")
    weight_decay: float = _field(
        0.01, group=_OPT, help="decoupled weight decay (never on biases and normalisation weights)")
    layer_decay: float = _field(
        1.0, group=_OPT, help="layer-wise lr decay: encoder layer k of L trains at lr x this^(L-k) (1: none)")
    warmup: float = _field(0.1, group=_OPT, help="linear warm-up, as a fraction of each phase's steps")
    schedule: str = _field(
        "bert_tf", group=_OPT, choices=SCHEDULES,
        help="lr schedule of every phase after warm-up: bert_tf (TF BERT's linear decay from step 0), "
             "linear_hf (linear decay after warm-up), constant or cosine")
    clip: float = _field(1.0, group=_OPT, help="gradient-norm clip (0: none)")
    clip_mode: str = _field(
        "global", group=_OPT, choices=CLIP_MODES,
        help="clip the norm of all gradients together (global) or of each tensor (per_tensor)")
    # seeds (Dodge et al.: head init and data order are separate)
    init_seed: int = _field(0, group=_OPT, help="seed of the head initialisation (and of the PET modules)")
    data_seed: int = _field(0, group=_OPT, help="seed of the training data order and of dropout")
    # feature cache for frozen-encoder phases
    cache: str = _field(
        "auto", group=_CACHE,
        help="feature cache for frozen-encoder phases: auto ($STACKFT_CACHE_DIR, else ~/.cache/stackft/features) "
             "| off | FOLDER")
    cache_dtype: str = _field(
        "fp16", group=_CACHE, choices=CACHE_DTYPES,
        help="storage dtype of cached features (int8: per-token absmax scaling)")
    cache_placement: str = _field(
        "auto", group=_CACHE, choices=CACHE_PLACEMENTS,
        help="GPU runs: device (whole cache in GPU memory), pinned (page-locked host RAM, read over PCIe, "
             "overlapped), mmap (host copy of each batch's rows) or auto; CPU runs ignore it")
    cache_prefetch: int | None = _field(
        None, group=_CACHE,
        help="batches of cached features gathered ahead, on a side CUDA stream on a GPU "
             "(default: 2 on a GPU, 0 on CPU, where there is nothing to overlap)")
    # running
    device: str = _field("auto", group=_RUN, help="auto | cpu | cuda | cuda:N")
    precision: str = _field(
        "auto", group=_RUN, choices=PRECISIONS,
        help="auto: bf16 autocast on a bf16-capable GPU, else fp32; fp32; or bf16 autocast")
    grad_accum: int = _field(
        1, group=_RUN, help="split every batch into this many micro-batches (same step, less memory)")
    output_dir: str = _field("runs/stackft", group=_RUN, help="run folder (checkpoints, metrics.jsonl, summary.json)")
    save_every: int = _field(
        0, group=_RUN, help="also checkpoint every N optimizer steps (0: at evaluations only)")
    save_total_limit: int | None = _field(
        None, group=_RUN,
        help="most checkpoint folders a run keeps: best/ and last/ always, then the newest {phase}_end/ and "
             "finished phases' {phase}_chosen/ (default: keep all)")
    max_steps_this_run: int | None = _field(
        None, group=_RUN,
        help="checkpoint and exit after this many steps; --resume continues (default: no limit)")
    stop_after_phase: int | None = _field(
        None, group=_RUN,
        help="checkpoint and exit once phase N (0-based) has ended; --resume continues (default: run all phases)")
    progress: bool = _field(True, group=_RUN, help="show progress bars and evaluation lines")
    report_to: str = _field(
        "none", group=_RUN, choices=REPORT_TO,
        help="also log to: tensorboard (event files in the run folder, beside metrics.jsonl: loss, per-group "
             "learning rates, dev and train-probe scores, phase boundaries; needs pip install tensorboard) or none")

    # How a run is carried out rather than what it trains: these may change when a run is resumed.
    RESUMABLE_CHANGES = frozenset({
        "progress", "max_steps_this_run", "stop_after_phase", "save_every", "output_dir", "device",
        "cache", "cache_placement", "cache_prefetch", "eval_batch_size", "grad_accum", "report_to",
        "save_total_limit",
    })
    # Learning rates may also change when resuming a run that stopped on a non-finite loss (run.json
    # notes it): the resumed optimizer and schedule continue at the new rates.
    RESUMABLE_AFTER_NONFINITE = frozenset({"phase1_lr", "phase2_lr", "phase2_head_lr", "phase2_head_lr_scale",
                                           "pet_lr"})
    # Fields added after a release, with the value that reproduces what a config.json written before
    # them trained (absent there = this value, not today's default).
    ABSENT_MEANS = {"phase2_head_lr_scale": 1.0,  # 0.2: the head trained at --phase2-lr in phase 2
                    "stop_mode": "gap",  # the default until gap_se replaced it (after 0.2.0)
                    "head_defaults": 1}  # heads as their defaults were before revisions (DenseNet: encoder width)

    def changed_for_resume(self, saved: dict) -> list[str]:
        """Fields of ``saved`` (a run's config.json) that differ from this config and decide what is trained."""
        now = self.to_dict()
        default = {**TrainConfig().to_dict(), **self.ABSENT_MEANS}
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
        d = {**cls.ABSENT_MEANS, **d}
        if "layers" in d:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def validate(self) -> "TrainConfig":
        """Check every field's value on its own (no files, no encoder, nothing imported); returns self.

        Raises :class:`ConfigError` (a ValueError naming the field, the value and what would work,
        with the nearest valid choice for a typo) at the first bad value. ``Trainer`` calls it
        first thing and the command line before anything is loaded, so a typo costs no model load.
        """
        for f in fields(self):
            _check_field(f, getattr(self, f.name))
        return self


class ConfigError(ValueError):
    """A TrainConfig value that cannot work: ``field``, ``value`` and the ``problem`` (with the fix)."""

    def __init__(self, field_name: str, value, problem: str):
        self.field, self.value, self.problem = field_name, value, problem
        super().__init__(f"{field_name}={value!r}: {problem}")

    @property
    def option(self) -> str:
        """The command-line flag of the field (``--batch-size``)."""
        return "--" + self.field.replace("_", "-")

    def cli_message(self) -> str:
        """The problem as the command line spells it: ``--batch-size 0: must be at least 1``."""
        value = json.dumps(self.value) if isinstance(self.value, dict) else (
            ",".join(map(str, self.value)) if isinstance(self.value, (tuple, list)) else self.value)
        return f"{self.option} {value}: {self.problem}"


def suggest(value, options) -> str:
    """``"did you mean 'x'? "`` for the option nearest to ``value`` (difflib), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(value).lower(), [str(o) for o in options], n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def not_one_of(value, options, what: str = "value") -> str:
    """The problem text of a value outside ``options``: a suggestion, then the whole list."""
    return f"not a known {what}; {suggest(value, options)}choose from {', '.join(map(str, options))}"


# lower bounds of the integer fields (None is allowed where the annotation has it)
_INT_AT_LEAST = {
    "batch_size": 1, "eval_batch_size": 1, "grad_accum": 1, "evals_per_epoch": 1, "patience": 1,
    "handoff_candidates": 1, "max_line_chars": 1, "max_length": 3, "phase1_epochs": 0, "phase2_epochs": 0,
    "stack_epochs": 0, "save_every": 0, "max_train": 1, "max_dev": 1, "max_tokens": 1, "max_steps_this_run": 0,
    "stop_after_phase": 0, "cache_prefetch": 0,
    "save_total_limit": 2,  # best/ and last/ always count
}
# float fields: (lowest, highest, lowest included, highest included)
_FLOAT_RANGE = {
    "phase1_lr": (0, None, True, True), "phase2_lr": (0, None, True, True), "phase2_head_lr": (0, None, True, True),
    "phase2_head_lr_scale": (0, None, False, True), "pet_lr": (0, None, True, True), "weight_decay": (0, None, True, True), "clip": (0, None, True, True),
    "gap_tol": (0, None, True, True), "gap_z": (0, None, False, True), "handoff_z": (0, None, True, True), "layer_decay": (0, None, False, True),
    "dropout": (0, 1, True, False), "warmup": (0, 1, True, True), "handoff_probe": (0, 1, False, False),
}
_WHAT = {"strategy": "strategy", "stop_mode": "stop mode", "optimizer": "optimizer", "schedule": "schedule",
         "cache_dtype": "cache dtype", "cache_placement": "cache placement", "on_error": "on-error mode",
         "clip_mode": "clip mode", "precision": "precision", "pet": "PET method", "pair_mode": "pair mode",
         "handoff": "handoff"}
_DEVICE_RE = r"auto|cpu|mps|(cuda|xpu)(:\d+)?"


def _range_text(lo, hi, lo_in, hi_in) -> str:
    if hi is None:
        return f"must be {'at least' if lo_in else 'above'} {lo}"
    return f"must be in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _check_field(f, value) -> None:
    import math
    import re

    name = f.name
    choices = f.metadata.get("choices")
    if value is None:
        if f.default is None:
            return
        raise ConfigError(name, value, "must be set")
    if choices is not None:
        if value not in choices:
            raise ConfigError(name, value, not_one_of(value, choices, _WHAT.get(name, "value")))
        return
    if name == "task":
        if value not in TASK_NAMES + TASK_ALIASES:
            raise ConfigError(name, value, not_one_of(value, TASK_NAMES + TASK_ALIASES, "task"))
    elif name == "head":
        if str(value).strip().lower().replace("_", "-") not in HEAD_NAMES:
            raise ConfigError(name, value, not_one_of(value, HEAD_NAMES, "head"))
    elif name == "head_options":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(name, value, "must be a JSON object of head options, e.g. '{\"lstm_hidden\": 128}'")
    elif name == "layers":
        if not value or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise ConfigError(name, value, "must be one or more hidden-state indices, e.g. -1 or -4,-3,-2,-1")
    elif name == "device":
        if not isinstance(value, str) or not re.fullmatch(_DEVICE_RE, value):
            raise ConfigError(name, value, "must be auto, cpu, cuda or cuda:N")
    elif name == "dev_size":
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (
            isinstance(value, float) and 0 < value < 1)
        if not ok:
            raise ConfigError(name, value, "must be a count of examples (1000) or a fraction in (0, 1) (0.1)")
    elif name in _INT_AT_LEAST:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(name, value, "must be an integer")
        if value < _INT_AT_LEAST[name]:
            why = " (best/ and last/ are always kept)" if name == "save_total_limit" else ""
            raise ConfigError(name, value, f"must be at least {_INT_AT_LEAST[name]}{why}")
    elif name in _FLOAT_RANGE:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(name, value, "must be a finite number")
        lo, hi, lo_in, hi_in = _FLOAT_RANGE[name]
        if value < lo or (value == lo and not lo_in) or (hi is not None and (value > hi or (value == hi and not hi_in))):
            raise ConfigError(name, value, _range_text(lo, hi, lo_in, hi_in))
