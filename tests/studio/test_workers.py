"""The queue you can see: why a queued run waits and its place, cancelling a queued run, the workers
page, and the presence rows each worker process writes (worker/presence.py)."""

from __future__ import annotations

import time

import pytest
from access_testing import team_of
from django.urls import reverse
from django.utils import timezone
from studio_testing import make_run

from studio.models import Event, Run, RunStatus, WorkerPresence
from studio.workers import queue_info

pytestmark = pytest.mark.django_db


def worker(name: str, node: str, queues=("gpu",), seen_s_ago: float = 1.0, **fields) -> WorkerPresence:
    return WorkerPresence.objects.create(
        name=name, node=node, queues=list(queues), last_seen=time.time() - seen_s_ago, **fields
    )


def training(run: Run, worker_name: str, step: int) -> None:
    """`run` trains on `worker_name`, under a live lease."""
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, worker=worker_name, heartbeat=time.time(), last_step=step, started_at=timezone.now()
    )


def test_a_queued_run_waits_behind_the_run_on_the_only_worker(alice, sam):
    worker("gpu1:10", "gpu-worker@gpu1")
    demo = make_run(alice, "demo", minutes_ago=10)
    training(demo, "gpu1:10", 40)
    mine = make_run(alice, "mine")
    info = queue_info(mine, alice)
    assert (info["position"], info["ahead"], info["workers"]) == (1, [], 1)
    assert info["busy"] == [{"worker": "gpu-worker", "run": demo.pk, "step": 40, "total": demo.total_steps}]
    assert info["reason"] == (
        f"Next in line: the only training worker trains run #{demo.pk} on worker gpu-worker "
        f"(step 40 of {demo.total_steps})."
    )
    assert "gpu-worker@gpu1" in queue_info(mine, sam)["reason"]  # staff read host names


def test_its_place_counts_the_older_queued_runs_nobody_took_up(alice, bob):
    worker("gpu1:10", "gpu-worker@gpu1")
    training(make_run(bob, "long", minutes_ago=30), "gpu1:10", 5)
    first = make_run(bob, "first", minutes_ago=20)
    second = make_run(bob, "second", minutes_ago=10)
    make_run(bob, "stopped", minutes_ago=15, status=RunStatus.STOPPED)
    mine = make_run(alice, "mine")
    make_run(bob, "after me")
    info = queue_info(mine, alice)
    assert (info["position"], info["ahead"], info["ahead_count"]) == (3, [first.pk, second.pk], 2)
    assert info["reason"].startswith(f"Position 3 in the training queue: behind run #{second.pk} and 1 more queued;")


def test_no_live_training_worker_is_the_reason_when_there_is_none(alice, settings):
    worker("old:1", "gpu-worker@old", seen_s_ago=settings.WORKER_LEASE_S + 5)  # stopped reporting
    worker("eval:2", "eval-worker@x", queues=["eval"])  # consumes only evaluation jobs
    info = queue_info(make_run(alice, "mine"), alice)
    assert info["workers"] == 0
    assert "no live worker consumes the training queue (gpu)" in info["reason"]


def test_a_free_worker_takes_the_next_run_up_within_seconds(alice):
    worker("gpu1:10", "gpu-worker@gpu1")
    info = queue_info(make_run(alice, "mine"), alice)
    assert info["reason"] == "Next in line: 1 of 1 training workers is free and should take it up within seconds."


def test_a_run_a_worker_has_taken_up_is_position_zero(alice):
    worker("gpu1:10", "gpu-worker@gpu1")
    run = make_run(alice, "mine")
    Run.objects.filter(pk=run.pk).update(worker="gpu1:10", heartbeat=time.time())
    run.refresh_from_db()
    info = queue_info(run, alice)
    assert info["position"] == 0 and info["reason"].startswith("Worker gpu-worker has taken it up")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    run.refresh_from_db()
    assert queue_info(run, alice) is None


def test_the_run_page_shows_why_it_waits_and_its_json_says_the_same(client, alice, bob, charlie):
    worker("gpu1:10", "gpu-worker@gpu1")
    demo = make_run(bob, "demo", minutes_ago=5)
    training(demo, "gpu1:10", 3)
    mine = make_run(alice, "mine")
    client.force_login(alice)
    page = client.get(mine.get_absolute_url()).content.decode()
    assert f"the only training worker trains run #{demo.pk} on worker gpu-worker" in page
    assert 'id="cancel-queued"' in page and 'data-position="1"' in page
    data = client.get(reverse("run-queue", args=[mine.pk])).json()
    assert data["type"] == "run.queue" and data["queue"]["busy"][0]["run"] == demo.pk and data["status"] == "queued"
    assert client.get(reverse("run-queue", args=[demo.pk])).status_code == 404  # Bob's run: not Alice's to see
    client.force_login(charlie)
    assert client.get(reverse("run-queue", args=[mine.pk])).status_code == 404


def test_alice_cancels_her_queued_run_with_a_post(client, alice):
    run = make_run(alice, "mine")
    client.force_login(alice)
    assert client.get(reverse("run-cancel", args=[run.pk])).status_code == 405
    response = client.post(reverse("run-cancel", args=[run.pk]), {"next": reverse("worker-list")})
    assert response.status_code == 302 and response["Location"] == reverse("worker-list")
    run.refresh_from_db()
    assert run.status == RunStatus.STOPPED
    assert Event.objects.get(run=run, kind="status").data["requested_by"] == "alice"
    response = client.post(reverse("run-cancel", args=[run.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == run.get_absolute_url()  # never off the site


def test_cancel_needs_csrf(alice):
    from django.test import Client

    run = make_run(alice, "mine")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("run-cancel", args=[run.pk])).status_code == 403
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_a_viewer_may_not_cancel_and_a_running_run_is_stopped_from_its_page(client, alice, bob):
    run = make_run(alice, "mine")
    Run.objects.filter(pk=run.pk).update(team=team_of(alice, (bob, "viewer")))
    client.force_login(bob)
    assert client.post(reverse("run-cancel", args=[run.pk])).status_code == 403
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    client.force_login(alice)
    client.post(reverse("run-cancel", args=[run.pk]))
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_the_workers_page_lists_live_workers_their_queues_gpus_and_current_run(client, alice, bob, sam, settings):
    worker("gpu1:10", "gpu-worker@gpu1", gpus="2 x H100")
    worker("gpu2:11", "gpu-worker@gpu2", seen_s_ago=settings.WORKER_LEASE_S + 30)
    worker("cpu1:12", "eval-worker@cpu1", queues=["eval"])
    mine = make_run(alice, "alice's long run")
    training(mine, "gpu1:10", 12)
    theirs = make_run(bob, "bob's queued run")
    client.force_login(alice)
    page = client.get(reverse("worker-list")).content.decode()
    assert "1 live worker on the training queue (gpu),\n  1 on the evaluation queue" in page
    row = page[page.index("2 x H100") - 300 :]
    assert "alive" in row and "alice&#x27;s long run" in row and "step 12 /" in row
    assert 'data-state="gone"' in page and "gpu1" not in page.replace("gpu-worker", "")  # no host names
    assert f"run #{theirs.pk}" in page and "bob&#x27;s queued run" not in page  # Bob's run: its number only
    client.force_login(sam)
    assert "gpu-worker@gpu1" in client.get(reverse("worker-list")).content.decode()


def test_a_worker_process_reports_itself_with_its_queues_and_declared_gpus(monkeypatch):
    from worker import presence
    from worker.tasks import WORKER_NAME

    monkeypatch.setenv("PRORL_WORKER_GPUS", "1 x A100")
    presence.report("gpu-worker@here", ["gpu"], now=1000.0)
    presence.report("gpu-worker@here", ["gpu"], now=1010.0)
    row = WorkerPresence.objects.get()
    assert (row.name, row.node, row.queues, row.gpus, row.last_seen) == (
        WORKER_NAME,
        "gpu-worker@here",
        ["gpu"],
        "1 x A100",
        1010.0,
    )


def test_the_embedded_default_runs_training_and_evaluation_on_workers_of_their_own():
    from studio import up

    commands = {name: up.worker_command(name) for name in up.WORKERS}
    assert {name: c[c.index("--queues") + 1] for name, c in commands.items()} == {
        "gpu-worker": "gpu",
        "eval-worker": "eval",
    }
    assert commands["eval-worker"][commands["eval-worker"].index("-n") + 1] == "eval-worker@%h"
