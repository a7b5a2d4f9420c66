"""Curves for the run page: metric rows -> per-key (steps, values), downsampled on the server."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def to_series(rows: Iterable[tuple[int, dict[str, float]]]) -> dict[str, tuple[list[int], list[float]]]:
    """One (steps, values) pair per metric key; non-finite values and absent keys are skipped."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for step, values in rows:
        for key, value in values.items():
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            steps, ys = series.setdefault(key, ([], []))
            steps.append(step)
            ys.append(float(value))
    return series


def downsample(steps: list[int], values: list[float], target: int) -> tuple[list[int], list[float]]:
    """At most about `target` points, keeping each bucket's min and max (spikes stay visible).

    The curve is cut into target // 2 buckets of consecutive points; each bucket gives its
    minimum and its maximum in step order. The first and the last points are always kept, so a
    live chart extends exactly from the last step it was given.
    """
    n = len(steps)
    if n <= target or target < 4:
        return list(steps), list(values)
    ys = np.asarray(values, dtype=np.float64)
    buckets = target // 2
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = {0, n - 1}
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        chunk = ys[lo:hi]
        keep.add(int(lo + np.argmin(chunk)))
        keep.add(int(lo + np.argmax(chunk)))
    index = sorted(keep)
    return [steps[i] for i in index], [values[i] for i in index]


def chart_data(rows: Iterable[tuple[int, dict[str, float]]], target: int) -> dict[str, dict[str, list]]:
    """{key: {"steps": [...], "values": [...]}} with every curve downsampled to about `target` points."""
    out = {}
    for key, (steps, values) in sorted(to_series(rows).items()):
        xs, ys = downsample(steps, values, target)
        out[key] = {"steps": xs, "values": [float(f"{y:.6g}") for y in ys]}
    return out
