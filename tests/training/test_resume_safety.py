"""Resume safety (issue #16): a resume never continues another run, other settings or other data; a
non-finite step never reaches a checkpoint; a pause at a phase boundary resumes bit for bit; resume
says what it found.

Each run is a tiny random BERT on a 2-class keyword CSV (32 train rows, batch 8: 4 steps an epoch,
evaluated at steps 2 and 4), a second or two on a CPU.
"""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from helpers import write_keyword_csv
from safetensors.torch import load_file

from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.training.callbacks import TrainerCallback
from stackft.training.step import NonFiniteLoss
from stackft.training.trainer import Trainer

BASE = dict(task="classification", cache="off", progress=False, device="cpu", batch_size=8, eval_batch_size=32,
            evals_per_epoch=2, phase1_lr=1e-2, phase2_lr=1e-3)
STACK = dict(BASE, strategy="stack-only", head="linear", stack_epochs=2)


class Died(BaseException):
    """A process death at a chosen moment (not an Exception: nothing catches it on the way out)."""


class DieAt(TrainerCallback):
    def __init__(self, hook: str, step: int = 0):
        self.hook, self.step = hook, step

    def on_fit_start(self, trainer, *, resumed):
        if self.hook == "on_fit_start":
            raise Died("killed before the first checkpoint")

    def on_step_start(self, trainer, phase, batch):
        if self.hook == "on_step_start" and trainer.pos.phase_step == self.step:
            raise Died(f"killed at step {self.step}")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume-data")
    return write_keyword_csv(d / "train.csv", 32, seed=0), write_keyword_csv(d / "dev.csv", 16, seed=1)


@pytest.fixture(scope="module")
def data(files, tokenizer):
    return load_task_data("classification", files[0], files[1], tokenizer=tokenizer, max_length=24)


@pytest.fixture
def run(tmp_path, data, make_tiny_encoder):
    """``run(resume=False, data=..., callbacks=(), **cfg)`` -> (trainer, result) in tmp_path/run."""
    out = tmp_path / "run"

    def go(resume=False, data=data, callbacks=(), overwrite=False, **kw):
        cfg = TrainConfig(output_dir=str(out), **{**STACK, **kw})
        tr = Trainer(cfg, encoder=make_tiny_encoder(), data=data, callbacks=callbacks)
        return tr, tr.fit(resume=resume, overwrite=overwrite)

    go.out = out
    return go


def checkpoint_tensors(out) -> dict:
    """Every tensor of every checkpoint folder under ``out`` (hidden temporary folders included)."""
    found = {}
    for f in out.rglob("model.safetensors"):
        for k, v in load_file(str(f)).items():
            found[f"{f.parent.name}/{k}"] = v
    return found


def advance_global_rngs():
    random.random(), np.random.rand(17), torch.rand(17)


# -- 1. a run id: never resume the checkpoint of an earlier run ----------------------------------------


@pytest.mark.parametrize("second", ["same-settings", "other-settings"])
def test_resume_refuses_the_last_checkpoint_of_an_earlier_run(run, second, tmp_path):
    run(max_steps_this_run=3)  # run A: last/ at step 3
    a_last = tmp_path / "a-last"
    shutil.copytree(run.out / "last", a_last)
    b = dict(phase1_lr=STACK["phase1_lr"] * (1 if second == "same-settings" else 3))
    with pytest.raises(Died):  # run B, started over A, dies before its first checkpoint
        run(overwrite=True, callbacks=[DieAt("on_fit_start")], **b)
    assert not (run.out / "last").exists()  # --overwrite deleted A's checkpoints ...
    shutil.copytree(a_last, run.out / "last")  # ... but A's last/ is back (copied by hand, or an older version)
    with pytest.raises(ValueError, match=r"cannot resume .*last was written by an earlier run .*with --overwrite"):
        run(resume=True, **b)  # resuming B must not continue A
    # starting B again (as the message says) works, and its checkpoints carry its own run id
    tr, res = run(overwrite=True, **b)
    assert res["status"] == "finished"
    run_id = json.loads((run.out / "run.json").read_text())["run_id"]
    assert json.loads((run.out / "last" / "meta.json").read_text())["run_id"] == run_id == tr.run_id


def test_resume_compares_the_settings_last_was_trained_with(run):
    run(max_steps_this_run=3)
    # config.json rewritten (by hand, or by a tool): the settings last/ was trained with are the ones compared
    cfg = json.loads((run.out / "config.json").read_text())
    (run.out / "config.json").write_text(json.dumps({**cfg, "init_seed": 5}))
    with pytest.raises(ValueError, match=r"cannot resume .*init_seed: saved 0, now 5"):
        run(resume=True, init_seed=5)
    _, res = run(resume=True)
    assert res["status"] == "finished"


# -- 2. no checkpoint with non-finite tensors; advice that works ---------------------------------------


def test_huge_lr_never_writes_non_finite_checkpoints(run):
    """The issue's case: stack-only, phase1_lr 3e38, no warm-up, an evaluation after every step."""
    with pytest.raises(NonFiniteLoss) as err:
        run(phase1_lr=3e38, warmup=0.0, evals_per_epoch=100, head="fc")
    tensors = checkpoint_tensors(run.out)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"checkpoints with non-finite tensors: {bad[:5]}"
    msg = str(err.value)
    if not (run.out / "last").exists():
        assert "no checkpoint of this run was written yet" in msg and "last good" not in msg
    assert "--phase1-lr 0.001" in msg  # an action the user can take (a tenth, at most the default)


class BlowUpAt(TrainerCallback):
    """Weights become NaN before step ``step`` (what a divergent step does); records the lrs used."""

    def __init__(self, step=None):
        self.step, self.lrs = step, {}

    def on_step_start(self, trainer, phase, batch):
        self.lrs[trainer.pos.global_step] = [g["lr"] for g in trainer.optimizer.param_groups]
        if trainer.pos.phase_step == self.step:
            with torch.no_grad():
                for p in trainer.model.head.parameters():
                    p.fill_(float("nan"))


def test_resume_after_a_non_finite_loss_may_lower_the_learning_rate(run, capsys):
    blow = BlowUpAt(step=5)
    with pytest.raises(NonFiniteLoss) as err:
        run(callbacks=[blow])
    msg = str(err.value)
    assert "last good checkpoint is" in msg and "phase 0 step 4" in msg and "--resume --phase1-lr 0.001" in msg
    assert json.loads((run.out / "last" / "meta.json").read_text())["position"]["global_step"] == 4
    assert "nonfinite" in json.loads((run.out / "run.json").read_text())
    # what the message says works: resume with a lower lr (other settings still may not change)
    with pytest.raises(ValueError, match="init_seed"):
        run(resume=True, phase1_lr=1e-3, init_seed=3)
    seen = BlowUpAt()
    tr, res = run(resume=True, phase1_lr=1e-3, callbacks=[seen])
    assert res["status"] == "finished"
    assert "phase1_lr 0.01 -> 0.001" in capsys.readouterr().err
    # the resumed optimizer continues the schedule at a tenth of the rates
    first = min(seen.lrs)
    assert first == 4 and seen.lrs[4] == pytest.approx([x / 10 for x in blow.lrs[4]])
    info = json.loads((run.out / "run.json").read_text())
    assert "nonfinite" not in info and info["lr_changes"][0]["phase1_lr"] == {"then": 1e-2, "now": 1e-3}
    assert json.loads((run.out / "last" / "meta.json").read_text())["config"]["phase1_lr"] == 1e-3
    # without a non-finite loss, learning rates stay fixed on resume
    run(max_steps_this_run=2, overwrite=True)
    with pytest.raises(ValueError, match="learning rates may change only when resuming a run that stopped"):
        run(resume=True, phase1_lr=1e-3)


# -- 3. a pause at a phase boundary resumes bit for bit ------------------------------------------------


def test_pause_after_phase_0_then_resume_equals_an_uninterrupted_run(tmp_path, data, make_tiny_encoder):
    params = dict(BASE, strategy="stack-and-finetune", head="fc", stop_mode="fixed", phase1_epochs=1,
                  phase2_epochs=1, dropout=0.1)

    def trainer(out, **kw):
        return Trainer(TrainConfig(output_dir=str(out), **{**params, **kw}), encoder=make_tiny_encoder(), data=data)

    ref = trainer(tmp_path / "ref")
    ref.fit()
    res = trainer(tmp_path / "paused", stop_after_phase=0).fit()
    assert res["status"] == "paused"
    advance_global_rngs()  # a new process
    resumed = trainer(tmp_path / "paused")
    assert resumed.fit(resume=True)["status"] == "finished"
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "paused") == strip(tmp_path / "ref")


# -- 6. the data belongs in the resume check -----------------------------------------------------------


def _edited_csv(src, dst, *, drop=0, relabel=False):
    lines = open(src).read().splitlines()
    lines = lines[drop:]
    if relabel:
        text, label = lines[0].rsplit(",", 1)
        lines[0] = f"{text},{'pos' if label == 'neg' else 'neg'}"
    dst.write_text("\n".join(lines) + "\n")
    return str(dst)


@pytest.mark.parametrize("edit", ["3-rows-dropped-and-a-label-changed", "a-label-changed"])
def test_resume_refuses_changed_training_data(run, files, tokenizer, tmp_path, edit):
    run(max_steps_this_run=3)
    path = _edited_csv(files[0], tmp_path / "train-edited.csv", drop=3 if edit.startswith("3") else 0, relabel=True)
    changed = load_task_data("classification", path, files[1], tokenizer=tokenizer, max_length=24)
    with pytest.raises(ValueError, match=r"cannot resume .*the data differs from what .*last was trained on"
                                         + (r" \(train examples: 32 then, 29 now" if edit.startswith("3") else "")):
        run(resume=True, data=changed)


def test_resume_refuses_ner_data_with_3_sentences_dropped_and_a_tag_changed(tmp_path, tokenizer, make_tiny_encoder):
    from helpers import DEMO_DATA

    sentences = (DEMO_DATA / "conll_train.txt").read_text().strip().split("\n\n")[:25]
    train = tmp_path / "train.txt"
    train.write_text("\n\n".join(sentences) + "\n")
    edited = [s for i, s in enumerate(sentences) if i not in (3, 7, 11)]
    lines = edited[5].splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.split()[-1] == "O")
    lines[i] = lines[i].rsplit(" ", 1)[0] + " B-MISC"  # one tag changed
    edited[5] = "\n".join(lines)
    changed = tmp_path / "edited.txt"
    changed.write_text("\n\n".join(edited) + "\n")

    def go(path, **kw):
        data = load_task_data("ner", str(path), tokenizer=tokenizer, max_length=32, dev_size=4)
        cfg = TrainConfig(output_dir=str(tmp_path / "run"), **{**STACK, "task": "ner", **kw})
        return Trainer(cfg, encoder=make_tiny_encoder(), data=data).fit(resume=kw.get("max_steps_this_run") is None)

    go(train, max_steps_this_run=2)
    with pytest.raises(ValueError, match=r"the data differs from what .*last was trained on \(train examples"):
        go(changed)


# -- 7. resume says what it found ----------------------------------------------------------------------


def test_resume_says_what_it_found(run, capsys):
    _, res = run(resume=True, stack_epochs=1)  # nothing there yet
    assert res["status"] == "finished"
    assert f"resume: no checkpoint in {run.out / 'last'}; starting" in capsys.readouterr().err
    run(max_steps_this_run=3, overwrite=True)
    capsys.readouterr()
    run(resume=True)
    err = capsys.readouterr().err
    assert f"resuming {run.out} from {run.out / 'last'}: phase 0 (stack) step 3" in err


def test_older_checkpoints_without_run_id_or_fingerprint_resume_with_a_warning(run):
    from stackft.training import checkpoint as ckpt

    run(max_steps_this_run=3)
    meta_file = run.out / "last" / "meta.json"
    meta = json.loads(meta_file.read_text())
    for key in ("run_id", "data", "files"):  # what a 0.2 checkpoint lacks
        meta.pop(key)
    meta_file.write_text(json.dumps(meta))
    (run.out / "run.json").unlink()
    ckpt._warned.clear()
    with pytest.warns(ckpt.CheckpointWarning, match="older stackft"):
        _, res = run(resume=True)
    assert res["status"] == "finished"
