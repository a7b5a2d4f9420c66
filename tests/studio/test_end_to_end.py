"""End to end with real processes: daphne, a Celery worker, Redis and the test database.

Alice launches a tiny run through the HTTP form, a websocket client watches it, the worker is
killed with SIGKILL mid-run, a new worker takes the run up from its last checkpoint, and the
stored steps are exactly 1..N.
"""

import asyncio
import json
import signal

import pytest
from studio_testing import Browserless, form_data

from studio.models import Event, MetricPoint, Run, RunStatus

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STEPS = 30


async def first_points(url: str, cookie: str, timeout: float) -> list[int]:
    """The steps of the first metrics message on the run page's socket."""
    import websockets

    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"}) as ws:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if message["kind"] == "metrics":
                return [point["step"] for point in message["points"]]


def test_a_run_launched_through_the_form_survives_a_killed_worker(live_studio, alice, wait_for):
    first_worker = live_studio.start_worker("worker-1")
    browser = Browserless(live_studio.url)
    browser.log_in("alice", "alice-password")
    status, url, _ = browser.post(
        "/runs/new/", form_data(name="survivor", steps=STEPS, checkpoint_every=3, eval_every=0)
    )
    assert status == 200, url
    run = Run.objects.get(name="survivor")
    assert url.endswith(f"/runs/{run.pk}/")

    # A websocket client sees live points while the first worker trains.
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    ws_url = live_studio.url.replace("http", "ws") + f"/ws/runs/{run.pk}/?after=0"
    assert asyncio.run(first_points(ws_url, cookie, 240))[0] == 1

    # Kill -9 the worker after step 4 is stored, mid-way between checkpoints (every 3 steps).
    wait_for(lambda: Run.objects.get(pk=run.pk).last_step >= 4, 240, "step 4", live_studio.logs)
    first_worker.send_signal(signal.SIGKILL)
    first_worker.wait(10)
    killed_at = Run.objects.get(pk=run.pk)
    assert killed_at.status == RunStatus.RUNNING and killed_at.last_step < STEPS, (
        killed_at.status,
        killed_at.last_step,
        killed_at.error,
        live_studio.logs(),
    )

    live_studio.start_worker("worker-2")
    finished = wait_for(
        lambda: Run.objects.filter(pk=run.pk, status__in=["finished", "failed"]).first(),
        300,
        "the resumed run to finish",
        live_studio.logs,
    )
    assert finished.status == RunStatus.FINISHED, finished.error
    assert list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True)) == list(
        range(1, STEPS + 1)
    )
    assert finished.attempts == 2
    resume = Event.objects.get(run=run, kind="resume")
    checkpoint = resume.step  # the latest checkpoint (every 3 steps) the first worker saved
    assert checkpoint % 3 == 0 and checkpoint <= killed_at.last_step and resume.data["from_step"] == checkpoint

    _, page = browser.get(f"/runs/{run.pk}/")
    assert f"attempt 2 (resumed from step {checkpoint})" in page
    _, body = browser.get(f"/runs/{run.pk}/metrics.json")
    assert json.loads(body)["series"]["reward/mean"]["steps"] == list(range(1, STEPS + 1))
