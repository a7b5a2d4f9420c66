"""In headless Chromium, on the live studio: Alice launches a tiny run with a watchdog that notifies
a webhook (a local test server). While no worker consumes the training queue, the run page says
why it waits; once a worker takes it up the note goes away, the watchdog fires, its event is
stored and shown on the page live, and the receiver gets the Slack-style JSON payload."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from studio.models import Event, Run, Watchdog

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RULE = "length/mean above 0 for 2 steps -> notify"


@pytest.fixture
def receiver():
    """A webhook endpoint on loopback that records every JSON body POSTed to it."""
    bodies: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/slack-hook", bodies
    server.shutdown()


def test_a_watchdog_fires_on_a_live_run_and_its_webhook_gets_the_payload(
    live_studio, alice, page, log_in, receiver, wait_for, monkeypatch, artifacts
):
    url, bodies = receiver
    # the receiver is on loopback, which workers refuse unless told (studio.watchdogs.refused_address)
    monkeypatch.setitem(live_studio.env, "PRORL_WEBHOOK_ALLOW_PRIVATE", "true")
    log_in(page, live_studio.url, "alice")
    page.goto(live_studio.url + "/runs/new/")
    page.fill("#id_name", "watched live")
    page.fill("#id_steps", "40")
    page.fill("#id_eval_every", "0")
    page.fill("#id_watchdogs", RULE)
    page.fill("#id_watchdog_webhook", url)
    page.click("#launch")
    page.wait_for_url("**/runs/*/")
    run = Run.objects.get(name="watched live")
    assert [w.text for w in Watchdog.objects.filter(run=run)] == [RULE]

    # no worker yet: the page says why the run waits
    reason = page.locator("#queue-reason").text_content()
    assert reason.startswith("Next in line, but no live worker consumes the training queue (gpu)")

    live_studio.start_worker("watchdog-worker")
    page.wait_for_function("() => document.getElementById('queue-status').hidden", timeout=240_000)

    wait_for(lambda: bodies, 240, "the watchdog's webhook call", live_studio.logs)
    fired = Event.objects.get(run=run, kind="watchdog")
    assert fired.step == 2 and fired.data["condition"] == "length/mean above 0 for 2 steps"
    assert bodies[0]["text"].startswith(
        f"Watchdog on run #{run.pk} (watched live): length/mean above 0 for 2 steps at step 2 (value "
    )
    assert len(bodies) == 1  # it holds at every step after, and fires once
    row = f'#events tr[data-event="{fired.pk}"]'
    page.wait_for_selector(row, timeout=60_000)  # pushed to the open page over its socket
    assert "watchdog" in page.locator(row).text_content()
    wait_for(lambda: Watchdog.objects.get(run=run).last_delivery == "webhook answered 200", 30, "the delivery outcome")
    page.screenshot(path=str(artifacts / "run-page-watchdog.png"), full_page=True)
    page.locator("#stop").dispatch_event("click")
