"""The comparison page measures against a reference column (the base model by default), shows
pass@k's standard error, colours only deltas whose better direction is known, highlights a
completion only when its correctness changes, and folds long sample lists."""

from __future__ import annotations

import math

import pytest
from django.urls import reverse
from studio_testing import tiny_config

from studio.compare import default_reference, direction, side_by_side, standard_errors
from studio.models import Comparison, Run, RunStatus


def answer(response: str, correct: bool, length: int = 3) -> dict:
    return {"response": response, "reward": float(correct), "correct": correct, "length": length, "details": {}}


# Two prompts; the checkpoint solves p1 3 of 4 times and p2 once, the base model p1 once, p2 never.
RESULT = {
    "labels": ["ckpt", "base"],
    "metrics": {
        "eval/all/pass@1": {"ckpt": 0.5, "base": 0.125, "delta": -0.375},
        "eval/all/mean_length": {"ckpt": 20.0, "base": 30.0, "delta": 10.0},
    },
    "prompts": [
        {
            "uid": "p1",
            "prompt": "1+1",
            "task": "chain_sum",
            "domain": "logic",
            "answers": {
                "ckpt": [answer("2", True), answer("2", True), answer("two", True), answer("3", False)],
                "base": [answer("2", True), answer("5", False), answer("2 ", False), answer("4", False)],
            },
        },
        {
            "uid": "p2",
            "prompt": "2+2",
            "task": "chain_sum",
            "domain": "logic",
            "answers": {
                "ckpt": [answer("4", True), answer("5", False), answer("6", False), answer("7", False)],
                "base": [answer("1", False), answer("5", False), answer("6", False), answer("8", False)],
            },
        },
    ],
}
ENTRIES = [
    {"label": "ckpt", "path": "/runs/1/checkpoints/step-000004", "run": 1, "checkpoint": 1, "step": 4},
    {"label": "base", "path": "tiny:demo", "run": None, "checkpoint": None, "step": 0},
]


def test_the_base_model_is_the_default_reference():
    assert default_reference(ENTRIES) == 1
    assert default_reference(ENTRIES[:1]) == 0


def test_standard_error_of_pass_at_1_over_prompts():
    errors = standard_errors(RESULT)
    # per-prompt pass@1: ckpt 0.75 and 0.25 (sd 0.3536, /sqrt 2 = 0.25); base 0.25 and 0 (0.125)
    assert math.isclose(errors[("eval/all/pass@1", "ckpt")], 0.25)
    assert math.isclose(errors[("eval/all/pass@1", "base")], 0.125)
    assert ("eval/all/mean_length", "ckpt") not in errors


def test_deltas_against_the_reference_are_coloured_only_where_the_direction_is_known():
    view = side_by_side(RESULT, reference=1)
    pass_row, length_row = view["metrics"]
    assert [(c["delta_text"], c["tone"], c["reference"]) for c in pass_row["cells"]] == [
        ("+0.375", "better up", False),
        ("", "", True),
    ]
    assert [(c["delta_text"], c["tone"]) for c in length_row["cells"]] == [("-10.000", "neutral"), ("", "")]
    assert direction("eval/math/pass@16") == 1 and direction("eval/all/mean_length") == 0
    assert direction("length/truncated_frac") == -1
    worse = side_by_side(RESULT, reference=0)["metrics"][0]["cells"][1]
    assert (worse["delta_text"], worse["tone"]) == ("-0.375", "worse down")


def test_a_completion_is_highlighted_only_when_its_correctness_changes():
    view = side_by_side(RESULT, reference=1)
    p1 = view["prompts"][0]["columns"]
    # ckpt answers 1-3 right where base got 2 and 3 wrong; "two" differs in text from "2 " and is
    # right where base was wrong; the 4th are both wrong (different text, same correctness)
    assert [s["changed"] for s in p1[0]["samples"]] == [False, True, True, False]
    assert [s["changed"] for s in p1[1]["samples"]] == [False] * 4  # the reference itself
    assert view["changed"] == 3 and view["completions"] == 8
    assert p1[0]["better"] and not p1[1]["better"] and p1[1]["reference"]


def test_long_sample_lists_fold_after_the_first_two():
    column = side_by_side(RESULT, reference=1)["prompts"][0]["columns"][0]
    assert [s["response"] for s in column["shown"]] == ["2", "2"]
    assert [s["response"] for s in column["folded"]] == ["two", "3"]


@pytest.mark.django_db
def test_the_page_takes_its_reference_from_the_query_and_folds_samples(client, alice):
    config = tiny_config()
    run = Run.objects.create(
        owner=alice, name="r", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    entries = [{**ENTRIES[0], "run": run.pk}, ENTRIES[1]]
    comparison = Comparison.objects.create(
        owner=alice, entries=entries, settings={"n": 4}, status=Comparison.Status.FINISHED, result=RESULT
    )
    comparison.runs.set([run])
    client.force_login(alice)
    page = client.get(reverse("compare-detail", args=[comparison.pk])).content.decode()
    assert '<option value="1" selected>base</option>' in page and "base <small>(reference)</small>" in page
    assert '<span class="delta better up">(+0.375)</span>' in page
    assert '<span class="delta neutral">(-10.000)</span>' in page
    assert '<small class="se">± 0.250</small>' in page
    assert page.count('class="more-samples"') == 4 and "2 more samples" in page
    assert "3 of 8 completions change correctness" in page
    page = client.get(reverse("compare-detail", args=[comparison.pk]) + "?reference=0").content.decode()
    assert (
        '<option value="0" selected>ckpt</option>' in page and '<span class="delta worse down">(-0.375)</span>' in page
    )
    assert client.get(reverse("compare-detail", args=[comparison.pk]) + "?reference=9").status_code == 200
