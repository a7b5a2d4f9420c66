"""The queue you can see, as pages: which workers are alive, what they train, and why a queued run
waits (studio.queue `queue_info` works that out), and cancelling a queued run.

Who sees what: worker host names (the node's part after "@", the process ids) only staff; anyone
else reads a worker by the node's name before "@" ("gpu-worker"). Runs someone may not see are
named by their number only, never by name or owner.
"""

from __future__ import annotations

import time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from studio.commands import CommandRefused, Kind, send_command
from studio.models import Comparison, Run, RunStatus, WorkerPresence
from studio.payloads import queue_message
from studio.permissions import can_control_run, can_view_run, visible_runs
from studio.queue import (
    EVALUATION_QUEUE,
    START_WORKER,
    TRAINING_QUEUE,
    alive_workers,
    holders,
    queue_info,
    worker_label,
)

GONE_SHOWN_S = 3600  # workers that stopped reporting are listed for an hour


# --- pages -----------------------------------------------------------------------------------------


def _visible_run(request: HttpRequest, run_id: int) -> Run:
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    return run


@require_GET
@login_required
def run_queue(request: HttpRequest, run_id: int) -> JsonResponse:
    """{"type": "run.queue", "queue": QueueInfo | None, "status"}: the queue note's state, as scripts read it
    (the run page gets it with the page, then pushed over its websocket: studio.queue `publish_queue`)."""
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
    held = {h.run.worker: h.run for h in holders(now)}
    rows = []
    for presence in WorkerPresence.objects.filter(last_seen__gte=now - GONE_SHOWN_S):
        current = held.get(presence.name)
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
        "training_workers": len(alive_workers(TRAINING_QUEUE, now)),
        "evaluation_workers": len(alive_workers(EVALUATION_QUEUE, now)),
        "start_worker": START_WORKER,
    }
    return render(request, "studio/workers.html", context)
