"""Live control from the run page: reset the reference, pause, resume, stop, save a checkpoint.

Each view queues a Command for the run's worker (studio.commands) and answers the browser with a
redirect to the run page and a message; a JSON caller (Accept: application/json) gets 202 with the
command, or 409 with the reason when the run cannot take it. Who may: `can_control_run`; people
who may only see the run get 403, everyone else 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from studio.commands import CommandRefused, Kind, command_payload, outcomes, resume_point, send_command
from studio.models import Command, Run, RunStatus
from studio.permissions import can_control_run, can_view_run

DONE_MESSAGES = {
    Kind.RESET_REFERENCE: "The reference will be reset to the current policy at the next step boundary.",
    Kind.PAUSE: "The run will pause at the next step boundary.",
    Kind.RESUME: "The run will resume at once.",
    Kind.STOP: "The run will save a checkpoint and stop at the next step boundary.",
    Kind.SAVE_CHECKPOINT: "A checkpoint will be saved at the next step boundary.",
}
STOPPED_AT_ONCE = "The run was still queued: it is stopped."
REQUEUED = "The run is queued again: the worker that takes it up resumes it from its checkpoint at step {step}."
RECENT_COMMANDS = 20


def _wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _visible_run(request: HttpRequest, run_id: int) -> Run:
    run = get_object_or_404(Run, pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    return run


def _done_message(run: Run, kind: str) -> str:
    """What a person is told of a command the run took (a failed or stopped run's resume re-queues it)."""
    if kind == Kind.RESUME and run.status == RunStatus.QUEUED:
        return REQUEUED.format(step=resume_point(run))
    return DONE_MESSAGES[Kind(kind)]


def _command(request: HttpRequest, run_id: int, kind: str) -> HttpResponse:
    run = _visible_run(request, run_id)
    as_json = _wants_json(request)
    if not can_control_run(request.user, run):
        message = "You may see this run but not steer it."
        if as_json:
            return JsonResponse({"error": message}, status=403)
        return HttpResponse(message, status=403, content_type="text/plain; charset=utf-8")
    try:
        command = send_command(run, kind, request.user)
    except CommandRefused as refused:
        if as_json:
            return JsonResponse({"error": str(refused), "status": run.status}, status=409)
        messages.error(request, str(refused))
        return redirect(run)
    if command is None:  # a queued run stopped at once
        if as_json:
            return JsonResponse({"command": None, "status": run.status, "message": STOPPED_AT_ONCE}, status=200)
        messages.success(request, STOPPED_AT_ONCE)
        return redirect(run)
    if as_json:
        outcome = outcomes(run, [command])[command.pk]
        return JsonResponse(
            {"command": command_payload(command, outcome), "status": run.status, "message": _done_message(run, kind)},
            status=202,
        )
    messages.success(request, _done_message(run, kind))
    return redirect(run)


@require_POST
@login_required
def run_reset_reference(request: HttpRequest, run_id: int) -> HttpResponse:
    return _command(request, run_id, Kind.RESET_REFERENCE)


@require_POST
@login_required
def run_pause(request: HttpRequest, run_id: int) -> HttpResponse:
    return _command(request, run_id, Kind.PAUSE)


@require_POST
@login_required
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    return _command(request, run_id, Kind.RESUME)


@require_POST
@login_required
def run_stop(request: HttpRequest, run_id: int) -> HttpResponse:
    return _command(request, run_id, Kind.STOP)


@require_POST
@login_required
def run_save_checkpoint(request: HttpRequest, run_id: int) -> HttpResponse:
    return _command(request, run_id, Kind.SAVE_CHECKPOINT)


@require_GET
@login_required
def run_commands(request: HttpRequest, run_id: int) -> JsonResponse:
    """The run's recent commands, newest first, each with its outcome."""
    run = _visible_run(request, run_id)
    recent = list(
        Command.objects.filter(run=run).select_related("requested_by").order_by("-created_at", "-id")[:RECENT_COMMANDS]
    )
    found = outcomes(run, recent)
    return JsonResponse({"commands": [command_payload(c, found[c.pk]) for c in recent]})
