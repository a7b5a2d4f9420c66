"""The queue you can see: which workers are alive, what they train, and why a queued run waits.

What the studio knows comes from two kinds of rows the workers write (it never asks Celery, whose
broadcasts a `--pool solo` worker cannot answer while it trains):
- WorkerPresence: each worker process renews its row every few seconds (worker/presence.py), with
  its Celery node name, the queues it consumes and the GPUs it declares;
- the run lease (Run.worker, Run.heartbeat; worker/tasks.py `claim_run`): which process holds which
  run, renewed by the run's sink.
A queued run's place is counted among the queued runs nobody has taken up, oldest first: the order
the training queue hands them out (a run re-queued by `make up` after a restart keeps its place by
creation time, an approximation of the broker's order).

Who sees what: worker host names (the node's part after "@", the process ids) only staff; anyone
else reads a worker by the node's name before "@" ("gpu-worker"). Runs someone may not see are
named by their number only, never by name or owner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from studio.commands import CommandRefused, Kind, send_command
from studio.models import TERMINAL_STATUSES, Comparison, Run, RunStatus, WorkerPresence
from studio.payloads import QUEUE_AHEAD_SHOWN, BusyWorker, QueueInfo, queue_message
from studio.permissions import can_control_run, can_view_run, visible_runs
from studio.queue import training_queue, training_queues

TRAINING_QUEUE = "gpu"
EVALUATION_QUEUE = "eval"
GONE_SHOWN_S = 3600  # workers that stopped reporting are listed for an hour
START_WORKER = "celery -A worker worker --queues gpu --concurrency 1 --pool solo"


@dataclass
class Holder:
    """A run held under a live lease, and the worker process holding it."""

    run: Run
    presence: WorkerPresence | None


def worker_label(node: str, staff: bool) -> str:
    """A worker's name as `staff` (or not) may read it."""
    return node if staff else node.split("@", 1)[0]


def _holders(now: float) -> list[Holder]:
    """Runs whose lease a live worker renews, oldest lease first."""
    live = Run.objects.exclude(worker="").exclude(status__in=TERMINAL_STATUSES)
    live = live.filter(heartbeat__gte=now - settings.WORKER_LEASE_S).order_by("started_at", "id")
    presences = {p.name: p for p in WorkerPresence.objects.filter(name__in=[r.worker for r in live])}
    return [Holder(run, presences.get(run.worker)) for run in live]


def _alive_workers(queue: str, now: float) -> list[WorkerPresence]:
    return [p for p in WorkerPresence.objects.filter(stopped_at__isnull=True) if queue in p.queues and p.is_alive(now)]


def queue_info(run: Run, user, now: float | None = None) -> QueueInfo | None:
    """Why `run` waits, for `user` (who may see it); None unless it is queued."""
    if run.status != RunStatus.QUEUED:
        return None
    now = time.time() if now is None else now
    staff = bool(user.is_authenticated and user.is_staff)
    gpus = int(run.config.get("gpus", 1) or 1)
    route = training_queue(gpus)
    workers = _alive_workers(route, now)
    if run.worker and run.heartbeat and now - run.heartbeat < settings.WORKER_LEASE_S:
        presence = WorkerPresence.objects.filter(name=run.worker).first()
        name = worker_label(presence.node if presence else run.worker, staff)
        return {
            "position": 0,
            "ahead": [],
            "ahead_count": 0,
            "workers": len(workers),
            "busy": [],
            "reason": f"Worker {name} has taken it up: training starts once the model and data are loaded.",
        }
    waiting = Run.objects.filter(status=RunStatus.QUEUED, worker="")
    earlier = Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, pk__lt=run.pk)
    ahead_ids = list(waiting.filter(earlier).order_by("created_at", "id").values_list("pk", flat=True))
    training = {w.name for w in workers}
    busy: list[BusyWorker] = [
        {
            "worker": worker_label(h.presence.node if h.presence else h.run.worker, staff),
            "run": h.run.pk,
            "step": h.run.last_step,
            "total": h.run.total_steps,
        }
        for h in _holders(now)
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


# --- pages -----------------------------------------------------------------------------------------


def _visible_run(request: HttpRequest, run_id: int) -> Run:
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    return run


@require_GET
@login_required
def run_queue(request: HttpRequest, run_id: int) -> JsonResponse:
    """{"type": "run.queue", "queue": QueueInfo | None, "status"}: what the run page's queue note polls."""
    run = _visible_run(request, run_id)
    return JsonResponse({**queue_message(queue_info(run, request.user)), "status": run.status})


@require_POST
@login_required
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """Cancel a queued run (its owner and editors): no worker holds it, so it stops at once; one a
    worker has just taken up gets a stop command, applied before its first step."""
    run = _visible_run(request, run_id)
    if not can_control_run(request.user, run):
        return HttpResponse("You may see this run but not cancel it.", status=403, content_type="text/plain")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = run.get_absolute_url()
    if run.status != RunStatus.QUEUED:
        messages.error(request, f"Run #{run.pk} is {run.status}, not queued: stop it from its page.")
        return redirect(back)
    try:
        command = send_command(run, Kind.STOP, request.user)
    except CommandRefused as refused:
        messages.error(request, str(refused))
        return redirect(back)
    if command is None:
        messages.success(request, f"Run #{run.pk} ({run.name}) is cancelled.")
    else:
        messages.success(request, f"Run #{run.pk} had just been taken up: it stops before its first step.")
    return redirect(back)


@require_GET
@login_required
def worker_list(request: HttpRequest) -> HttpResponse:
    """The workers that reported within the last hour, their queues, GPUs and current run, and the
    queues' lengths."""
    now = time.time()
    staff = request.user.is_staff
    visible = set(visible_runs(request.user).values_list("pk", flat=True))
    holders = {h.run.worker: h.run for h in _holders(now)}
    rows = []
    for presence in WorkerPresence.objects.filter(last_seen__gte=now - GONE_SHOWN_S):
        current = holders.get(presence.name)
        rows.append(
            {
                "label": worker_label(presence.node, staff),
                "name": presence.name if staff else "",
                "queues": presence.queues,
                "gpus": presence.gpus,
                "state": "alive" if presence.is_alive(now) else "stopped" if presence.stopped_at else "gone",
                "seen_s": max(0, round(now - presence.last_seen)),
                "started_at": presence.started_at,
                "run": current,
                "run_visible": current is not None and current.pk in visible,
            }
        )
    rows.sort(key=lambda r: (r["state"] != "alive", r["label"], r["name"]))
    queued = list(Run.objects.filter(status=RunStatus.QUEUED).select_related("owner").order_by("created_at", "id")[:50])
    context = {
        "workers": rows,
        "queued": [
            {"run": run, "visible": run.pk in visible, "can_cancel": can_control_run(request.user, run)}
            for run in queued
        ],
        "queued_count": Run.objects.filter(status=RunStatus.QUEUED).count(),
        "comparisons_queued": Comparison.objects.filter(status=Comparison.Status.QUEUED).count(),
        "comparisons_running": Comparison.objects.filter(status=Comparison.Status.RUNNING).count(),
        "training_workers": len(_alive_workers(TRAINING_QUEUE, now)),
        "evaluation_workers": len(_alive_workers(EVALUATION_QUEUE, now)),
        "start_worker": START_WORKER,
    }
    return render(request, "studio/workers.html", context)
