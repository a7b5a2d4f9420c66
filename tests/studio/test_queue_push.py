"""The queue pushed to the pages, on a real Redis channel layer: whenever the queue changes (a run is
queued, one ahead is cancelled), every queued run's group gets a `run.queue` payload with its reason
and place, the run that left gets None, and a channel layer that is down never breaks queueing or
cancelling. (The run page's socket forwarding it: test_queue_socket.py.)"""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from studio_testing import make_run

from studio import queue
from studio.commands import Kind, send_command
from studio.models import Run, RunStatus, WorkerPresence

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]

NO_WORKER = "but no live worker consumes the training queue (gpu)"


class Listener:
    """A channel in the groups of `runs`, as a run page's socket is: what the layer delivers to each."""

    def __init__(self, runs: list[Run]):
        self.layer = get_channel_layer()
        self.channels = {}
        for run in runs:
            channel = async_to_sync(self.layer.new_channel)()
            async_to_sync(self.layer.group_add)(run.group_name, channel)
            self.channels[run.pk] = channel

    def received(self, run: Run) -> dict:
        async def receive():
            return await self.layer.receive(self.channels[run.pk])

        return async_to_sync(receive)()


@pytest.fixture
def two_queued(alice) -> tuple[Run, Run]:
    """Alice's older run, then her newer one behind it, and no worker alive."""
    return make_run(alice, "older", minutes_ago=10), make_run(alice, "newer", minutes_ago=5)


def test_every_queued_run_hears_its_place(two_queued):
    older, newer = two_queued
    listener = Listener([older, newer])
    queue.publish_queue()
    first, second = listener.received(older), listener.received(newer)
    assert first["type"] == second["type"] == "run.queue"
    assert (first["queue"]["position"], first["queue"]["ahead"]) == (1, [])
    assert (second["queue"]["position"], second["queue"]["ahead"]) == (2, [older.pk])
    start = f"start one ({queue.START_WORKER})"
    assert second["queue"]["reason"] == f"Position 2 in the training queue, {NO_WORKER}: {start}."


def test_cancelling_the_run_ahead_moves_the_next_one_up_and_tells_the_cancelled_one(alice, two_queued):
    older, newer = two_queued
    listener = Listener([older, newer])
    assert send_command(older, Kind.STOP, alice) is None  # no worker held it: stopped at once
    assert listener.received(older) == {"type": "run.queue", "queue": None}
    moved_up = listener.received(newer)["queue"]
    assert (moved_up["position"], moved_up["ahead_count"]) == (1, 0)
    assert moved_up["reason"].startswith(f"Next in line, {NO_WORKER}")


def test_a_queued_run_is_announced_to_the_runs_ahead_of_it_too(two_queued, monkeypatch):
    older, newer = two_queued
    sent = []
    monkeypatch.setattr(queue.app, "send_task", lambda task, args, **route: sent.append((task, args, route)))
    listener = Listener([older, newer])
    queue.enqueue(queue.TRAIN_RUN, newer.pk, "gpu")
    assert sent == [(queue.TRAIN_RUN, [newer.pk], {"queue": "gpu"})]
    assert listener.received(older)["queue"]["position"] == 1
    assert listener.received(newer)["queue"]["position"] == 2


def test_no_host_name_reaches_the_group_even_for_staff_pages(two_queued):
    """The group is shared by every viewer: the payload is the form a viewer who is not staff reads."""
    older, _ = two_queued
    WorkerPresence.objects.create(name="gpu1:10", node="gpu-worker@gpu1.internal", queues=["gpu"], last_seen=0.0)
    Run.objects.filter(pk=older.pk).update(worker="gpu1:10", heartbeat=timezone.now().timestamp())
    listener = Listener([older])
    queue.publish_queue()
    taken = listener.received(older)["queue"]
    assert taken["position"] == 0 and "Worker gpu-worker has taken it up" in taken["reason"]
    assert "gpu1.internal" not in taken["reason"]
    assert taken == queue.queue_info(Run.objects.get(pk=older.pk), AnonymousUser())


def test_a_channel_layer_that_is_down_breaks_neither_queueing_nor_cancelling(alice, two_queued, monkeypatch, caplog):
    older, newer = two_queued

    class DownLayer:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(queue, "get_channel_layer", DownLayer)
    monkeypatch.setattr(queue.app, "send_task", lambda *args, **kwargs: None)
    with caplog.at_level(logging.ERROR, logger="studio.queue"):
        queue.enqueue(queue.TRAIN_RUN, newer.pk)
        assert send_command(older, Kind.STOP, alice) is None
    assert Run.objects.get(pk=older.pk).status == RunStatus.STOPPED
    assert [r.getMessage() for r in caplog.records] == [
        "could not publish the queue's positions (changed: run None)",
        f"could not publish the queue's positions (changed: run {older.pk})",
    ]
