"""Server-side downsampling keeps spikes: each bucket contributes its min and its max."""

import math

from studio.series import chart_data, downsample


def spiky_curve(n: int) -> tuple[list[int], list[float]]:
    steps = list(range(1, n + 1))
    values = [math.sin(step / 50) for step in steps]
    values[4321] = 50.0  # one spike up
    values[8765] = -40.0  # one spike down
    return steps, values


def test_it_keeps_the_global_min_and_max_of_a_spiky_curve():
    steps, values = spiky_curve(10_000)
    xs, ys = downsample(steps, values, 2000)
    assert max(ys) == 50.0 and xs[ys.index(50.0)] == 4322
    assert min(ys) == -40.0 and xs[ys.index(-40.0)] == 8766


def test_it_returns_about_the_target_number_of_points_in_step_order():
    steps, values = spiky_curve(10_000)
    xs, _ = downsample(steps, values, 2000)
    assert 1900 <= len(xs) <= 2002
    assert xs == sorted(set(xs))


def test_it_keeps_the_first_and_last_steps_so_live_points_continue_the_curve():
    steps, values = spiky_curve(10_000)
    xs, _ = downsample(steps, values, 2000)
    assert xs[0] == 1 and xs[-1] == 10_000


def test_it_leaves_short_curves_alone():
    assert downsample([1, 2, 3], [0.5, 0.1, 0.9], 2000) == ([1, 2, 3], [0.5, 0.1, 0.9])


def test_chart_data_skips_missing_and_non_finite_values():
    rows = [(1, {"a": 1.0, "b": None}), (2, {"a": float("nan")}), (3, {"a": 2.0, "b": 3.0})]
    assert chart_data(rows, 2000) == {
        "a": {"steps": [1, 3], "values": [1.0, 2.0]},
        "b": {"steps": [3], "values": [3.0]},
    }
