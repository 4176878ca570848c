"""Expected maximum of n trials (Dodge et al. 2019, "Show Your Work")."""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def _sorted_scores(scores) -> list[float]:
    v = sorted(float(s) for s in scores)
    if not v:
        raise ValueError("expected_max: no scores")
    if any(math.isnan(x) for x in v):
        raise ValueError("expected_max: scores contain NaN")
    return v


def _check_n(n, N: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) and not (hasattr(n, "__index__")):
        raise ValueError(f"n must be an integer in 1..{N}, got {n!r}")
    n = int(n)
    if not 1 <= n <= N:
        raise ValueError(f"n must be in 1..{N} (the number of trials; no extrapolation), got {n}")
    return n


def _max_weights(N: int, n: int, replacement: bool) -> list[float]:
    """p_i(n): probability that the i-th smallest of N scores is the maximum of n draws."""
    if replacement:
        return [(i / N) ** n - ((i - 1) / N) ** n for i in range(1, N + 1)]
    total = math.comb(N, n)  # allentune: F(i) = C(i, n) / C(N, n), p_i = F(i) - F(i-1)
    return [(math.comb(i, n) - math.comb(i - 1, n)) / total for i in range(1, N + 1)]


def expected_max(scores: Iterable[float], n: int, *, replacement: bool = True) -> tuple[float, float]:
    """Expected maximum of ``n`` trials drawn from the empirical distribution of ``scores``.

    With v_(1) <= ... <= v_(N) the sorted scores: E_n = sum_i v_(i) p_i(n), with
    p_i(n) = (i/N)^n - ((i-1)/N)^n when drawing with replacement (the default), and
    p_i(n) = [C(i,n) - C(i-1,n)] / C(N,n) without (allentune's ``C(i,n)/C(N,n)`` CDF).
    Returns ``(E_n, sd_n)`` with sd_n = sqrt(sum_i p_i(n) (v_(i) - E_n)^2). ``n`` must be in 1..N.
    """
    v = _sorted_scores(scores)
    n = _check_n(n, len(v))
    p = _max_weights(len(v), n, replacement)
    mean = sum(pi * vi for pi, vi in zip(p, v))
    var = sum(pi * (vi - mean) ** 2 for pi, vi in zip(p, v))
    return float(mean), float(math.sqrt(max(var, 0.0)))


def expected_max_curve(scores: Iterable[float], *, replacement: bool = True) -> list[tuple[int, float, float]]:
    """``[(n, E_n, sd_n) for n = 1..N]``."""
    v = _sorted_scores(scores)
    return [(n, *expected_max(v, n, replacement=replacement)) for n in range(1, len(v) + 1)]


def expected_max_per_compute(scores: Sequence[float], costs: Sequence[float], *,
                             replacement: bool = True) -> list[dict]:
    """Expected max of n trials against the compute n trials cost (n = 1..N).

    ``costs``: the cost of each trial (seconds or optimizer steps; trials may be unequal, the mean
    is used). Rows ``{"n", "cost", "expected_max", "std", "per_unit"}`` with cost = n x mean cost and
    per_unit = expected_max / cost.
    """
    if len(scores) != len(costs):
        raise ValueError(f"{len(scores)} scores but {len(costs)} costs")
    mean_cost = sum(float(c) for c in costs) / max(len(costs), 1)
    rows = []
    for n, m, s in expected_max_curve(scores, replacement=replacement):
        cost = n * mean_cost
        rows.append({"n": n, "cost": cost, "expected_max": m, "std": s,
                     "per_unit": m / cost if cost > 0 else math.inf})
    return rows


def _baseline_at_budget(rows: list[dict], budget: float) -> dict | None:
    """The baseline row with the most trials whose cost fits ``budget`` (None: not even one fits)."""
    fit = [r for r in rows if r["cost"] <= budget * (1 + 1e-9)]
    return fit[-1] if fit else None
