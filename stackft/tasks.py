"""The task registry: which head level, selection metric and default heads go with each task.

``ner`` (CoNLL column files, entity F1), ``classification`` (text,label CSV, accuracy) and
``pairs`` (QQP-layout TSV, accuracy). Any ``datasets`` dataset or local json/jsonl/parquet file
works through :func:`stackft.data.hf.load_hf_examples`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    level: str  # head level: "token" or "sequence"
    metric: str  # selection metric key in the metrics dict
    stack_head: str  # the paper's stacked head for this task
    finetune_head: str = "fc"  # the finetune-only baseline head


TASKS = {
    "ner": TaskSpec("ner", "token", "f1", "bilstm"),
    "classification": TaskSpec("classification", "sequence", "accuracy", "densenet"),
    "pairs": TaskSpec("pairs", "sequence", "accuracy", "bimpm"),
}
ALIASES = {"conll": "ner", "tagging": "ner", "yahoo": "classification", "cls": "classification",
           "text": "classification", "qqp": "pairs", "pair": "pairs", "similarity": "pairs"}


def get_task(name: str) -> TaskSpec:
    key = ALIASES.get(name, name)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)} (aliases {sorted(ALIASES)})")
    return TASKS[key]


# Deprecated re-exports (stackft 0.1 kept reading, encoding and scoring here); removed in 0.3.
_MOVED = {"read_examples": "stackft.data.pipeline", "TaskData": "stackft.data.pipeline",
          "encode_examples": "stackft.data.pipeline", "load_task_data": "stackft.data.pipeline",
          "decode_batch": "stackft.training.scoring", "score": "stackft.training.scoring"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"stackft.tasks.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'stackft.tasks' has no attribute {name!r}")
