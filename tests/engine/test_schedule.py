"""Drawn schedules: windows and planned resets of a step range, exact or at a chart's resolution,
at a cost that does not grow with the planned run."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from prorl_engine import algorithms, schedule
from prorl_engine.config import RunConfig


def plan(**fields) -> RunConfig:
    return RunConfig(model_path="unused", **fields)


def on_steps_of(config: RunConfig, first: int, last: int) -> set[int]:
    """The independent reference: every step of first..last where the trainer applies the penalty."""
    return {s for s in range(max(first, 1), min(last, config.steps) + 1) if schedule.length_penalty_on(config, s)}


def covered(windows: list[tuple[int, int]]) -> set[int]:
    return {s for first, last in windows for s in range(first, last + 1)}


def test_windows_of_a_range_are_clipped_to_it():
    config = plan(steps=20, on_steps=3, off_steps=3)  # on 1-3, 7-9, 13-15, 19-20
    assert schedule.length_penalty_windows(config) == [(1, 3), (7, 9), (13, 15), (19, 20)]
    assert schedule.length_penalty_windows(config, first=2, last=14) == [(2, 3), (7, 9), (13, 14)]
    assert schedule.length_penalty_windows(config, first=4, last=6) == []
    assert schedule.length_penalty_windows(config, first=21) == []


def test_a_penalty_with_no_off_steps_is_one_window():
    config = plan(steps=1000, on_steps=3, off_steps=0, length_penalty_start=10)
    assert schedule.length_penalty_windows(config) == [(11, 1000)]


def test_windows_narrower_than_a_point_are_drawn_as_one_band():
    config = plan(steps=10**6, on_steps=1, off_steps=1)  # 500,000 windows of one step
    assert schedule.length_penalty_windows(config, points=2000) == [(1, 999_999)]
    wide = plan(steps=10**6, on_steps=100, off_steps=900)  # gaps of 900 steps, points of 500 steps
    windows = schedule.length_penalty_windows(wide, points=2000)
    assert len(windows) == 1000 and windows[:2] == [(1, 100), (1001, 1100)]


def test_resets_closer_than_a_point_are_thinned_to_real_resets():
    config = plan(steps=10**6, reset_interval=1)
    resets = schedule.planned_reset_steps(config, points=2000)
    assert resets[:3] == [500, 1000, 1500] and len(resets) == 2000
    assert schedule.planned_reset_steps(plan(steps=20, reset_interval=5), first=6, last=16) == [10, 15]
    assert schedule.planned_reset_steps(plan(steps=20, reset_interval=None)) == []


def test_a_plan_of_a_million_steps_costs_what_a_plan_of_a_thousand_does():
    for fields in ({"on_steps": 1, "off_steps": 1, "reset_interval": 1}, {"on_steps": 100, "off_steps": 500}):
        started = time.perf_counter()
        windows = schedule.length_penalty_windows(plan(steps=10**6, **fields), points=2000)
        resets = schedule.planned_reset_steps(plan(steps=10**6, **fields), points=2000)
        assert time.perf_counter() - started < 0.05
        assert len(windows) <= 2001 and len(resets) <= 2001


@settings(max_examples=300, deadline=None, database=None)
@given(
    steps=st.integers(1, 80),
    on=st.integers(1, 9),
    off=st.integers(0, 9),
    start=st.integers(0, 12),
    first=st.integers(-3, 90),
    last=st.integers(-3, 90),
    points=st.one_of(st.none(), st.integers(1, 40)),
)
def test_drawn_windows_agree_with_the_trainers_schedule(steps, on, off, start, first, last, points):
    config = plan(steps=steps, on_steps=on, off_steps=off, length_penalty_start=start)
    windows = schedule.length_penalty_windows(config, first, last, points)
    exact = on_steps_of(config, first, last)
    assert all(max(first, 1) <= a <= b <= min(last, steps) for a, b in windows)
    if points is None or off == 0:
        assert covered(windows) == exact  # every on-step, and nothing else
    else:  # at a resolution: every on-step is covered, the band starts and ends at on-steps
        assert exact <= covered(windows)
        assert not exact or (min(covered(windows)), max(covered(windows))) == (min(exact), max(exact))
        assert exact or not windows
    if points:
        assert len(windows) <= points + 1


@settings(max_examples=200, deadline=None, database=None)
@given(
    steps=st.integers(1, 200),
    interval=st.integers(1, 30),
    first=st.integers(-3, 210),
    last=st.integers(-3, 210),
    points=st.one_of(st.none(), st.integers(1, 40)),
)
def test_drawn_resets_are_planned_resets(steps, interval, first, last, points):
    config = plan(steps=steps, reset_interval=interval)
    resets = schedule.planned_reset_steps(config, first, last, points)
    planned = [s for s in range(max(first, 1), min(last, steps) + 1) if s % interval == 0]
    assert set(resets) <= set(planned) and resets == sorted(resets)
    if points is None:
        assert resets == planned
    else:
        assert len(resets) <= points + 1


def test_the_engine_schedule_still_matches_the_algorithms_windows():
    config = plan(steps=15, on_steps=2, off_steps=3, length_penalty_start=1)
    assert schedule.length_penalty_windows(config) == algorithms.length_penalty_windows(15, 2, 3, 1)
