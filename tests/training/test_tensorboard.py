"""TensorBoard logging (stackft.training.tensorboard): what a run logs, through an injected writer; that
``report_to="tensorboard"`` attaches it; one clear error without tensorboard; and, where tensorboard is
installed, real event files beside metrics.jsonl that TensorBoard's reader parses."""

import contextlib
import io
import json
import sys
from collections import defaultdict

import pytest
from helpers import write_keyword_csv

from stackft import config
from stackft.config import TrainConfig
from stackft.training import tensorboard as tb
from stackft.training.tensorboard import TensorBoardCallback, TensorBoardUnavailable


class FakeWriter:
    def __init__(self, log_dir, purge_step):
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars = defaultdict(list)  # tag -> [(step, value)]
        self.texts = defaultdict(list)
        self.flushes, self.closed = 0, False

    def add_scalar(self, tag, value, step):
        assert isinstance(value, float) or isinstance(value, int)
        self.scalars[tag].append((step, value))

    def add_text(self, tag, text, step):
        self.texts[tag].append((step, text))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    return write_keyword_csv(tmp_path_factory.mktemp("tb") / "kw.csv", 48, 0)


def _cfg(csv_file, out, **kw):
    base = dict(task="classification", strategy="stack-and-finetune", head="fc", train_path=csv_file, dev_size=16,
                max_length=16, batch_size=8, phase1_epochs=1, phase2_epochs=1, evals_per_epoch=2, phase1_lr=1e-2,
                phase2_lr=1e-3, cache="off", progress=False, device="cpu", output_dir=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _fit(cfg, make_tiny_encoder, callbacks=()):
    from stackft.training.trainer import Trainer

    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(cfg, encoder=make_tiny_encoder(), callbacks=callbacks)
        trainer.fit()
    return trainer


def test_a_run_logs_loss_lrs_scores_and_phase_boundaries(csv_file, make_tiny_encoder, tmp_path):
    writers = []

    def factory(log_dir, purge_step):
        writers.append(FakeWriter(log_dir, purge_step))
        return writers[-1]

    trainer = _fit(_cfg(csv_file, tmp_path / "run"), make_tiny_encoder, [TensorBoardCallback(writer_factory=factory)])
    (w,) = writers
    assert w.log_dir == trainer.run_dir.root and w.purge_step is None and w.closed  # beside metrics.jsonl
    steps = trainer.pos.global_step
    assert [s for s, _ in w.scalars["train/loss"]] == list(range(1, steps + 1))
    history = trainer.history
    p1 = [r for r in history if r["phase"] == "phase1"]
    p2 = [r for r in history if r["phase"] == "phase2"]
    assert p1 and p2
    # dev and train-probe scores at every evaluation, the numbers of metrics.jsonl
    assert w.scalars["dev/accuracy"] == [(r["global_step"], r["dev"]["accuracy"]) for r in history]
    assert w.scalars["train_probe/accuracy"] == [(r["global_step"], r["train"]["accuracy"]) for r in p1]
    # per-group learning rates: the head in both phases, the encoder's layers only once they train
    head = dict(w.scalars["lr/head"])
    phase1_end = max(s for s, index in w.scalars["phase/index"] if index == 0)
    assert 0 < max(v for s, v in head.items() if s <= phase1_end) <= 1e-2
    assert 0 < max(v for s, v in head.items() if s > phase1_end) <= 1e-2  # 10x phase2_lr 1e-3
    enc_tags = {t for t in w.scalars if t.startswith("lr/encoder.layer")}
    assert {"lr/encoder.layer0", "lr/encoder.layer1", "lr/encoder.layer2"} <= enc_tags
    assert all(s > phase1_end for t in enc_tags for s, _ in w.scalars[t])
    # phase boundaries: phase/index at each phase's first and last step, and a text entry for each
    assert [v for _, v in w.scalars["phase/index"]] == [0, 0, 1, 1]
    marks = [text for _, text in w.texts["phases"]]
    assert len(marks) == 4 and "**phase1** starts" in marks[0] and "encoder frozen" in marks[0]
    assert "**phase1** ends" in marks[1] and "**phase2** starts" in marks[2] and "encoder lr" in marks[2]
    assert json.loads(w.texts["config"][0][1].strip("`").removeprefix("json\n"))["strategy"] == "stack-and-finetune"
    assert w.texts["summary"] and w.flushes >= len(history)


def test_resume_purges_what_comes_after_the_checkpoint(csv_file, make_tiny_encoder, tmp_path):
    writers = []

    def factory(log_dir, purge_step):
        writers.append(FakeWriter(log_dir, purge_step))
        return writers[-1]

    cfg = _cfg(csv_file, tmp_path / "run", strategy="finetune-only", max_steps_this_run=3)
    _fit(cfg, make_tiny_encoder, [TensorBoardCallback(writer_factory=factory)])
    assert writers[0].flushes >= 1  # an interrupted run flushes when it saves last/
    from stackft.training.trainer import Trainer

    cfg.max_steps_this_run = None
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(cfg, encoder=make_tiny_encoder(), callbacks=[TensorBoardCallback(writer_factory=factory)]).fit(
            resume=True)
    assert writers[1].purge_step == 3
    assert writers[1].scalars["train/loss"][0][0] == 4


def test_report_to_attaches_the_callback_once(csv_file, make_tiny_encoder, tmp_path, monkeypatch):
    from stackft.training.trainer import Trainer

    monkeypatch.setattr(tb, "summary_writer_class", lambda: FakeWriter)
    t = Trainer(_cfg(csv_file, tmp_path / "a", report_to="tensorboard"), encoder=make_tiny_encoder())
    assert sum(isinstance(cb, TensorBoardCallback) for cb in t.callbacks.callbacks) == 1
    mine = TensorBoardCallback(writer_factory=FakeWriter)
    t = Trainer(_cfg(csv_file, tmp_path / "b", report_to="tensorboard"), encoder=make_tiny_encoder(), callbacks=[mine])
    assert [cb for cb in t.callbacks.callbacks if isinstance(cb, TensorBoardCallback)] == [mine]
    t = Trainer(_cfg(csv_file, tmp_path / "c"), encoder=make_tiny_encoder())
    assert not any(isinstance(cb, TensorBoardCallback) for cb in t.callbacks.callbacks)
    assert config.REPORT_TO == tb.REPORT_TO and TrainConfig().report_to == "none"
    assert "report_to" in TrainConfig.RESUMABLE_CHANGES  # logging may be switched on for a resumed run


def test_without_tensorboard_one_clear_error(csv_file, make_tiny_encoder, tmp_path, monkeypatch, tiny_encoder_dir):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardCallback()
    from stackft.training.trainer import Trainer

    with pytest.raises(TensorBoardUnavailable, match="pip install tensorboard"):
        Trainer(_cfg(csv_file, tmp_path / "run", report_to="tensorboard"), encoder=make_tiny_encoder())
    assert not (tmp_path / "run").exists()  # before any training
    from stackft import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["train", "--task", "classification", "--train-path", csv_file, "--encoder",
                         str(tiny_encoder_dir), "--report-to", "tensorboard", "--output-dir", str(tmp_path / "cli")])
    assert code == 2 and err.getvalue().count("\n") == 1 and "pip install tensorboard" in err.getvalue()


def test_real_event_files_beside_metrics_jsonl(csv_file, make_tiny_encoder, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _fit(_cfg(csv_file, tmp_path / "run", report_to="tensorboard"), make_tiny_encoder)
    root = trainer.run_dir.root
    events = list(root.glob("events.out.tfevents.*"))
    assert events and (root / "metrics.jsonl").exists()
    acc = EventAccumulator(str(root))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "lr/head", "dev/accuracy", "train_probe/accuracy", "phase/index"} <= tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, trainer.pos.global_step + 1))
    dev = [(e.step, round(e.value, 5)) for e in acc.Scalars("dev/accuracy")]
    assert dev == [(r["global_step"], round(r["dev"]["accuracy"], 5)) for r in trainer.history]
