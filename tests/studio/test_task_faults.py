"""The training task under faults, in this process with a real tiny trainer: a database outage
mid-run is ridden out; every way the task fails closes its sink, so no thread of a finished task
renews the run's lease; a failure that could not be stored at once is stored when it can be."""

import threading
import time

import pytest
from fault_testing import DatabaseOutage
from studio_testing import tiny_config

from prorl_engine.trainer import Trainer
from studio.models import Event, MetricPoint, Run, RunStatus
from worker import sink as sink_module
from worker import tasks
from worker.sink import StudioSink
from worker.tasks import train_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]
STEPS = 8


@pytest.fixture
def run(alice, settings, tmp_path) -> Run:
    settings.RUNS_DIR = tmp_path
    settings.WORKER_LEASE_S = 0.8  # the sink renews the lease every 0.2 s
    config = tiny_config(steps=STEPS, eval_every=0, checkpoint_every=3)
    return Run.objects.create(owner=alice, name="faulty", config=config.to_dict(), total_steps=config.steps)


@pytest.fixture
def outage(monkeypatch) -> DatabaseOutage:
    return DatabaseOutage(monkeypatch)


def outage_at_step(monkeypatch, outage: DatabaseOutage, step: int, seconds: float) -> None:
    """The database goes away for `seconds` when the trainer logs `step`."""
    metrics = StudioSink.metrics

    def logging(sink, logged: int, values):
        metrics(sink, logged, values)
        if logged == step:
            outage.begin(seconds)

    monkeypatch.setattr(StudioSink, "metrics", logging)


def statuses(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run, kind="status").order_by("id").values_list("data__status", flat=True))


def stored_steps(run: Run) -> list[int]:
    return list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def assert_no_thread_renews_the_lease(run: Run) -> None:
    assert [t.name for t in threading.enumerate() if t.name.startswith("studio-sink-")] == []
    before = Run.objects.get(pk=run.pk).heartbeat
    time.sleep(0.5)  # more than two renewal periods
    assert Run.objects.get(pk=run.pk).heartbeat == before


def test_a_database_outage_mid_run_is_ridden_out(run, monkeypatch, outage):
    outage_at_step(monkeypatch, outage, step=2, seconds=3.0)
    assert train_run.apply(args=[run.pk]).get() == "finished"
    assert outage.refused > 0  # the fault did hit the sink's writes (and the control's reads)
    run.refresh_from_db()
    assert (run.status, run.last_step, run.attempts) == (RunStatus.FINISHED, STEPS, 1)
    assert stored_steps(run) == list(range(1, STEPS + 1))
    assert statuses(run) == ["running", "finished"]


def test_an_engine_error_fails_the_run_and_closes_the_sink(run, monkeypatch):
    def explode(trainer):
        trainer.sink.metrics(1, {"reward/mean": 0.5})
        raise ValueError("the engine broke")

    monkeypatch.setattr(Trainer, "train", explode)
    assert train_run.apply(args=[run.pk]).get() == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error.startswith("ValueError: the engine broke")
    assert stored_steps(run) == [1]
    assert_no_thread_renews_the_lease(run)


def test_a_sink_that_cannot_store_fails_the_run_and_closes(run, monkeypatch):
    def refuse(sink, batch):
        raise ValueError("bad row")  # not a transient error: no retry

    monkeypatch.setattr(StudioSink, "_write_batch", refuse)
    assert train_run.apply(args=[run.pk]).get() == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "the studio sink could not store the run's data: bad row" in run.error
    assert_no_thread_renews_the_lease(run)


def test_an_outage_past_the_sinks_patience_fails_the_run_once_the_database_is_back(run, monkeypatch, outage):
    monkeypatch.setattr(sink_module, "DB_OUTAGE_S", 1.0)
    outage_at_step(monkeypatch, outage, step=2, seconds=3.0)  # longer than the sink waits
    assert train_run.apply(args=[run.pk]).get() == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "the database has been unreachable for" in run.error and "resume it to continue" in run.error
    assert statuses(run) == ["running", "failed"]
    assert_no_thread_renews_the_lease(run)


def test_a_failure_that_cannot_be_stored_leaves_the_run_to_lapse(run, monkeypatch, outage):
    """The database never comes back within the task's patience: the run keeps its status, its
    lease lapses (no thread renews it), and the reconciler takes it up later."""
    monkeypatch.setattr(sink_module, "DB_OUTAGE_S", 0.5)
    monkeypatch.setattr(tasks, "DB_WAIT_S", 0.5)
    outage_at_step(monkeypatch, outage, step=2, seconds=3600)
    assert train_run.apply(args=[run.pk]).get() == "failed"
    outage.end()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.worker == tasks.WORKER_NAME
    assert_no_thread_renews_the_lease(run)
    time.sleep(0.9)  # WORKER_LEASE_S
    assert Run.objects.get(pk=run.pk).worker_lost()  # the page says so
