"""A failed or stopped run can always be resumed from its last good checkpoint: Alice resumes hers
from the run page, its JSON endpoint or the API, and it goes back on the queue; a run without a
checkpoint is refused with the reason; a finished run stays finished. Bob, a viewer, may not.

The live tests train a tiny run through the worker task: one whose checkpoint the disk refuses
pauses with the reason on its page and, once the disk is fixed and Alice resumes it, finishes with
steps exactly 1..N; one that failed after a checkpoint is resumed and does the same.
"""

from __future__ import annotations

import errno
import threading

import pytest
from access_testing import api_token, bearer, team_of
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from studio_testing import tiny_config

from prorl_engine import checkpoint as ckpt
from studio.models import Checkpoint, Command, Event, MetricPoint, Run, RunStatus, TeamRole

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}
REQUEUED_AT_4 = "The run is queued again: the worker that takes it up resumes it from its checkpoint at step 4."


def ended(run: Run, status: RunStatus, checkpoints: tuple[int, ...] = (), last_step: int = 5) -> Run:
    """`run` as its worker left it: ended at `last_step` with `status`, an error when it failed, and
    a Checkpoint row per step of `checkpoints`."""
    error = "RuntimeError: worker died\n\nTraceback ..." if status == RunStatus.FAILED else ""
    Run.objects.filter(pk=run.pk).update(status=status, last_step=last_step, error=error, finished_at=timezone.now())
    for step in checkpoints:
        Checkpoint.objects.create(run=run, step=step, path=f"{run.run_dir}/checkpoints/step-{step:06d}")
    return Run.objects.get(pk=run.pk)


@pytest.fixture
def resume(django_capture_on_commit_callbacks):
    """resume(client, run, **extra): POST the run's resume; what the request left to do once its
    transaction committed (sending the run to the queue) is done before it returns."""

    def post(client, run: Run, **extra):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(reverse("run-resume", args=[run.pk]), **extra)

    return post


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.STOPPED])
def test_alice_resumes_her_ended_run_from_its_latest_checkpoint(client, alice, alices_run, queued, resume, status):
    run = ended(alices_run, status, checkpoints=(2, 4))
    client.force_login(alice)
    response = resume(client, run, **JSON)

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["command"]["kind"], body["command"]["requested_by"]) == ("queued", "resume", "alice")
    assert body["message"] == REQUEUED_AT_4
    assert queued == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.error, run.finished_at) == (RunStatus.QUEUED, "", None)
    event = Event.objects.get(run=run, kind="status")
    assert (event.step, event.data) == (5, {"status": "queued", "error": "", "requested_by": "alice", "resume_from": 4})
    assert list(Command.objects.filter(run=run).values_list("kind", flat=True)) == ["resume"]


def test_a_second_resume_of_the_requeued_run_is_refused(client, alice, alices_run, queued, resume):
    run = ended(alices_run, RunStatus.STOPPED, checkpoints=(4,))
    client.force_login(alice)
    assert resume(client, run, **JSON).status_code == 202
    again = resume(client, run, **JSON)
    assert again.status_code == 409 and "it is queued" in again.json()["error"]
    assert queued == [run.pk]


def test_a_run_that_ended_before_its_first_checkpoint_is_refused_saying_why(client, alice, alices_run, queued, resume):
    run = ended(alices_run, RunStatus.FAILED, checkpoints=())
    client.force_login(alice)
    response = resume(client, run, **JSON)

    assert response.status_code == 409
    assert response.json() == {
        "error": f"Cannot resume run #{run.pk}: it is failed and has no checkpoint to resume from (it ended before "
        "its first one); clone it to train it again.",
        "status": "failed",
    }
    assert queued == [] and Run.objects.get(pk=run.pk).status == RunStatus.FAILED


def test_a_fork_without_a_checkpoint_of_its_own_resumes_from_its_parents(client, alice, alices_run, queued, resume):
    parent = ended(alices_run, RunStatus.FINISHED, checkpoints=(8,))
    config = tiny_config()
    fork = Run.objects.create(
        owner=alice,
        name="fork",
        config=config.to_dict(),
        total_steps=config.steps,
        parent_run=parent,
        parent_checkpoint=parent.checkpoints.get(),
        fork_step=8,
    )
    fork = ended(fork, RunStatus.FAILED, last_step=9)
    client.force_login(alice)
    response = resume(client, fork, **JSON)
    assert response.status_code == 202 and response.json()["message"].endswith("checkpoint at step 8.")
    assert queued == [fork.pk]


def test_a_finished_run_is_not_resumed(client, alice, alices_run, queued, resume):
    run = ended(alices_run, RunStatus.FINISHED, checkpoints=(12,))
    client.force_login(alice)
    response = resume(client, run, **JSON)
    assert response.status_code == 409 and "it is finished, so it takes no more commands" in response.json()["error"]
    assert queued == []


def test_the_api_resumes_a_stopped_run(client, alice, alices_run, queued, django_capture_on_commit_callbacks):
    run = ended(alices_run, RunStatus.STOPPED, checkpoints=(3,))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("api-run-commands", args=[run.pk]),
            {"kind": "resume"},
            content_type="application/json",
            **bearer(api_token(alice)),
        )
    assert response.status_code == 201 and response.json()["status"] == "queued"
    assert queued == [run.pk]


def test_the_run_page_offers_alice_the_resume_of_her_failed_run_and_bob_a_viewer_neither(
    client, alice, bob, alices_run, queued, resume
):
    run = ended(alices_run, RunStatus.FAILED, checkpoints=(4,))
    client.force_login(alice)
    assert 'id="resume-from-checkpoint"' in client.get(run.get_absolute_url()).content.decode()
    page = resume(client, run, follow=True).content.decode()
    assert REQUEUED_AT_4 in page
    assert 'id="resume-from-checkpoint"' not in page  # queued now

    run = ended(run, RunStatus.FAILED)
    Run.objects.filter(pk=run.pk).update(team=team_of(alice, (bob, TeamRole.VIEWER)))
    client.force_login(bob)
    assert 'id="resume-from-checkpoint"' not in client.get(run.get_absolute_url()).content.decode()
    assert resume(client, run, **JSON).status_code == 403
    assert queued == [run.pk]


# --- live: the worker task trains a tiny run --------------------------------------------------------


class RefusedWrite:
    """prorl_engine.checkpoint's save_file while the disk is full: the write into `tmp_name` stops
    halfway and raises ENOSPC, until `clear()` (a person freed space)."""

    def __init__(self, tmp_name: str):
        self.tmp_name, self.real = tmp_name, ckpt.save_file

    def __call__(self, tensors, path, *args, **kwargs):
        self.real(tensors, path, *args, **kwargs)
        if self.tmp_name and path.parent.name == self.tmp_name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def clear(self) -> None:
        self.tmp_name = ""


def train_in_thread(run: Run) -> threading.Thread:
    from worker.tasks import train_run

    def train():
        try:
            train_run.apply(args=[run.pk])
        finally:
            connection.close()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    return thread


def steps_stored(run: Run) -> list[int]:
    return list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_a_refused_checkpoint_pauses_the_run_with_the_reason_and_after_a_resume_it_finishes_1_to_n(
    client, alice, settings, tmp_path, monkeypatch, wait_for, resume
):
    settings.RUNS_DIR = tmp_path
    fault = RefusedWrite("step-000002.tmp")
    monkeypatch.setattr(ckpt, "save_file", fault)
    config = tiny_config(steps=4, eval_every=0, checkpoint_every=2, reset_interval=None)
    run = Run.objects.create(owner=alice, name="full disk", config=config.to_dict(), total_steps=config.steps)
    client.force_login(alice)

    trainer = train_in_thread(run)
    try:
        paused = wait_for(lambda: Run.objects.filter(pk=run.pk, status=RunStatus.PAUSED).first(), 120, "the pause")
        assert paused.error.startswith("no space left on device: the checkpoint needs about ")
        assert paused.error.endswith(" MB; free space and resume")
        assert paused.error in client.get(run.get_absolute_url()).content.decode()
        assert not (run.run_dir / "checkpoints/step-000002.tmp").exists()
        failed = Event.objects.get(run=run, kind="checkpoint_failed")
        assert (failed.step, failed.data["reason"], failed.data["error"]) == (2, "no_space", paused.error)

        fault.clear()
        assert resume(client, run, **JSON).status_code == 202
        wait_for(lambda: Run.objects.filter(pk=run.pk, status=RunStatus.FINISHED).exists(), 120, "the end")
    finally:
        trainer.join(120)

    run.refresh_from_db()
    assert steps_stored(run) == [1, 2, 3, 4] and run.error == ""
    assert list(run.checkpoints.values_list("step", flat=True)) == [2, 4]
    statuses = Event.objects.filter(run=run, kind="status").order_by("id").values_list("data__status", flat=True)
    assert list(statuses) == ["running", "paused", "running", "finished"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_a_run_that_failed_after_a_checkpoint_resumes_there_and_finishes_1_to_n(
    client, alice, settings, tmp_path, monkeypatch, queued, wait_for, resume
):
    from prorl_engine.trainer import Trainer

    settings.RUNS_DIR = tmp_path
    step_body = Trainer._train_step
    crash = {"at": 3}

    def crashing_step(self):  # step 3 is logged, then the attempt dies before its checkpoint at step 4
        step_body(self)
        if self.step == crash.get("at"):
            del crash["at"]  # once: the resumed attempt trains step 3 again
            raise RuntimeError("the GPU fell off the bus")

    monkeypatch.setattr(Trainer, "_train_step", crashing_step)
    config = tiny_config(steps=4, eval_every=0, checkpoint_every=2, reset_interval=None)
    run = Run.objects.create(owner=alice, name="crashes", config=config.to_dict(), total_steps=config.steps)

    train_in_thread(run).join(180)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "the GPU fell off the bus" in run.error
    assert list(run.checkpoints.values_list("step", flat=True)) == [2] and steps_stored(run) == [1, 2, 3]

    client.force_login(alice)
    assert resume(client, run, **JSON).status_code == 202
    assert queued == [run.pk]
    train_in_thread(run).join(180)  # the worker the queue hands it to

    run.refresh_from_db()
    assert (run.status, run.error, run.attempts) == (RunStatus.FINISHED, "", 2)
    assert steps_stored(run) == [1, 2, 3, 4]
    resumed = Event.objects.get(run=run, kind="resume")
    assert resumed.data["from_step"] == 2
