"""Reference-policy resets (PRORL_SPEC.md section 9): which step resets, and why."""

from __future__ import annotations

import json

from prorl_engine import schedule
from prorl_engine.config import RunConfig
from prorl_engine.reset import INTERVAL, KL_SPIKE, MANUAL, PATIENCE, ResetPolicy


def run(policy: ResetPolicy, steps: range, kl: dict[int, float] | None = None, evals: dict[int, float] | None = None,
        manual: set[int] = frozenset()) -> list[tuple[int, str]]:
    """Drive the policy as the trainer does: observe the step's KL (and eval), ask, reset."""
    resets = []
    for step in steps:
        if kl is not None:
            policy.observe_kl(kl.get(step, 0.0))
        if evals is not None and step in evals:
            policy.observe_eval(evals[step])
        reason = policy.reason_to_reset(step, manual=step in manual)
        if reason:
            resets.append((step, reason))
            policy.on_reset()
    return resets


def test_interval_resets_fall_on_a_fixed_grid():
    assert run(ResetPolicy(interval=3), range(1, 11)) == [(3, INTERVAL), (6, INTERVAL), (9, INTERVAL)]


def test_manual_and_kl_resets_do_not_move_the_interval_grid():
    policy = ResetPolicy(interval=4)
    assert run(policy, range(1, 10), manual={2}) == [(2, MANUAL), (4, INTERVAL), (8, INTERVAL)]


def test_no_trigger_no_reset():
    assert run(ResetPolicy(), range(1, 50), kl={s: 100.0 for s in range(50)}, evals={s: 0.0 for s in range(50)}) == []


def test_kl_threshold_needs_a_full_window_above_the_threshold():
    policy = ResetPolicy(kl_threshold=0.5, kl_window=3)
    policy.observe_kl(5.0)
    policy.observe_kl(5.0)
    assert policy.reason_to_reset(2) is None  # a spike, but only 2 of 3 steps observed
    policy.observe_kl(5.0)
    assert policy.kl_moving_average == 5.0
    assert policy.reason_to_reset(3) == KL_SPIKE


def test_kl_moving_average_is_the_mean_of_the_last_window_steps():
    # Window 3, threshold 0.5: means over steps (1-3) 0.3, (2-4) 0.4, (3-5) 0.5 (not above), (4-6) 0.6 -> reset at 6.
    kl = {1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5, 5: 0.6, 6: 0.7}
    policy = ResetPolicy(kl_threshold=0.5, kl_window=3)
    assert run(policy, range(1, 7), kl=kl) == [(6, KL_SPIKE)]


def test_kl_history_is_cleared_at_a_reset_so_a_new_full_window_is_needed():
    policy = ResetPolicy(kl_threshold=1.0, kl_window=2)
    # Steps 1-2 spike -> reset at 2; steps 3-4 still high -> the next reset needs 3 and 4 both, at 4;
    # steps 5-6 average 0.75, under the threshold.
    assert run(policy, range(1, 7), kl={1: 3.0, 2: 3.0, 3: 3.0, 4: 3.0, 5: 0.0, 6: 1.5}) == \
        [(2, KL_SPIKE), (4, KL_SPIKE)]
    policy.on_reset()
    assert policy.kl_moving_average is None and len(policy.recent_kl) == 0


def test_patience_counts_evaluations_without_improvement():
    policy = ResetPolicy(patience=2)
    # Evaluated at 10, 20, ...: best 0.5 at 20; 30 and 40 do not beat it -> reset at 40.
    evals = {10: 0.3, 20: 0.5, 30: 0.5, 40: 0.4, 50: 0.45, 60: 0.49, 70: 0.6}
    assert run(policy, range(1, 71), evals=evals) == [(40, PATIENCE), (60, PATIENCE)]
    assert policy.best_metric == 0.6  # the best is kept across resets


def test_manual_takes_precedence_over_every_other_trigger():
    policy = ResetPolicy(interval=5, kl_threshold=0.1, kl_window=1, patience=1)
    policy.observe_kl(9.0)
    policy.observe_eval(0.5)
    policy.observe_eval(0.1)
    assert policy.reason_to_reset(5, manual=True) == MANUAL
    assert policy.reason_to_reset(5) == INTERVAL
    assert policy.reason_to_reset(6) == KL_SPIKE
    policy.recent_kl.clear()
    assert policy.reason_to_reset(6) == PATIENCE


def test_state_dict_round_trips_through_json_and_continues_identically():
    kl = {s: 0.1 * (s % 7) for s in range(1, 41)}
    evals = {s: (s % 9) / 10 for s in range(5, 41, 5)}
    straight = ResetPolicy(interval=13, kl_threshold=0.45, kl_window=4, patience=2)
    expected = run(straight, range(1, 41), kl=kl, evals=evals)

    first = ResetPolicy(interval=13, kl_threshold=0.45, kl_window=4, patience=2)
    resets = run(first, range(1, 21), kl=kl, evals=evals)
    state = json.loads(json.dumps(first.state_dict()))
    second = ResetPolicy(interval=13, kl_threshold=0.45, kl_window=4, patience=2)
    second.load_state_dict(state)
    assert second.state_dict() == first.state_dict()
    resets += run(second, range(21, 41), kl=kl, evals=evals)
    assert resets == expected
    assert {reason for _, reason in expected} >= {INTERVAL, KL_SPIKE}


def test_from_config_and_planned_reset_steps():
    config = RunConfig(model_path="unused", steps=1000, reset_interval=300, kl_reset_threshold=0.2, kl_window=5,
                       reset_patience=3, eval_every=10)
    policy = ResetPolicy.from_config(config)
    assert (policy.interval, policy.kl_threshold, policy.kl_window, policy.patience) == (300, 0.2, 5, 3)
    assert schedule.planned_reset_steps(config) == [300, 600, 900]
    assert schedule.planned_reset_steps(RunConfig(model_path="unused", steps=10, reset_interval=None)) == []
