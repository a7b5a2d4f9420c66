"""In headless Chromium: Alice filters the runs table by a tag, adds a metric column, sorts by it,
selects two runs and goes straight to their overlay; on a comparison she picks the reference column
and unfolds a model's further samples. No console errors (the CSP allows no inline script)."""

from __future__ import annotations

import pytest

from prorl_engine.config import RunConfig
from studio.models import Comparison, MetricPoint, Run, RunStatus, RunTag
from studio.presets import default_values

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def tiny_config() -> RunConfig:
    return RunConfig.from_dict(default_values(), check_paths=False)


def make_run(owner, name: str, rewards: list[float], tag: str = "") -> Run:
    config = tiny_config()
    run = Run.objects.create(
        owner=owner, name=name, config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    MetricPoint.objects.bulk_create(
        [MetricPoint(run=run, step=i + 1, values={"reward/mean": r}) for i, r in enumerate(rewards)]
    )
    if tag:
        RunTag.objects.create(run=run, name=tag)
    return run


def test_alice_filters_sorts_selects_and_opens_the_overlay(live_studio, alice, page, log_in):
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    low = make_run(alice, "low", [0.1, 0.2], tag="sweep")
    high = make_run(alice, "high", [0.3, 0.8], tag="sweep")
    make_run(alice, "untagged", [0.9])
    log_in(page, live_studio.url, "alice")
    page.goto(live_studio.url + "/")
    page.select_option("#f-tag", ["sweep"])
    page.select_option("#f-col", ["best:reward/mean"])
    page.click("#apply-filters")
    page.wait_for_url(lambda url: "tag=sweep" in url)
    page.click('th[data-column="best:reward/mean"] a')  # descending first
    page.wait_for_url(lambda url: "sort=-best" in url)
    names = page.locator("#runs tbody tr td:nth-child(2) a").all_text_contents()
    assert names == ["high", "low"]
    assert page.locator("#runs tbody tr td.metric-cell").all_text_contents() == ["0.8", "0.2"]
    for run in (low, high):
        page.check(f'input[name="run"][value="{run.pk}"]')
    page.click("#overlay-selected")
    page.wait_for_url("**/overlay/?*")
    assert page.url.endswith(f"/overlay/?run={high.pk}&run={low.pk}")
    assert errors == []


def test_alice_changes_the_reference_column_and_unfolds_samples(live_studio, alice, page, log_in):
    config = tiny_config()
    run = Run.objects.create(
        owner=alice, name="r", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )

    def answers(pattern: str) -> list[dict]:
        return [
            {"response": f"answer {i}", "reward": float(c == "1"), "correct": c == "1", "length": 3, "details": {}}
            for i, c in enumerate(pattern)
        ]

    result = {
        "labels": ["ckpt", "base"],
        "metrics": {"eval/all/pass@1": {"ckpt": 0.75, "base": 0.25, "delta": -0.5}},
        "prompts": [
            {
                "uid": "p",
                "prompt": "1+1",
                "task": "t",
                "domain": "math",
                "answers": {"ckpt": answers("1101"), "base": answers("1000")},
            }
        ],
    }
    entries = [
        {"label": "ckpt", "path": "x", "run": run.pk, "checkpoint": None, "step": 4},
        {"label": "base", "path": "tiny:demo", "run": None, "checkpoint": None, "step": 0},
    ]
    comparison = Comparison.objects.create(
        owner=alice, entries=entries, settings={"n": 4}, status=Comparison.Status.FINISHED, result=result
    )
    comparison.runs.set([run])
    log_in(page, live_studio.url, "alice")
    page.goto(f"{live_studio.url}/compare/{comparison.pk}/")
    assert page.locator("#reference").input_value() == "1"  # the base model
    assert page.locator("#metrics .delta").text_content() == "(+0.500)"
    ckpt = page.locator('.compare-column[data-label="ckpt"]')
    assert ckpt.locator(".answer").count() == 4 and ckpt.locator(".answer:visible").count() == 2
    assert ckpt.locator(".answer.changed").count() == 2  # answers 1 and 3: right where the base was wrong
    ckpt.locator("details.more-samples > summary").click()
    assert ckpt.locator(".answer:visible").count() == 4
    page.select_option("#reference", "0")
    page.click("#reference-form button")
    page.wait_for_url("**?reference=0")
    assert page.locator("#metrics .delta").text_content() == "(-0.500)"
    assert "worse" in page.locator("#metrics .delta").get_attribute("class")
