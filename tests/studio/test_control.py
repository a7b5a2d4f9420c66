"""Live control: Alice resets the reference, pauses, resumes, stops and saves checkpoints of her run;
a command the run cannot take gets a clear answer (a message, or 409 for JSON callers); Bob, a
viewer in her team, may not steer it; Charlie learns nothing."""

import threading
import time

import pytest
from django.db import connection
from django.urls import reverse
from studio_testing import tiny_config

from studio.models import Checkpoint, Command, Event, Membership, Run, RunStatus, Team, TeamRole
from worker.sink import StudioControl

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
COMMANDS = {
    "run-reset-reference": "reset_reference",
    "run-pause": "pause",
    "run-resume": "resume",
    "run-stop": "stop",
    "run-save-checkpoint": "save_checkpoint",
}


def set_status(run: Run, status: str) -> None:
    Run.objects.filter(pk=run.pk).update(status=status)


def post(client, name: str, run: Run, **extra):
    return client.post(reverse(name, args=[run.pk]), **extra)


@pytest.mark.parametrize("name", ["run-reset-reference", "run-pause", "run-stop", "run-save-checkpoint"])
def test_alice_steers_her_running_run(client, alice, alices_run, name):
    set_status(alices_run, RunStatus.RUNNING)
    client.force_login(alice)
    response = post(client, name, alices_run, **JSON)
    assert response.status_code == 202
    command = Command.objects.get(run=alices_run)
    assert (command.kind, command.requested_by) == (COMMANDS[name], alice)
    payload = response.json()["command"]
    assert (payload["kind"], payload["state"], payload["requested_by"]) == (COMMANDS[name], "pending", "alice")


def test_alice_resumes_her_paused_run(client, alice, alices_run):
    set_status(alices_run, RunStatus.PAUSED)
    client.force_login(alice)
    assert post(client, "run-resume", alices_run, **JSON).status_code == 202
    assert (
        post(client, "run-pause", alices_run, **JSON).json()["error"]
        == f"Run #{alices_run.pk} (alice's tiny run) is already paused."
    )
    assert list(Command.objects.filter(run=alices_run).values_list("kind", flat=True)) == ["resume"]


def test_resuming_a_running_run_is_refused_with_the_reason(client, alice, alices_run):
    set_status(alices_run, RunStatus.RUNNING)
    client.force_login(alice)
    response = post(client, "run-resume", alices_run, **JSON)
    assert response.status_code == 409
    assert (
        response.json()["error"]
        == f"Run #{alices_run.pk} (alice's tiny run) is running, not paused: there is nothing to resume."
    )
    assert not Command.objects.exists()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_finished_run_takes_no_command(client, alice, alices_run, name):
    set_status(alices_run, RunStatus.FINISHED)
    client.force_login(alice)
    response = post(client, name, alices_run, **JSON)
    assert response.status_code == 409
    assert "it is finished, so it takes no more commands" in response.json()["error"]
    assert not Command.objects.exists()


def test_the_browser_gets_the_refusal_as_a_message_on_the_run_page(client, alice, alices_run):
    set_status(alices_run, RunStatus.STOPPED)
    client.force_login(alice)
    response = post(client, "run-reset-reference", alices_run, follow=True)
    assert response.redirect_chain[-1][0] == alices_run.get_absolute_url()
    assert "it is stopped, so it takes no more commands" in response.content.decode()


def test_a_queued_run_can_only_be_stopped_and_stops_at_once(client, alice, alices_run):
    client.force_login(alice)
    response = post(client, "run-pause", alices_run, **JSON)
    assert response.status_code == 409 and "it is queued" in response.json()["error"]
    assert post(client, "run-stop", alices_run, **JSON).json() == {
        "command": None,
        "status": "stopped",
        "message": "The run was still queued: it is stopped.",
    }
    assert Run.objects.get(pk=alices_run.pk).status == RunStatus.STOPPED
    assert Event.objects.get(run=alices_run, kind="status").data["requested_by"] == "alice"


def test_bob_as_a_viewer_in_alices_team_may_not_steer_her_run(client, alice, bob, alices_run):
    team = Team.objects.create(name="lab")
    Membership.objects.create(team=team, user=bob, role=TeamRole.VIEWER)
    Run.objects.filter(pk=alices_run.pk).update(team=team, status=RunStatus.RUNNING)
    client.force_login(bob)
    for name in COMMANDS:
        assert post(client, name, alices_run, **JSON).status_code == 403
    assert "reset-reference" not in client.get(alices_run.get_absolute_url()).content.decode()
    Membership.objects.filter(user=bob).update(role=TeamRole.EDITOR)
    assert post(client, "run-pause", alices_run, **JSON).status_code == 202


def test_charlie_learns_nothing_about_alices_run(client, charlie, alices_run):
    set_status(alices_run, RunStatus.RUNNING)
    client.force_login(charlie)
    for name in [*COMMANDS, "run-commands"]:
        method = client.get if name == "run-commands" else client.post
        assert method(reverse(name, args=[alices_run.pk])).status_code == 404
    assert not Command.objects.exists()


def test_the_run_page_shows_what_became_of_each_command(client, alice, alices_run):
    set_status(alices_run, RunStatus.RUNNING)
    client.force_login(alice)
    post(client, "run-save-checkpoint", alices_run)
    post(client, "run-pause", alices_run)
    save, pause = Command.objects.filter(run=alices_run).order_by("id")
    StudioControl(alices_run).poll()  # the worker hands both to the engine, which applies the first
    Event.objects.create(
        run=alices_run,
        step=3,
        kind="command",
        time=time.time(),
        data={"kind": "save_checkpoint", "requested_by": "alice", "id": str(save.pk)},
    )
    page = client.get(alices_run.get_absolute_url()).content.decode()
    assert "applied at step 3" in page and "handed to the trainer" in page
    data = client.get(reverse("run-commands", args=[alices_run.pk])).json()["commands"]
    assert [(c["kind"], c["state"], c["step"]) for c in data] == [
        ("pause", "delivered", None),
        ("save_checkpoint", "applied", 3),
    ]
    assert 'id="pause"' in page and 'id="resume"' in page and 'data-status="running"' in page


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_alice_pauses_saves_resets_resumes_and_stops_a_live_run(client, alice, settings, tmp_path, wait_for):
    """A real tiny run trained by the worker task in a thread, steered through the HTTP views."""
    from worker.tasks import train_run

    settings.RUNS_DIR = tmp_path
    config = tiny_config(steps=60, eval_every=0, checkpoint_every=1000, reset_interval=None)
    run = Run.objects.create(owner=alice, name="steered", config=config.to_dict(), total_steps=config.steps)
    client.force_login(alice)

    def train():
        try:
            train_run.apply(args=[run.pk])
        finally:
            connection.close()

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        wait_for(lambda: Run.objects.get(pk=run.pk).last_step >= 2, 120, "step 2")
        assert post(client, "run-pause", run, **JSON).status_code == 202
        paused = wait_for(lambda: Run.objects.filter(pk=run.pk, status=RunStatus.PAUSED).first(), 60, "the pause")
        at = Event.objects.get(run=run, kind="status", data__status="paused").step
        assert post(client, "run-pause", run, **JSON).status_code == 409

        # While paused: a checkpoint and a reference reset, each at the paused step, each with who asked.
        assert post(client, "run-save-checkpoint", run, **JSON).status_code == 202
        assert post(client, "run-reset-reference", run, **JSON).status_code == 202
        reset = wait_for(lambda: Event.objects.filter(run=run, kind="reset").first(), 30, "the reset")
        assert (reset.step, reset.data) == (at, {"reason": "manual", "requested_by": "alice"})
        assert Checkpoint.objects.filter(run=run, step=at).exists()
        assert Run.objects.get(pk=run.pk).last_step == paused.last_step == at  # no step while paused

        assert post(client, "run-resume", run, **JSON).status_code == 202
        wait_for(lambda: Run.objects.get(pk=run.pk).last_step > at, 60, "a step after resuming")
        assert post(client, "run-stop", run, **JSON).status_code == 202
        stopped = wait_for(lambda: Run.objects.filter(pk=run.pk, status=RunStatus.STOPPED).first(), 60, "the stop")
    finally:
        trainer.join(120)

    # Graceful: the run saved a checkpoint at its last step before stopping.
    assert stopped.last_step < config.steps
    assert Checkpoint.objects.filter(run=run, step=stopped.last_step).exists()
    applied = Event.objects.filter(run=run, kind="command").order_by("id")
    assert [(e.data["kind"], e.data["requested_by"]) for e in applied] == [
        ("pause", "alice"),
        ("save_checkpoint", "alice"),
        ("reset_reference", "alice"),
        ("resume", "alice"),
        ("stop", "alice"),
    ]
    commands = client.get(reverse("run-commands", args=[run.pk])).json()["commands"]
    assert {c["state"] for c in commands} == {"applied"}
    refused = post(client, "run-pause", run, **JSON)  # a resume would queue it again (test_resume_ended_runs)
    assert refused.status_code == 409 and "it is stopped" in refused.json()["error"]
