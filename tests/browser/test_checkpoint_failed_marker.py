"""In headless Chromium: a checkpoint the disk refused is a marker on the run page's event strip, on
the checkpoints row (shown and hidden with them), its hover saying why, whether it was stored before
the page opened or arrives live from the worker; and it is a row of the events table."""

from __future__ import annotations

import pytest
from charts_testing import STRIP_JS, ConsoleWatch, publish, seeded_run, use_live_layer

from studio.models import Event
from studio.payloads import event_message

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NO_SPACE = "no space left on device: the checkpoint needs about 3 MB; free space and resume"
NOT_WRITABLE = "checkpoint folder is not writable: checkpoints/ (Permission denied); make it writable and resume"
SOCKET_OPEN_JS = "() => window.studioRun && window.studioRun.socket && window.studioRun.socket.readyState === 1"
# The strip's trace of a kind: its row, hover texts and whether it is shown.
TRACE_JS = """(kind) => { const t = document.getElementById('event-strip').data.find((t) => t.meta === kind);
  return t && { row: t.y[0], text: t.text, visible: t.visible, symbol: t.marker.symbol }; }"""


def refused(run, step: int, error: str, reason: str) -> Event:
    """A checkpoint_failed event as the worker's sink stores it (prorl_engine/trainer.py logs it)."""
    data = {"error": error, "reason": reason, "needed_mb": 3}
    return Event.objects.create(run=run, step=step, kind="checkpoint_failed", data=data, time=0.0)


def test_a_refused_checkpoint_is_marked_on_the_strip_with_its_message_stored_and_live(
    live_studio, settings, alice, page, log_in
):
    use_live_layer(settings, live_studio)
    run = seeded_run(alice, "disk full", steps=40, resets=(), evals=())
    refused(run, 30, NO_SPACE, "no_space")
    watch = ConsoleWatch(page)
    log_in(page, live_studio.url, "alice")
    page.goto(f"{live_studio.url}/runs/{run.pk}/")
    page.wait_for_function(SOCKET_OPEN_JS, timeout=60_000)
    page.wait_for_function("(kind) => !!document.getElementById('event-strip').data", timeout=30_000)

    trace = page.evaluate(TRACE_JS, "checkpoint_failed")
    assert trace == {
        "row": "checkpoints",
        "text": [f"step 30: checkpoint not written: {NO_SPACE}"],
        "visible": True,
        "symbol": "x",
    }
    strip = page.evaluate(STRIP_JS)
    assert strip["checkpoint_failed"] == {"drawn": 1, "stands_for": 1} and strip["checkpoint"]["drawn"] == 1
    assert strip["inside"]
    row = page.locator('#events tr[data-kind="checkpoint_failed"]').first.inner_text()
    assert row.startswith("30") and NO_SPACE in row

    live = refused(run, 40, NOT_WRITABLE, "not_writable")  # the next one, sent by the worker
    publish(run.group_name, [event_message(live)]).join(30)
    page.wait_for_function(
        "(kind) => document.getElementById('event-strip').data.find((t) => t.meta === kind).x.length === 2",
        arg="checkpoint_failed",
        timeout=30_000,
    )
    assert page.evaluate(TRACE_JS, "checkpoint_failed")["text"][1] == f"step 40: checkpoint not written: {NOT_WRITABLE}"

    page.locator('#chart-controls input[data-kind="checkpoint"]').uncheck()  # hidden with the checkpoints
    page.wait_for_function(
        "(kind) => document.getElementById('event-strip').data.find((t) => t.meta === kind).visible === false",
        arg="checkpoint_failed",
    )
    assert watch.problems == [], "\n".join(watch.problems)
