"""Nothing queued is forgotten: the workers send again the runs that lost their Celery message.

A Redis restart without persistence loses every message; a worker killed mid-run leaves its message
unacknowledged until the broker's visibility timeout (an hour in production). The database says
which runs should be training, so every worker's presence thread (worker/presence.py) compares it
with the broker every WORKER_LEASE_S:

- a run never taken up (queued, no lease) needs a message waiting in its training queue or one a
  worker has just received (unacknowledged);
- a run whose lease lapsed (its worker went silent: killed, machine gone), running or paused,
  needs a message waiting in its queue: the one its dead worker held comes back only after the
  visibility timeout.

Such a run without one, older than WORKER_LEASE_S, is sent again, once: the run's row is locked,
its lease and the last "requeued" event looked at again, and a "requeued" event stored in the same
transaction (the page lists it), so a second worker reconciling at the same moment finds it and
sends nothing. Should a message still come twice (one restored by the broker later), the claim is
idempotent: the second finds the run held or over and is dropped (worker/tasks.py).

A paused run's lease is renewed while its worker waits for a resume, so only a paused run whose
worker died is sent again: the worker that takes it up restores its last checkpoint and holds it
paused (worker/tasks.py), where stop and resume reach it again; nobody's pause is undone.

The timer lives in the workers, not in Celery beat: `make up` runs no beat, and a check that every
worker runs still runs when any one of them is gone.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from studio import queue
from studio.models import Checkpoint, Event, Run, RunStatus

log = logging.getLogger(__name__)
RECONCILED = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED)


@dataclass
class BrokerMessages:
    """The runs that have a train_run message in the broker."""

    waiting: set[int] = field(default_factory=set)  # in a training queue
    delivered: set[int] = field(default_factory=set)  # received by a worker, not yet acknowledged


def broker_messages(queues: Iterable[str]) -> BrokerMessages:
    """Read the train_run messages of `queues` and the unacknowledged ones from Redis, laid out
    as kombu's Redis transport keeps them (a list per queue and priority, one `unacked` hash)."""
    found = BrokerMessages()
    with queue.app.connection_for_read() as connection:  # kombu's own key names, not spelled again here
        connection.ensure_connection(max_retries=1)  # Redis away: fail now, the next round looks again
        channel = connection.default_channel
        client = channel.client
        for name in queues:
            for key in {channel._q_for_pri(name, priority) for priority in channel.priority_steps}:
                found.waiting |= _run_ids(client.lrange(key, 0, -1))
        found.delivered = _run_ids(json.loads(raw)[0] for raw in client.hvals(channel.unacked_key))
    return found


def _run_ids(messages: Iterable[bytes | str | dict]) -> set[int]:
    """Run ids of the train_run messages among kombu's JSON messages (Celery protocol 2: the
    task's name in the headers, the body a base64 JSON [args, kwargs, embed])."""
    ids = set()
    for raw in messages:
        message = raw if isinstance(raw, dict) else json.loads(raw)
        if message.get("headers", {}).get("task") != queue.TRAIN_RUN:
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        if args and isinstance(args[0], int):
            ids.add(args[0])
    return ids


def reconcile(
    now: float | None = None, messages: Callable[[Iterable[str]], BrokerMessages] = broker_messages
) -> list[int]:
    """Send again every run that needs a message and has none; returns their ids. `messages`
    reads the broker (given the training queues), once and only when a run may need it."""
    now = time.time() if now is None else now
    due = list(_due(now))
    if not due:
        return []
    found = messages({queue.training_queue(queue.run_gpus(run)) for run in due})
    sent = []
    for run in due:
        held = found.waiting if run.worker else found.waiting | found.delivered
        if run.pk not in held and _requeue(run.pk, now):
            sent.append(run.pk)
    return sent


def _due(now: float) -> Iterable[Run]:
    """Runs that should be training, that no live worker holds, and that nobody sent again lately."""
    lease = settings.WORKER_LEASE_S
    no_live_lease = Q(heartbeat__isnull=True) | Q(heartbeat__lt=now - lease)
    old_enough = Q(created_at__lt=datetime.fromtimestamp(now - lease, tz=UTC))
    candidates = Run.objects.filter(no_live_lease, old_enough, status__in=RECONCILED)
    return (run for run in candidates.order_by("created_at", "id") if not _sent_lately(run.pk, now))


def _requeue(run_id: int, now: float) -> bool:
    """Store a "requeued" event and send the run, unless another worker just did or a worker took
    it up meanwhile; the row lock makes two reconcilers take turns."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, status__in=RECONCILED).first()
        if run is None or _lease_live(run, now) or _sent_lately(run_id, now):
            return False
        lapsed = bool(run.worker)
        reason = "its worker stopped renewing the lease" if lapsed else "queued without a Celery message"
        if run.status == RunStatus.PAUSED:
            reason += "; it is taken up paused, as it was"
        Event.objects.create(
            run=run, step=_resume_step(run), kind="requeued", time=now, data={"reason": reason, "worker": run.worker}
        )
        route = queue.training_queue(queue.run_gpus(run))
        transaction.on_commit(lambda: queue.send_run(run))
    log.warning("run %s sent again to queue %s (%s)", run_id, route, "lease lapsed" if lapsed else "no message")
    return True


def _lease_live(run: Run, now: float) -> bool:
    return run.heartbeat is not None and now - run.heartbeat < settings.WORKER_LEASE_S


def _sent_lately(run_id: int, now: float) -> bool:
    return Event.objects.filter(run_id=run_id, kind="requeued", time__gt=now - settings.WORKER_LEASE_S).exists()


def _resume_step(run: Run) -> int:
    """The step the run goes on from: its latest checkpoint (a resume's rewind keeps the event)."""
    latest = Checkpoint.objects.filter(run=run).order_by("-step").values_list("step", flat=True).first()
    return min(run.last_step, max(latest or 0, run.resumed_from_step))
