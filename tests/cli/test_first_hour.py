"""The mistakes of a first hour with stackft, each one line and a non-zero exit, before anything loads.

Table-driven: every bad option or value below ends ``stackft <command>`` with exactly one line on
stderr (``stackft <command>: error: ...``, no traceback) that names the fix, exit code 2, and comes
before any encoder or data is loaded (the loaders are patched to fail the test, and the whole call
takes well under a second). Then the same checks through ``Trainer`` directly, and the console:
one-line warnings, the start-of-run summary, the F1's positive class.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
import warnings

import pytest
import torch
from helpers import DEMO_DATA, write_keyword_csv

from stackft import cli
from stackft.config import ConfigError, TrainConfig

TRAIN = str(DEMO_DATA / "conll_dev.txt")
HAS_PEFT = importlib.util.find_spec("peft") is not None
HAS_DATASETS = importlib.util.find_spec("datasets") is not None
CUDA = torch.cuda.is_available()


@pytest.fixture
def no_loading(monkeypatch):
    """Loading an encoder or reading data fails the test: the error must come first."""
    import stackft.data.pipeline as pipeline
    import stackft.training.trainer as trainer

    def loaded(*a, **k):
        raise AssertionError("an encoder or data was loaded before the error")

    for mod, name in ((trainer, "load_encoder"), (trainer, "load_run_data"), (pipeline, "read_examples"),
                      (trainer, "load_trained")):
        monkeypatch.setattr(mod, name, loaded)


def run_cli(argv) -> tuple[int, list[str], float]:
    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse usage errors
            code = e.code
    return code, err.getvalue().strip().splitlines(), time.perf_counter() - t


def train(tiny, out, *extra):
    return ["train", "--task", "ner", "--train-path", TRAIN, "--encoder", str(tiny), "--output-dir", str(out),
            "--no-progress", *extra]


# (extra train options, what the one line must say)
TRAIN_CASES = [
    (["--strategy", "stack-and-fine-tune"], "did you mean 'stack-and-finetune'?"),
    (["--strategy", "stak-only"], "did you mean 'stack-only'?"),
    (["--head", "bilstmm"], "did you mean 'bilstm'?"),
    (["--head", "bimpm"], "needs --task pairs"),
    (["--optimizer", "adamww"], "did you mean 'adamw'?"),
    (["--schedule", "cosin"], "did you mean 'cosine'?"),
    (["--stop-mode", "gap-se"], "did you mean 'gap_se'?"),
    (["--cache-dtype", "fp61"], "did you mean 'fp16'?"),
    (["--on-error", "skp"], "did you mean 'skip'?"),
    (["--clip-mode", "per-tensor"], "did you mean 'per_tensor'?"),
    (["--precision", "bf61"], "did you mean 'bf16'?"),
    (["--task", "nre"], "did you mean 'ner'?"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--eval-batch-size", "0"], "--eval-batch-size 0: must be at least 1"),
    (["--grad-accum", "0"], "--grad-accum 0: must be at least 1"),
    (["--dropout", "1.5"], "--dropout 1.5: must be in [0, 1)"),
    (["--warmup", "2"], "--warmup 2.0: must be in [0, 1]"),
    (["--phase1-lr", "-0.001"], "--phase1-lr -0.001: must be at least 0"),
    (["--dev-size", "0"], "--dev-size 0: must be a count"),
    (["--save-total-limit", "1"], "best/ and last/ are always kept"),
    (["--device", "gpu"], "--device gpu: must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:99" if CUDA else "cuda"], "--device cuda"),
    (["--head-options", '{"lstm_hiden": 64}'], "has no option 'lstm_hiden'; did you mean 'lstm_hidden'?"),
    (["--head-options", '{"dropout": 0.2}'], "with --dropout"),
    (["--max-length", "1000"], "--max-length 1000: above the 512 positions of the encoder"),
    (["--train-path", "data/conll2003/train.txt"], "data file not found: data/conll2003/train.txt"),
    (["--train-path", "./nowhere"], "data file not found: ./nowhere"),
    (["--dev-path", "missing-dev.txt"], "data file not found: missing-dev.txt"),
    pytest.param(["--strategy", "eh-ft"], "pip install peft",
                 marks=pytest.mark.skipif(HAS_PEFT, reason="peft is installed")),
    pytest.param(["--train-path", "conll2003"], "pip install datasets",
                 marks=pytest.mark.skipif(HAS_DATASETS, reason="datasets is installed")),
]


@pytest.mark.parametrize("extra, says", TRAIN_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_a_bad_train_option_is_one_line_before_anything_loads(extra, says, tiny_encoder_dir, tmp_path, no_loading):
    with pytest.raises(AssertionError, match="was loaded"):  # imports warmed up: a good command reaches the loader
        run_cli(train(tiny_encoder_dir, tmp_path / "warm"))
    code, err, seconds = run_cli(train(tiny_encoder_dir, tmp_path / "run", *extra))
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("stackft train: error: ") and "Traceback" not in err[0], err[0]
    assert says in err[0], err[0]
    assert seconds < 1.0, f"{seconds:.2f} s: the error should come before anything heavy"
    assert not (tmp_path / "run").exists()  # nothing written


OTHER_CASES = [
    (["trian"], "stackft: error:", "did you mean 'train'?"),
    (["cache", "lst"], "stackft cache: error:", "did you mean 'list'?"),
    (["eval", "runs/x/best", "--data", TRAIN, "--device", "cuda:99" if CUDA else "cuda"],
     "stackft eval: error:", "--device cuda"),
    (["eval", "runs/x/best", "--data", "missing.txt"], "stackft eval: error:", "data file not found: missing.txt"),
    (["demo", "--device", "cuda:99" if CUDA else "cuda"], "stackft demo: error:", "--device cuda"),
    (["trials", "--task", "ner", "--train-path", TRAIN, "--out", "study", "--batch-size", "0"],
     "stackft trials: error:", "--batch-size 0: must be at least 1"),
    (["trials", "--task", "ner", "--train-path", TRAIN, "--out", "study", "--strategy", "stack-onyl"],
     "stackft trials: error:", "did you mean 'stack-only'?"),
    (["cache", "build", "--task", "ner", "--train-path", TRAIN, "--head", "densenett"],
     "stackft cache build: error:", "did you mean 'densenet'?"),
]


@pytest.mark.parametrize("argv, prefix, says", OTHER_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_other_commands_fail_the_same_way(argv, prefix, says, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    code, err, seconds = run_cli(argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(prefix) and says in err[0], err
    assert seconds < 1.0
    assert not (tmp_path / "study").exists()


def test_the_trainer_checks_the_config_first(no_loading):
    from stackft.training.trainer import Trainer

    for cfg, says in ((TrainConfig(train_path=TRAIN, batch_size=0), "batch_size=0: must be at least 1"),
                      (TrainConfig(train_path=TRAIN, strategy="stak-only"), "did you mean 'stack-only'?"),
                      (TrainConfig(train_path=TRAIN, head_options={"nope": 1}), "has no option 'nope'")):
        with pytest.raises(ConfigError) as e:
            Trainer(cfg)
        assert says in str(e.value)


def test_validate_accepts_every_default_and_names_the_option():
    TrainConfig().validate()
    with pytest.raises(ConfigError) as e:
        TrainConfig(cache_dtype="fp8").validate()
    assert e.value.field == "cache_dtype" and e.value.option == "--cache-dtype"
    assert e.value.cli_message().startswith("--cache-dtype fp8: not a known cache dtype;")


def test_the_validate_literals_agree_with_their_modules():
    from stackft import config
    from stackft.modeling.heads import HEADS
    from stackft.tasks import ALIASES, TASKS

    assert set(config.TASK_NAMES) == set(TASKS) and set(config.TASK_ALIASES) == set(ALIASES)
    assert tuple(HEADS) == config.HEAD_NAMES


# -- the console --------------------------------------------------------------------------------------

def _train_out(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_start_summary_one_line_warnings_and_the_positive_class(tiny_encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STACKFT_CACHE_DIR", str(tmp_path / "cache"))
    data = write_keyword_csv(tmp_path / "kw.csv", 40)
    # the default warning display (pytest records warnings instead), with the CLI's one-line format
    monkeypatch.setattr(warnings, "showwarning", lambda m, c, f, n, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(m, c, f, n, line)))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out, err = _train_out(["train", "--task", "classification", "--strategy", "stack-and-finetune",
                                     "--train-path", data, "--encoder", str(tiny_encoder_dir), "--head", "linear",
                                     "--output-dir", str(tmp_path / "run"), "--no-progress", "--batch-size", "8",
                                     "--phase1-epochs", "1", "--phase2-epochs", "1", "--stack-epochs", "2",
                                     "--device", "cpu"])
    assert code == 0, err
    head = out.splitlines()[:7]
    assert head[0].startswith("stackft: stack-and-finetune on classification")
    assert "F1 of the positive class 'pos'" in head[0]
    text = "\n".join(head)
    for what in ("36 train / 4 dev examples", "device:  cpu", "threads", "phase1 (frozen encoder",
                 "x 5 steps of 8", "phase2 (fine-tune all", f"output:  {tmp_path / 'run'}",
                 f"cache:   {tmp_path / 'cache'}"):
        assert what in text, (what, text)
    assert "encoder features from the cache: " + str(tmp_path / "cache") in out  # the cache a run uses
    assert "(F1 of the positive class 'pos' " in out  # on every evaluation line
    # the ignored setting: one clean line, not a Python warning echoing its source line
    warned = [line for line in err.splitlines() if "stack_epochs" in line]
    assert warned == ["stackft train: warning: stack_epochs=2 is ignored by strategy 'stack-and-finetune' "
                      "(only stack-only reads it; phase 1 runs for at most phase1_epochs)"]
    assert "warnings.warn" not in err and "ConfigWarning" not in err
    assert "instead of Triton" not in err  # no GPU: nothing was given up


@pytest.mark.skipif(CUDA, reason="the fallback is worth a warning where a GPU could run Triton")
def test_no_triton_fallback_warning_without_a_gpu(recwarn):
    from stackft import kernels as K
    from stackft.kernels import _backend

    _backend._reset_warning()
    p, W = torch.randn(2, 3, 4), torch.randn(2, 4)
    K.multi_perspective_cosine(p, p, W)
    assert not [w for w in recwarn if "Triton" in str(w.message)]


def test_demo_options_and_the_extension_message(monkeypatch, tmp_path, capsys):
    from stackft import _ext
    from stackft.studies import demo

    args = cli.build_parser().parse_args(["demo", "--no-progress", "--quick"])
    assert args.progress is False and args.quick
    assert all(not c.progress for c in demo.demo_configs(tmp_path, progress=False).values())
    # the training settings do not depend on it
    on, off = demo.demo_configs(tmp_path), demo.demo_configs(tmp_path, progress=False)
    assert all(on[k].changed_for_resume(off[k].to_dict()) == [] for k in on)

    monkeypatch.setattr(_ext, "build_root", lambda: tmp_path / "ext")
    monkeypatch.setattr(_ext, "loaded", lambda: None)
    monkeypatch.setattr(_ext, "load_error", lambda: None)
    monkeypatch.setattr(_ext, "disabled", lambda: False)
    monkeypatch.setattr(_ext, "load", lambda verbose=None: None)
    demo.prepare_extension()
    out = capsys.readouterr().out
    assert out.startswith("compiling the stackft C++ extension (first use only") and str(tmp_path / "ext") in out


def test_every_option_of_every_command_has_help_and_no_escaped_percent():
    import argparse

    def walk(parser, name):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, sp in a.choices.items():
                    yield from walk(sp, f"{name} {sub}")
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                yield name, a

    missing = [f"{name} {a.option_strings or a.dest}" for name, a in walk(cli.build_parser(), "stackft") if not a.help]
    assert not missing
    with pytest.raises(SystemExit):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            cli.main(["train", "--help"])
    assert "%%" not in out.getvalue()
