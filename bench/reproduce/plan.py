"""The plan: the grid of tasks, cells and seeds, and every cell's TrainConfig.

A *cell* is one (strategy, head) configuration of a task, trained once per seed pair; an ensemble
cell trains nothing and soft-votes other cells' runs of the same seeds. ``BASE``, ``CPU_HEADS``
and ``SUBSAMPLE`` hold what differs between ``--scale`` cpu, full and smoke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SCALES = ("cpu", "mid", "full", "smoke")


@dataclass(frozen=True)
class Cell:
    name: str  # folder name and label
    strategy: str | None  # None: an ensemble of other cells
    head: str | None = None
    head_options: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # TrainConfig fields for this cell only
    members: tuple = ()  # ensemble: names of the member cells
    pair_mode: str | None = None
    handoff: dict | None = None  # stackft.studies.handoff.search_handoff options: the handoff is searched


@dataclass(frozen=True)
class TaskPlan:
    key: str  # ner | yahoo | qqp
    task: str  # stackft task name
    title: str
    train_file: str  # relative to the data root
    dev_file: str | None
    dev_size: int | None  # for a split cut from the training file
    max_train: int | None
    max_dev: int | None
    cells: tuple
    baseline: str = "finetune-only"
    # the paper's claim, for the verdict: (cell, {metric: delta in points})
    claim: tuple = ()


BASE = {  # TrainConfig fields per scale, for every cell
    # cpu and mid were run before stack-and-finetune's head got 10x the encoder's lr in phase 2 by
    # default (phase2_head_lr_scale, chosen from the mid NER cells *-headlr): they keep the head at the
    # encoder's lr, and the -headlr cells measure the new default
    "cpu": dict(max_length=64, batch_size=16, eval_batch_size=64, phase1_epochs=3, stack_epochs=6,
                phase2_epochs=2, phase2_lr=5e-5, evals_per_epoch=2, phase2_head_lr_scale=1.0),
    # hours on 2 CPU cores, over resumable invocations: the whole QQP/Yahoo pools, 2,000 NER sentences
    "mid": dict(max_length=64, batch_size=32, eval_batch_size=128, phase1_epochs=3, stack_epochs=6,
                phase2_epochs=2, phase2_lr=5e-5, evals_per_epoch=4, phase2_head_lr_scale=1.0),
    "full": dict(),  # the library's defaults (max_length 128, batch 32, 3 + 3 epochs, phase-2 lr 2e-5)
    # plumbing check only (a minute or two): tiny data, one epoch per phase
    "smoke": dict(max_length=32, batch_size=8, eval_batch_size=64, phase1_epochs=1, stack_epochs=1,
                  phase2_epochs=1, phase2_lr=5e-5, evals_per_epoch=1),
}

# smaller stacked heads at cpu scale (one CPU thread); full scale uses the spec's sizes
CPU_HEADS = {
    "bilstm": dict(lstm_hidden=128),
    "densenet": dict(channels=128),
    "highway-lstm": dict(lstm_hidden=128),
    "sim-transformer": dict(d_model=128, dim_feedforward=512),
}

SUBSAMPLE = {  # (max_train, max_dev) per task and scale; None = all
    "cpu": {"ner": (400, 300), "yahoo": (256, 200), "qqp": (400, 300)},
    "mid": {"ner": (2000, 1000), "yahoo": (None, None), "qqp": (None, None)},
    "full": {"ner": (None, None), "yahoo": (None, None), "qqp": (None, None)},
    "smoke": {"ner": (24, 16), "yahoo": (24, 16), "qqp": (24, 16)},
}


# --scale mid: stack-and-finetune with the old gap rule, the noise-aware rule (gap_se) and a searched
# handoff, beside finetune-only; for pairs also joint vs siamese encoding (cells in priority order)
NOISE_AWARE = dict(stop_mode="gap_se")
# the paper's rule, named outright: gap_se became the library default after the first -gap cells ran,
# so a cell without it would run gap_se (snf-highway-lstm-gap-headlr did, before this was added)
OLD_RULE = dict(stop_mode="gap")
SEARCH = dict(candidates=3, probe_fraction=0.1)
# the noise-aware choice: the stop rule's candidate continues unless a probe beats it by more than one
# standard error of the difference (SEARCH's "best" followed probe differences under one SE on Yahoo)
SEARCH_SE = dict(SEARCH, choice="se", z=1.0)
# finetune-only given twice the epochs: the equal-compute baseline for a stack-and-finetune run that
# costs more wall time than finetune-only (its phase 1, a heavier head in phase 2)
TWICE = dict(phase2_epochs=2 * BASE["mid"]["phase2_epochs"])
# phase-2 recipe variants: the head at 10x the encoder's lr, or ELECTRA-style layer-wise lr decay;
# finetune-only-headlr gives finetune-only's fresh head the same 10x: the control that tells what the
# head lr alone does, apart from phase 1
HEAD_LR = dict(phase2_head_lr=10 * BASE["mid"]["phase2_lr"])
LAYER_DECAY = dict(layer_decay=0.8)
WIDTH_SWEEP = dict(stack_epochs=3)  # the DenseNet and highway-LSTM width sweeps
SIM_SWEEP = dict(stack_epochs=2)


def mid_cells(key: str, heads) -> tuple:
    ehft = dict(pet="lora", phase1_epochs=1)
    if key == "qqp":
        return (
            Cell("finetune-only", "finetune-only", "fc", pair_mode="joint"),
            Cell("finetune-only-2x", "finetune-only", "fc", overrides=TWICE, pair_mode="joint"),
            Cell("finetune-only-headlr", "finetune-only", "fc", overrides=HEAD_LR, pair_mode="joint"),
            Cell("snf-bimpm-joint-gapse", "stack-and-finetune", "bimpm", overrides=NOISE_AWARE, pair_mode="joint"),
            Cell("snf-bimpm-joint-gapse-headlr", "stack-and-finetune", "bimpm", overrides={**NOISE_AWARE, **HEAD_LR},
                 pair_mode="joint"),
            Cell("search-bimpm-joint", "stack-and-finetune", "bimpm", overrides=NOISE_AWARE, pair_mode="joint",
                 handoff=SEARCH),
            Cell("snf-bimpm-siamese-gap", "stack-and-finetune", "bimpm", overrides=OLD_RULE, pair_mode="siamese"),
            Cell("snf-bimpm-siamese-gapse", "stack-and-finetune", "bimpm", overrides=NOISE_AWARE, pair_mode="siamese"),
            # siamese against joint (snf-bimpm-joint-gapse-headlr) at the measured phase-2 recipe
            Cell("snf-bimpm-siamese-gapse-headlr", "stack-and-finetune", "bimpm", overrides={**NOISE_AWARE, **HEAD_LR},
                 pair_mode="siamese"),
            Cell("snf-bimpm-noctx-joint-gapse", "stack-and-finetune", "bimpm-noctx", overrides=NOISE_AWARE,
                 pair_mode="joint"),
            Cell("snf-sim-transformer-joint-gapse", "stack-and-finetune", "sim-transformer", heads("sim-transformer"),
                 overrides=NOISE_AWARE, pair_mode="joint"),
            # phase 2 falls with this head at the encoder lr of 5e-5; a 70-step probe from the handoff fell
            # least with the encoder at 1e-5 and the head at 5e-5 (docs/methods.md, section 6)
            Cell("snf-sim-transformer-joint-gapse-enc1e5", "stack-and-finetune", "sim-transformer",
                 heads("sim-transformer"), overrides={**NOISE_AWARE, "phase2_lr": 1e-5, "phase2_head_lr": 5e-5},
                 pair_mode="joint"),
            # Sim-Transformer alone on cached joint features (stack-only, 2 epochs): the paper's head without
            # the matching-feature norm (head revision 2: it collapsed) against the default with it, at the
            # reproduction's width (d_model 128) and the default width (256), for its accuracy against its cost
            Cell("stack-sim-transformer-nonorm", "stack-only", "sim-transformer",
                 {**heads("sim-transformer"), "match_norm": "none"}, overrides=SIM_SWEEP, pair_mode="joint"),
            Cell("stack-sim-transformer-d128", "stack-only", "sim-transformer", heads("sim-transformer"),
                 overrides=SIM_SWEEP, pair_mode="joint"),
            Cell("stack-sim-transformer-d256", "stack-only", "sim-transformer", {"d_model": 256, "dim_feedforward": 1024},
                 overrides=SIM_SWEEP, pair_mode="joint"),
            # finetune-only's own head (2 FC on [CLS]) stacked first: phase 1 runs from the cache, so the
            # method's cost over finetune-only is little more than the cache build
            Cell("snf-fc-joint-gapse-headlr", "stack-and-finetune", "fc", overrides={**NOISE_AWARE, **HEAD_LR},
                 pair_mode="joint"),
            Cell("lp-ft", "lp-ft", "linear", pair_mode="joint"),
            Cell("eh-ft-lora", "eh-ft", "fc", overrides=ehft, pair_mode="joint"),
        )
    if key == "yahoo":
        return (
            Cell("finetune-only", "finetune-only", "fc"),
            Cell("finetune-only-2x", "finetune-only", "fc", overrides=TWICE),
            Cell("finetune-only-headlr", "finetune-only", "fc", overrides=HEAD_LR),
            Cell("snf-highway-lstm-gapse-headlr", "stack-and-finetune", "highway-lstm", heads("highway-lstm"),
                 overrides={**NOISE_AWARE, **HEAD_LR}),
            # the library's default width (256), which the stack-only width sweep below put ahead of 128 on
            # every seed; affordable in phase 2 since the C++ layer's per-step GEMMs run in the packed kernel
            Cell("snf-highway-lstm-h256-gapse-headlr", "stack-and-finetune", "highway-lstm",
                 {**heads("highway-lstm"), "lstm_hidden": 256}, overrides={**NOISE_AWARE, **HEAD_LR}),
            # at the phase-2 recipe (head at 10x the encoder's lr) that the cells above measured: the paper's
            # gap rule against the noise-aware one, a searched handoff, the other stacked head
            Cell("snf-highway-lstm-gap-headlr", "stack-and-finetune", "highway-lstm", heads("highway-lstm"),
                 overrides={**OLD_RULE, **HEAD_LR}),
            Cell("search-highway-lstm-headlr", "stack-and-finetune", "highway-lstm", heads("highway-lstm"),
                 overrides={**NOISE_AWARE, **HEAD_LR}, handoff=SEARCH),
            Cell("search-se-highway-lstm-headlr", "stack-and-finetune", "highway-lstm", heads("highway-lstm"),
                 overrides={**NOISE_AWARE, **HEAD_LR}, handoff=SEARCH_SE),
            Cell("snf-densenet-gapse-headlr", "stack-and-finetune", "densenet", heads("densenet"),
                 overrides={**NOISE_AWARE, **HEAD_LR}),
            Cell("snf-fc-gapse-headlr", "stack-and-finetune", "fc", overrides={**NOISE_AWARE, **HEAD_LR}),
            # DenseNet's width against its cost (issue #12): the head alone on cached features (stack-only,
            # 3 epochs), 64 / 128 (the default since it was chosen from these cells) / 384 (= the encoder width) channels
            *(Cell(f"stack-densenet-c{c}", "stack-only", "densenet", {"channels": c}, overrides=WIDTH_SWEEP)
              for c in (64, 128, 384)),
            # the highway LSTM's width against its cost (issue #12), the same way: stack-only on cached
            # features, 3 epochs, 64 / 128 (the reproduction's width) / 256 (the default, kept)
            *(Cell(f"stack-highway-lstm-h{h}", "stack-only", "highway-lstm", {"lstm_hidden": h},
                   overrides=WIDTH_SWEEP) for h in (64, 128, 256)),
            # the paper's Yahoo ensemble (soft vote), its stacked members at the measured phase-2 recipe
            Cell("ensemble", None, members=("finetune-only", "snf-densenet-gapse-headlr",
                                            "snf-highway-lstm-gapse-headlr")),
            Cell("lp-ft", "lp-ft", "linear"),
            Cell("eh-ft-lora", "eh-ft", "fc", overrides=ehft),
        )
    return (
        Cell("finetune-only", "finetune-only", "fc"),
        Cell("finetune-only-2x", "finetune-only", "fc", overrides=TWICE),
        Cell("finetune-only-headlr", "finetune-only", "fc", overrides=HEAD_LR),
        Cell("snf-bilstm-gapse", "stack-and-finetune", "bilstm", heads("bilstm"), overrides=NOISE_AWARE),
        Cell("search-bilstm", "stack-and-finetune", "bilstm", heads("bilstm"), overrides=NOISE_AWARE, handoff=SEARCH),
        Cell("snf-bilstm-gap", "stack-and-finetune", "bilstm", heads("bilstm"), overrides=OLD_RULE),
        # the phase-2 recipe sweep (cheapest task first): the head at 10x the encoder's lr; layer-wise decay
        Cell("snf-bilstm-gapse-headlr", "stack-and-finetune", "bilstm", heads("bilstm"),
             overrides={**NOISE_AWARE, **HEAD_LR}),
        Cell("snf-bilstm-gapse-ld", "stack-and-finetune", "bilstm", heads("bilstm"),
             overrides={**NOISE_AWARE, **LAYER_DECAY}),
        Cell("snf-fc-gapse-headlr", "stack-and-finetune", "fc", overrides={**NOISE_AWARE, **HEAD_LR}),
        Cell("lp-ft", "lp-ft", "linear"),
        Cell("eh-ft-lora", "eh-ft", "fc", overrides=ehft),
    )


def task_plans(scale: str) -> dict[str, TaskPlan]:
    sub = SUBSAMPLE[scale]

    def heads(name: str) -> dict:
        return dict(CPU_HEADS.get(name, {})) if scale != "full" else {}

    # EH-FT's stage 1 is 1/10 of the budget (Yang et al. 2022) and runs the encoder live (LoRA): one epoch
    ehft = dict(pet="lora", phase1_epochs=1)
    plans = {
        "ner": TaskPlan(
            "ner", "ner", "NER (CoNLL-2003)", "conll2003/train.txt", "conll2003/dev.txt", None, *sub["ner"],
            cells=(
                Cell("finetune-only", "finetune-only", "fc"),
                Cell("stack-only", "stack-only", "bilstm", heads("bilstm")),
                Cell("stack-and-finetune", "stack-and-finetune", "bilstm", heads("bilstm")),
            ),
            claim=(("stack-and-finetune", {"f1": 6.8, "accuracy": 0.99}),),
        ),
        "yahoo": TaskPlan(
            "yahoo", "classification", "Yahoo! Answers, 2 classes", "yahoo/train.csv", None, 400, *sub["yahoo"],
            cells=(
                Cell("finetune-only", "finetune-only", "fc"),
                Cell("snf-densenet", "stack-and-finetune", "densenet", heads("densenet")),
                Cell("snf-highway-lstm", "stack-and-finetune", "highway-lstm", heads("highway-lstm")),
                Cell("ensemble", None, members=("finetune-only", "snf-densenet", "snf-highway-lstm")),
                Cell("lp-ft", "lp-ft", "linear"),
                Cell("eh-ft-lora", "eh-ft", "fc", overrides=ehft),
            ),
            claim=(("ensemble", {"accuracy": 0.72, "f1": 0.5}),),
        ),
        "qqp": TaskPlan(
            "qqp", "pairs", "QQP (BiMPM dev file as a 9k/1k pool)", "qqp/dev.tsv", None, 1000, *sub["qqp"],
            cells=(
                Cell("finetune-only", "finetune-only", "fc", pair_mode="joint"),
                Cell("snf-bimpm", "stack-and-finetune", "bimpm", pair_mode="siamese"),
                Cell("snf-bimpm-noctx", "stack-and-finetune", "bimpm-noctx", pair_mode="siamese"),
                Cell("snf-sim-transformer", "stack-and-finetune", "sim-transformer", heads("sim-transformer"),
                     pair_mode="siamese"),
            ),
            claim=(("snf-sim-transformer", {"accuracy": 4.7}),),
        ),
    }
    if scale == "mid":
        import dataclasses

        plans = {k: dataclasses.replace(p, cells=mid_cells(k, heads), claim=()) for k, p in plans.items()}
    return plans


def cell_config(plan: TaskPlan, cell: Cell, scale: str, data_root: Path, out: Path, encoder: str | None = None):
    """The TrainConfig of ``cell`` (its run folders go under ``out/TASK/CELL``)."""
    from stackft.config import TrainConfig

    fields = dict(BASE[scale])
    fields.update(
        task=plan.task, strategy=cell.strategy, head=cell.head, head_options=dict(cell.head_options), encoder=encoder,
        train_path=str(data_root / plan.train_file),
        dev_path=str(data_root / plan.dev_file) if plan.dev_file else None,
        dev_size=plan.dev_size, split_seed=0, max_train=plan.max_train, max_dev=plan.max_dev,
        pair_mode=cell.pair_mode, cache=str(out / "cache"), progress=False,
        output_dir=str(out / plan.key / cell.name),
    )
    fields.update(cell.overrides)
    return TrainConfig(**fields)




def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    if len(set(seeds)) != len(seeds) or not seeds:
        raise SystemExit(f"--seeds {text!r}: give distinct seeds, e.g. 0,1,2 or 0-4")
    return seeds


def trial_grid(seeds: list[int], grid: bool) -> list[tuple[int, int]]:
    return [(i, d) for i in seeds for d in seeds] if grid else [(s, s) for s in seeds]


def required_files(plans: dict[str, TaskPlan], keys) -> list[str]:
    """The data files (relative to the data root) the tasks ``keys`` read."""
    return [f for k in keys for f in (plans[k].train_file, plans[k].dev_file) if f]


def plan_summary(plans: dict[str, TaskPlan], keys, scale: str, pairs, data_root: Path, out: Path,
                 encoder: str | None = None) -> dict:
    """What a run would train, as JSON-ready data (``--dry-run``): per task and cell, its settings
    and which of its run folders are done (``summary.json`` written) or still to train."""
    from stackft.run_dir import RunDir
    from stackft.studies.study import trial_id

    tasks = {}
    for key in keys:
        plan = plans[key]
        cells = {}
        for cell in plan.cells:
            if cell.strategy is None:
                cells[cell.name] = {"strategy": "ensemble (soft vote)", "members": list(cell.members)}
                continue
            cfg = cell_config(plan, cell, scale, data_root, out, encoder)
            runs = {trial_id(i, d): ("done" if RunDir(Path(cfg.output_dir) / trial_id(i, d)).is_finished()
                                     else "to train") for i, d in pairs}
            settings = {k: v for k, v in cfg.to_dict().items() if k not in ("progress",)}
            cells[cell.name] = {"strategy": cell.strategy, "head": cell.head, "config": settings, "runs": runs}
        tasks[key] = {"title": plan.title, "task": plan.task, "cells": cells}
    missing = [f for f in required_files(plans, keys) if not (data_root / f).is_file()]
    return {"scale": scale, "data_root": str(data_root), "missing_data": missing, "out": str(out),
            "seed_pairs": [list(p) for p in pairs], "base_config": BASE[scale], "tasks": tasks}
