"""The reconciler: a run that should be training and has no Celery message is sent again, once,
whoever reconciles; a run that has one, a live lease, or is over, is left alone. A paused run whose
worker died is sent again too (its next worker holds it paused)."""

import threading
import time

import pytest
from celery import Celery
from fault_testing import RestartableRedis

from studio import queue
from studio.models import Checkpoint, Event, Run, RunStatus
from worker.reconcile import BrokerMessages, broker_messages, reconcile

pytestmark = pytest.mark.django_db(transaction=True)
LEASE_S = 10.0


@pytest.fixture(autouse=True)
def lease(settings):
    settings.WORKER_LEASE_S = LEASE_S


def no_messages(queues) -> BrokerMessages:
    return BrokerMessages()


def later(seconds: float = LEASE_S + 1) -> float:
    """A moment past the grace a fresh run is given (its message may be on its way)."""
    return time.time() + seconds


def requeued(run: Run) -> list[dict]:
    return list(Event.objects.filter(run=run, kind="requeued").values_list("data", flat=True))


def test_a_queued_run_without_a_message_is_sent_again_once(alices_run, queued):
    assert reconcile(later(), no_messages) == [alices_run.pk]
    assert queued == [alices_run.pk]
    assert requeued(alices_run) == [{"reason": "queued without a Celery message", "worker": ""}]
    assert reconcile(later(), no_messages) == []  # the next round: sent lately, its message on the way
    assert queued == [alices_run.pk]


def test_it_is_sent_again_if_its_message_is_still_missing_a_lease_later(alices_run, queued):
    reconcile(later(), no_messages)
    assert reconcile(later(2 * LEASE_S + 2), no_messages) == [alices_run.pk]
    assert queued == [alices_run.pk, alices_run.pk]


def test_a_fresh_queued_run_is_given_time_for_its_message(alices_run, queued):
    assert reconcile(time.time(), no_messages) == []
    assert queued == []


def test_a_queued_run_whose_message_waits_or_was_just_received_is_left_alone(alices_run, queued):
    assert reconcile(later(), lambda queues: BrokerMessages(waiting={alices_run.pk})) == []
    assert reconcile(later(), lambda queues: BrokerMessages(delivered={alices_run.pk})) == []
    assert queued == [] and requeued(alices_run) == []


def test_a_running_run_whose_worker_went_silent_is_sent_again_from_its_checkpoint(alices_run, queued):
    moment = later()
    Checkpoint.objects.create(run=alices_run, step=3, path="/runs/1/step-3")
    Run.objects.filter(pk=alices_run.pk).update(
        status=RunStatus.RUNNING, worker="gone:1", heartbeat=moment - LEASE_S - 1, last_step=5
    )
    # The dead worker's unacknowledged message comes back only after the visibility timeout.
    dead_workers_message = BrokerMessages(delivered={alices_run.pk})
    assert reconcile(moment, lambda queues: dead_workers_message) == [alices_run.pk]
    (event,) = Event.objects.filter(run=alices_run, kind="requeued")
    assert event.step == 3  # the checkpoint it resumes from: the resume's rewind keeps the event
    assert event.data == {"reason": "its worker stopped renewing the lease", "worker": "gone:1"}


def test_a_paused_run_whose_worker_went_silent_is_sent_again_to_be_held_paused(alices_run, queued):
    moment = later()
    Checkpoint.objects.create(run=alices_run, step=3, path="/runs/1/step-3")
    Run.objects.filter(pk=alices_run.pk).update(
        status=RunStatus.PAUSED, worker="gone:1", heartbeat=moment - LEASE_S - 1, last_step=4
    )
    assert reconcile(moment, no_messages) == [alices_run.pk]
    assert queued == [alices_run.pk]
    (event,) = Event.objects.filter(run=alices_run, kind="requeued")
    assert event.step == 3
    assert event.data == {
        "reason": "its worker stopped renewing the lease; it is taken up paused, as it was",
        "worker": "gone:1",
    }


def test_runs_that_are_held_or_over_are_left_alone(alice, alices_run, queued):
    moment = later()
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING, worker="live:1", heartbeat=moment - 1)
    Run.objects.create(  # its worker waits for a resume, renewing the lease
        owner=alice,
        name="paused",
        config=alices_run.config,
        total_steps=4,
        status=RunStatus.PAUSED,
        worker="live:2",
        heartbeat=moment - 1,
    )
    for status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED):
        Run.objects.create(
            owner=alice,
            name=status,
            config=alices_run.config,
            total_steps=4,
            status=status,
            worker="gone:1",
            heartbeat=1.0,
        )
    assert reconcile(moment, no_messages) == []
    assert queued == []


def test_it_looks_at_the_queue_of_the_gpus_a_run_asks_for(alice, alices_run, queued):
    asked: list[set[str]] = []
    Run.objects.filter(pk=alices_run.pk).update(config={**alices_run.config, "gpus": 2})

    def messages(queues):
        asked.append(set(queues))
        return BrokerMessages()

    reconcile(later(), messages)
    assert asked == [{"gpu-2"}]


def test_two_workers_reconciling_at_once_send_the_run_once(alices_run, monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(queue, "enqueue", lambda task, run_id, route=None: sent.append(run_id))
    both_read_the_broker = threading.Barrier(2, timeout=10)

    def messages(queues):
        both_read_the_broker.wait()  # neither has sent it yet
        return BrokerMessages()

    results: list[list[int]] = []

    def worker() -> None:
        from django.db import connection

        try:
            results.append(reconcile(later(), messages))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(results) == [[], [alices_run.pk]]
    assert sent == [alices_run.pk] and len(requeued(alices_run)) == 1


def test_the_broker_is_read_as_kombu_keeps_it(tmp_path, settings, monkeypatch):
    redis = RestartableRedis(tmp_path)
    try:
        app = Celery("reconcile-test", set_as_current=False)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.broker_url = redis.url
        monkeypatch.setattr(queue, "app", app)
        app.send_task(queue.TRAIN_RUN, args=[41], queue="gpu")
        app.send_task(queue.TRAIN_RUN, args=[42], queue="gpu-2", priority=5)  # a key of its own
        app.send_task(queue.RUN_COMPARISON, args=[43], queue="gpu")  # not a training run
        app.send_task(queue.TRAIN_RUN, args=[44], queue="gpu-4")
        with app.connection_for_read() as connection:
            taken = connection.SimpleQueue("gpu-4", no_ack=False)
            message = taken.get(timeout=5)  # received, not acknowledged: kombu's `unacked` hash
            found = broker_messages(["gpu", "gpu-2"])
            message.ack()
            taken.close()
        assert (found.waiting, found.delivered) == ({41, 42}, {44})
    finally:
        redis.kill()
