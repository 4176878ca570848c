"""How it is trained: the two-phase loop and everything it is made of.

- :mod:`~stackft.training.trainer`: :class:`Trainer` (phases, evaluations, checkpoints, resume, DDP).
- :mod:`~stackft.training.callbacks`: :class:`TrainerCallback`, the loop's extension points.
- :mod:`~stackft.training.step`: :func:`train_step`, one optimizer step (also used by benches).
- :mod:`~stackft.training.strategies`: strategies as lists of :class:`Phase`.
- :mod:`~stackft.training.stopper`: phase stop rules (gap, val_plateau, fixed).
- :mod:`~stackft.training.optim`: parameter groups, BERT-Adam, schedules, clipping.
- :mod:`~stackft.training.evaluation`, :mod:`~stackft.training.scoring`, :mod:`~stackft.training.metrics`:
  prediction, decoding and task metrics.
- :mod:`~stackft.training.loaders`, :mod:`~stackft.training.checkpoint`: loaders with private RNGs;
  atomic checkpoints and RNG state.
"""
