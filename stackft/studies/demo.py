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
from stackft.studies.demo_eta import TimeLeft
from stackft.studies.plots import plot_learning_curves
from stackft.training.trainer import Trainer

DEMO_TRAIN = "conll_train.txt"
DEMO_DEV = "conll_dev.txt"


def demo_paths() -> tuple[str, str]:
    root = files("stackft") / "demo_data"
    return str(root / DEMO_TRAIN), str(root / DEMO_DEV)


def demo_configs(output_dir, *, encoder=None, quick=False, device="auto", progress=True) -> dict[str, TrainConfig]:
    train, dev = demo_paths()
    common = dict(task="ner", train_path=train, dev_path=dev, encoder=encoder, device=device,
                  batch_size=16, max_length=128, evals_per_epoch=2, init_seed=0, data_seed=0, progress=progress)
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


def run_demo(output_dir="runs/demo", *, encoder=None, quick=False, device="auto", progress=True) -> dict:
    """Train both strategies, print a side-by-side table, write summary JSON and the plot.

    ``progress=False``: no progress bars (evaluation lines and the summaries still print)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare_extension()
    enc = load_encoder(encoder)
    configs = demo_configs(out, encoder=encoder, quick=quick, device=device, progress=progress)
    first = next(iter(configs.values()))
    data = load_task_data("ner", first.train_path, first.dev_path, tokenizer=enc.tokenizer,
                          max_length=first.max_length, max_train=first.max_train, max_dev=first.max_dev)
    pristine = {k: v.clone() for k, v in enc.state_dict().items()}
    time_left = TimeLeft(configs, n_train=len(data.train))  # prints the whole demo's remaining time
    results = {}
    for name, cfg in configs.items():
        enc.load_state_dict(pristine)  # each strategy starts from the pretrained weights
        print(f"\n== {name} ==")
        t = time.perf_counter()
        # a rerun replaces the demo's runs
        summary = Trainer(cfg, encoder=enc, data=data, callbacks=[time_left]).fit(overwrite=True)
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


def prepare_extension() -> None:
    """Load the C++ extension the feature cache uses now, saying so when it has to be compiled first
    (the first run after installing: about a minute), instead of pausing silently mid-run."""
    from stackft import _ext

    if _ext.disabled() or _ext.loaded() is not None or _ext.load_error() is not None:
        return
    build_dir = _ext.build_root() / _ext.build_key(_ext.want_cuda())
    compiled = build_dir.is_dir() and any(build_dir.glob("*.so"))
    if not compiled:
        print(f"compiling the stackft C++ extension (first use only, about a minute; kept in {build_dir}) ...",
              flush=True)
    t = time.perf_counter()
    info = _ext.load()
    if not compiled:
        print(f"extension {'ready' if info is not None else 'not built: the pure-PyTorch fallback runs'} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)


#: what ``stackft demo-data FOLDER`` writes: bundled file -> path under FOLDER
DEMO_DATA_FILES = {
    DEMO_TRAIN: "conll2003-excerpt/train.txt",
    DEMO_DEV: "conll2003-excerpt/dev.txt",
    "toy_pairs.tsv": "toy/pairs.tsv",
    "toy_classification.csv": "toy/classification.csv",
    "NOTICE.md": "NOTICE.md",
}


def export_demo_data(folder="data", *, overwrite: bool = False) -> dict[str, Path]:
    """Copy the bundled data into ``folder`` as plain files (the README's commands read them there).

    Returns ``{bundled name: written path}``. An existing file with other contents is left alone
    (FileExistsError) unless ``overwrite``.
    """
    root = files("stackft") / "demo_data"
    out = {}
    for name, rel in DEMO_DATA_FILES.items():
        data = (root / name).read_bytes()
        target = Path(folder) / rel
        if target.exists() and target.read_bytes() != data and not overwrite:
            raise FileExistsError(f"{target} exists with other contents (pass --overwrite to replace it)")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        out[name] = target
    return out
