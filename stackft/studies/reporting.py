"""Text report (mean, sd, expected max) and plot of seed studies."""

from __future__ import annotations

import math
import os
from pathlib import Path

from stackft.studies.expected import expected_max_curve
from stackft.studies.plots import plot_expected_max
from stackft.studies.study import load_summaries


def report(out_dirs, *, plot: str | Path | None = None, x: str = "n", replacement: bool = True) -> str:
    """A text report of one or more study folders: mean ± std, the expected max table, the plot.

    ``x``: ``"n"`` (number of trials) or ``"time"`` (n x mean seconds of a trial) for the plot.
    ``plot``: where to write the PNG (None: no plot).
    """
    if isinstance(out_dirs, (str, os.PathLike)):
        out_dirs = [out_dirs]
    lines, curves, budgets = [], {}, {}
    for out_dir in out_dirs:
        summaries = load_summaries(out_dir)
        if not summaries:
            raise FileNotFoundError(f"{out_dir}: no trials (no trial-*/trial.json)")
        finished = [s for s in summaries if s.get("status") == "finished" and s.get("best_score") is not None]
        strategies = sorted({str(s.get("strategy")) for s in summaries})
        label = Path(out_dir).name if len(out_dirs) > 1 else "/".join(strategies)
        if label in curves:
            label = str(out_dir)
        metric = summaries[0].get("metric") or "score"
        counts: dict[str, int] = {}
        for s in summaries:
            counts[s.get("status", "?")] = counts.get(s.get("status", "?"), 0) + 1
        lines.append(f"== {out_dir} ({', '.join(strategies)}; dev {metric}) ==")
        lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        if not finished:
            lines.append("no finished trials")
            continue
        scores = [s["best_score"] for s in finished]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((v - mean) ** 2 for v in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
        times = [s.get("time") or 0.0 for s in finished]
        lines.append(f"best dev {metric} over {len(scores)} finished trials: mean {mean:.4f} ± {sd:.4f} (sample sd), "
                     f"min {min(scores):.4f}, max {max(scores):.4f}; mean time {sum(times) / len(times):.1f} s")
        everything = [s.get("best_score") if s.get("best_score") is not None else s.get("best_dev_seen")
                      for s in summaries]
        everything = [v for v in everything if v is not None]
        if len(everything) > len(scores):
            lines.append(f"study best incl. discarded/partial trials: {max(everything):.4f}")
        if len(scores) < 5:
            lines.append("fewer than 5 trials: raw scores " + ", ".join(f"{v:.4f}" for v in scores))
        lines.append(f"{'n':>4} {'E[max]':>8} {'sd':>8}")
        for n, m, s in expected_max_curve(scores, replacement=replacement):
            lines.append(f"{n:>4} {m:>8.4f} {s:>8.4f}")
        curves[label] = scores
        budgets[label] = sum(times) / len(times)
    if plot is not None and curves:
        plot_expected_max(curves, plot, replacement=replacement,
                          budget_per_trial=budgets if x == "time" else None,
                          xlabel="budget: n x mean seconds per trial" if x == "time" else None)
        lines.append(f"plot: {plot}")
    return "\n".join(lines)
