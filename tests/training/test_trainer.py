"""stackft.training.trainer end to end on a tiny random BERT (CPU, a few seconds per run).

The data is a learnable synthetic classification task written to tmp: each text is filler words plus one
keyword ("football" -> sports, "pizza" -> food), so even a random 2-layer encoder with a stacked head
learns it. Pinned behaviour (methods.md §1.2, §1.5, §5 and docs/design.md):

- phase 1 really freezes the encoder (bit-identical weights, eval mode, no autograd), phase 2 updates it;
- the loss falls and the dev metric rises far above chance;
- the run folder layout, and ``load_trained(run/best)`` reproducing the dev metric;
- resume (``max_steps_this_run`` then ``fit(resume=True)``) is bit-identical to an uninterrupted run;
- a non-finite loss raises NonFiniteLoss and leaves the previous ``last/`` usable;
- strategies pick their heads and phases; ``init_seed`` and ``data_seed`` are independent.
"""

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_keyword_csv
from safetensors.torch import load_file

import stackft.training.step as step_mod
import stackft.training.trainer as trainer_mod
from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.modeling.heads import DenseNetCNNClassifier, FCSequenceHead, LinearSequenceHead
from stackft.modeling.model import task_loss
from stackft.tasks import get_task
from stackft.training.evaluation import evaluate
from stackft.training.loaders import loader, to_device
from stackft.training.trainer import NonFiniteLoss, Trainer, build_model, load_trained

FILLER = "the a of and to in is was for on that with as by at from it this be are or".split()
KEYWORDS = {"sports": ["football"], "food": ["pizza"]}


def write_sports_food_csv(path: Path, n: int, seed: int, words=(4, 8)) -> str:
    return write_keyword_csv(path, n, seed, keywords=KEYWORDS, filler=FILLER, words=words)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kw-data")
    return write_sports_food_csv(d / "train.csv", 64, seed=0), write_sports_food_csv(d / "dev.csv", 32, seed=1)


@pytest.fixture(scope="module")
def data(files, tokenizer):
    return load_task_data("classification", str(files[0]), str(files[1]), tokenizer=tokenizer, max_length=32)


@pytest.fixture(scope="module")
def new_encoder(make_tiny_encoder):
    """A fresh tiny random BERT, identical every call (the trainer updates its encoder in place)."""
    return make_tiny_encoder


# 64 train / batch 8 = 8 steps an epoch, evaluated at steps 4 and 8 of each epoch
BASE = dict(task="classification", cache="off", progress=False, device="cpu", batch_size=8, eval_batch_size=32,
            evals_per_epoch=2, phase1_lr=1e-2, phase2_lr=1e-3)
# the gap rule stays active (gaps here are at most ~0.09, well inside 0.2) and phase 1 runs all its 24 steps
# the tiny model's phase2_lr (1e-3) is already high: its head keeps that lr in phase 2 (10x would be 1e-2)
GAP = dict(BASE, strategy="stack-and-finetune", phase1_epochs=3, phase2_epochs=2, stop_mode="gap", gap_tol=0.2,
           phase2_head_lr_scale=1.0)
# val_plateau with patience 1: phase 1 stops at its second evaluation and ends on the first (restore_chosen)
PLATEAU = dict(BASE, strategy="stack-and-finetune", phase1_epochs=3, phase2_epochs=1, stop_mode="val_plateau",
               patience=1)


def make_cfg(out, **kw) -> TrainConfig:
    return TrainConfig(output_dir=str(out), **kw)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_time(recs):
    return [{k: v for k, v in r.items() if k != "time"} for r in recs]


def encoder_tensors(state: dict) -> dict:
    """Encoder entries of a StackModel state dict, keyed relative to the HF model."""
    return {k[len("encoder.model."):]: v for k, v in state.items() if k.startswith("encoder.model.")}


def assert_tensors_equal(a: dict, b: dict, what: str):
    assert set(a) == set(b), what
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{what}: {len(diff)} tensors differ, e.g. {diff[:3]}"


def advance_global_rngs(n: int) -> None:
    """Move python's, numpy's and torch's global RNGs to other states (as a new process would have) by drawing
    from them, without reseeding them."""
    random.random(), np.random.rand(n), torch.rand(n)


def mean_train_loss(model, data) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader(data.train, 32, model.encoder.pad_id, shuffle=False):
            batch = to_device(batch, "cpu")
            loss = task_loss(model(batch), batch["labels"])
            total += loss.item() * len(batch["index"])
            n += len(batch["index"])
    return total / n


# -- the main two-phase run -----------------------------------------------------------------

@pytest.fixture(scope="module")
def two_phase(tmp_path_factory, data, new_encoder):
    """One stack-and-finetune run, watched by a hook on the encoder."""
    out = tmp_path_factory.mktemp("two-phase") / "run"
    cfg = make_cfg(out, **GAP)
    initial = {k: v.clone() for k, v in build_model(cfg, new_encoder(), len(data.vocab)).state_dict().items()}
    tr = Trainer(cfg, encoder=new_encoder(), data=data)
    calls = []

    def watch(module, args):
        calls.append({"phase": tr.pos.phase, "head_training": tr.model.head.training, "encoder_training": module.training,
                      "requires_grad": any(p.requires_grad for p in module.parameters()),
                      "grad_enabled": torch.is_grad_enabled()})

    handle = tr.model.encoder.register_forward_pre_hook(watch)
    summary = tr.fit()
    handle.remove()
    return dict(out=out, cfg=cfg, trainer=tr, summary=summary, initial=initial, calls=calls,
                final={k: v.clone() for k, v in tr.model.state_dict().items()})


def checkpoint_encoder(folder) -> dict:
    """The encoder tensors of a checkpoint as it loads (a frozen phase's file leaves them out: the reference)."""
    return encoder_tensors(load_trained(folder)[0].state_dict())


def test_phase1_freezes_the_encoder_bit_for_bit(two_phase):
    p1 = load_file(str(two_phase["out"] / "phase1_end" / "model.safetensors"))
    assert not encoder_tensors(p1)  # unchanged: left out of the file, taken from the pretrained reference
    assert_tensors_equal(checkpoint_encoder(two_phase["out"] / "phase1_end"), encoder_tensors(two_phase["initial"]),
                         "encoder after phase 1")
    # ... while the head did train
    head_keys = [k for k in p1 if k.startswith("head.")]
    assert head_keys and any(not torch.equal(p1[k], two_phase["initial"][k]) for k in head_keys)


def test_phase1_encoder_runs_in_eval_mode_without_autograd(two_phase):
    train_calls = [c for c in two_phase["calls"] if c["head_training"]]  # training steps (evaluation has head.eval())
    p1 = [c for c in train_calls if c["phase"] == 0]
    p2 = [c for c in train_calls if c["phase"] == 1]
    assert len(p1) == 24 and len(p2) == 16
    for c in p1:
        assert not c["encoder_training"], "frozen encoder in train mode (dropout on) during phase 1"
        assert not c["requires_grad"] and not c["grad_enabled"]
    for c in p2:
        assert c["encoder_training"] and c["requires_grad"] and c["grad_enabled"]
    evals = [c for c in two_phase["calls"] if not c["head_training"]]
    assert evals and not any(c["encoder_training"] for c in evals)


def test_phase2_updates_the_encoder(two_phase):
    last = load_file(str(two_phase["out"] / "last" / "model.safetensors"))
    enc_last, enc_init = encoder_tensors(last), encoder_tensors(two_phase["initial"])
    changed = [k for k in enc_last if not torch.equal(enc_last[k], enc_init[k])]
    # every transformer layer moved, and so did the embeddings
    assert any(k.startswith("embeddings.") for k in changed)
    for layer in range(2):
        assert any(k.startswith(f"encoder.layer.{layer}.") for k in changed), layer
    assert two_phase["trainer"].model.encoder.model.encoder.layer[0].attention.self.query.weight.requires_grad


def test_training_learns_the_task(two_phase, data, new_encoder):
    recs = records(two_phase["out"])
    dev = [r["dev"]["accuracy"] for r in recs]
    assert two_phase["summary"]["best"]["score"] == max(dev)
    assert max(dev) >= 0.85, dev  # chance is 0.5 (balanced classes)
    assert max(dev) > dev[0]
    assert recs[-1]["loss"] < recs[0]["loss"]
    # the whole training set, eval mode: the trained model's loss is far below the initial model's
    initial = build_model(two_phase["cfg"], new_encoder(), len(data.vocab))
    trained = build_model(two_phase["cfg"], new_encoder(), len(data.vocab))
    trained.load_state_dict(two_phase["final"])
    before, after = mean_train_loss(initial, data), mean_train_loss(trained, data)
    assert after < 0.5 * before, (before, after)


def test_run_folder_layout(two_phase):
    out, cfg = two_phase["out"], two_phase["cfg"]
    for ckpt in ("best", "phase1_end", "last"):
        assert (out / ckpt / "model.safetensors").is_file(), ckpt
        assert (out / ckpt / "meta.json").is_file(), ckpt
    assert (out / "last" / "state.pt").is_file()
    assert (out / "encoder" / "config.json").is_file()
    assert any((out / "encoder").glob("tokenizer*"))
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == cfg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["strategy"] == "stack-and-finetune"
    assert summary["head"] == "densenet" and summary["metric"] == "accuracy"
    assert (summary["init_seed"], summary["data_seed"]) == (0, 0)

    recs = records(out)
    assert [r["phase"] for r in recs] == ["phase1"] * 6 + ["phase2"] * 4
    assert [r["step"] for r in recs] == [4, 8, 12, 16, 20, 24, 4, 8, 12, 16]
    assert [r["global_step"] for r in recs] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    for r in recs:
        assert set(r["dev"]) >= {"accuracy", "f1"} and 0 <= r["dev"]["accuracy"] <= 1
        assert (r["train"] is not None) == (r["phase"] == "phase1")  # the gap rule's train probe
    best_recs = [r for r in recs if r.get("best")]
    assert best_recs[-1]["dev"] == summary["best"]["dev"]
    meta = json.loads((out / "best" / "meta.json").read_text())
    assert meta["metrics"] == summary["best"]["dev"] and meta["labels"] == ["food", "sports"]
    assert json.loads((out / "phase1_end" / "meta.json").read_text())["metrics"]["stop_reason"] == ""
    # after fit() the trainer holds the best model
    assert_tensors_equal(two_phase["final"], load_file(str(out / "best" / "model.safetensors")), "final vs best/")


def test_load_trained_reproduces_the_dev_metric(two_phase, data):
    model, meta = load_trained(two_phase["out"] / "best")
    assert not model.training
    assert meta["task"] == "classification" and meta["head"] == "densenet"
    assert_tensors_equal(model.state_dict(), two_phase["final"], "load_trained weights")
    metrics = evaluate(model, data.dev, get_task("classification"), data.vocab)
    assert metrics == two_phase["summary"]["best"]["dev"]


def test_phase_optimizers_schedules_and_clipping(tmp_path, data, new_encoder, monkeypatch):
    """Phase 1: BERT-Adam over the head only; phase 2: a new optimizer over everything, layer-wise lrs,
    its own warmup + decay schedule; every step clipped (methods.md §1.2, §1.3, §5)."""
    from stackft.training.optim import BertAdam, schedule_factor

    made, clips = [], []
    real_make, real_clip = trainer_mod.make_optimizer, step_mod.clip_gradients

    def make_optimizer(groups, **kw):
        opt = real_make(groups, **kw)
        rec = {"opt": opt, "ids": {id(p) for g in groups for p in g["params"]}, "lrs": [], "fresh": not opt.state}
        opt.register_step_pre_hook(lambda o, a, k: rec["lrs"].append({g["name"]: g["lr"] for g in o.param_groups}))
        made.append(rec)
        return opt

    def clip_gradients(params, max_norm, mode="global"):
        clips.append((max_norm, mode))
        return real_clip(params, max_norm, mode)

    monkeypatch.setattr(trainer_mod, "make_optimizer", make_optimizer)
    monkeypatch.setattr(step_mod, "clip_gradients", clip_gradients)
    cfg = make_cfg(tmp_path / "run", **dict(BASE, strategy="stack-and-finetune", stop_mode="fixed", phase1_epochs=1,
                                            phase2_epochs=2, phase2_lr=1e-3, phase2_head_lr=5e-3, layer_decay=0.5,
                                            warmup=0.25))
    tr = Trainer(cfg, encoder=new_encoder(), data=data)
    tr.fit()
    assert len(made) == 2 and made[0]["opt"] is not made[1]["opt"] and made[1]["fresh"]
    p1, p2 = made
    assert all(isinstance(r["opt"], BertAdam) and r["opt"].defaults["bias_correction"] is False for r in made)
    head_ids = {id(p) for p in tr.model.head.parameters()}
    assert p1["ids"] == head_ids
    assert p2["ids"] == {id(p) for p in tr.model.parameters()}
    # phase 1: 8 steps, warmup round(0.25*8)=2; phase 2: 16 steps, warmup 4; bert_tf decay within each phase
    assert len(p1["lrs"]) == 8 and len(p2["lrs"]) == 16
    for lrs, total, peak in ((p1["lrs"], 8, {"head.decay": 1e-2}),
                             (p2["lrs"], 16, {"head.decay": 5e-3, "encoder.layer2.decay": 1e-3,
                                              "encoder.layer1.decay": 5e-4, "encoder.layer0.decay": 2.5e-4})):
        warmup = round(0.25 * total)
        for step, seen in enumerate(lrs):
            for name, base in peak.items():
                assert seen[name] == pytest.approx(base * schedule_factor("bert_tf", step, total, warmup)), (name, step)
    assert clips == [(1.0, "global")] * 24


# -- resume ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory, data, new_encoder):
    out = tmp_path_factory.mktemp("plateau") / "run"
    tr = Trainer(make_cfg(out, **PLATEAU), encoder=new_encoder(), data=data)
    summary = tr.fit()
    return dict(out=out, summary=summary, final={k: v.clone() for k, v in tr.model.state_dict().items()})


def test_plateau_reference_run_ends_phase1_on_its_chosen_evaluation(plateau_run):
    recs = records(plateau_run["out"])
    p1 = [r for r in recs if r["phase"] == "phase1"]
    assert [r["step"] for r in p1] == [4, 8]  # 0.5 then no improvement: stop (patience 1)
    assert p1[1]["dev"]["accuracy"] <= p1[0]["dev"]["accuracy"]
    chosen = load_file(str(plateau_run["out"] / "phase1_chosen" / "model.safetensors"))
    end = load_file(str(plateau_run["out"] / "phase1_end" / "model.safetensors"))
    assert_tensors_equal(end, chosen, "phase1_end vs the chosen (step 4) checkpoint")
    stop = json.loads((plateau_run["out"] / "phase1_end" / "meta.json").read_text())["metrics"]["stop_reason"]
    assert "improvement" in stop


RESUME_CASES = {
    # name: (config, steps before the interruption(s), phase of the (first) interruption)
    "gap-mid-phase1": ("gap", [10], 0),
    "gap-at-phase-boundary": ("gap", [24], 1),
    "gap-mid-phase2": ("gap", [30], 1),
    "gap-sliced-every-7-steps": ("gap", [7] * 5, 0),
    "plateau-mid-phase1": ("plateau", [6], 0),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_matches_an_uninterrupted_run(case, two_phase, plateau_run, data, new_encoder, tmp_path):
    kind, slices, first_phase = RESUME_CASES[case]
    ref = two_phase if kind == "gap" else plateau_run
    params = GAP if kind == "gap" else PLATEAU
    out = tmp_path / "run"
    for i, k in enumerate(slices):
        res = Trainer(make_cfg(out, **params, max_steps_this_run=k), encoder=new_encoder(), data=data).fit(resume=i > 0)
        assert res["status"] == "interrupted", (i, res)
        if i == 0:
            assert res["position"]["phase"] == first_phase
            assert res["position"]["global_step"] == k
        advance_global_rngs(1000 + i)  # a new process would start from other RNG states
    # a new process: fresh encoder and trainer, same config without the step limit
    tr = Trainer(make_cfg(out, **params), encoder=new_encoder(), data=data)
    summary = tr.fit(resume=True)
    assert summary["status"] == "finished"
    assert without_time(records(out)) == without_time(records(ref["out"]))
    assert summary["best"] == ref["summary"]["best"]
    assert_tensors_equal(tr.model.state_dict(), ref["final"], "final model")
    for ckpt in ("last", "phase1_end", "best"):
        assert_tensors_equal(load_file(str(out / ckpt / "model.safetensors")),
                             load_file(str(ref["out"] / ckpt / "model.safetensors")), f"{ckpt}/")


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, data, new_encoder):
    out = tmp_path / "run"
    cfg = make_cfg(out, **dict(BASE, strategy="stack-only", head="linear", stack_epochs=1))
    a = Trainer(cfg, encoder=new_encoder(), data=data).fit(resume=True)
    assert a["status"] == "finished" and len(records(out)) == 2


def test_resume_refuses_changed_training_settings(tmp_path, data, new_encoder):
    out = tmp_path / "run"
    params = dict(BASE, strategy="stack-only", head="linear", stack_epochs=2)
    Trainer(make_cfg(out, **dict(params, max_steps_this_run=3)), encoder=new_encoder(), data=data).fit()
    saved_state = (out / "last" / "state.pt").read_bytes()
    changed = dict(params, phase1_lr=params["phase1_lr"] * 2, init_seed=7)
    with pytest.raises(ValueError, match=r"cannot resume .*init_seed: saved 0, now 7.*phase1_lr"):
        Trainer(make_cfg(out, **changed), encoder=new_encoder(), data=data).fit(resume=True)
    assert (out / "last" / "state.pt").read_bytes() == saved_state  # nothing was touched
    # how the run is carried out may change: a step budget, another save cadence, the eval batch
    how = dict(params, save_every=2, max_steps_this_run=2, eval_batch_size=16)
    res = Trainer(make_cfg(out, **how), encoder=new_encoder(), data=data).fit(resume=True)
    assert res["status"] == "interrupted" and res["position"]["global_step"] == 5


# -- non-finite loss ------------------------------------------------------------------------

def test_nan_loss_raises_and_keeps_last_checkpoint(tmp_path, data, new_encoder, monkeypatch, two_phase):
    out = tmp_path / "run"
    cfg = make_cfg(out, **GAP)
    calls = {"n": 0}
    real_loss = trainer_mod.task_loss

    def nan_after_five(logits, labels, **kw):
        calls["n"] += 1
        loss = real_loss(logits, labels, **kw)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(trainer_mod, "task_loss", nan_after_five)
    with pytest.raises(NonFiniteLoss, match="non-finite loss") as err:
        Trainer(cfg, encoder=new_encoder(), data=data).fit()
    msg = str(err.value)
    assert "nan" in msg and "phase 0 step 5" in msg and str(out / "last") in msg
    # the checkpoint of the step-4 evaluation is intact and loadable
    model, meta = load_trained(out / "last")
    assert meta["position"]["phase_step"] == 4 and meta["position"]["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    assert len(records(out)) == 1
    # after fixing the cause, resume continues from it, exactly as if nothing had happened
    monkeypatch.setattr(trainer_mod, "task_loss", real_loss)
    advance_global_rngs(7)
    summary = Trainer(cfg, encoder=new_encoder(), data=data).fit(resume=True)
    assert summary["best"] == two_phase["summary"]["best"]
    assert without_time(records(out)) == without_time(records(two_phase["out"]))


def test_huge_learning_rate_raises_non_finite_loss(tmp_path, data, new_encoder):
    cfg = make_cfg(tmp_path / "run", **dict(BASE, strategy="stack-only", head="fc", stack_epochs=1, phase1_lr=1e30))
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \((nan|inf)\)"):
        Trainer(cfg, encoder=new_encoder(), data=data).fit()


def test_non_finite_loss_message_does_not_point_at_a_missing_checkpoint(tmp_path, data, new_encoder):
    out = tmp_path / "run"
    cfg = make_cfg(out, **dict(BASE, strategy="stack-only", head="fc", stack_epochs=1, phase1_lr=1e30))
    with pytest.raises(NonFiniteLoss) as err:
        Trainer(cfg, encoder=new_encoder(), data=data).fit()
    assert not (out / "last").exists()  # NaN at the second step, before the first evaluation
    assert str(out / "last") not in str(err.value)


# -- strategies and seeds -------------------------------------------------------------------

def test_stack_only_never_touches_the_encoder(tmp_path, data, new_encoder):
    out = tmp_path / "run"
    enc = new_encoder()
    initial = {k: v.clone() for k, v in enc.model.state_dict().items()}
    tr = Trainer(make_cfg(out, **dict(BASE, strategy="stack-only", stack_epochs=2)), encoder=enc, data=data)
    assert isinstance(tr.model.head, DenseNetCNNClassifier)  # the task's stacked head
    assert [(p.name, p.train_encoder) for p in tr.phases] == [("stack", False)]
    summary = tr.fit()
    assert not encoder_tensors(load_file(str(out / "last" / "model.safetensors")))  # left out: unchanged
    assert_tensors_equal(checkpoint_encoder(out / "last"), initial, "encoder")
    assert_tensors_equal({k: v for k, v in enc.model.state_dict().items()}, initial, "encoder in memory")
    assert not (out / "phase1_end").exists()
    assert {r["phase"] for r in records(out)} == {"stack"}
    assert summary["head"] == "densenet"


def test_finetune_only_uses_fc_head_and_one_phase(tmp_path, data, new_encoder):
    out = tmp_path / "run"
    tr = Trainer(make_cfg(out, **dict(BASE, strategy="finetune-only", phase2_epochs=1)), encoder=new_encoder(), data=data)
    assert isinstance(tr.model.head, FCSequenceHead) and tr.head_name == "fc"
    assert [(p.name, p.train_encoder) for p in tr.phases] == [("finetune", True)]
    assert tr.phases[0].head_lr == tr.phases[0].encoder_lr == 1e-3  # the small joint lr for both
    tr.fit()
    assert {r["phase"] for r in records(out)} == {"finetune"}
    assert not (out / "phase1_end").exists()
    enc_last = encoder_tensors(load_file(str(out / "last" / "model.safetensors")))
    init = new_encoder().model.state_dict()
    assert any(not torch.equal(enc_last[k], init[k]) for k in enc_last)


def test_lp_ft_uses_a_linear_probe_then_finetunes(data, new_encoder, tmp_path):
    tr = Trainer(make_cfg(tmp_path / "run", **dict(BASE, strategy="lp-ft")), encoder=new_encoder(), data=data)
    assert isinstance(tr.model.head, LinearSequenceHead) and tr.head_name == "linear"
    assert [(p.name, p.train_encoder, p.head_lr, p.encoder_lr) for p in tr.phases] == [
        ("phase1", False, 1e-2, 0.0), ("phase2", True, 1e-3, 1e-3)]


def test_stack_and_finetune_default_heads_and_phase_lrs(data, new_encoder, tmp_path):
    defaults = {k: v for k, v in GAP.items() if k != "phase2_head_lr_scale"}  # the library's
    tr = Trainer(make_cfg(tmp_path / "run", **defaults), encoder=new_encoder(), data=data)
    assert tr.head_name == "densenet"
    p1, p2 = tr.phases
    assert (p1.train_encoder, p1.head_lr, p1.stop_mode, p1.restore_chosen) == (False, 1e-2, "gap", True)
    assert (p2.train_encoder, p2.head_lr, p2.encoder_lr) == (True, pytest.approx(1e-2), 1e-3)  # head 10x
    assert TrainConfig().phase1_lr == 1e-3 and TrainConfig().phase2_lr < TrainConfig().phase1_lr  # §1.2


@pytest.mark.parametrize("task", ["ner", "classification", "pairs"])
def test_default_head_of_every_strategy(task):
    from stackft.training.strategies import STRATEGIES, default_head

    spec = get_task(task)
    want = {"finetune-only": "fc", "eh-ft": "fc", "lp-ft": "linear", "stack-only": spec.stack_head,
            "stack-and-finetune": spec.stack_head}
    assert set(STRATEGIES) <= set(want)
    for strategy in STRATEGIES:
        assert default_head(strategy, spec) == want[strategy], strategy
    assert {"ner": "bilstm", "classification": "densenet", "pairs": "bimpm"}[task] == spec.stack_head  # §1.6


def _head_state(cfg, enc, n):
    return {k: v.clone() for k, v in build_model(cfg, enc, n).head.state_dict().items()}


def test_init_seed_and_data_seed_are_independent(data, new_encoder, tmp_path):
    enc = new_encoder()
    base = make_cfg(tmp_path / "run", **GAP)
    rng = torch.get_rng_state()
    h0 = _head_state(base, enc, 2)
    assert torch.equal(torch.get_rng_state(), rng)  # head init does not consume the global RNG
    h_data = _head_state(dataclasses.replace(base, data_seed=7), enc, 2)
    h_init = _head_state(dataclasses.replace(base, init_seed=7), enc, 2)
    assert_tensors_equal(h_data, h0, "head init under another data_seed")
    assert any(not torch.equal(h_init[k], h0[k]) for k in h0 if h0[k].is_floating_point() and h0[k].abs().sum() > 0)
    advance_global_rngs(12345)  # nor does it read it
    assert_tensors_equal(_head_state(base, enc, 2), h0, "head init after moving the global RNGs on")
    # the trainer builds the same head
    tr = Trainer(dataclasses.replace(base, data_seed=3), encoder=new_encoder(), data=data)
    assert_tensors_equal({k: v for k, v in tr.model.head.state_dict().items()}, h0, "trainer head")


def test_data_seed_changes_the_data_order_not_the_init(tmp_path, data, new_encoder):
    cfg = make_cfg(tmp_path / "a", **dict(BASE, strategy="stack-only", head="linear", stack_epochs=1))
    a = Trainer(cfg, encoder=new_encoder(), data=data)
    b = Trainer(dataclasses.replace(cfg, output_dir=str(tmp_path / "b"), data_seed=1), encoder=new_encoder(), data=data)
    assert_tensors_equal(dict(a.model.state_dict()), dict(b.model.state_dict()), "initial models")
    a.fit(), b.fit()
    wa = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert not torch.equal(wa["head.out.weight"], wb["head.out.weight"])


def test_max_tokens_every_epoch_ends_with_an_evaluation(tmp_path, files, tokenizer, new_encoder):
    from stackft.data.batching import LengthBucketSampler

    for seed in range(20):  # data whose epochs 0 and 1 have different batch counts under the trainer's sampler
        path = write_sports_food_csv(tmp_path / "var.csv", 110, seed, words=(1, 25))  # varied lengths
        data = load_task_data("classification", str(path), str(files[1]), tokenizer=tokenizer, max_length=64,
                              max_dev=8)
        sampler = LengthBucketSampler(data.train.lengths, 2, seed=0, max_tokens=40)  # seed: data_seed*1000+phase
        counts = [len(sampler.batches(e)) for e in range(2)]
        if counts[0] != counts[1]:
            break
    else:
        pytest.fail("no data with unequal epochs found")
    out = tmp_path / "run"
    cfg = make_cfg(out, **dict(BASE, strategy="stack-only", head="linear", stack_epochs=2, evals_per_epoch=1,
                               batch_size=2, max_tokens=40))
    tr = Trainer(cfg, encoder=new_encoder(), data=data)
    tr.fit()
    assert tr.pos.global_step == sum(counts)
    recs = records(out)
    assert [r["epoch"] for r in recs] == [1.0, 2.0], (counts, [(r["epoch"], r["step"]) for r in recs])
    assert recs[-1]["global_step"] == sum(counts)
