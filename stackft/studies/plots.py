"""Plots: learning curves of runs (dev metric against training time and against steps)."""

from __future__ import annotations

from pathlib import Path

from stackft.run_dir import RunDir
from stackft.studies.expected import expected_max_curve


def read_metrics(run_dir) -> list[dict]:
    """The evaluation records of a run (``metrics.jsonl``)."""
    return RunDir(run_dir).read_metrics()


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


def plot_expected_max(curves: dict, out_png, *, budget_per_trial: dict | None = None, replacement: bool = True,
                      title: str = "", ylabel: str = "expected max dev score", xlabel: str | None = None) -> Path:
    """One line per label: expected max of n trials for n = 1..N, shaded E_n ± sd_n clipped to [min, max].

    ``curves``: ``{label: scores}``. ``budget_per_trial``: ``{label: mean cost of one trial}`` (e.g.
    seconds); with it the x axis is n x that cost, so strategies of different cost compare at equal
    budget.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, scores in curves.items():
        scores = [float(s) for s in scores]
        if not scores:
            continue
        rows = expected_max_curve(scores, replacement=replacement)
        scale = 1.0 if budget_per_trial is None else float(budget_per_trial[label])
        x = [n * scale for n, _, _ in rows]
        mean = [m for _, m, _ in rows]
        lo = [max(m - s, min(scores)) for _, m, s in rows]
        hi = [min(m + s, max(scores)) for _, m, s in rows]
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=f"{label} (N={len(scores)})")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel or ("budget (n x mean cost of a trial)" if budget_per_trial else "number of trials n"))
    ax.set_ylabel(ylabel)
    if budget_per_trial is None:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")  # wherever the curves and their bands leave room
    ax.set_title(title or "expected validation performance (shaded: ±1 sd, clipped to [min, max])", fontsize=9)
    from stackft.studies.plots import save_figure

    return save_figure(fig, out_png)
