"""Plots: learning curves of runs (dev metric against training time and against steps)."""

from __future__ import annotations

from pathlib import Path

from stackft.run_dir import RunDir
from stackft.studies.expected import expected_max_curve


def read_metrics(run_dir) -> list[dict]:
    """The evaluation records of a run (``metrics.jsonl``)."""
    return RunDir(run_dir).read_metrics()


def _chosen_step(records: list[dict]) -> int | None:
    """The step of the evaluation a phase's stop rule chose (its last record's ``stop_rule``)."""
    for r in reversed(records):
        step = (r.get("stop_rule") or {}).get("chosen_step")
        if step is not None:
            return step
    return None


def run_segments(records: list[dict], phase_times: dict | None = None, metric: str = "f1") -> list[dict]:
    """What a run did, phase by phase, on a time axis that counts everything it spent.

    One dict per phase, in order: ``name``; ``cache`` (``(start, end)`` seconds of the feature-cache
    build before the phase, or None); ``points``: ``(seconds, global step, dev score)`` of its
    evaluations; ``kept``: how many of those points lead to the model the run went on with (a
    phase that ends on its stop rule's choice discards the evaluations after it); ``start``: the
    point the phase starts from (``(seconds, global step, dev score)`` of the previous phase's
    chosen evaluation, at the time and step the previous phase ended), or None for the first phase.

    Times: each phase's own clock (``record["time"]``, which leaves out the cache build) shifted by
    everything before it, the cache builds included (``phase_times[f"{phase}_cache"]``); a phase
    lasts ``phase_times[phase]`` (else until its last evaluation).
    """
    phase_times = phase_times or {}
    by_phase: dict[str, list[dict]] = {}
    for r in records:
        by_phase.setdefault(r["phase"], []).append(r)
    names = list(by_phase)
    segments, offset, carry = [], 0.0, None
    for k, name in enumerate(names):
        recs = by_phase[name]
        cache = None
        if phase_times.get(f"{name}_cache"):
            cache = (offset, offset + float(phase_times[f"{name}_cache"]))
            offset = cache[1]
        points = [(offset + float(r["time"]), int(r["global_step"]), float(r["dev"][metric])) for r in recs]
        kept, chosen = len(points), _chosen_step(recs)
        if chosen is not None and k + 1 < len(names):  # it handed its chosen evaluation's model on
            kept = next((i + 1 for i, r in enumerate(recs) if r["step"] == chosen), len(points))
        segments.append({"name": name, "cache": cache, "points": points, "kept": kept, "start": carry})
        offset += float(phase_times.get(name, recs[-1]["time"]))
        if k + 1 < len(names):  # the next phase starts where this one ended (time, steps), from its choice
            first = by_phase[names[k + 1]][0]
            carry = (offset, int(first["global_step"]) - int(first["step"]), points[kept - 1][2])
    return segments


def _curve(records: list[dict], metric: str, phase_times: dict | None = None):
    """(elapsed seconds, global step, dev score, phase) per evaluation (cache builds included in the time)."""
    return [(t, step, y, seg["name"]) for seg in run_segments(records, phase_times, metric)
            for t, step, y in seg["points"]]


def plot_learning_curves(runs: dict[str, str | Path], out_png, metric: str = "f1", title: str = "") -> Path:
    """One line per run: dev ``metric`` against wall time (left) and optimizer steps (right), as it happened.

    The time axis counts the feature-cache build (shaded) and every phase in full. A phase that ends
    on its stop rule's chosen evaluation (phase 1 of two-phase strategies) draws the evaluations it
    discarded after that choice as a faded dotted tail; phase 2 starts from the chosen evaluation's
    score (hollow square) where phase 1 ended, since that is the model it trains.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    shaded = False
    discarded = False
    for name, run_dir in runs.items():
        run = RunDir(run_dir)
        phase_times = (run.read_summary() or {}).get("phase_times") or {}
        segments = run_segments(run.read_metrics(), phase_times, metric)
        if not segments:
            continue
        color = None
        for k, seg in enumerate(segments):
            pts = list(seg["points"])
            kept, tail = pts[: seg["kept"]], pts[seg["kept"] - 1:] if seg["kept"] < len(pts) else []
            head = ([seg["start"]] if seg["start"] is not None else []) + kept
            for ax, i in ((axes[0], 0), (axes[1], 1)):
                if seg["cache"] is not None and i == 0:
                    ax.axvspan(*seg["cache"], color=color or "0.5", alpha=0.15, lw=0,
                               label=None if shaded else "feature-cache build")
                    shaded = True
                (line,) = ax.plot([p[i] for p in head], [p[2] for p in head], marker="o", ms=3, color=color,
                                  label=name if (k == 0 and i == 1) else None)
                color = line.get_color()
                if seg["start"] is not None:
                    ax.plot(seg["start"][i], seg["start"][2], marker="s", ms=9, mfc="none", color=color)
                if tail:
                    ax.plot([p[i] for p in tail], [p[2] for p in tail], ls=":", marker="o", ms=2, alpha=0.45,
                            color=color, label=None if discarded or i == 0 else "discarded after the stop rule's choice")
                    discarded = discarded or i == 1
    axes[0].set_xlabel("wall time: cache build + training incl. evaluation (s)")
    axes[1].set_xlabel("optimizer steps")
    for ax in axes:
        ax.set_ylabel(f"dev {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=8, title="square: phase 2 starts from phase 1's choice",
                   title_fontsize=8)
    if shaded:
        axes[0].legend(loc="lower right", fontsize=8)
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


def plot_paired_deltas(deltas: dict, out_png, *, title: str = "", ylabel: str = "Δ dev score vs the baseline",
                       spread: float | None = None) -> Path:
    """One row per label: each seed's paired difference to a baseline as a dot, their mean as a bar.

    ``deltas``: ``{label: [difference per seed]}`` (same seeds as the baseline, e.g. in points).
    ``spread``: the baseline's seed standard deviation, drawn as a band around 0 (differences inside
    it are within seed noise).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k for k, v in deltas.items() if v]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * max(len(labels), 1)))
    if spread:
        ax.axvspan(-spread, spread, color="0.85", zorder=0, label=f"±1 sd of the baseline ({spread:.2f})")
    ax.axvline(0.0, color="0.3", linewidth=1)
    for y, label in enumerate(labels):
        vals = [float(v) for v in deltas[label]]
        mean = sum(vals) / len(vals)
        ax.barh(y, mean, height=0.55, color="tab:green" if mean > 0 else "tab:red", alpha=0.45)
        ax.plot(vals, [y] * len(vals), "o", color="black", ms=4)
        ax.annotate(f"{mean:+.2f}", (mean, y), xytext=(4 if mean >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if mean >= 0 else "right", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.grid(axis="x", alpha=0.3)
    if spread:
        ax.legend(loc="best", fontsize="small")
    ax.set_title(title or "paired differences per seed (dots) and their mean (bars)", fontsize=9)
    return save_figure(fig, out_png)
