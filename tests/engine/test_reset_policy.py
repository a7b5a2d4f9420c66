"""Reference-policy resets (PRORL_SPEC.md section 9): which step resets, and why.

The policy is driven as prorl_engine/trainer.py drives it: after each step's update it observes the
step's KL (none when no group was kept) and, on an evaluation step, the eval metric, then is asked
`reason_to_reset(step)`; a reset calls `on_reset`. A person's reset arrives as a command between
steps: `Trainer.reset_reference("manual")` calls `on_reset` without asking the policy, and records
the step last completed."""

from __future__ import annotations

import json

from prorl_engine import schedule
from prorl_engine.config import RunConfig
from prorl_engine.reset import INTERVAL, KL_SPIKE, MANUAL, PATIENCE, ResetPolicy


def run(
    policy: ResetPolicy,
    steps: range,
    kl: dict[int, float] | None = None,
    evals: dict[int, float] | None = None,
    manual_after: set[int] = frozenset(),
) -> list[tuple[int, str]]:
    """Drive the policy as the trainer does. `kl`: step -> the step's kl/ref (a step missing from it
    kept no group and observes none); `evals`: step -> pass@1 of the evaluation at that step;
    `manual_after`: steps after which a person's reset command is applied, before the next step."""
    resets = []
    for step in steps:
        if step - 1 in manual_after:  # Trainer._apply_commands, before the step: reset_reference("manual")
            policy.on_reset()
            resets.append((step - 1, MANUAL))
        if kl is not None and step in kl:
            policy.observe_kl(kl[step])
        if evals is not None and step in evals:
            policy.observe_eval(evals[step])
        reason = policy.reason_to_reset(step)
        if reason:
            resets.append((step, reason))
            policy.on_reset()
    return resets


def test_interval_resets_fall_on_a_fixed_grid():
    assert run(ResetPolicy(interval=3), range(1, 11)) == [(3, INTERVAL), (6, INTERVAL), (9, INTERVAL)]


def test_a_manual_reset_does_not_move_the_interval_grid():
    policy = ResetPolicy(interval=4)
    assert run(policy, range(1, 10), manual_after={2}) == [(2, MANUAL), (4, INTERVAL), (8, INTERVAL)]


def test_a_manual_reset_starts_a_new_kl_window():
    # Window 2, KL 3.0 every step. Alone the spikes reset at 2 and 4; a manual reset after step 1
    # drops step 1's KL, so the next full window is steps 2-3, then 4-5.
    policy = ResetPolicy(kl_threshold=1.0, kl_window=2)
    kl = dict.fromkeys(range(1, 6), 3.0)
    assert run(ResetPolicy(kl_threshold=1.0, kl_window=2), range(1, 6), kl=kl) == [(2, KL_SPIKE), (4, KL_SPIKE)]
    assert run(policy, range(1, 6), kl=kl, manual_after={1}) == [(1, MANUAL), (3, KL_SPIKE), (5, KL_SPIKE)]


def test_a_manual_reset_restarts_the_patience_count_and_keeps_the_best():
    # Best 0.5 at 10; 20 and 30 do not beat it: patience 2 resets at 30. After a manual reset at 20
    # the count restarts: 30 is the first evaluation without improvement, 40 the second.
    evals = {10: 0.5, 20: 0.4, 30: 0.4, 40: 0.4}
    assert run(ResetPolicy(patience=2), range(1, 41), evals=evals) == [(30, PATIENCE)]
    policy = ResetPolicy(patience=2)
    assert run(policy, range(1, 41), evals=evals, manual_after={20}) == [(20, MANUAL), (40, PATIENCE)]
    assert policy.best_metric == 0.5


def test_a_step_without_kept_groups_observes_no_kl():
    # Window 2, threshold 2.0; step 2 kept no group. Steps 1 and 3 fill the window (mean 3.0): reset
    # at 3. Had step 2 counted as KL 0, both windows would average 1.5 and nothing would reset.
    policy = ResetPolicy(kl_threshold=2.0, kl_window=2)
    assert run(policy, range(1, 4), kl={1: 3.0, 3: 3.0}) == [(3, KL_SPIKE)]


def test_no_trigger_no_reset():
    assert run(ResetPolicy(), range(1, 50), kl={s: 100.0 for s in range(50)}, evals={s: 0.0 for s in range(50)}) == []


def test_kl_threshold_needs_a_full_window_above_the_threshold():
    # Window 3, KL 5.0 at every step: steps 1 and 2 spike but fill only 2 of 3 places; the reset at 3
    # empties the window, so steps 4 and 5 are again too few.
    policy = ResetPolicy(kl_threshold=0.5, kl_window=3)
    assert run(policy, range(1, 6), kl=dict.fromkeys(range(1, 6), 5.0)) == [(3, KL_SPIKE)]
    assert policy.kl_moving_average == 5.0 and len(policy.recent_kl) == 2


def test_kl_moving_average_is_the_mean_of_the_last_window_steps():
    # Window 3, threshold 0.5: means over steps (1-3) 0.3, (2-4) 0.4, (3-5) 0.5 (not above), (4-6) 0.6 -> reset at 6.
    kl = {1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5, 5: 0.6, 6: 0.7}
    policy = ResetPolicy(kl_threshold=0.5, kl_window=3)
    assert run(policy, range(1, 7), kl=kl) == [(6, KL_SPIKE)]


def test_kl_history_is_cleared_at_a_reset_so_a_new_full_window_is_needed():
    policy = ResetPolicy(kl_threshold=1.0, kl_window=2)
    # Steps 1-2 spike -> reset at 2; steps 3-4 still high -> the next reset needs 3 and 4 both, at 4;
    # steps 5-6 average 0.75, under the threshold.
    assert run(policy, range(1, 7), kl={1: 3.0, 2: 3.0, 3: 3.0, 4: 3.0, 5: 0.0, 6: 1.5}) == [
        (2, KL_SPIKE),
        (4, KL_SPIKE),
    ]
    policy.on_reset()
    assert policy.kl_moving_average is None and len(policy.recent_kl) == 0


def test_patience_counts_evaluations_without_improvement():
    policy = ResetPolicy(patience=2)
    # Evaluated at 10, 20, ...: best 0.5 at 20; 30 and 40 do not beat it -> reset at 40.
    evals = {10: 0.3, 20: 0.5, 30: 0.5, 40: 0.4, 50: 0.45, 60: 0.49, 70: 0.6}
    assert run(policy, range(1, 71), evals=evals) == [(40, PATIENCE), (60, PATIENCE)]
    assert policy.best_metric == 0.6  # the best is kept across resets


def test_when_triggers_coincide_the_first_of_interval_kl_patience_names_the_reset():
    # Window 1, so each step's KL alone decides. Step 3: interval and KL spike -> interval. Step 4:
    # KL spike and 0.1 < best 0.5 (patience 1) -> KL; that reset restarts the count. Step 5: 0.2 < 0.5
    # again -> patience. Step 6: interval. One reset per step, whatever else held.
    policy = ResetPolicy(interval=3, kl_threshold=0.5, kl_window=1, patience=1)
    kl = {1: 0.0, 2: 0.0, 3: 9.0, 4: 9.0, 5: 0.0, 6: 0.0}
    evals = {2: 0.5, 4: 0.1, 5: 0.2}
    assert run(policy, range(1, 7), kl=kl, evals=evals) == [(3, INTERVAL), (4, KL_SPIKE), (5, PATIENCE), (6, INTERVAL)]


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
    config = RunConfig(
        model_path="unused",
        steps=1000,
        reset_interval=300,
        kl_reset_threshold=0.2,
        kl_window=5,
        reset_patience=3,
        eval_every=10,
    )
    policy = ResetPolicy.from_config(config)
    assert (policy.interval, policy.kl_threshold, policy.kl_window, policy.patience) == (300, 0.2, 5, 3)
    assert schedule.planned_reset_steps(config) == [300, 600, 900]
    assert schedule.planned_reset_steps(RunConfig(model_path="unused", steps=10, reset_interval=None)) == []
