"""In headless Chromium: a share link of Alice's live run, opened in a fresh browser context (no
login), shows the curves growing and no control; once Alice revokes it, the link is refused."""

from __future__ import annotations

import re

import pytest

from studio.models import Run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POINTS_JS = "(sel) => { const c = document.querySelector(sel); return c && c.data ? c.data[0].x.length : 0; }"
OWN_CONTROLS_JS = "Array.from(document.querySelectorAll('button, form')).filter(e => !e.closest('.chart')).length"
REWARD_CHART = '.chart[data-metric="reward/mean"]'
STEPS = 40


def test_a_share_link_shows_the_live_run_without_buttons_until_alice_revokes_it(
    live_studio, alice, browser, log_in, artifacts
):
    live_studio.start_worker("share-worker")
    alices = browser.new_context().new_page()
    log_in(alices, live_studio.url, "alice")
    alices.goto(live_studio.url + "/runs/new/")
    alices.fill("#id_name", "shared")
    alices.fill("#id_steps", str(STEPS))
    alices.fill("#id_eval_every", "0")
    alices.click("#launch")
    alices.wait_for_url("**/runs/*/")
    run = Run.objects.get(name="shared")

    alices.click("#sharing-link")
    alices.fill("#id_label", "for Dana")
    alices.click("#create-link")
    share_url = alices.input_value("#new-link-url")
    assert re.fullmatch(rf"{live_studio.url}/s/[A-Za-z0-9_-]{{43}}/", share_url)

    # Dana: a fresh browser context, no cookies, no login.
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    assert page.goto(share_url).status == 200
    page.wait_for_function(f"() => ({POINTS_JS})('{REWARD_CHART}') >= 1", timeout=240_000)
    seen = page.evaluate(POINTS_JS, REWARD_CHART)
    page.wait_for_function(f"() => ({POINTS_JS})('{REWARD_CHART}') > {seen}", timeout=120_000)  # live, over the socket
    assert page.evaluate(OWN_CONTROLS_JS) == 0  # plotly's chart toolbars aside, not one button or form
    assert page.locator("#controls").count() == 0
    assert (
        page.get_by_role("button", name=re.compile("^(Stop|Pause|Resume|Reset reference|Save checkpoint)")).count() == 0
    )
    page.screenshot(path=str(artifacts / "share-link-page.png"), full_page=True)

    alices.goto(f"{live_studio.url}/runs/{run.pk}/sharing/")
    alices.click("table.share-links button:has-text('Revoke')")
    alices.wait_for_selector("table.share-links td:has-text('revoked')")
    assert page.goto(share_url).status == 404
    assert context.new_page().goto(share_url + "metrics.json").status == 404
    context.close()  # the live_studio fixture kills this test's worker, and with it the run
