"""In headless Chromium: Alice launches a tiny run from the form and watches its charts grow live."""

from pathlib import Path

import pytest

from studio.models import MetricPoint, Run, RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
POINTS_JS = "(sel) => { const c = document.querySelector(sel); return c && c.data ? c.data[0].x.length : 0; }"
REWARD_CHART = '.chart[data-metric="reward/mean"]'
STEPS = 20


@pytest.fixture
def page(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the test are still
    # plain blocking calls (Django's documented case for this variable).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run scripts/install_system.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        yield page
        browser.close()
        # The test's ORM calls ran beside Playwright's loop, on a connection of their own: close it
        # so that the test database can be dropped.
        from django.db import connections

        connections.close_all()


def test_alice_watches_her_runs_charts_grow_while_it_trains(live_studio, alice, page):
    live_studio.start_worker("browser-worker")
    page.goto(live_studio.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password")
    page.click("button[type=submit]")

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

    # Resets are drawn as markers; the progress bar follows; the samples table fills.
    assert page.evaluate("window.studioRun.resets.map(r => r.step)") == [5, 10, 15, 20]
    assert page.locator("#progress-text").inner_text() == f"step {STEPS} / {STEPS}"
    assert page.locator("#samples tr").count() > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)
