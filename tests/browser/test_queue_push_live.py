"""In headless Chromium, on the live studio with no worker: Alice's newer run waits second in the
queue behind her older one; she cancels the older one in another tab, and the newer run's open page
says it is next in line without a reload (pushed over its websocket, nothing polled)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from charts_testing import ConsoleWatch, tiny_config
from django.utils import timezone

from studio.models import Run, RunStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def queued_run(owner, name: str, minutes_ago: float) -> Run:
    created = timezone.now() - timedelta(minutes=minutes_ago)
    return Run.objects.create(owner=owner, name=name, config=tiny_config(), total_steps=50, created_at=created)


def test_the_place_of_a_queued_run_moves_up_live_when_the_run_ahead_is_cancelled(live_studio, alice, browser, log_in):
    older, newer = queued_run(alice, "older", 10), queued_run(alice, "newer", 5)
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")
    page.goto(f"{live_studio.url}/runs/{newer.pk}/")
    note = page.locator("#queue-status")
    assert note.get_attribute("data-position") == "2"
    assert page.locator("#queue-reason").text_content().startswith("Position 2 in the training queue")
    page.wait_for_function("() => window.studioRun.socket && window.studioRun.socket.readyState === 1")
    page.evaluate("() => { window.notReloaded = true; }")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    other = context.new_page()
    other.goto(f"{live_studio.url}/runs/{older.pk}/")
    other.click("#cancel-queued")
    other.wait_for_load_state()
    assert Run.objects.get(pk=older.pk).status == RunStatus.STOPPED

    page.wait_for_function("() => document.getElementById('queue-status').dataset.position === '1'", timeout=20_000)
    assert (
        page.locator("#queue-reason")
        .text_content()
        .startswith("Next in line, but no live worker consumes the training queue (gpu)")
    )
    assert page.evaluate("() => window.notReloaded") is True
    assert requests == []  # the page asked nothing: the new place came over its socket
    assert watch.problems == [], "\n".join(watch.problems)
    context.close()
