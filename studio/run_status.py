"""The one writer of a run's status: "status" events.

A run's status is what its status events say. The engine logs them (running when it starts or
resumes, paused, finished, stopped); the worker adds "failed" when the engine raises; a queued run
that nobody has taken up yet is stopped by its own event (studio.commands). Taking a run up
(worker/tasks.py `claim_run`) only takes its lease. Each of these goes through `status_changes`:
the worker's sink applies it in its batches, `record_status` everywhere else.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from studio.models import TERMINAL_STATUSES, Event, Run, RunStatus
from studio.queue import publish_queue


def status_changes(status: RunStatus, error: str = "") -> dict[str, Any]:
    """The Run fields a status event sets: the status; once it is over, the time it ended and its
    lease released; the error when the event carries one, cleared once the run is running again
    (resumed after a pause for a refused checkpoint, or after it failed)."""
    changes: dict[str, Any] = {"status": status}
    if status in TERMINAL_STATUSES:
        changes.update(finished_at=timezone.now(), worker="")
    if error or status == RunStatus.RUNNING:
        changes["error"] = error
    return changes


def record_status(run_id: int, step: int, status: RunStatus, error: str = "", **data: Any) -> Event:
    """Store a status event (`data`: who asked, and so on) and apply it to the run, atomically."""
    with transaction.atomic():
        event = Event.objects.create(
            run_id=run_id,
            step=step,
            kind="status",
            time=time.time(),
            data={"status": status.value, "error": error, **data},
        )
        Run.objects.filter(pk=run_id).update(**status_changes(status, error))
        transaction.on_commit(lambda: publish_queue(run_id))  # where the queued runs stand changed
    return event
