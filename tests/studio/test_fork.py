"""Forks: Alice starts a new run from a checkpoint of hers with an edited config; the fork starts
from that checkpoint's weights and reference, and its steps continue the parent's."""

import pytest
import torch
from django.urls import reverse
from safetensors.torch import load_file
from studio_testing import form_data, tiny_config, write_checkpoints

from studio.models import Checkpoint, Event, Membership, MetricPoint, Run, RunStatus, Team, TeamRole

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkpoint(alices_run) -> Checkpoint:
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.FINISHED, last_step=12)
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": s / 10}) for s in range(1, 13)
    )
    Checkpoint.objects.create(run=alices_run, step=12, path="/runs/1/checkpoints/step-000012")
    return Checkpoint.objects.create(run=alices_run, step=8, path="/runs/1/checkpoints/step-000008")


def fork_url(run: Run) -> str:
    return reverse("run-fork", args=[run.pk])


def test_the_fork_form_is_prefilled_with_the_parents_config(client, alice, alices_run, checkpoint):
    Run.objects.filter(pk=alices_run.pk).update(config={**alices_run.config, "eps_high": 0.31})
    client.force_login(alice)
    page = client.get(fork_url(alices_run) + f"?checkpoint={checkpoint.pk}").content.decode()
    assert 'name="eps_high" value="0.31"' in page
    assert f'<option value="{checkpoint.pk}" selected>step 8' in page
    assert "alice&#x27;s tiny run (fork @ step 8)" in page


def test_a_fork_must_train_past_its_checkpoint(client, alice, alices_run, checkpoint, queued):
    client.force_login(alice)
    response = client.post(fork_url(alices_run), form_data(steps=8, checkpoint=checkpoint.pk))
    assert response.status_code == 400
    assert "must be above 8, the step of the checkpoint the fork starts from" in response.content.decode()
    assert not queued and Run.objects.count() == 1


def test_alice_forks_her_run_with_an_edited_config(
    client, alice, alices_run, checkpoint, queued, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            fork_url(alices_run), form_data(name="longer", steps=20, on_steps=5, checkpoint=checkpoint.pk), follow=True
        )
    fork = Run.objects.get(name="longer")
    assert queued == [fork.pk] and response.redirect_chain[-1][0] == fork.get_absolute_url()
    assert (fork.parent_run, fork.parent_checkpoint, fork.fork_step) == (alices_run, checkpoint, 8)
    assert (fork.last_step, fork.total_steps, fork.config["on_steps"]) == (8, 20, 5)
    page = response.content.decode()
    assert f'Forked from <a href="{alices_run.get_absolute_url()}">' in page and "at step 8" in page
    assert reverse("run-parent-curves", args=[fork.pk]) in page
    curves = client.get(reverse("run-parent-curves", args=[fork.pk])).json()
    assert curves["series"]["reward/mean"]["steps"] == list(range(1, 9))
    assert "longer" in client.get(alices_run.get_absolute_url()).content.decode()  # the parent lists its forks


def test_a_run_without_checkpoints_cannot_be_forked(client, alice, alices_run):
    client.force_login(alice)
    response = client.get(fork_url(alices_run))
    assert response.status_code == 409 and "no checkpoint yet" in response.content.decode()


def test_bob_as_a_viewer_may_not_fork_and_charlie_learns_nothing(client, bob, charlie, alices_run, checkpoint):
    team = Team.objects.create(name="lab")
    Membership.objects.create(team=team, user=bob, role=TeamRole.VIEWER)
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    client.force_login(bob)
    assert client.get(fork_url(alices_run)).status_code == 403
    client.force_login(charlie)
    assert client.get(fork_url(alices_run)).status_code == 404
    assert client.post(fork_url(alices_run), form_data(steps=20, checkpoint=checkpoint.pk)).status_code == 404


def test_a_fork_hides_a_parent_that_bob_may_not_see(client, alice, bob, alices_run, checkpoint, queued):
    client.force_login(alice)
    client.post(fork_url(alices_run), form_data(name="shared fork", steps=20, checkpoint=checkpoint.pk))
    fork = Run.objects.get(name="shared fork")
    team = Team.objects.create(name="lab")
    Membership.objects.create(team=team, user=bob, role=TeamRole.VIEWER)
    Run.objects.filter(pk=fork.pk).update(team=team)
    client.force_login(bob)
    page = client.get(fork.get_absolute_url()).content.decode()
    assert "Forked from" not in page and "parent-curves" not in page
    assert client.get(reverse("run-parent-curves", args=[fork.pk])).status_code == 404


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_a_forked_run_continues_from_the_parent_checkpoints_weights_and_reference(
    client, alice, settings, tmp_path, monkeypatch, queued
):
    from prorl_engine.modeling import load_policy
    from prorl_engine.trainer import Trainer
    from worker.tasks import train_run

    settings.RUNS_DIR = tmp_path
    # The parent (finished at step 4) reset its reference at step 2 and checkpointed at step 3: at that
    # checkpoint the reference (the policy of step 2) differs from the policy (one more step).
    config = tiny_config(steps=4, reset_interval=2, checkpoint_every=3, eval_every=0)
    parent = Run.objects.create(
        owner=alice, name="parent", config=config.to_dict(), total_steps=config.steps, status=RunStatus.FINISHED
    )
    MetricPoint.objects.bulk_create(
        MetricPoint(run=parent, step=s, values={"reward/mean": s / 10}) for s in range(1, 5)
    )
    Run.objects.filter(pk=parent.pk).update(last_step=4)
    [at_3] = write_checkpoints(parent, steps=[3], resets=[2])

    client.force_login(alice)
    client.post(
        fork_url(parent),
        form_data(tiny_config(**{**config.to_dict(), "on_steps": 1}), name="fork", steps=6, checkpoint=at_3.pk),
    )
    fork = Run.objects.get(name="fork")
    assert queued == [fork.pk]

    started = {}
    real_restore = Trainer._restore

    def restore_and_record(trainer, path, fork=False):
        real_restore(trainer, path, fork=fork)
        started.update(
            path=str(path),
            fork=fork,
            step=trainer.step,
            resets=list(trainer.reset_history),
            policy={k: v.clone() for k, v in trainer.policy.state_dict().items()},
            reference={k: v.clone() for k, v in trainer.reference.state_dict().items()},
        )

    monkeypatch.setattr(Trainer, "_restore", restore_and_record)
    assert train_run.apply(args=[fork.pk]).get() == "finished"

    # The worker started the fork from the parent's step-3 checkpoint: its weights, its reference.
    assert (started["path"], started["fork"], started["step"]) == (at_3.path, True, 3)
    assert [r["step"] for r in started["resets"]] == [2]
    saved_policy = load_policy(at_3.path, "float32", torch.device("cpu")).state_dict()
    saved_reference = load_file(f"{at_3.path}/reference.safetensors")
    assert all(torch.equal(started["policy"][k], saved_policy[k]) for k in saved_policy)
    assert all(torch.equal(started["reference"][k], saved_reference[k]) for k in saved_reference)
    assert not all(torch.equal(started["reference"][k], started["policy"][k]) for k in saved_reference)

    # Its curves continue the parent's steps; the parent is untouched.
    assert list(MetricPoint.objects.filter(run=fork).values_list("step", flat=True)) == [4, 5, 6]
    assert list(MetricPoint.objects.filter(run=parent).values_list("step", flat=True)) == [1, 2, 3, 4]
    running = Event.objects.get(run=fork, kind="status", data__has_key="forked_from")
    assert (running.step, running.data["forked_from"]) == (3, at_3.path)
    fork.refresh_from_db()
    assert (fork.status, fork.last_step) == (RunStatus.FINISHED, 6)
    data = client.get(reverse("run-metrics", args=[fork.pk])).json()
    assert data["series"]["reward/mean"]["steps"] == [4, 5, 6]
