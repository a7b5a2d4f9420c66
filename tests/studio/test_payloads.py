"""One serialiser per payload: a point, a sample, an event and a run's progress read the same whether
the worker's sink sends them live, or the run page, the websocket backlog or the token API reads
them back from the database."""

from __future__ import annotations

import time

import pytest
from access_testing import api_token, bearer
from asgiref.sync import async_to_sync
from django.urls import reverse
from django.utils import timezone

from prorl_engine.events import Event, Sample
from studio.consumers import RunConsumer
from studio.models import Run
from studio.payloads import progress_payload, run_progress
from worker.sink import StudioSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def test_eta_is_the_pace_of_the_current_attempt():
    # 4 steps done since step 2, in 40 s: 10 s a step, 6 steps to go
    assert progress_payload(6, 12, "running", started_at=100.0, resumed_from=2, now=140.0) == {
        "step": 6,
        "total": 12,
        "status": "running",
        "eta_s": 60.0,
    }
    assert progress_payload(2, 12, "running", started_at=100.0, resumed_from=2, now=140.0)["eta_s"] is None
    assert progress_payload(6, 12, "paused", started_at=100.0, resumed_from=2, now=140.0)["eta_s"] is None


def test_the_sink_sends_what_the_pages_the_socket_and_the_api_read_back(client, alice, alices_run, monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(StudioSink, "_publish", lambda self, payloads: sent.extend(payloads))
    Run.objects.filter(pk=alices_run.pk).update(started_at=timezone.now(), worker="host:1")
    sink = StudioSink(Run.objects.get(pk=alices_run.pk))
    sink.event(Event("status", 0, {"status": "running"}))
    for step in (1, 2, 3):
        sink.metrics(step, {"reward/mean": step / 4, "kl/ref": float("nan")})
    sink.samples(
        3,
        [
            Sample(
                step=3,
                prompt="1+\x001",
                response="<answer>2</answer>",
                reward=1.0,
                verifier_reward=1.0,
                task="chain_sum",
                domain="logic",
                length=5,
                truncated=False,
                details={"expected": "2"},
            )
        ],
    )
    sink.event(Event("reset", 3, {"reason": "schedule"}))
    sink.close()
    closed_at = time.time()

    live = {kind: [p for p in sent if p["type"] == f"run.{kind}"] for kind in ("metrics", "samples", "event")}
    points = [point for payload in live["metrics"] for point in payload["points"]]
    sample = live["samples"][0]["rows"][0]
    reset = next(p["event"] for p in live["event"] if p["event"]["kind"] == "reset")
    assert points[-1] == {"step": 3, "values": {"reward/mean": 0.75, "kl/ref": None}}
    assert sample == {
        "step": 3,
        "prompt": "1+\ufffd1",
        "response": "<answer>2</answer>",
        "reward": 1.0,
        "verifier_reward": 1.0,
        "task": "chain_sum",
        "domain": "logic",
        "length": 5,
        "truncated": False,
    }

    client.force_login(alice)
    page = client.get(reverse("run-metrics", args=[alices_run.pk])).json()
    assert page["samples"] == [sample] and page["resets"] == [reset]
    token = bearer(api_token(alice))
    assert client.get(reverse("api-run-metrics", args=[alices_run.pk]), **token).json()["points"] == points
    assert reset in client.get(reverse("api-run-events", args=[alices_run.pk]), **token).json()["events"]

    consumer = RunConsumer()
    consumer.run = Run.objects.get(pk=alices_run.pk)
    backlog_points, backlog_events, backlog_samples, state = async_to_sync(consumer._backlog)(0)
    assert backlog_points == points and backlog_samples == [sample] and reset in backlog_events
    row = Run.objects.get(pk=alices_run.pk)
    assert state["progress"]["status"] == "running" and state["progress"]["step"] == 3
    sent_progress = live["metrics"][-1]["progress"]  # as the row's progress was when the sink sent it
    assert sent_progress == {**run_progress(row, closed_at), "eta_s": pytest.approx(sent_progress["eta_s"], abs=0.5)}
    assert sent_progress["eta_s"] == pytest.approx(run_progress(row, closed_at)["eta_s"], abs=0.5)
