"""stackft: stack-and-finetune training of BERT-style encoders (arXiv 1907.05338).

Phase 1 trains a task head on a frozen encoder; phase 2 fine-tunes both at a small lr.
See README.md for the quickstart and docs/design.md for the package map.

The public API is importable from here; importing ``stackft`` itself loads nothing heavy (each
name is imported on first use)::

    from stackft import TrainConfig, Trainer, load_trained
"""

from __future__ import annotations

from stackft import _compat

__version__ = "0.2.0"

#: public name -> the module that defines it
_API = {
    "TrainConfig": "stackft.config",
    "RunDir": "stackft.run_dir",
    "RunFolderInUse": "stackft.run_dir",
    "get_task": "stackft.tasks",
    "load_task_data": "stackft.data.pipeline",
    "Encoder": "stackft.modeling.encoders",
    "load_encoder": "stackft.modeling.encoders",
    "StackModel": "stackft.modeling.model",
    "build_head": "stackft.modeling.heads",
    "FeatureCache": "stackft.cache.format",
    "Trainer": "stackft.training.trainer",
    "load_trained": "stackft.training.trainer",
    "NonFiniteLoss": "stackft.training.step",
    "TrainerCallback": "stackft.training.callbacks",
    "train_step": "stackft.training.step",
    "build_param_groups": "stackft.training.optim",
    "evaluate": "stackft.training.evaluation",
    "predict_texts": "stackft.training.predict",
    "export_model": "stackft.training.export",
    "load_exported": "stackft.training.export",
    "TensorBoardCallback": "stackft.training.tensorboard",
    "run_trials": "stackft.studies.runner",
    "run_phase1_then_select": "stackft.studies.phase1_select",
    "expected_max": "stackft.studies.expected",
}
__all__ = ["__version__", *_API]

_compat.install()


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stackft' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
