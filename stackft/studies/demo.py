"""``stackft demo``: finetune-only vs stack-and-finetune on the bundled CoNLL-2003 excerpt.

The main job on the embedded defaults: the packaged all-MiniLM-L6-v2 and 1,200 train / 300 dev
CoNLL-2003 sentences shipped in ``stackft/demo_data`` (see its NOTICE.md). Runs on CPU in a few
minutes, prints both strategies side by side and writes ``learning_curves.png``.
"""

from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path

from stackft.config import TrainConfig
from stackft.data.pipeline import load_task_data
from stackft.modeling.encoders import load_encoder
from stackft.studies.plots import plot_learning_curves
from stackft.training.trainer import Trainer

DEMO_TRAIN = "conll_train.txt"
DEMO_DEV = "conll_dev.txt"


def demo_paths() -> tuple[str, str]:
    root = files("stackft") / "demo_data"
    return str(root / DEMO_TRAIN), str(root / DEMO_DEV)


def demo_configs(output_dir, *, encoder=None, quick=False, device="auto") -> dict[str, TrainConfig]:
    train, dev = demo_paths()
    common = dict(task="ner", train_path=train, dev_path=dev, encoder=encoder, device=device,
                  batch_size=16, max_length=128, evals_per_epoch=2, init_seed=0, data_seed=0)
    if quick:
        common.update(max_train=120, max_dev=40, evals_per_epoch=1)
    epochs = 1 if quick else 3
    return {
        "finetune-only": TrainConfig(strategy="finetune-only", phase2_lr=5e-5, phase2_head_lr=5e-5,
                                     phase2_epochs=epochs, output_dir=str(Path(output_dir) / "finetune-only"), **common),
        "stack-and-finetune": TrainConfig(strategy="stack-and-finetune", phase1_lr=1e-3, phase1_epochs=epochs,
                                          phase2_lr=5e-5, phase2_epochs=epochs,
                                          output_dir=str(Path(output_dir) / "stack-and-finetune"), **common),
    }


def run_demo(output_dir="runs/demo", *, encoder=None, quick=False, device="auto") -> dict:
    """Train both strategies, print a side-by-side table, write summary JSON and the plot."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc = load_encoder(encoder)
    configs = demo_configs(out, encoder=encoder, quick=quick, device=device)
    first = next(iter(configs.values()))
    data = load_task_data("ner", first.train_path, first.dev_path, tokenizer=enc.tokenizer,
                          max_length=first.max_length, max_train=first.max_train, max_dev=first.max_dev)
    pristine = {k: v.clone() for k, v in enc.state_dict().items()}
    results = {}
    for name, cfg in configs.items():
        enc.load_state_dict(pristine)  # each strategy starts from the pretrained weights
        print(f"\n== {name} ==")
        t = time.perf_counter()
        summary = Trainer(cfg, encoder=enc, data=data).fit()
        summary["wall_time"] = time.perf_counter() - t
        results[name] = summary
    total = time.perf_counter() - t0
    print_table(results)
    png = plot_learning_curves({n: c.output_dir for n, c in configs.items()}, out / "learning_curves.png",
                               metric="f1", title="CoNLL-2003 demo excerpt, all-MiniLM-L6-v2: dev entity F1")
    report = {"results": results, "total_wall_time": total, "plot": str(png),
              "train_sentences": len(data.train), "dev_sentences": len(data.dev)}
    (out / "demo_summary.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nplot: {png}\nsummary: {out / 'demo_summary.json'}\ntotal wall time: {total:.0f} s")
    return report


def print_table(results: dict) -> None:
    print(f"\n{'strategy':<20} {'dev F1':>7} {'dev acc':>8} {'best at':>16} {'phase times (s)':>28}")
    for name, s in results.items():
        best = s["best"]
        times = ", ".join(f"{k} {v:.0f}" for k, v in s["phase_times"].items())
        print(f"{name:<20} {100 * best['dev']['f1']:7.2f} {100 * best['dev']['accuracy']:8.2f} "
              f"{best['phase'] + ' step ' + str(best['step']):>16} {times:>28}")
