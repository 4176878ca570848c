"""``ignored_settings``: the non-default TrainConfig fields a strategy does not read, with the reason;
and the phases ``plan_phases`` builds (keyword-built, unchanged)."""

import dataclasses

import pytest

from stackft.config import STRATEGIES, TrainConfig
from stackft.training.strategies import Phase, ignored_settings, plan_phases


def ignored(**kw) -> dict[str, str]:
    """field -> message"""
    return {m.split("=", 1)[0]: m for m in ignored_settings(TrainConfig(**kw))}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_defaults_ignore_nothing(strategy):
    assert ignored_settings(TrainConfig(strategy=strategy)) == []


def test_the_message():
    assert ignored_settings(TrainConfig(strategy="lp-ft", stop_mode="val_plateau")) == [
        "stop_mode='val_plateau' is ignored by strategy 'lp-ft' (its phase 1 always uses val_plateau)"]


@pytest.mark.parametrize("strategy", ["lp-ft", "eh-ft", "stack-only", "finetune-only"])
def test_stop_mode_and_gap_tol_only_count_for_stack_and_finetune(strategy):
    got = ignored(strategy=strategy, stop_mode="fixed", gap_tol=0.1)
    assert set(got) == {"stop_mode", "gap_tol"}
    assert ignored(strategy="stack-and-finetune", stop_mode="val_plateau", patience=5) == {}


def test_patience_counts_wherever_a_phase_can_stop_early():
    # lp-ft, eh-ft and stack-only stop phase 1 on a dev plateau, which reads patience
    for strategy in ("lp-ft", "eh-ft", "stack-only", "stack-and-finetune"):
        assert "patience" not in ignored(strategy=strategy, patience=7), strategy
    assert "patience" in ignored(strategy="finetune-only", patience=7)
    assert "patience" in ignored(strategy="stack-and-finetune", stop_mode="fixed", patience=7)


def test_gap_tol_needs_the_gap_rule():
    assert "gap_tol" not in ignored(strategy="stack-and-finetune", stop_mode="gap", gap_tol=0.05)
    assert "gap_tol" in ignored(strategy="stack-and-finetune", gap_tol=0.05)  # the default, gap_se, has no fixed tolerance
    for mode in ("gap_se", "val_plateau", "fixed"):
        got = ignored(strategy="stack-and-finetune", stop_mode=mode, gap_tol=0.05)
        assert got["gap_tol"].endswith(f"(stop_mode is {mode!r}, not 'gap')"), got


def test_phase_settings():
    phase1 = {"phase1_lr": 1e-2, "phase1_epochs": 5}
    phase2 = {"phase2_lr": 1e-5, "phase2_head_lr": 1e-4, "phase2_epochs": 1}
    assert set(ignored(strategy="finetune-only", **phase1, **phase2)) == set(phase1)
    assert set(ignored(strategy="stack-only", **phase1, **phase2)) == {"phase1_epochs", *phase2}  # phase1_lr counts
    for strategy in ("stack-and-finetune", "lp-ft", "eh-ft"):
        assert ignored(strategy=strategy, **phase1, **phase2) == {}
    for strategy in STRATEGIES:
        assert ("stack_epochs" in ignored(strategy=strategy, stack_epochs=2)) == (strategy != "stack-only")


def test_pet_settings_only_for_eh_ft():
    for strategy in STRATEGIES:
        got = ignored(strategy=strategy, pet="bitfit", pet_lr=1e-3)
        assert set(got) == (set() if strategy == "eh-ft" else {"pet", "pet_lr"}), strategy
    assert "only eh-ft trains a PET method" in ignored(strategy="lp-ft", pet="bitfit")["pet"]


def test_encoder_and_cache_settings():
    assert "layer_decay" in ignored(strategy="stack-only", layer_decay=0.9)
    assert "layer_decay" not in ignored(strategy="lp-ft", layer_decay=0.9)
    cache = {"cache_dtype": "int8", "cache_placement": "mmap", "cache_prefetch": 1, "cache": "/tmp/c"}
    for strategy in STRATEGIES:  # only a frozen encoder without PET modules reads features from a cache
        got = set(ignored(strategy=strategy, **cache))
        assert got == (set(cache) if strategy in ("finetune-only", "eh-ft") else set()), strategy
    assert ignored(strategy="finetune-only", cache="off") == {}  # asks for what happens anyway


def test_other_settings_always_count():
    every = {"task", "head", "head_options", "encoder", "layers", "dropout", "train_path", "max_length",
             "batch_size", "optimizer", "weight_decay", "warmup", "schedule", "clip", "init_seed", "data_seed",
             "device", "output_dir", "progress", "evals_per_epoch"}
    cfg = TrainConfig(head="fc", layers=(-2, -1), dropout=0.2, batch_size=4, warmup=0.0, progress=False,
                      init_seed=3, evals_per_epoch=1)
    for strategy in STRATEGIES:
        assert not set(ignored(**{**dataclasses.asdict(cfg), "strategy": strategy})) & every


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy"):
        ignored_settings(TrainConfig(strategy="stack-then-tune"))


def test_plan_phases():
    cfg = TrainConfig(phase1_lr=1e-2, phase1_epochs=2, stack_epochs=4, phase2_lr=1e-5, phase2_head_lr=1e-4,
                      phase2_epochs=1, pet="bitfit", pet_lr=3e-4, stop_mode="gap_se")
    finetune = Phase(name="phase2", train_encoder=True, head_lr=1e-4, encoder_lr=1e-5, epochs=1, stop_mode="fixed")
    assert plan_phases("finetune-only", cfg) == [dataclasses.replace(finetune, name="finetune")]
    assert plan_phases("stack-only", cfg) == [Phase(name="stack", train_encoder=False, head_lr=1e-2, encoder_lr=0.0,
                                                    epochs=4, stop_mode="val_plateau")]
    phase1 = Phase(name="phase1", train_encoder=False, head_lr=1e-2, encoder_lr=0.0, epochs=2, stop_mode="gap_se",
                   restore_chosen=True)
    assert plan_phases("stack-and-finetune", cfg) == [phase1, finetune]
    assert plan_phases("lp-ft", cfg) == [dataclasses.replace(phase1, stop_mode="val_plateau"), finetune]
    assert plan_phases("eh-ft", cfg) == [
        dataclasses.replace(phase1, stop_mode="val_plateau", encoder_lr=3e-4, pet="bitfit"),
        dataclasses.replace(finetune, reload_encoder=True)]
    assert plan_phases("finetune-only", dataclasses.replace(cfg, phase2_head_lr=None))[0].head_lr == 1e-5


def test_stacked_head_moves_on_at_a_multiple_of_the_encoder_lr():
    """Without --phase2-head-lr, stack-and-finetune's phase 2 gives the head 10x the encoder's lr (measured
    on dev, docs/methods.md 4); every other strategy, and an explicit head lr, as before."""
    cfg = TrainConfig(phase2_lr=2e-5)
    head_lr = {s: plan_phases(s, cfg)[-1].head_lr for s in ("finetune-only", "stack-and-finetune", "lp-ft", "eh-ft")}
    assert head_lr == pytest.approx({"finetune-only": 2e-5, "stack-and-finetune": 2e-4, "lp-ft": 2e-5,
                                     "eh-ft": 2e-5})
    assert plan_phases("stack-and-finetune", dataclasses.replace(cfg, phase2_head_lr_scale=3.0))[1].head_lr \
        == pytest.approx(6e-5)
    assert plan_phases("stack-and-finetune", dataclasses.replace(cfg, phase2_head_lr=7e-5))[1].head_lr == 7e-5
    assert plan_phases("stack-and-finetune", cfg)[1].encoder_lr == 2e-5
    assert set(ignored(strategy="finetune-only", phase2_head_lr_scale=3.0)) == {"phase2_head_lr_scale"}
    assert "phase2_head_lr_scale" not in ignored(strategy="stack-and-finetune", phase2_head_lr_scale=3.0)


def test_a_config_written_before_the_head_lr_scale_keeps_what_it_trained():
    old = {k: v for k, v in TrainConfig(strategy="stack-and-finetune").to_dict().items()
           if k != "phase2_head_lr_scale"}  # a 0.2 config.json
    assert TrainConfig.from_dict(old).phase2_head_lr_scale == 1.0  # the head trained at the encoder's lr then
    assert TrainConfig(strategy="stack-and-finetune", phase2_head_lr_scale=1.0).changed_for_resume(old) == []
    assert TrainConfig(strategy="stack-and-finetune").changed_for_resume(old) == ["phase2_head_lr_scale"]
