"""Each worker process says who it is and that it lives: a WorkerPresence row renewed by a thread.

Celery's own broadcasts (`inspect`, gossip, heartbeats) cannot see a `--pool solo` worker while it
trains: its one thread is inside the task and answers nothing. A thread of our own renews the row
every WORKER_LEASE_S / 4 seconds whatever the task does, the way the sink renews a run's lease; the
workers page and the queue explanations (studio/workers.py) read these rows and the runs' leases.

The same thread runs the watchdogs' "no new step" check (studio.watchdogs.check_stale) and, every
WORKER_LEASE_S, the reconciler that sends again the runs that lost their Celery message
(worker/reconcile.py): Celery beat is not part of `make up`, and a check that lives in every worker
still runs when one trainer hangs or one worker is gone.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import signals
from django.conf import settings
from django.db import connection
from django.utils import timezone

from studio.models import WorkerPresence
from studio.watchdogs import check_stale
from worker.reconcile import reconcile
from worker.tasks import WORKER_NAME

log = logging.getLogger(__name__)
FORGET_AFTER_S = 24 * 3600  # rows of workers gone this long are deleted


def declared_gpus() -> str:
    """The GPUs this worker declares: PRORL_WORKER_GPUS ("2 x H100"), else CUDA_VISIBLE_DEVICES.
    Nothing is probed: initialising CUDA here, before the task, is the task's business."""
    declared = os.environ.get("PRORL_WORKER_GPUS", "").strip()
    if declared:
        return declared[:200]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return f"CUDA_VISIBLE_DEVICES={visible}"[:200] if visible else ""


def report(node: str, queues: list[str], now: float | None = None) -> None:
    """Create or renew this process's row."""
    now = time.time() if now is None else now
    WorkerPresence.objects.update_or_create(
        name=WORKER_NAME,
        defaults={"node": node, "queues": queues, "gpus": declared_gpus(), "last_seen": now, "stopped_at": None},
    )


class Presence:
    """The reporting thread of one worker process."""

    def __init__(self, node: str, queues: list[str]):
        self.node, self.queues = node, queues
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="worker-presence", daemon=True)

    def start(self) -> None:
        WorkerPresence.objects.filter(name=WORKER_NAME).update(started_at=timezone.now())
        self.thread.start()

    def _loop(self) -> None:
        interval = settings.WORKER_LEASE_S / 4
        reconcile_at = time.monotonic()  # at once: a worker starting after a Redis restart looks first
        try:
            while True:
                try:
                    report(self.node, self.queues)
                    check_stale()
                    WorkerPresence.objects.filter(last_seen__lt=time.time() - FORGET_AFTER_S).delete()
                except Exception:  # the database may be down for a while: try again at the next beat
                    log.exception("worker presence report failed")
                    connection.close()
                if time.monotonic() >= reconcile_at:
                    reconcile_at = time.monotonic() + settings.WORKER_LEASE_S
                    self._reconcile()
                if self.stopping.wait(interval):
                    return
        finally:
            connection.close()

    def _reconcile(self) -> None:
        try:
            reconcile()
        except Exception:  # the database or Redis may be away: the next round looks again
            log.exception("reconciling the queued runs failed")
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        WorkerPresence.objects.filter(name=WORKER_NAME).update(stopped_at=timezone.now())


_presence: Presence | None = None


@signals.worker_ready.connect
def _start(sender, **kwargs) -> None:
    global _presence
    queues = sorted(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    _presence = Presence(sender.hostname, queues)
    report(sender.hostname, queues)
    _presence.start()


@signals.worker_shutdown.connect
def _stop(sender, **kwargs) -> None:
    if _presence is not None:
        try:
            _presence.stop()
        finally:
            connection.close()
