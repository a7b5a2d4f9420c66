"""Curves for the run page: metric rows -> per-key (steps, values), downsampled on the server."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Count, Max

from studio.models import Checkpoint, Event, MetricPoint, Run, Sample


def to_series(rows: Iterable[tuple[int, dict[str, float | None]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One (steps, values) pair of arrays per metric key; absent and non-finite values are skipped."""
    rows = list(rows)
    steps = np.fromiter((step for step, _ in rows), dtype=np.int64, count=len(rows))
    keys = sorted({key for _, values in rows for key in values})
    series = {}
    for key in keys:
        # (N,); an absent key or None (how the sink stores NaN and infinity) becomes NaN
        column = np.array([values.get(key) for _, values in rows], dtype=np.float64)
        finite = np.isfinite(column)
        series[key] = (steps[finite], column[finite])
    return series


def downsample(steps, values, target: int) -> tuple[list[int], list[float]]:
    """At most about `target` points, keeping each bucket's min and max (spikes stay visible).

    The curve is cut into target // 2 buckets of consecutive points; each bucket gives its
    minimum and its maximum in step order. The first and the last points are always kept, so a
    live chart extends exactly from the last step it was given.
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    n = len(steps)
    if n <= target or target < 4:
        return steps.tolist(), values.tolist()
    buckets = target // 2
    width = -(-n // buckets)  # ceil(n / buckets)
    rows = -(-n // width)
    padded_low = np.full(rows * width, np.inf)
    padded_low[:n] = values
    padded_high = np.full(rows * width, -np.inf)
    padded_high[:n] = values
    offsets = np.arange(rows) * width
    lows = offsets + padded_low.reshape(rows, width).argmin(axis=1)  # (rows,)
    highs = offsets + padded_high.reshape(rows, width).argmax(axis=1)  # (rows,)
    keep = np.unique(np.concatenate([lows, highs, [0, n - 1]]))
    return steps[keep].tolist(), values[keep].tolist()


def _significant(values: list[float], digits: int = 6) -> list[float]:
    """Round to `digits` significant digits: a third of the JSON, no visible difference."""
    array = np.asarray(values, dtype=np.float64)
    magnitude = np.floor(np.log10(np.abs(array), where=array != 0, out=np.zeros_like(array)))
    scale = 10.0 ** (digits - 1 - magnitude)
    return (np.round(array * scale) / scale).tolist()


# Other x-axes than the step, as curves of their own (step -> running total), summed over every stored
# step before downsampling: the pages map a step to its x by interpolating in these (they only grow).
GENERATED_TOKENS = "cumulative/generated_tokens"
WALL_S = "cumulative/wall_s"
AXIS_KEYS = (GENERATED_TOKENS, WALL_S)


def cumulative_axes(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Generated tokens so far (`sampling/generated_tokens` is per step) and training wall time so far
    (`timing/rollout_s` + `timing/train_s`; evaluation time is not counted), each as (steps, totals)."""
    out = {}
    if "sampling/generated_tokens" in series:
        steps, tokens = series["sampling/generated_tokens"]
        out[GENERATED_TOKENS] = (steps, np.cumsum(tokens))
    parts = [series[key] for key in ("timing/rollout_s", "timing/train_s") if key in series]
    if parts:
        steps = parts[0][0]
        per_step = sum(np.interp(steps, part_steps, part, left=0.0, right=0.0) for part_steps, part in parts)
        out[WALL_S] = (steps, np.cumsum(per_step))
    return out


def chart_data(
    rows: Iterable[tuple[int, dict[str, float | None]]], target: int, axes: bool = False
) -> dict[str, dict[str, list]]:
    """{key: {"steps": [...], "values": [...]}} with every curve downsampled to about `target` points;
    with `axes`, the running totals of `cumulative_axes` too (keys under "cumulative/")."""
    out = {}
    series = to_series(rows)
    if axes:
        series.update(cumulative_axes(series))
    for key, (steps, values) in series.items():
        xs, ys = downsample(steps, values, target)
        out[key] = {"steps": xs, "values": _significant(ys)}
    return out


class RunSeriesCache:
    """One computed value per key (a run, or a run and a view of it), for one version of its stored
    rows; the `size` keys used last.

    A live run's new version replaces its old one (rather than filling the cache with versions no
    one asks for again). The value is computed outside the lock, so a slow run blocks no other, and
    once per key and version: Django runs each request of an ASGI server in a thread of its own, and
    50 people opening one run page at once would otherwise compute it 50 times over, side by side,
    each at a 50th of the CPU (bench/viewers.py: seconds before the first answer). The others wait
    for the first; if it fails, the next of them computes it anew."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Hashable, str]] = OrderedDict()
        self._computing: dict[tuple[Hashable, Hashable], threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable, compute: Callable[[], str]) -> str:
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0] == version:
                    self._entries.move_to_end(key)
                    return entry[1]
                computing = self._computing.get((key, version))
                if computing is None:
                    done = self._computing[(key, version)] = threading.Event()
                    break
            computing.wait()  # then the value is cached, or its computation failed and this one tries
        try:
            value = compute()
            with self._lock:
                self._entries[key] = (version, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            return value
        finally:
            with self._lock:
                del self._computing[(key, version)]
            done.set()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# Runs whose chart series a server process keeps: at most about 1 MB each (40 curves x 2000 points).
SERIES_CACHE_RUNS = 32
chart_cache = RunSeriesCache(SERIES_CACHE_RUNS)


class StoredRows(NamedTuple):
    """(count, highest id) of each table a run page shows: rows are only ever appended (new ids: Django
    gives SQLite tables AUTOINCREMENT, so an id is never reused) or deleted (a rewind, a removed
    checkpoint: fewer rows), never changed in place, so any change to a run's rows moves its pair."""

    points: tuple[int, int]
    events: tuple[int, int]
    samples: tuple[int, int]
    checkpoints: tuple[int, int]


def stored_rows(run_id: int) -> StoredRows:
    """The run's `StoredRows` in one statement. Raw SQL, because this runs on every request for a
    run's data and four ORM aggregates cost about 6 ms of Python on a slow CPU (most of a cached
    request: bench/viewers.py); the statement is the same on SQLite and PostgreSQL."""
    tables = [model._meta.db_table for model in (MetricPoint, Event, Sample, Checkpoint)]
    columns = ", ".join(
        f"(SELECT COUNT(*) FROM {table} WHERE run_id = %s), (SELECT MAX(id) FROM {table} WHERE run_id = %s)"
        for table in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns}", [run_id] * 2 * len(tables))
        values = cursor.fetchone()
    pairs = [(values[i], values[i + 1] or 0) for i in range(0, len(values), 2)]
    return StoredRows(*pairs)


def run_chart_json(run: Run, points: tuple[int, int] | None = None) -> str:
    """The run page's curves (`chart_data` at CHART_POINTS, with the cumulative axes) as JSON text,
    computed once per run and set of stored points: 50 people on one run page cost one computation
    (and one encoding) per new point, not one per request (bench/viewers.py).

    The version is the count and the highest id of the run's points: rows are only ever appended
    (new ids) or deleted (a rewind: fewer rows), never changed in place, so any change moves it. The
    points read are those up to that id, so the value matches its version even while a worker writes.
    The run's creation time guards against a reused run id (a test database rolled back). `points`:
    that (count, highest id) when the caller has it already (`stored_rows`)."""
    if points is None:
        stored = MetricPoint.objects.filter(run_id=run.pk).aggregate(count=Count("id"), last=Max("id"))
        points = (stored["count"], stored["last"] or 0)
    count, last_id = points
    target = settings.CHART_POINTS
    version = (run.created_at, count, last_id, target)

    def compute() -> str:
        rows = MetricPoint.objects.filter(run_id=run.pk, id__lte=last_id).order_by("step")
        return json.dumps(chart_data(rows.values_list("step", "values").iterator(chunk_size=2000), target, axes=True))

    return chart_cache.get(run.pk, version, compute)
