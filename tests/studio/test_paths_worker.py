"""The worker re-applies the owner's path rules before it trains: a run stored by any route
(an admin edit, an old row, a view that forgot to ask) fails with the reason and touches nothing."""

from __future__ import annotations

import json

import pytest
from studio_testing import tiny_config

from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED
from studio.models import Checkpoint, Run, RunStatus
from worker.tasks import train_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def stored_run(owner, **changes) -> Run:
    """A queued run whose config no form or API checked."""
    config = tiny_config(**changes)
    return Run.objects.create(owner=owner, name="stored", config=config.to_dict(), total_steps=config.steps)


def test_the_worker_refuses_bobs_stored_run_on_alices_checkpoint(bob, alices_run, tmp_path):
    folder = tmp_path / "runs" / str(alices_run.pk) / "checkpoints" / "step-000004"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    Checkpoint.objects.create(run=alices_run, step=4, path=str(folder))
    run = stored_run(bob, model_path=str(folder))
    assert train_run.apply(args=[run.pk]).get() == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error == f"invalid config: model_path: {MODEL_REFUSED}"


def test_the_worker_builds_no_model_where_bobs_stored_run_says(bob, tmp_path):
    target = tmp_path / "written-by-the-worker"
    run = stored_run(bob, model_path=f"tiny:{target}")
    assert train_run.apply(args=[run.pk]).get() == "failed"
    assert MODEL_REFUSED in Run.objects.get(pk=run.pk).error and not target.exists()


def test_the_worker_reads_no_server_file_for_bobs_stored_run(bob, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"prompt": "the root password is", "answer": "hunter2"}) + "\n")
    run = stored_run(bob, data=[{"task": "x", "source": "file", "path": str(secret), "domain": "math"}])
    assert train_run.apply(args=[run.pk]).get() == "failed"
    assert DATA_REFUSED in Run.objects.get(pk=run.pk).error
    assert not Run.objects.get(pk=run.pk).samples.exists()


def test_the_worker_refuses_a_fork_whose_owner_may_no_longer_fork_its_parent(alice, bob, alices_run):
    from access_testing import team_of

    team = team_of(alice, (bob, "editor"))
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    checkpoint = Checkpoint.objects.create(run=alices_run, step=4, path="/runs/1/checkpoints/step-000004")
    config = tiny_config(steps=8)
    fork = Run.objects.create(
        owner=bob,
        name="fork",
        config=config.to_dict(),
        total_steps=8,
        parent_run=alices_run,
        parent_checkpoint=checkpoint,
        fork_step=4,
        last_step=4,
        resumed_from_step=4,
    )
    team.memberships.filter(user=bob).update(role="viewer")  # demoted before a worker took the fork up
    assert train_run.apply(args=[fork.pk]).get() == "failed"
    assert "bob may no longer fork the run this fork starts from" in Run.objects.get(pk=fork.pk).error
