"""Faults on the real pieces: daphne, a Celery worker, a private Redis this module kills and
starts again (empty, as `make up` runs it), and the test database.

- Redis restarts mid-run: the run finishes with steps exactly 1..N in one attempt, and the run
  queued behind it, whose Celery message the restart lost, is sent again by the reconciler.
- A run whose worker died (its lease lapsed, its message gone) is taken up from its checkpoint; a
  paused one is held paused there until Alice resumes it.
"""

import time

import pytest
from celery import Celery
from fault_testing import RestartableRedis
from studio_testing import tiny_config, write_checkpoints

from studio import queue
from studio.commands import Kind, send_command
from studio.models import Event, MetricPoint, Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)  # about 30 s each
STEPS = 30


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> RestartableRedis:
    server = RestartableRedis(tmp_path_factory.mktemp("live-redis"))
    yield server
    server.kill()


@pytest.fixture(scope="module")
def studio_session(make_live_studio, redis):
    return make_live_studio(redis.url)


@pytest.fixture
def studio(studio_session):
    yield studio_session
    studio_session.stop_workers()


def new_run(owner, name: str, steps: int) -> Run:
    config = tiny_config(steps=steps, eval_every=0, checkpoint_every=3)
    return Run.objects.create(owner=owner, name=name, config=config.to_dict(), total_steps=steps)


def send(redis: RestartableRedis, run: Run) -> None:
    """What the studio does once the run is stored (studio.launch), on this module's Redis."""
    app = Celery("faults-live", set_as_current=False, broker=redis.url)
    app.send_task(queue.TRAIN_RUN, args=[run.pk], queue="gpu")


def steps_of(run: Run) -> list[int]:
    return list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def statuses(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run, kind="status").order_by("id").values_list("data__status", flat=True))


def finished(run: Run, wait_for, studio) -> Run:
    done = wait_for(
        lambda: Run.objects.filter(pk=run.pk, status__in=["finished", "failed", "stopped"]).first(),
        300,
        f"run {run.name} to end",
        studio.logs,
    )
    assert done.status == RunStatus.FINISHED, (done.error, studio.logs())
    return done


def test_a_redis_restart_mid_run_ends_nothing_and_forgets_no_queued_run(studio, redis, alice, wait_for):
    studio.start_worker("worker-1")
    training = new_run(alice, "through the restart", STEPS)
    behind = new_run(alice, "queued behind it", 4)
    send(redis, training)
    send(redis, behind)  # waits in the queue: the one worker trains the first run
    wait_for(lambda: Run.objects.get(pk=training.pk).last_step >= 3, 240, "step 3", studio.logs)

    redis.kill()  # every message and group is gone with it
    at_kill = Run.objects.get(pk=training.pk).last_step
    wait_for(lambda: Run.objects.get(pk=training.pk).last_step > at_kill, 60, "a step stored without Redis")
    assert Run.objects.get(pk=training.pk).status == RunStatus.RUNNING  # the outage ended nothing
    redis.start()

    done = finished(training, wait_for, studio)
    assert steps_of(done) == list(range(1, STEPS + 1))
    assert done.attempts == 1 and statuses(done) == ["running", "finished"]

    resent = finished(behind, wait_for, studio)
    assert steps_of(resent) == [1, 2, 3, 4] and resent.attempts == 1
    (event,) = Event.objects.filter(run=behind, kind="requeued")
    assert event.data["reason"] == "queued without a Celery message"


def test_a_run_whose_worker_died_is_taken_up_from_its_checkpoint(studio, alice, settings, wait_for):
    settings.RUNS_DIR = studio.folder / "runs"  # where the worker trains it
    run = new_run(alice, "orphan", 8)
    write_checkpoints(run, [3])
    MetricPoint.objects.bulk_create([MetricPoint(run=run, step=s, values={"reward/mean": 0.0}) for s in range(1, 6)])
    # Its worker trained it to step 5 and died an hour ago; its message went with a Redis restart.
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, worker="gone:1", heartbeat=time.time() - 3600, last_step=5, attempts=1
    )
    studio.start_worker("worker-2")

    done = finished(run, wait_for, studio)
    assert steps_of(done) == list(range(1, 9)) and done.attempts == 2
    resume = Event.objects.get(run=run, kind="resume")
    assert resume.data["from_step"] == 3
    (event,) = Event.objects.filter(run=run, kind="requeued")
    assert (event.step, event.data["reason"]) == (3, "its worker stopped renewing the lease")


def test_a_paused_run_whose_worker_died_is_taken_up_held_paused_and_resumes_on_command(
    studio, alice, settings, wait_for
):
    settings.RUNS_DIR = studio.folder / "runs"
    run = new_run(alice, "paused orphan", 8)
    write_checkpoints(run, [3])
    MetricPoint.objects.bulk_create([MetricPoint(run=run, step=s, values={"reward/mean": 0.0}) for s in range(1, 5)])
    # Alice paused it at step 4; its worker died an hour ago, its message gone with a Redis restart.
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.PAUSED, worker="gone:1", heartbeat=time.time() - 3600, last_step=4, attempts=1
    )
    studio.start_worker("worker-2")

    held = wait_for(
        lambda: Event.objects.filter(run=run, kind="status", data__status="paused").first(),
        240,
        "the hold",
        studio.logs,
    )
    assert (held.step, held.data["resumed_from"]) == (3, 3)
    assert held.data["reason"] == "it was paused when its last attempt ended: resume or stop it"
    (requeued,) = Event.objects.filter(run=run, kind="requeued")
    assert requeued.data["reason"] == "its worker stopped renewing the lease; it is taken up paused, as it was"
    time.sleep(3)  # a worker that trained on would have logged step 4 again by now
    taken = Run.objects.get(pk=run.pk)
    assert (taken.status, taken.attempts, taken.last_step, steps_of(taken)) == (RunStatus.PAUSED, 2, 3, [1, 2, 3])
    assert taken.worker and taken.worker != "gone:1"  # the new worker holds the lease while it waits

    send_command(taken, Kind.RESUME, alice)
    done = finished(run, wait_for, studio)
    assert steps_of(done) == list(range(1, 9)) and done.attempts == 2
    assert statuses(done) == ["paused", "running", "finished"]
