"""The ``stackft`` command line end to end: train -> eval on small CoNLL data with a tiny random BERT folder,
error handling (exit code 2 and one line naming file:line), help, and the installed console script."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEMO_DATA, FIXTURES

from stackft import cli
from stackft.cli.args import config_from_args
from stackft.data.conll import read_conll


def train_args(tiny_encoder_dir, out, *extra):
    return ["train", "--encoder", str(tiny_encoder_dir), "--cache", "off", "--no-progress", "--device", "cpu",
            "--output-dir", str(out), "--batch-size", "8", "--eval-batch-size", "16", *extra]


def last_json(text: str) -> dict:
    """The JSON object the command printed last (training prints progress lines before it)."""
    start = 0 if text.startswith("{\n") else text.rindex("\n{\n") + 1  # nested objects never start a line
    return json.loads(text[start:])


@pytest.fixture(scope="module")
def ner_run(tiny_encoder_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    args = train_args(tiny_encoder_dir, out, "--task", "ner", "--strategy", "stack-and-finetune",
                      "--train-path", str(DEMO_DATA / "conll_train.txt"), "--max-train", "24",
                      "--dev-path", str(FIXTURES / "conll_small.txt"),
                      "--head-options", '{"lstm_hidden": 16}', "--phase1-epochs", "1", "--phase2-epochs", "1",
                      "--phase1-lr", "3e-3", "--seed", "3")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(args)
    return out, code, stdout.getvalue()


def test_train_then_eval(ner_run, capsys):
    out, code, printed = ner_run
    assert code == 0
    summary = last_json(printed)
    assert summary["status"] == "finished" and summary["task"] == "ner" and summary["head"] == "bilstm"
    assert (summary["init_seed"], summary["data_seed"]) == (3, 3)  # --seed sets both
    assert summary == json.loads((out / "summary.json").read_text())
    for d in ("best", "last", "phase1_end", "encoder"):
        assert (out / d).is_dir(), d
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["head_options"] == {"lstm_hidden": 16} and cfg["max_train"] == 24 and cfg["cache"] == "off"
    assert cfg["phase1_lr"] == 3e-3 and cfg["progress"] is False and cfg["layers"] == [-1]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["phase"] for x in lines] == ["phase1", "phase1", "phase2", "phase2"]  # 3 steps: evals at 2, 3

    # eval on the dev file: the same numbers the run selected its best checkpoint on
    assert cli.main(["eval", str(out / "best"), "--data", str(FIXTURES / "conll_small.txt")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["checkpoint"] == str(out / "best")
    assert metrics["n"] == len(read_conll(FIXTURES / "conll_small.txt"))
    assert {"f1", "precision", "recall", "accuracy"} <= set(metrics)
    assert metrics["f1"] == pytest.approx(summary["best"]["score"])
    for k, v in summary["best"]["dev"].items():
        assert metrics[k] == pytest.approx(v), k


def test_eval_without_the_encoder_files_of_the_run(ner_run, tmp_path, capsys):
    # a checkpoint folder copied away from its run (no ../encoder): a clear error, exit 2
    out = ner_run[0]
    lone = tmp_path / "copy" / "best"
    shutil.copytree(out / "best", lone)
    assert cli.main(["eval", str(lone), "--data", str(FIXTURES / "conll_small.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stackft eval: error:") and "encoder" in err


def test_malformed_training_file_exit_code_2_names_file_and_line(tiny_encoder_dir, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a fine text,sports\nanother one,food\nthis row,has,three columns\n")
    code = cli.main(train_args(tiny_encoder_dir, tmp_path / "run", "--task", "classification", "--train-path", str(bad)))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("stackft train: error:") and f"{bad}:3:" in err[0] and "columns" in err[0]


def test_malformed_eval_file_exit_code_2(ner_run, tmp_path, capsys):
    out = ner_run[0]
    bad = tmp_path / "bad.conll"
    bad.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nGerman JJ B-NP Q-MISC\n")
    assert cli.main(["eval", str(out / "best"), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "Q-MISC" in err


def test_missing_files_exit_code_2(tiny_encoder_dir, tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert cli.main(train_args(tiny_encoder_dir, tmp_path / "run", "--task", "ner", "--train-path", str(missing))) == 2
    assert str(missing) in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "no-run" / "best"), "--data", str(FIXTURES / "conll_small.txt")]) == 2
    assert "no-run" in capsys.readouterr().err
    assert cli.main(train_args(tmp_path / "no-encoder", tmp_path / "run", "--train-path",
                               str(FIXTURES / "conll_small.txt"))) == 2
    assert "no-encoder" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "train" in text and "eval" in text and "demo" in text
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--phase1-lr", "--phase2-lr", "--stop-mode", "--gap-tol", "--layer-decay", "--max-steps-this-run",
                 "--no-progress", "--resume", "--seed", "--init-seed", "--data-seed", "--clip-mode"):
        assert flag in text, flag


def test_bad_option_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--layers", "a,b"])
    assert e.value.code == 2
    assert "--layers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--head-options", "[1, 2]"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main([])  # a command is required
    assert e.value.code == 2


def test_config_from_args_types():
    p = cli.build_parser()
    args = p.parse_args(["train", "--train-path", "x", "--layers=-2,-1", "--max-train", "10", "--dev-size", "0.2",
                         "--phase2-head-lr", "1e-4", "--no-progress", "--max-steps-this-run", "5"])
    cfg = config_from_args(args)
    assert cfg.layers == (-2, -1) and cfg.max_train == 10 and cfg.dev_size == 0.2 and cfg.phase2_head_lr == 1e-4
    assert cfg.progress is False and cfg.max_steps_this_run == 5 and cfg.train_path == "x"
    assert config_from_args(p.parse_args(["train"])) == type(cfg)()  # defaults are TrainConfig's


def test_layers_option_takes_negative_indices_as_separate_argument():
    args = cli.build_parser().parse_args(["train", "--layers", "-2,-1"])
    assert args.layers == (-2, -1)


def test_dev_size_accepts_a_count_or_a_fraction(tiny_encoder_dir, tmp_path):
    p = cli.build_parser()
    assert config_from_args(p.parse_args(["train", "--dev-size", "4"])).dev_size == 4
    assert isinstance(config_from_args(p.parse_args(["train", "--dev-size", "4"])).dev_size, int)
    assert config_from_args(p.parse_args(["train", "--dev-size", "0.25"])).dev_size == 0.25
    data = tmp_path / "kw.csv"
    data.write_text("".join(f"{w} and the {i},{'sports' if w == 'football' else 'food'}\n"
                            for i in range(10) for w in ("football", "pizza")))
    out = tmp_path / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(train_args(tiny_encoder_dir, out, "--task", "classification", "--strategy", "stack-only",
                                   "--train-path", str(data), "--dev-size", "4", "--head", "linear",
                                   "--stack-epochs", "1", "--evals-per-epoch", "1"))
    assert code == 0
    assert json.loads((out / "config.json").read_text())["dev_size"] == 4
    assert last_json(stdout.getvalue())["status"] == "finished"


def test_console_script_help():
    exe = shutil.which("stackft") or str(Path(sys.executable).parent / "stackft")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage: stackft" in res.stdout and "train" in res.stdout
