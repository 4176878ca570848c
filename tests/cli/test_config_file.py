"""``stackft train --config FILE`` (YAML or JSON): the file's settings, the command line winning whatever
the order; every run folder's config.json is a valid config file; bad files are one-line usage errors."""

import contextlib
import dataclasses
import io
import json
import sys

import pytest
from helpers import DEMO_DATA, FIXTURES

from stackft import cli
from stackft.cli import build_parser
from stackft.cli.args import config_from_args
from stackft.config import TrainConfig


def parse(*argv):
    return build_parser().parse_args(["train", *argv])


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_json_settings_and_command_line_overrides_in_any_order(tmp_path):
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"task": "classification", "train_path": "t.csv", "phase2_lr": 3e-5, "batch_size": 8,
                             "layers": [-2, -1], "head_options": {"channels": 4}, "progress": False, "seed": 5}))
    args = parse("--config", str(f))
    cfg = config_from_args(args)
    assert (cfg.task, cfg.train_path, cfg.phase2_lr, cfg.batch_size) == ("classification", "t.csv", 3e-5, 8)
    assert cfg.layers == (-2, -1) and cfg.head_options == {"channels": 4} and cfg.progress is False
    assert args.seed == 5 and cfg.dropout == TrainConfig().dropout  # unset: the default
    for argv in (["--batch-size", "16", "--config", str(f)], ["--config", str(f), "--batch-size", "16"],
                 [f"--config={f}", "--batch-size", "16", "--progress"]):
        cfg = config_from_args(parse(*argv))
        assert cfg.batch_size == 16 and cfg.phase2_lr == 3e-5, argv
    assert config_from_args(parse(f"--config={f}", "--progress")).progress is True


def test_yaml_with_its_string_floats_lists_and_dashes(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "run.yaml"
    f.write_text("# a run\ntask: ner\ntrain-path: data/train.txt\nphase1_lr: 1e-3\nphase2_lr: 5.0e-5\n"
                 "layers: [-1]\ndev_size: 0.2\nmax_train: null\nhead_options:\n  lstm_hidden: 16\n"
                 "strategy: finetune-only\nresume: true\n")
    args = parse("--config", str(f))
    cfg = config_from_args(args)
    assert cfg.phase1_lr == 1e-3 and isinstance(cfg.phase1_lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.phase2_lr == 5e-5 and cfg.layers == (-1,) and cfg.dev_size == 0.2 and cfg.max_train is None
    assert cfg.head_options == {"lstm_hidden": 16} and cfg.strategy == "finetune-only" and args.resume is True


def test_every_field_round_trips_through_a_run_folders_config_json(tmp_path):
    """What the trainer writes (``cfg.to_json()``) reads back as the same TrainConfig."""
    changed = TrainConfig(task="pairs", strategy="lp-ft", head="bimpm", head_options={"perspectives": 4},
                          encoder="some/encoder", layers=(-3, -1), dropout=0.25, train_path="a.tsv", dev_path="b.tsv",
                          max_length=64, pair_mode="siamese", dev_size=300, split_seed=3, max_train=100, max_dev=50,
                          batch_size=4, eval_batch_size=8, max_tokens=512, on_error="skip", phase1_lr=0.002,
                          phase2_lr=4e-5, phase2_head_lr=1e-4, stop_mode="gap_se", optimizer="adamw",
                          schedule="cosine", clip=0.5, clip_mode="per_tensor", init_seed=7, data_seed=8,
                          cache="off", cache_dtype="int8", device="cpu", precision="fp32", grad_accum=2,
                          output_dir="runs/x", save_every=10, max_steps_this_run=5, stop_after_phase=0,
                          progress=False, report_to="tensorboard")
    f = tmp_path / "config.json"
    f.write_text(changed.to_json())
    assert config_from_args(parse("--config", str(f))) == changed
    default = tmp_path / "default.json"
    default.write_text(TrainConfig().to_json())
    assert config_from_args(parse("--config", str(default))) == TrainConfig()
    assert {fl.name for fl in dataclasses.fields(TrainConfig)} <= set(json.loads(f.read_text()))


def test_a_run_folders_config_json_repeats_the_run(tiny_encoder_dir, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--encoder", str(tiny_encoder_dir), "--cache", "off", "--no-progress", "--device", "cpu"]
    argv = ["train", *common, "--task", "ner", "--strategy", "finetune-only", "--train-path",
            str(DEMO_DATA / "conll_train.txt"), "--max-train", "16", "--dev-path", str(FIXTURES / "conll_small.txt"),
            "--phase2-epochs", "1", "--batch-size", "8", "--max-length", "32", "--output-dir", str(first)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(argv) == 0
        assert cli.main(["train", "--config", str(first / "config.json"), "--output-dir", str(second)]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert b.pop("output_dir") == str(second) and a.pop("output_dir") == str(first) and a == b
    metrics = [json.loads(line)["dev"]["f1"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [json.loads(line)["dev"]["f1"] for line in (first / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("content, message", [
    ('{"phase2_lr": 1e-5, "batchsize": 8}', "unknown setting 'batchsize' (did you mean 'batch_size'?)"),
    ('{"batch_size": "many"}', "batch_size: invalid int value"),
    ('{"strategy": "both"}', "strategy: 'both' is not one of"),
    ('{"progress": "yes"}', "progress: expected true or false"),
    ('{"max_length": null}', "max_length: null is not allowed"),
    ('[1, 2]', "expected a mapping of option names to values"),
    ('{"task": ', "not valid JSON"),
])
def test_bad_config_files_are_one_line_usage_errors(tmp_path, capsys, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content)
    err = usage_error(["train", "--config", str(f)], capsys)
    assert err.startswith("stackft train: error: --config ") and message in err, err


def test_missing_file_and_abbreviated_option(tmp_path, capsys):
    assert "no such file" in usage_error(["train", "--config", str(tmp_path / "nope.yaml")], capsys)
    f = tmp_path / "ok.json"
    f.write_text("{}")
    assert "write --config in full" in usage_error(["train", "--conf", str(f)], capsys)


def test_yaml_without_pyyaml_says_how_to_get_it_and_json_still_works(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    y = tmp_path / "run.yml"
    y.write_text("batch_size: 8\n")
    err = usage_error(["train", "--config", str(y)], capsys)
    assert "need PyYAML: pip install pyyaml" in err and "JSON" in err
    j = tmp_path / "run.json"
    j.write_text('{"batch_size": 8}')
    assert config_from_args(parse("--config", str(j))).batch_size == 8
