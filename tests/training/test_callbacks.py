"""Trainer callbacks (stackft.training.callbacks) and the shared train step (stackft.training.step)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_keyword_task

from stackft.config import TrainConfig
from stackft.run_dir import RunDir
from stackft.training.callbacks import HOOKS, TrainerCallback
from stackft.training.step import NonFiniteLoss, train_step
from stackft.training.trainer import Trainer

# 48 train / batch 8 = 6 steps an epoch, evaluated at steps 3 and 6
BASE = dict(task="classification", cache="off", progress=False, device="cpu", batch_size=8, eval_batch_size=32,
            evals_per_epoch=2, phase1_lr=1e-2, phase2_lr=1e-3, strategy="stack-and-finetune", head="fc",
            stop_mode="fixed", phase1_epochs=2, phase2_epochs=1)


@pytest.fixture(scope="module")
def encoder_and_data(tmp_path_factory):
    return tiny_keyword_task(tmp_path_factory.mktemp("cb-data"))


@pytest.fixture
def new_run(encoder_and_data, tmp_path):
    enc, data = encoder_and_data
    pristine = {k: v.clone() for k, v in enc.state_dict().items()}

    def make(callbacks=(), **kw):
        enc.load_state_dict(pristine)
        cfg = TrainConfig(output_dir=str(tmp_path / "run"), **{**BASE, **kw})
        return Trainer(cfg, encoder=enc, data=data, callbacks=callbacks)

    return make


class Recorder(TrainerCallback):
    """Records every hook call as (hook, phase name or None, detail)."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, *, resumed):
        self.calls.append(("on_fit_start", None, resumed))

    def on_phase_start(self, trainer, phase):
        self.calls.append(("on_phase_start", phase.name, trainer.pos.phase_step))

    def on_step_start(self, trainer, phase, batch):
        self.calls.append(("on_step_start", phase.name, len(batch["labels"])))

    def on_step_end(self, trainer, phase, loss):
        self.calls.append(("on_step_end", phase.name, loss))

    def on_evaluate(self, trainer, phase, record):
        self.calls.append(("on_evaluate", phase.name, record))

    def on_save(self, trainer, kind, path):
        assert (path / "model.safetensors").exists(), f"on_save({kind}) before {path} was written"
        self.calls.append(("on_save", kind, path))

    def on_phase_end(self, trainer, phase, stopper):
        self.calls.append(("on_phase_end", phase.name, stopper.reason))

    def on_fit_end(self, trainer, summary):
        self.calls.append(("on_fit_end", None, summary["status"]))

    def hooks(self, name):
        return [c for c in self.calls if c[0] == name]


def test_every_hook_is_called_in_order(new_run):
    rec = Recorder()
    tr = new_run([rec])
    summary = tr.fit()
    names = [c[0] for c in rec.calls]
    assert names[0] == "on_fit_start" and rec.calls[0][2] is False
    assert names[-1] == "on_fit_end" and rec.calls[-1][2] == "finished"
    assert [c[1] for c in rec.hooks("on_phase_start")] == ["phase1", "phase2"]
    assert [c[1] for c in rec.hooks("on_phase_end")] == ["phase1", "phase2"]
    # one step_start/step_end pair per optimizer step: 2 epochs x 6 + 1 x 6
    assert len(rec.hooks("on_step_start")) == len(rec.hooks("on_step_end")) == tr.pos.global_step == 18
    assert all(b == "on_step_end" for a, b in zip(names, names[1:]) if a == "on_step_start")
    # on_evaluate gets exactly the records of metrics.jsonl, in order
    assert [c[2] for c in rec.hooks("on_evaluate")] == RunDir(tr.out).read_metrics()
    kinds = {c[1] for c in rec.hooks("on_save")}
    assert kinds == {"best", "last", "chosen", "phase_end"}
    assert summary["status"] == "finished"
    assert set(HOOKS) == {n for n in vars(TrainerCallback) if n.startswith("on_")}
    # every hook of the base class was seen
    assert set(HOOKS) <= set(names)


def test_request_phase_stop_at_an_evaluation_ends_the_phase_there(new_run):
    class StopFirstEval(TrainerCallback):
        def on_evaluate(self, trainer, phase, record):
            if phase.name == "phase1":
                trainer.request_phase_stop("enough")

    rec = Recorder()
    tr = new_run([StopFirstEval(), rec])
    tr.fit()
    recs = RunDir(tr.out).read_metrics()
    assert [r["phase"] for r in recs].count("phase1") == 1 and recs[0]["step"] == 3
    reason = [c[2] for c in rec.hooks("on_phase_end") if c[1] == "phase1"][0]
    assert "stopped by a callback: enough" in reason
    # phase 2 still runs its whole epoch
    assert [r["step"] for r in recs if r["phase"] == "phase2"] == [3, 6]


def test_request_phase_stop_between_evaluations_and_resume_keeps_it(new_run):
    class StopAtStep(TrainerCallback):
        def on_step_end(self, trainer, phase, loss):
            if phase.name == "phase1" and trainer.pos.phase_step == 2:
                trainer.request_phase_stop("step 2")

    tr = new_run([StopAtStep()], stop_after_phase=0)
    assert tr.fit()["status"] == "paused"
    assert tr.pos.phase == 1 and tr.pos.global_step == 2  # stopped after step 2, before any evaluation
    # resuming without the callback does not train phase 1 again
    rec = Recorder()
    tr2 = new_run([rec])
    tr2.fit(resume=True)
    assert rec.calls[0] == ("on_fit_start", None, True)
    assert {c[1] for c in rec.hooks("on_step_end")} == {"phase2"}


def test_callbacks_must_be_trainer_callbacks(new_run):
    with pytest.raises(TypeError, match="TrainerCallback instances, got function"):
        new_run([lambda *a: None])


def _linear_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 5, generator=g))
        model.bias.zero_()
    batch = {"x": torch.randn(7, 5, generator=g), "labels": torch.randint(0, 3, (7,), generator=g)}
    return model, batch


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_train_step_is_one_step_on_the_mean_loss(grad_accum):
    model, batch = _linear_problem()
    ref = torch.nn.Linear(5, 3)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = train_step(lambda mb: model(mb["x"]), batch, opt, grad_accum=grad_accum)
    expected = torch.nn.functional.cross_entropy(ref(batch["x"]), batch["labels"])
    expected.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


def test_train_step_clips_and_steps_the_schedule():
    model, batch = _linear_problem(1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(lambda mb: model(mb["x"]) * 100, batch, opt, sched, clip=1e-3)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    assert moved == pytest.approx(1e-3, rel=1e-4)  # lr 1 x a gradient clipped to global norm 1e-3
    assert sched.get_last_lr() == [0.5]


def test_train_step_refuses_a_non_finite_loss_before_stepping():
    model, batch = _linear_problem(2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(nan\)"):
        train_step(lambda mb: model(mb["x"]) * float("nan"), batch, opt)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


def test_compute_accounting_adds_up(new_run):
    tr = new_run()
    summary = tr.fit()
    c = summary["compute"]
    n_train, n_dev = len(tr.data.train), len(tr.data.dev)
    recs = RunDir(tr.out).read_metrics()
    evals = len(recs)
    assert c["optimizer_steps"] == tr.pos.global_step == 18
    # phase 1 (frozen, no cache): 2 epochs of forward-only; phase 2: 1 epoch of forward+backward
    assert c["encoder_forward_backward"] == n_train
    # phase-1 training forwards + every dev evaluation (the fixed stop rule scores no train probe)
    assert c["encoder_forward"] == 2 * n_train + evals * n_dev
    assert c["cached_sequences"] == 0
