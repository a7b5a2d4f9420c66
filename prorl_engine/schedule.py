"""What a run's schedule will do, as pure functions of its config: the studio draws it before launch.

A drawn schedule covers the steps a chart shows, `first..last`, at the chart's resolution: a chart
of `points` points cannot tell apart steps closer than (last - first + 1) / points, so with
`points` given the work and the answer hold about `points` marks at most, whatever the run's
length (a plan of 10^6 steps costs what one of 1,000 steps does). Without `points` the answer is
exact, every window and every reset of the range.
"""

from __future__ import annotations

from prorl_engine import algorithms
from prorl_engine.config import RunConfig


def length_penalty_windows(
    config: RunConfig, first: int = 1, last: int | None = None, points: int | None = None
) -> list[tuple[int, int]]:
    """The inclusive (first, last) step ranges inside `first..last` (default: the whole run) where
    the length penalty is on, each clipped to the range. Windows whose gap is narrower than one
    point (`points` across the range) are drawn as one: every step between them is under a point
    that holds an on-step."""
    on, off, start = config.on_steps, config.off_steps, config.length_penalty_start
    first, last = max(first, start + 1, 1), config.steps if last is None else min(last, config.steps)
    if not config.length_penalty or on <= 0 or first > last:
        return []
    cycle = on + off
    window = start + 1 + (first - start - 1) // cycle * cycle  # first step of the window of first's cycle
    if window + on - 1 < first:
        window += cycle  # first lies in that cycle's off part
    if off < _step_width(first, last, points):
        final = window + (last - window) // cycle * cycle  # the last window starting by `last`
        return [(max(window, first), min(final + on - 1, last))] if window <= last else []
    windows = []
    while window <= last:
        windows.append((max(window, first), min(window + on - 1, last)))
        window += cycle
    return windows


def length_penalty_on(config: RunConfig, step: int) -> bool:
    return config.length_penalty and algorithms.length_penalty_on(
        step, config.on_steps, config.off_steps, config.length_penalty_start
    )


def planned_reset_steps(
    config: RunConfig, first: int = 1, last: int | None = None, points: int | None = None
) -> list[int]:
    """The interval resets inside `first..last` (default: the whole run); KL, patience and manual
    resets cannot be known ahead. With `points`, resets closer than one point are thinned to every
    k-th (each kept one is a real planned reset), at most about one per point."""
    interval = config.reset_interval
    last = config.steps if last is None else min(last, config.steps)
    if not interval or max(first, 1) > last:
        return []
    stride = interval * -(-_step_width(first, last, points) // interval)  # a multiple of interval, >= one point
    begin = -(-max(first, 1) // stride) * stride  # the first multiple of stride in range
    return list(range(begin, last + 1, stride))


def _step_width(first: int, last: int, points: int | None) -> int:
    """Steps per chart point over first..last (1 when every step is drawn)."""
    if not points:
        return 1
    return max(1, -(-(last - first + 1) // points))
