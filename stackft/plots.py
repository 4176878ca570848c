"""Plots: learning curves of runs (dev metric against training time and against steps)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(run_dir) -> list[dict]:
    """The evaluation records of a run (``metrics.jsonl``)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(records: list[dict], metric: str):
    """(elapsed seconds, global step, dev score, phase) per evaluation, time summed over phases."""
    offset, last_phase, prev_time, out = 0.0, None, 0.0, []
    for r in records:  # phase times exclude the one-time cache build (logged separately)
        if r["phase"] != last_phase and last_phase is not None:
            offset += prev_time
        last_phase, prev_time = r["phase"], r["time"]
        out.append((offset + r["time"], r["global_step"], r["dev"][metric], r["phase"]))
    return out


def plot_learning_curves(runs: dict[str, str | Path], out_png, metric: str = "f1", title: str = "") -> Path:
    """One line per run: dev ``metric`` against wall time (left) and optimizer steps (right).

    Phase boundaries are marked with a hollow marker on the first evaluation of each later phase.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, run_dir in runs.items():
        pts = _curve(read_metrics(run_dir), metric)
        if not pts:
            continue
        t, s, y, ph = zip(*pts)
        for ax, x in ((axes[0], t), (axes[1], s)):
            (line,) = ax.plot(x, y, marker="o", ms=3, label=name)
            for i in range(1, len(ph)):
                if ph[i] != ph[i - 1]:
                    ax.plot(x[i], y[i], marker="s", ms=9, mfc="none", color=line.get_color())
    axes[0].set_xlabel("training time incl. evaluation (s)")
    axes[1].set_xlabel("optimizer steps")
    for ax in axes:
        ax.set_ylabel(f"dev {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", title="square: start of phase 2")
    fig.suptitle(title or f"learning curves (dev {metric})")
    return save_figure(fig, out_png)


def save_figure(fig, out_png) -> Path:
    """Lay out, write as PNG (creating folders) and close ``fig``; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
