"""Disk use of a run: frozen phases' checkpoints leave the pretrained encoder out and refer to it.

A checkpoint saved while the encoder is frozen stores the head only (``meta["weights"]`` names the
reference: the encoder the run named, re-loaded and checked by sha256, or the run's own copy in
``encoder/model.safetensors``); checkpoints of the same step share one weights file (a hard link);
``save_total_limit`` bounds the folders. Everything still loads: ``load_trained``, ``stackft eval``,
resume, ensembles, studies.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from helpers import write_keyword_csv
from safetensors.torch import load_file

from stackft import cli
from stackft.config import TrainConfig
from stackft.modeling.encoders import load_encoder
from stackft.run_dir import RunDir
from stackft.training import checkpoint as ckpt
from stackft.training.trainer import Trainer, load_trained

# the shared config sets phase fields that stack-only runs do not read
pytestmark = pytest.mark.filterwarnings("ignore::stackft.training.trainer.ConfigWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("kw")
    return write_keyword_csv(d / "train.csv", 48, 1), write_keyword_csv(d / "dev.csv", 16, 2)


def config(data, out, encoder, **kw):
    train, dev = data
    base = dict(task="classification", strategy="stack-and-finetune", head="densenet",
                head_options={"channels": 16}, train_path=train, dev_path=dev,
                encoder=None if encoder is None else str(encoder),
                batch_size=8, eval_batch_size=16, phase1_epochs=2, phase2_epochs=1, evals_per_epoch=1,
                stop_mode="fixed", cache="off", device="cpu", progress=False, output_dir=str(out))
    return TrainConfig(**{**base, **kw})


def encoder_keys(folder) -> set:
    return {k for k in ckpt.stored_names(folder) if k.startswith("encoder.")}


@pytest.fixture(scope="module")
def two_phase(data, tiny_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sf") / "run"
    summary = Trainer(config(data, out, tiny_encoder_dir)).fit()
    return out, summary


def test_frozen_phase_checkpoints_store_only_the_head(two_phase, tiny_encoder_dir):
    out, summary = two_phase
    assert summary["status"] == "finished"
    run = RunDir(out)
    full = ckpt.stored_names(run.best)
    assert encoder_keys(run.best) and encoder_keys(run.last)  # phase 2 trained the encoder: stored
    for folder in (run.chosen("phase1"), run.phase_end("phase1")):
        assert not encoder_keys(folder), folder
        info = ckpt.weights_info(folder)
        assert info["omitted"] == len(encoder_keys(run.best)) == len(full - ckpt.stored_names(folder))
        assert info["reference"] == {"kind": "source", "encoder": str(tiny_encoder_dir.resolve())}
        assert (folder / "model.safetensors").stat().st_size < (run.best / "model.safetensors").stat().st_size / 2
    assert not (run.encoder / "model.safetensors").exists()  # the encoder it named is the reference


def test_a_head_only_checkpoint_loads_with_the_pretrained_encoder(two_phase, tiny_encoder_dir, data, capsys):
    out, _ = two_phase
    end = RunDir(out).phase_end("phase1")
    model, meta = load_trained(end)
    pretrained = load_encoder(str(tiny_encoder_dir)).model.state_dict()
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, pretrained[k]), k
    stored = load_file(str(end / "model.safetensors"))
    state = model.state_dict()
    for k, v in stored.items():
        assert torch.equal(state[k], v), k
    # the chosen phase-1 evaluation scores what it scored during the run
    chosen = RunDir(out).chosen("phase1")
    assert cli.main(["eval", str(chosen), "--data", data[1]]) == 0
    printed = json.loads(capsys.readouterr().out)
    recorded = ckpt.read_meta(chosen)["metrics"]
    assert printed["accuracy"] == pytest.approx(recorded["accuracy"])
    assert printed["f1_positive_class"] == "pos"


def test_checkpoints_of_the_same_step_share_one_file(two_phase):
    out, _ = two_phase
    run = RunDir(out)
    best, last = ckpt.read_meta(run.best), ckpt.read_meta(run.last)
    assert best["position"]["global_step"] == last["position"]["global_step"]  # one phase-2 evaluation
    a, b = (run.best / "model.safetensors").stat(), (run.last / "model.safetensors").stat()
    assert a.st_ino == b.st_ino and a.st_nlink >= 2
    ckpt.verify(run.best)  # each folder's checksums still hold
    ckpt.verify(run.last)


@pytest.mark.parametrize("limit, kept", [(2, {"best", "last"}), (3, {"best", "last", "phase1_end"})])
def test_save_total_limit(limit, kept, data, tiny_encoder_dir, tmp_path):
    out = tmp_path / "run"
    Trainer(config(data, out, tiny_encoder_dir, save_total_limit=limit)).fit()
    folders = {p.name for p in out.iterdir() if ckpt.has_weights(p)}
    assert folders == kept
    model, _ = load_trained(out / "best")  # still loads
    assert model is not None


def test_an_untraceable_encoder_is_copied_once_into_the_run(data, make_tiny_encoder, tmp_path):
    out = tmp_path / "run"
    enc = make_tiny_encoder(seed=5)  # handed in: not what cfg.encoder would load
    pretrained = {k: v.clone() for k, v in enc.model.state_dict().items()}
    Trainer(config(data, out, None, strategy="stack-only", stack_epochs=1), encoder=enc).fit()
    run = RunDir(out)
    assert (run.encoder / "model.safetensors").is_file()
    assert ckpt.weights_info(run.best)["reference"] == {"kind": "run"} and not encoder_keys(run.best)
    model, _ = load_trained(run.best)
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, pretrained[k]), k


def test_a_changed_reference_is_refused(data, tiny_encoder_dir, make_tiny_encoder, tmp_path):
    enc_dir = tmp_path / "enc"
    shutil.copytree(tiny_encoder_dir, enc_dir)
    out = tmp_path / "run"
    Trainer(config(data, out, enc_dir, strategy="stack-only", stack_epochs=1)).fit()
    load_trained(out / "best")
    other = make_tiny_encoder(seed=9)
    other.model.save_pretrained(enc_dir)  # the pretrained encoder the checkpoint refers to changes
    with pytest.raises(ckpt.CheckpointError, match="differ from the ones this run trained with"):
        load_trained(out / "best")


def test_resume_from_a_head_only_last_matches_an_uninterrupted_run(data, tiny_encoder_dir, tmp_path):
    whole = tmp_path / "whole"
    Trainer(config(data, whole, tiny_encoder_dir, strategy="stack-only", stack_epochs=2)).fit()
    parts = tmp_path / "parts"
    first = Trainer(config(data, parts, tiny_encoder_dir, strategy="stack-only", stack_epochs=2,
                           max_steps_this_run=4)).fit()
    assert first["status"] == "interrupted" and not encoder_keys(parts / "last")
    second = Trainer(config(data, parts, tiny_encoder_dir, strategy="stack-only", stack_epochs=2)).fit(resume=True)
    assert second["status"] == "finished"
    a, b = load_file(str(whole / "best" / "model.safetensors")), load_file(str(parts / "best" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ensembles_and_studies_of_head_only_runs(data, tiny_encoder_dir, tmp_path):
    from stackft.studies import run_trials
    from stackft.studies.ensemble import ensemble_predict

    base = config(data, tmp_path / "unused", tiny_encoder_dir, strategy="stack-only", stack_epochs=1)
    summaries = run_trials(base, init_seeds=[0, 1], data_seeds=[0], out_dir=tmp_path / "study")
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    trials = [tmp_path / "study" / s["trial"] for s in summaries]
    for t in trials:  # the second trial reuses the first one's (restored) encoder: still traced to its source
        assert ckpt.weights_info(t / "best")["reference"]["kind"] == "source"
        assert not (t / "encoder" / "model.safetensors").exists()
        assert not encoder_keys(t / "best")
    res = ensemble_predict(trials, data[1])
    assert res["n"] == 16 and 0.0 <= res["ensemble"]["accuracy"] <= 1.0


def test_partial_checkpoint_helpers(tmp_path, make_tiny_encoder):
    from stackft.modeling.encoders import is_pretrained, mark_pretrained

    enc = make_tiny_encoder()
    mark_pretrained(enc, "somewhere")
    assert is_pretrained(enc, "somewhere") and not is_pretrained(enc, "elsewhere")
    saved = {k: v.clone() for k, v in enc.state_dict().items()}
    with torch.no_grad():
        next(enc.parameters()).add_(1e-3)
    assert not is_pretrained(enc, "somewhere")
    enc.load_state_dict(saved)  # the pretrained weights again (a study's restore)
    assert is_pretrained(enc, "somewhere")
    assert os.path.exists(tmp_path)


def test_a_checkpoint_written_before_head_revisions_rebuilds_its_old_default_head(data, tiny_encoder_dir, tmp_path):
    """DenseNet's default width changed (head_defaults 2: 128 channels; 1: the encoder's width). A
    checkpoint whose config has no head_defaults (written before it existed) was built as wide as
    the encoder and must load as such; a new one builds 128 channels."""
    kw = dict(strategy="stack-only", head_options={}, stack_epochs=1)
    Trainer(config(data, tmp_path / "new", tiny_encoder_dir, **kw)).fit()
    Trainer(config(data, tmp_path / "old", tiny_encoder_dir, head_defaults=1, **kw)).fit()
    new, _ = load_trained(RunDir(tmp_path / "new").best)
    width = new.encoder.hidden_size
    assert width != 128 and new.head.blocks[0].convs[0].out_channels == 128
    best = RunDir(tmp_path / "old").best
    meta = json.loads((best / ckpt.META_FILE).read_text())
    assert meta["config"].pop("head_defaults") == 1  # as a config.json of an earlier release has it
    (best / ckpt.META_FILE).write_text(json.dumps(meta))
    old, meta = load_trained(best)
    assert old.head.blocks[0].convs[0].out_channels == width
    assert TrainConfig.from_dict(meta["config"]).head_defaults == 1
