"""In headless Chromium: the reasoning-boundary page of a finished comparison draws, per task, the
base's and the checkpoint's pass@k against k (SVG, log axis up to k = n), titled with the category."""

from __future__ import annotations

import pytest
from charts_testing import CHARTS_JS, ConsoleWatch

from studio.models import Comparison, Run, RunStatus
from studio.presets import default_values

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def answers(correct: int, n: int = 16) -> list[dict]:
    return [{"response": "x", "reward": float(i < correct), "correct": i < correct, "length": 3} for i in range(n)]


def test_each_task_of_the_boundary_page_is_a_chart_of_both_curves(live_studio, alice, page, log_in, artifacts):
    config = default_values()
    run = Run.objects.create(owner=alice, name="tiny", config=config, total_steps=1, status=RunStatus.FINISHED)
    base, checkpoint = "base: tiny:var/models/tiny-qwen2", f"tiny #{run.pk} @ 8"
    prompts = [
        {"uid": "p1", "prompt": "?", "task": "products", "domain": "logic",
         "answers": {base: answers(0), checkpoint: answers(2)}},
        {"uid": "p2", "prompt": "?", "task": "chain_sum", "domain": "logic",
         "answers": {base: answers(4), checkpoint: answers(12)}},
    ]  # fmt: skip
    comparison = Comparison.objects.create(
        owner=alice,
        entries=[
            {"label": base, "path": "tiny:var/models/tiny-qwen2", "run": None, "checkpoint": None, "step": 0},
            {"label": checkpoint, "path": "/runs/x", "run": run.pk, "checkpoint": None, "step": 8},
        ],
        settings={"n": 16, "ks": [1, 16], "prompts": 2, "prompts_run": run.pk},
        status=Comparison.Status.FINISHED,
        result={"labels": [base, checkpoint], "metrics": {}, "prompts": prompts},
    )
    comparison.runs.set([run])
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")
    page.goto(f"{live_studio.url}/compare/{comparison.pk}/boundary/")
    page.wait_for_function("() => document.getElementById('boundary').dataset.drawn === 'true'", timeout=60_000)
    charts = page.evaluate(CHARTS_JS, ".boundary-charts .chart")
    assert [c["title"] for c in charts] == ["chain_sum: RL only sharpens", "products: base never solves"]
    for c in charts:
        assert c["drawn"] == 2 and c["legend"] == [base, checkpoint] and c["area"] > 20_000 and c["gl"] == 0, c
    ticks = page.evaluate("() => document.querySelector('.boundary-charts .chart').layout.xaxis.tickvals")
    assert ticks == [1, 2, 4, 8, 16]
    page.screenshot(path=str(artifacts / "reasoning-boundary.png"), full_page=True)
    assert watch.problems == [], "\n".join(watch.problems)
