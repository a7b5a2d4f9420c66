"""Handing work to the workers, by task name only, and where a queued run stands.

The studio sends Celery messages with `send_task` on an app of its own that imports no task module:
the studio never imports `worker` (which imports studio.models). The broker and the queue of each
task name (settings CELERY_TASK_ROUTES: training on `gpu`, comparisons on `eval`) come from the same
settings the workers read.

Why a queued run waits (`queue_info`) comes from two kinds of rows the workers write (the studio
never asks Celery, whose broadcasts a `--pool solo` worker cannot answer while it trains):
- WorkerPresence: each worker process renews its row every few seconds (worker/presence.py), with
  its Celery node name, the queues it consumes and the GPUs it declares;
- the run lease (Run.worker, Run.heartbeat; worker/tasks.py `claim_run`): which process holds which
  run, renewed by the run's sink.
A queued run's place is counted among the queued runs nobody has taken up, oldest first: the order
the training queue hands them out (a run re-queued by `make up` after a restart keeps its place by
creation time, an approximation of the broker's order). Whenever the queue changes, `publish_queue`
pushes each queued run's place to its open pages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import async_to_sync
from celery import Celery
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from studio.models import TERMINAL_STATUSES, Run, RunStatus, WorkerPresence
from studio.payloads import QUEUE_AHEAD_SHOWN, BusyWorker, QueueInfo, QueuePayload, queue_message

log = logging.getLogger(__name__)

TRAIN_RUN = "worker.tasks.train_run"
RUN_COMPARISON = "worker.eval_tasks.run_comparison"
PUBLISH_TIMEOUT_S = 5.0  # pushing the queue's positions to the pages, at most

# set_as_current=False: in a worker process the worker's own app stays the one its tasks bind to.
app = Celery("studio", set_as_current=False)
app.config_from_object("django.conf:settings", namespace="CELERY")


def training_queue(gpus: int) -> str:
    """The queue of a run that trains on `gpus` ranks: `gpu` for one, `gpu-N` for N. A worker that
    declares N GPUs consumes gpu, gpu-2, ..., gpu-N (`training_queues`), so a run waits for a worker
    that can hold it."""
    return "gpu" if gpus <= 1 else f"gpu-{gpus}"


def run_gpus(run: Run) -> int:
    """The GPUs per machine `run` asks for (its config's `gpus`)."""
    return int(run.config.get("gpus", 1) or 1)


def send_run(run: Run) -> None:
    """Send `run` to the training queue of the GPUs it asks for (a worker that can hold it takes it)."""
    enqueue(TRAIN_RUN, run.pk, training_queue(run_gpus(run)))


def training_queues(gpus: int) -> list[str]:
    """Every training queue a worker with `gpus` GPUs serves."""
    return [training_queue(n) for n in range(1, max(gpus, 1) + 1)]


def enqueue(task: str, object_id: int, queue: str | None = None) -> None:
    """Send `task` (TRAIN_RUN with a run id, RUN_COMPARISON with a comparison id) to its queue
    (the task's route, or `queue`: a training run's `training_queue`)."""
    app.send_task(task, args=[object_id], **({"queue": queue} if queue else {}))
    if task == TRAIN_RUN:
        publish_queue()


# --- where a queued run stands ---------------------------------------------------------------------

TRAINING_QUEUE = "gpu"
EVALUATION_QUEUE = "eval"
START_WORKER = "celery -A worker worker --queues gpu --concurrency 1 --pool solo"


@dataclass
class Holder:
    """A run held under a live lease, and the worker process holding it."""

    run: Run
    presence: WorkerPresence | None


def worker_label(node: str, staff: bool) -> str:
    """A worker's name as `staff` (or not) may read it."""
    return node if staff else node.split("@", 1)[0]


def holders(now: float) -> list[Holder]:
    """Runs whose lease a live worker renews, oldest lease first."""
    live = Run.objects.exclude(worker="").exclude(status__in=TERMINAL_STATUSES)
    live = live.filter(heartbeat__gte=now - settings.WORKER_LEASE_S).order_by("started_at", "id")
    presences = {p.name: p for p in WorkerPresence.objects.filter(name__in=[r.worker for r in live])}
    return [Holder(run, presences.get(run.worker)) for run in live]


def alive_workers(queue: str, now: float) -> list[WorkerPresence]:
    return [p for p in WorkerPresence.objects.filter(stopped_at__isnull=True) if queue in p.queues and p.is_alive(now)]


@dataclass
class QueueState:
    """What a queued run's place is worked out from, read in a few queries: once for a page, once
    for all the queued runs `publish_queue` tells (not a few queries per run)."""

    now: float
    presences: list[WorkerPresence]  # the worker processes that have not said they stopped
    holders: list[Holder]
    waiting: list[tuple[datetime, int]]  # (created_at, id) of the queued runs nobody took up, oldest first

    @classmethod
    def read(cls) -> QueueState:
        now = time.time()
        waiting = Run.objects.filter(status=RunStatus.QUEUED, worker="").order_by("created_at", "id")
        return cls(
            now=now,
            presences=list(WorkerPresence.objects.filter(stopped_at__isnull=True)),
            holders=holders(now),
            waiting=list(waiting.values_list("created_at", "pk")),
        )

    def alive(self, queue: str) -> list[WorkerPresence]:
        return [p for p in self.presences if queue in p.queues and p.is_alive(self.now)]

    def ahead_of(self, run: Run) -> list[int]:
        """The queued runs nobody took up that were created before `run`, oldest first."""
        return [pk for _, pk in self.waiting[: bisect_left(self.waiting, (run.created_at, run.pk))]]

    def holder_node(self, run: Run) -> str:
        """The Celery node name of the worker holding `run` (its process name without a presence row)."""
        presence = next((h.presence for h in self.holders if h.run.pk == run.pk and h.presence), None)
        return presence.node if presence else run.worker


def queue_info(run: Run, user, state: QueueState | None = None) -> QueueInfo | None:
    """Why `run` waits, for `user` (who may see it); None unless it is queued."""
    if run.status != RunStatus.QUEUED:
        return None
    state = QueueState.read() if state is None else state
    staff = bool(user.is_authenticated and user.is_staff)
    gpus = run_gpus(run)
    workers = state.alive(training_queue(gpus))
    if run.worker and run.heartbeat and state.now - run.heartbeat < settings.WORKER_LEASE_S:
        name = worker_label(state.holder_node(run), staff)
        return {
            "position": 0,
            "ahead": [],
            "ahead_count": 0,
            "workers": len(workers),
            "busy": [],
            "reason": f"Worker {name} has taken it up: training starts once the model and data are loaded.",
        }
    ahead_ids = state.ahead_of(run)
    training = {w.name for w in workers}
    busy: list[BusyWorker] = [
        {
            "worker": worker_label(h.presence.node if h.presence else h.run.worker, staff),
            "run": h.run.pk,
            "step": h.run.last_step,
            "total": h.run.total_steps,
        }
        for h in state.holders
        if h.run.worker in training or h.presence is None  # a lease without a presence row: an older worker
    ]
    position = len(ahead_ids) + 1
    return {
        "position": position,
        "ahead": ahead_ids[-QUEUE_AHEAD_SHOWN:],
        "ahead_count": len(ahead_ids),
        "workers": len(workers),
        "busy": busy,
        "reason": _reason(position, ahead_ids, workers, busy, gpus),
    }


def _reason(
    position: int, ahead: list[int], workers: list[WorkerPresence], busy: list[BusyWorker], gpus: int = 1
) -> str:
    """One sentence: where the run stands and what it waits for."""
    place = "Next in line" if position == 1 else f"Position {position} in the training queue"
    if not workers and gpus > 1:
        queues = ",".join(training_queues(gpus))
        return (
            f"{place}, but no live worker holds {gpus} GPUs (queue {training_queue(gpus)}): the run stays queued "
            f"until one starts (PRORL_WORKER_GPUS={gpus} celery -A worker worker --queues {queues} "
            "--concurrency 1 --pool solo)."
        )
    if not workers:
        return (
            f"{place}, but no live worker consumes the training queue ({TRAINING_QUEUE}): start one ({START_WORKER})."
        )
    behind = []
    if ahead:
        more = f" and {len(ahead) - 1} more queued" if len(ahead) > 1 else ""
        behind.append(f"behind run #{ahead[-1]}{more}")
    free = len(workers) - len(busy)
    if free > 0 and not ahead:
        verb = "is" if free == 1 else "are"
        return f"{place}: {free} of {len(workers)} training workers {verb} free and should take it up within seconds."
    if busy:
        training = ", ".join(
            f"run #{b['run']} on worker {b['worker']} (step {b['step']} of {b['total']})" for b in busy
        )
        behind.append(
            f"{'the only training worker trains' if len(workers) == 1 else 'the training workers train'} {training}"
        )
    return f"{place}: " + "; ".join(behind) + "."


def publish_queue(changed: int | None = None) -> None:
    """Push to the page of every queued run where it now stands (a `run.queue` payload as a viewer who
    is not staff reads it: no host names), and to run `changed` (one just taken up, started, ended or
    cancelled) its own new state, None once it left the queue. Called whenever the queue changes:
    a run queued (`enqueue`), cancelled (studio.commands), taken up or ended (by the worker).

    Best effort: the pages got their state when they loaded, and a channel layer that is down must
    never break queueing a run or a worker, so any error is logged and dropped."""
    try:
        state = QueueState.read()
        runs = list(Run.objects.filter(status=RunStatus.QUEUED).order_by("created_at", "id"))
        if changed is not None and all(run.pk != changed for run in runs):
            runs += list(Run.objects.filter(pk=changed))
        viewer = AnonymousUser()
        async_to_sync(_send)([(run.group_name, queue_message(queue_info(run, viewer, state))) for run in runs])
    except Exception:
        log.exception("could not publish the queue's positions (changed: run %s)", changed)


async def _send(messages: list[tuple[str, QueuePayload]]) -> None:
    """(group, payload) pairs in one pass through the event loop (not one `async_to_sync` each), within
    PUBLISH_TIMEOUT_S: a Redis that hangs must not hold up the worker that changed the queue."""
    layer = get_channel_layer()

    async def send_all() -> None:
        for group, message in messages:
            await layer.group_send(group, message)

    await asyncio.wait_for(send_all(), PUBLISH_TIMEOUT_S)
