"""The reasoning boundary: tasks sorted by how RL moved pass@1 and pass@K, on hand-made tables."""

from __future__ import annotations

import pytest

from prorl_engine.algorithms import mean_pass_at_k
from prorl_engine.boundary import (
    BASE_NEVER_SOLVES,
    NARROWS,
    NO_GAIN,
    SHARPENS,
    WIDENS,
    boundary,
    category,
    classify,
    pass_at_k_curve,
)


@pytest.mark.parametrize(
    ("base", "rl", "expected"),
    [
        ((0.0, 0.0), (0.1, 0.4), BASE_NEVER_SOLVES),  # whatever RL does
        ((0.0, 0.0), (0.0, 0.0), BASE_NEVER_SOLVES),
        ((0.2, 0.5), (0.4, 0.8), WIDENS),
        ((0.2, 0.5), (0.1, 0.8), WIDENS),  # pass@K decides before pass@1
        ((0.2, 0.9), (0.5, 0.7), NARROWS),  # pass@1 up, pass@K down: ProRL v1's diminished boundary
        ((0.2, 0.9), (0.6, 0.9), SHARPENS),
        ((0.3, 0.8), (0.3, 0.81), NO_GAIN),
        ((0.3, 0.8), (0.1, 0.8), NO_GAIN),  # pass@1 down, pass@K flat
    ],
)
def test_the_category_of_a_pass_at_k_table(base, rl, expected):
    assert category(*base, *rl, margin=0.05) == expected


def test_a_change_of_exactly_the_margin_does_not_count():
    assert category(0.25, 0.5, 0.5, 0.75, margin=0.25) == NO_GAIN
    assert category(0.25, 0.75, 0.5, 0.5, margin=0.25) == NO_GAIN
    assert category(0.25, 0.5, 0.5, 0.5, margin=0.25) == NO_GAIN


def test_the_curve_is_the_unbiased_pass_at_k_for_every_k_up_to_n():
    # (4, 1): 1/4, 1 - C(3,2)/C(4,2) = 1/2, 1 - C(3,3)/C(4,3) = 3/4, 1;  (4, 2): 1/2, 5/6, 1, 1
    assert pass_at_k_curve([(4, 1), (4, 2)]) == pytest.approx([3 / 8, 2 / 3, 7 / 8, 1.0])
    assert len(pass_at_k_curve([(256, 3)])) == 256


def test_the_curve_averages_each_prompts_pass_at_k_over_prompts_of_the_same_n():
    counts = [(256, 0), (256, 1), (256, 17), (256, 255), (256, 256), (256, 17)]
    curve = pass_at_k_curve(counts)
    assert curve == pytest.approx([mean_pass_at_k(counts, k) for k in range(1, 257)], abs=1e-12)
    assert curve[0] == pytest.approx((0 + 1 + 17 + 255 + 256 + 17) / 256 / 6)


def test_a_task_the_base_never_solves_keeps_the_checkpoints_curve():
    task = classify("ood", [(4, 0), (4, 0)], [(4, 1), (4, 2)])
    assert task.category == BASE_NEVER_SOLVES and task.k_large == 4 and task.prompts == 2
    assert task.base == [0.0] * 4 and task.rl == pytest.approx([3 / 8, 2 / 3, 7 / 8, 1.0])


def test_widening_on_eight_prompts_passes_the_noise_margin():
    # pass@4 per prompt: base 0,0,0,0,1,1,1,1 -> 1 everywhere; differences 1 x4, 0 x4
    # se = sqrt(8 * 0.25 / 7 / 8) = 0.189, margin 0.378 < 0.5
    task = classify("t", [(4, 0)] * 4 + [(4, 1)] * 4, [(4, 1)] * 8)
    assert task.margin == pytest.approx(2 * (2 / 7 / 8) ** 0.5)
    assert task.category == WIDENS and task.base[-1] == 0.5 and task.rl[-1] == 1.0


def test_the_same_gain_on_four_prompts_is_within_the_noise():
    # differences 1, 1, 0, 0: se = sqrt(1 / 3 / 4) = 0.289, margin 0.577 > 0.5
    task = classify("t", [(4, 0)] * 2 + [(4, 1)] * 2, [(4, 1)] * 4)
    assert task.margin == pytest.approx(2 * (1 / 12) ** 0.5) and task.category == NO_GAIN


def test_pass_at_1_up_with_pass_at_k_down_narrows():
    task = classify("t", [(4, 1)] * 8, [(4, 4)] * 4 + [(4, 0)] * 4)
    assert (task.base[0], task.base[-1], task.rl[0], task.rl[-1]) == (0.25, 1.0, 0.5, 0.5)
    assert task.category == NARROWS


def test_pass_at_1_up_with_pass_at_k_equal_only_sharpens():
    task = classify("t", [(4, 1)] * 8, [(4, 3)] * 8)
    assert task.margin == 0.02 and task.category == SHARPENS  # no spread: the tolerance alone


def test_k_large_is_the_fewest_samples_either_model_drew():
    task = classify("t", [(8, 1), (8, 0)], [(4, 1), (4, 0)])
    assert task.k_large == 4 and task.base == pytest.approx(pass_at_k_curve([(8, 1), (8, 0)])[:4])


def test_mismatched_prompts_are_refused_naming_the_task():
    with pytest.raises(ValueError, match="t: the base and the checkpoint need the same prompts, got 1 and 2"):
        classify("t", [(4, 1)], [(4, 1), (4, 2)])


def answers(*correct: bool) -> list[dict]:
    return [{"correct": c, "response": "", "reward": float(c)} for c in correct]


def test_a_comparisons_prompts_give_each_checkpoints_tasks():
    prompts = [
        {"task": "sum", "answers": {"base": answers(0, 0), "a": answers(1, 0), "b": answers(0, 0)}},
        {"task": "sum", "answers": {"base": answers(0, 0), "a": answers(1, 1), "b": answers(0, 0)}},
        {"task": "eq", "answers": {"base": answers(1, 0), "a": answers(1, 1), "b": answers(1, 0)}},
        {"task": "eq", "answers": {"base": answers(1, 1), "a": [], "b": answers(1, 1)}},  # a never answered
    ]
    table = boundary(prompts, "base", ["a", "b"])
    assert [(t.task, t.prompts, t.category) for t in table["a"]] == [("eq", 1, SHARPENS), ("sum", 2, BASE_NEVER_SOLVES)]
    assert table["a"][1].rl == [0.75, 1.0]
    assert [(t.task, t.prompts, t.category) for t in table["b"]] == [("eq", 2, NO_GAIN), ("sum", 2, BASE_NEVER_SOLVES)]
