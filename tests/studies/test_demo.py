"""``stackft demo`` (the README's first command) end to end on a tiny random BERT: both strategies
train, the side-by-side table is printed, the summary JSON and the learning-curve plot are written."""

import json

from stackft import cli


def test_demo_quick_writes_summary_plot_and_table(tmp_path, tiny_encoder_dir, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--output-dir", str(out), "--device", "cpu",
                     "--encoder", str(tiny_encoder_dir)]) == 0
    printed = capsys.readouterr().out

    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["results"]) == {"finetune-only", "stack-and-finetune"}
    for name, res in summary["results"].items():
        assert res["status"] == "finished", name
        assert res["strategy"] == name
        assert 0.0 <= res["best"]["dev"]["f1"] <= 1.0
        assert (out / name / "summary.json").is_file() and (out / name / "best" / "model.safetensors").is_file()
    assert summary["train_sentences"] == 120 and summary["dev_sentences"] == 40  # --quick

    png = out / "learning_curves.png"
    assert summary["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000

    table = printed[printed.rindex("strategy"):]  # the table printed after both runs
    assert "dev F1" in table
    rows = [line.split()[0] for line in table.splitlines()[1:3]]
    assert rows == ["finetune-only", "stack-and-finetune"]
