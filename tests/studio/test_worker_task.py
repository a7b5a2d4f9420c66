"""The training task: it takes a run's lease, refuses to train a run a live worker holds, and
records a failure with its error on the run."""

import time

import pytest

from prorl_engine.paths import MODEL_REFUSED
from studio.models import Event, Run, RunStatus
from worker.tasks import Claim, claim_run, train_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def test_a_worker_takes_a_queued_run(alices_run):
    assert claim_run(alices_run.pk, "host:1") is Claim.TAKEN
    run = Run.objects.get(pk=alices_run.pk)
    assert (run.status, run.worker, run.attempts) == (RunStatus.RUNNING, "host:1", 1)


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
