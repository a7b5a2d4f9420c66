"""In headless Chromium: Alice launches a tiny run from the form and watches its charts grow live."""

import pytest
from charts_testing import CHARTS_JS, STRIP_JS, ConsoleWatch

from studio.models import MetricPoint, Run, RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POINTS_JS = "(sel) => { const c = document.querySelector(sel); return c && c.data ? c.data[0].x.length : 0; }"
REWARD_CHART = '.chart[data-metric="reward/mean"]'
STEPS = 20


def test_alice_watches_her_runs_charts_grow_while_it_trains(live_studio, alice, page, log_in, artifacts):
    live_studio.start_worker("browser-worker")
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")

    page.goto(live_studio.url + "/runs/new/")
    page.wait_for_function("() => document.querySelector('#preview .main-svg') !== null")  # the schedule preview
    page.fill("#id_name", "watched")
    page.fill("#id_steps", str(STEPS))
    page.fill("#id_eval_every", "0")
    page.click("#launch")
    page.wait_for_url("**/runs/*/")
    run = Run.objects.get(name="watched")

    # The reward chart fills from metrics.json while the run is young, then grows from the
    # websocket (the page is never reloaded) until the run is over.
    page.wait_for_function(f"() => ({POINTS_JS})('{REWARD_CHART}') >= 1", timeout=240_000)
    seen = page.evaluate(POINTS_JS, REWARD_CHART)
    assert seen < STEPS
    page.wait_for_function(f"() => ({POINTS_JS})('{REWARD_CHART}') > {seen}", timeout=120_000)
    page.wait_for_function("() => document.getElementById('status').textContent === 'finished'", timeout=240_000)
    # points are drawn once per animation frame (run.js batches them), so the last one may land a
    # frame after the status message
    page.wait_for_function(f"() => ({POINTS_JS})('{REWARD_CHART}') === {STEPS}", timeout=30_000)
    assert MetricPoint.objects.filter(run=run).count() == STEPS
    assert Run.objects.get(pk=run.pk).status == RunStatus.FINISHED

    # Every chart drew (SVG, no WebGL), but the held-out ones: this run evaluates nothing, and says so.
    charts = {c["title"]: c for c in page.evaluate(CHARTS_JS, "#run .chart")}
    held_out = {"pass@k (held-out, all tasks)", "pass@k against k, per evaluation", "Held-out response length (tokens)"}
    for title, c in charts.items():
        assert c["gl"] == 0 and c["area"] > 20_000, c
        if title in held_out:
            assert c["empty"] == "true" and c["drawn"] == 0 and "no data yet" in c["notes"], c
        else:
            assert c["empty"] == "false" and c["drawn"] >= 1, c
    assert len(charts) == 11

    # Resets are markers on the strip; the progress bar follows; the samples table fills.
    assert page.evaluate("window.studioRun.resets.map(r => r.step)") == [5, 10, 15, 20]
    page.wait_for_function("() => document.getElementById('event-strip').data[0].customdata !== undefined")
    assert page.evaluate(STRIP_JS)["reset"]["stands_for"] == 4
    assert page.locator("#progress-text").inner_text() == f"step {STEPS} / {STEPS}"
    assert page.locator("#samples tr").count() > 0
    page.screenshot(path=str(artifacts / "run-page.png"), full_page=True)
    assert watch.problems == [], "\n".join(watch.problems)
