"""Commands to a live run: which are accepted in which state, and what became of each.

A command is a Command row; the worker's `StudioControl` hands it to the engine at the next step
boundary, and the engine logs a "command" event (data: kind, requested_by, id) when it applies it,
then its effect: a "reset" event, a "checkpoint" event, or a "status" event (paused, running,
stopped). Pages, the JSON endpoints, the token API and the watchdogs all go through `send_command`.

A run a worker has taken up takes commands before its "running" status arrives (the model and data
are loading, or its first steps are in the sink's first batch): they wait as rows, and the trainer
applies them at its first step boundary. A queued run nobody has taken up takes only a stop.

A failed or stopped run takes a resume whenever it has a checkpoint to resume from (its own latest,
or for a fork without one yet, the parent's it started from): it goes back on the queue, and the
worker that takes it up resumes it there (the engine restores the checkpoint and the sink drops what
was logged after it), so its steps stay 1..N with no gap and no step twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from studio import queue
from studio.models import Command, Event, Run, RunStatus
from studio.run_status import record_status

Kind = Command.Kind

VERBS = {
    Kind.RESET_REFERENCE: "reset the reference of",
    Kind.PAUSE: "pause",
    Kind.RESUME: "resume",
    Kind.STOP: "stop",
    Kind.SAVE_CHECKPOINT: "save a checkpoint of",
}


RESUMABLE = (RunStatus.FAILED, RunStatus.STOPPED)  # ended, but a resume puts them back on the queue


class CommandRefused(Exception):
    """The run is in no state to take the command; the message says why, for a person."""


@dataclass(frozen=True)
class Outcome:
    """What became of a command: `state` is pending (not yet handed to the engine), delivered
    (handed over, applied at the next step boundary) or applied (the engine logged it at `step`)."""

    state: str
    step: int | None = None

    def describe(self) -> str:
        if self.state == "applied":
            return f"applied at step {self.step}"
        if self.state == "delivered":
            return "handed to the trainer, applied at its next step boundary"
        return "waiting for the trainer's next step boundary"


def refusal(run: Run, kind: str) -> str | None:
    """Why `run` cannot take a `kind` command now, or None when it can."""
    name = f"Run #{run.pk} ({run.name})"
    verb = VERBS[Kind(kind)]
    if kind == Kind.RESUME and run.status in RESUMABLE:
        return _no_resume_point(run)
    if run.is_terminal:
        return f"Cannot {verb} run #{run.pk}: it is {run.status}, so it takes no more commands."
    if run.status == RunStatus.QUEUED and not run.worker and kind != Kind.STOP:
        return f"Cannot {verb} run #{run.pk}: it is queued; commands reach a run once a worker takes it up."
    if kind == Kind.RESUME and run.status != RunStatus.PAUSED:
        return f"{name} is {run.status}, not paused: there is nothing to resume."
    if kind == Kind.PAUSE and run.status == RunStatus.PAUSED:
        return f"{name} is already paused."
    return None


def send_command(run: Run, kind: str, user: AbstractBaseUser) -> Command | None:
    """Queue `kind` for `run` on behalf of `user` (who must pass `can_control_run`).

    Returns the Command row, or None when a queued run was stopped at once (no worker holds it).
    Raises CommandRefused when the run's state rules the command out.
    """
    run.refresh_from_db(fields=["status", "last_step", "worker"])
    reason = refusal(run, kind)
    if reason:
        raise CommandRefused(reason)
    if kind == Kind.STOP and _stop_queued(run, user):
        return None
    if kind == Kind.RESUME and run.status in RESUMABLE:
        return _requeue(run, user)
    return Command.objects.create(run=run, kind=kind, requested_by=user)


def _stop_queued(run: Run, user: AbstractBaseUser) -> bool:
    """A queued run that no worker has taken up has no trainer to ask: it stops at once, by its own
    status event (its task finds it over and leaves). Once a worker holds its lease, the stop is a
    command like any other, applied before the first step."""
    with transaction.atomic():
        row = Run.objects.select_for_update().filter(pk=run.pk).first()
        if row is None or row.status != RunStatus.QUEUED or row.worker:
            return False
        record_status(run.pk, row.last_step, RunStatus.STOPPED, requested_by=user.get_username())  # pushes the queue
    run.status = RunStatus.STOPPED
    return True


def resume_point(run: Run) -> int | None:
    """The step a failed or stopped `run` resumes from: its latest checkpoint's, or for a fork that
    has none of its own, the parent checkpoint's it started from; None when there is neither."""
    latest = run.checkpoints.order_by("-step").values_list("step", flat=True).first()
    if latest is None and run.parent_checkpoint_id is not None:
        return run.fork_step
    return latest


def _no_resume_point(run: Run) -> str | None:
    """Why a failed or stopped `run` cannot be resumed (nothing to resume from), or None when it can."""
    if run.imported_from:  # its checkpoints are in the CLI's folder, not in the run folder a worker resumes from
        return (
            f"Cannot resume run #{run.pk}: it was trained by the CLI and imported; continue it with "
            "`prorl resume` on its folder, or clone it to train it here."
        )
    if resume_point(run) is not None:
        return None
    return (
        f"Cannot resume run #{run.pk}: it is {run.status} and has no checkpoint to resume from (it ended before "
        "its first one); clone it to train it again."
    )


def _requeue(run: Run, user: AbstractBaseUser) -> Command:
    """Put a failed or stopped run back on the training queue, with its resume as a command (the
    trainer logs it applied at the step it resumes from). The row is locked: two resumes queue it once."""
    with transaction.atomic():
        row = Run.objects.select_for_update().get(pk=run.pk)
        if row.status not in RESUMABLE:
            raise CommandRefused(f"Run #{run.pk} ({run.name}) is {row.status} now: there is nothing to resume.")
        step = resume_point(row)
        record_status(run.pk, row.last_step, RunStatus.QUEUED, requested_by=user.get_username(), resume_from=step)
        Run.objects.filter(pk=run.pk).update(finished_at=None, error="")
        command = Command.objects.create(run=run, kind=Kind.RESUME, requested_by=user)
        transaction.on_commit(lambda: queue.send_run(row))
    run.status = RunStatus.QUEUED
    return command


def outcomes(run: Run, commands: list[Command]) -> dict[int, Outcome]:
    """The outcome of each command, from the "command" events the engine logged for them.

    The event's `data.id` is the command's primary key, stored as a JSON number or a JSON string
    (the engine's Command.id is text; other writers log the integer). A JSON key lookup compares
    types on every database (SQLite's JSON_EXTRACT yields 5 or '5', PostgreSQL compares jsonb
    values), so both forms are asked for and read back as int."""
    pks = [c.pk for c in commands]
    if not pks:
        return {}
    matching = Q(data__id__in=pks) | Q(data__id__in=[str(pk) for pk in pks])
    applied: dict[int, int] = {}
    for event_id, step in (
        Event.objects.filter(matching, run=run, kind="command").order_by("step", "id").values_list("data__id", "step")
    ):
        applied.setdefault(int(event_id), step)  # the first application, should an id be logged twice
    result = {}
    for command in commands:
        step = applied.get(command.pk)
        if step is not None:
            result[command.pk] = Outcome("applied", step)
        else:
            result[command.pk] = Outcome("delivered" if command.delivered_at else "pending")
    return result


def command_payload(command: Command, outcome: Outcome) -> dict:
    return {
        "id": command.pk,
        "kind": command.kind,
        "label": command.get_kind_display(),
        "run": command.run_id,
        "requested_by": command.requested_by.get_username() if command.requested_by else "",
        "created_at": command.created_at.isoformat(),
        "state": outcome.state,
        "step": outcome.step,
        "outcome": outcome.describe(),
    }
