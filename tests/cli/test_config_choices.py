"""TrainConfig's choice tuples (literals, so stackft.config imports nothing) agree with the modules
that implement each setting."""

import dataclasses

import pytest
import torch

from stackft import config
from stackft.config import TrainConfig

CHOICE_TUPLES = ("STRATEGIES", "PAIR_MODES", "ON_ERROR", "STOP_MODES", "PET_METHODS", "OPTIMIZERS", "SCHEDULES",
                 "CLIP_MODES", "CACHE_DTYPES", "CACHE_PLACEMENTS", "PRECISIONS", "HANDOFFS", "HANDOFF_CHOICES",
                 "REPORT_TO", "HEAD_REVISIONS")


def test_owning_modules_define_the_same_values():
    from stackft.cache.format import DTYPES
    from stackft.cache.source import PLACEMENTS
    from stackft.data.encode import KINDS
    from stackft.data.errors import ON_ERROR
    from stackft.modeling.heads import HEAD_DEFAULTS
    from stackft.modeling.pet import METHODS
    from stackft.studies.handoff import CHOICES
    from stackft.training import strategies
    from stackft.training.optim import SCHEDULES
    from stackft.training.stopper import MODES

    assert strategies.STRATEGIES is config.STRATEGIES  # strategies.py takes its tuple from config
    assert config.STOP_MODES == MODES
    assert config.HEAD_REVISIONS == tuple(range(1, HEAD_DEFAULTS + 1))
    assert config.SCHEDULES == SCHEDULES
    assert config.CACHE_PLACEMENTS == PLACEMENTS
    assert config.CACHE_DTYPES == tuple(DTYPES)
    assert config.ON_ERROR == ON_ERROR
    assert config.PET_METHODS == METHODS
    assert config.HANDOFF_CHOICES == CHOICES
    assert tuple(f"pairs-{m}" for m in config.PAIR_MODES) == tuple(k for k in KINDS if k.startswith("pairs-"))


def test_optimizers_clip_modes_and_precisions_are_the_ones_accepted():
    from stackft.training.optim import clip_gradients, make_optimizer
    from stackft.training.trainer import resolve_precision

    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    for kind in config.OPTIMIZERS:
        make_optimizer([{"params": [w]}], kind=kind, lr=1e-3)
    with pytest.raises(ValueError):
        make_optimizer([{"params": [w]}], kind="sgd", lr=1e-3)
    for mode in config.CLIP_MODES:
        clip_gradients([w], 1.0, mode)
    with pytest.raises(ValueError):
        clip_gradients([w], 1.0, "none")
    for p in config.PRECISIONS:
        resolve_precision(p, torch.device("cpu"))
    with pytest.raises(ValueError):
        resolve_precision("fp16", torch.device("cpu"))


def test_every_field_is_documented_and_its_choices_are_a_config_tuple():
    tuples = [getattr(config, name) for name in CHOICE_TUPLES]
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert f.metadata.get("group") in config.GROUPS, f.name
        if "choices" in f.metadata:
            assert any(f.metadata["choices"] is t for t in tuples), f.name
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert default is None or default in f.metadata["choices"], f.name
    used = {id(f.metadata["choices"]) for f in dataclasses.fields(TrainConfig) if "choices" in f.metadata}
    assert used == {id(t) for t in tuples}  # every tuple belongs to a field
