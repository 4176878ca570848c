"""Bad input through the CLI: a clean error naming file and line, or skipped and counted."""

import json

import pytest
from helpers import write_keyword_csv

from stackft.cli import main


def test_bad_rows_raise_or_are_skipped_and_counted(tmp_path, tiny_encoder_dir, capsys):
    train = tmp_path / "train.csv"
    write_keyword_csv(train, 30, 0)
    lines = train.read_text().splitlines()
    lines.insert(7, "only one column")  # line 8
    lines.insert(12, 'a,"b,c,d')  # unterminated quote
    train.write_text("\n".join(lines) + "\n")
    args = ["train", "--task", "classification", "--strategy", "finetune-only", "--train-path", str(train),
            "--dev-size", "6", "--encoder", str(tiny_encoder_dir), "--phase2-epochs", "1", "--batch-size", "8", "--cache", "off",
            "--no-progress", "--device", "cpu"]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert f"{train}:8:" in err and "error" in err
    with pytest.warns(UserWarning, match="skipped 2 bad"):
        assert main([*args, "--output-dir", str(tmp_path / "b"), "--on-error", "skip"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["skipped_input"] == {str(train): 2}
