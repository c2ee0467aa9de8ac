"""Percentiles without numpy."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """count, mean, p50, p90, p99, p99.9 and max of `values`, each multiplied by `scale`, rounded."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    out = {"count": len(ordered), "mean": round(sum(ordered) / len(ordered) * scale, 3)}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        out[name] = round(percentile(ordered, q) * scale, 3)
    out["max"] = round(ordered[-1] * scale, 3)
    return out
