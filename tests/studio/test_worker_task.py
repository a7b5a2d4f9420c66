"""The training task: it takes a run's lease, refuses to train a run a live worker holds, and
records a failure with its error on the run. The run's status is what the status events say."""

import time

import pytest
from studio_testing import tiny_config

from prorl_engine.paths import MODEL_REFUSED
from studio.commands import send_command
from studio.models import Command, Event, Run, RunStatus
from worker.tasks import Claim, claim_run, train_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def test_a_worker_takes_only_the_lease_of_a_queued_run(alices_run):
    assert claim_run(alices_run.pk, "host:1") is Claim.TAKEN
    run = Run.objects.get(pk=alices_run.pk)
    assert (run.status, run.worker, run.attempts) == (RunStatus.QUEUED, "host:1", 1)  # running once the engine says
    assert not Event.objects.filter(run=run, kind="status").exists()


def test_the_runs_status_is_what_the_engines_status_events_say(alice, settings, tmp_path):
    settings.RUNS_DIR = tmp_path
    config = tiny_config(steps=2, eval_every=0)
    run = Run.objects.create(owner=alice, name="short", config=config.to_dict(), total_steps=config.steps)
    assert train_run.apply(args=[run.pk]).get() == "finished"
    statuses = Event.objects.filter(run=run, kind="status").order_by("id").values_list("data__status", flat=True)
    assert list(statuses) == ["running", "finished"]  # one of each, both the engine's
    run.refresh_from_db()
    assert (run.status, run.worker, run.last_step) == (RunStatus.FINISHED, "", 2) and run.finished_at is not None


def test_stopping_a_run_a_worker_has_taken_up_asks_its_trainer(alices_run, alice):
    claim_run(alices_run.pk, "host:1")  # the engine has not said "running" yet
    command = send_command(alices_run, Command.Kind.STOP, alice)
    assert command is not None and command.kind == "stop" and command.delivered_at is None
    assert Run.objects.get(pk=alices_run.pk).status == RunStatus.QUEUED  # the trainer stops it at its first boundary


def test_a_second_worker_leaves_a_run_whose_worker_is_alive(alices_run):
    claim_run(alices_run.pk, "host:1")
    assert claim_run(alices_run.pk, "host:2") is Claim.HELD


def test_a_second_worker_takes_over_a_run_whose_worker_went_silent(alices_run, settings):
    claim_run(alices_run.pk, "host:1")
    Run.objects.filter(pk=alices_run.pk).update(heartbeat=time.time() - settings.WORKER_LEASE_S - 1)
    assert claim_run(alices_run.pk, "host:2") is Claim.TAKEN
    assert Run.objects.get(pk=alices_run.pk).attempts == 2


def test_nobody_trains_a_stopped_run(alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.STOPPED)
    assert claim_run(alices_run.pk, "host:1") is Claim.DONE


def test_a_run_that_fails_shows_its_error(alices_run):
    Run.objects.filter(pk=alices_run.pk).update(config={**alices_run.config, "model_path": "/nonexistent/model"})
    assert train_run.apply(args=[alices_run.pk]).get() == "failed"
    run = Run.objects.get(pk=alices_run.pk)
    assert run.status == RunStatus.FAILED and f"model_path: {MODEL_REFUSED}" in run.error  # the worker's path rules
    assert Event.objects.filter(run=run, kind="status", data__status="failed").exists()
