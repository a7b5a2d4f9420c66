"""Pages and JSON endpoints of runs. Every view that touches a run checks `can_view_run` first."""

from __future__ import annotations

import functools
import json
import time

import yaml
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.schedule import length_penalty_windows, planned_reset_steps
from studio import presets
from studio.compression import response_with_head
from studio.forms import ImportYamlForm, RunForm, initial_from_config
from studio.launch import launch_run
from studio.models import Checkpoint, Event, Run, Sample
from studio.params import answers_bad_parameters, optional_id_param
from studio.payloads import (
    event_payload,
    run_progress,
    run_relative,
    sample_payload,
    shown_config,
    viewer_error,
    viewer_event,
)
from studio.permissions import can_control_run, can_manage_run, can_see_run_details, can_view_run
from studio.series import RunSeriesCache, StoredRows, run_chart_json, stored_rows
from studio.watchdogs import copied_fields

RECENT_SAMPLES = 20
RECENT_EVENTS = 30
RECENT_CHECKPOINTS = 10
# The event strip above the charts: these kinds, the latest MAX_MARKERS of each (a run that resets
# every 5 steps for 10^6 steps still sends a bounded page); an eval event keeps only its eval/all/*
# metrics there (the events table shows all of them).
MARKER_KINDS = ("reset", "command", "checkpoint", "checkpoint_failed", "eval", "watchdog")
MAX_MARKERS = 5000
# metrics.json up to its clock's fields, per run and view (details or not) and version of its rows: about
# as large as the run's series (1 MB for 1000 points x 40 curves), so fewer than studio.series keeps.
METRICS_CACHE_ENTRIES = 16
metrics_cache = RunSeriesCache(METRICS_CACHE_ENTRIES)


def run_for(request: HttpRequest, run_id: int) -> Run:
    """The run, or 404 for anyone who may not see it (no hint that it exists)."""
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    return run


def config_yaml(values: dict) -> str:
    """A config dict (a run's `shown_config`) as YAML, text as it is ("…/model", not "\\u2026/model").
    Cached by content: the run page shows a run's config at every load, and YAML's emitter costs a
    fifth of the page (bench/viewers.py)."""
    return _yaml_of(json.dumps(values))


@functools.lru_cache(maxsize=256)
def _yaml_of(values_json: str) -> str:
    return yaml.safe_dump(json.loads(values_json), sort_keys=False, allow_unicode=True)


@require_http_methods(["GET", "POST"])
@login_required
@answers_bad_parameters(json_body=False)
def run_new(request: HttpRequest) -> HttpResponse:
    clone_of = _clone_source(request)
    if request.method == "GET":
        form = RunForm(initial={"name": "tiny run", **initial_from_config(presets.default_values())}, user=request.user)
        return _render_new(request, form, clone_of)
    form = RunForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render_new(request, form, clone_of, status=400)
    run = launch_run(request.user, form.cleaned_data["name"], form.config, cloned_from=clone_of)
    form.save_watchdogs(run, request.user)
    return redirect(run)


def _clone_source(request: HttpRequest) -> Run | None:
    clone_id = optional_id_param(request.GET, "clone_of")
    return None if clone_id is None else run_for(request, clone_id)


def _render_new(
    request: HttpRequest,
    form: RunForm,
    clone_of: Run | None = None,
    import_form: ImportYamlForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {"form": form, "import_form": import_form or ImportYamlForm(), "clone_of": clone_of}
    return render(request, "studio/run_new.html", context, status=status)


@require_POST
@login_required
def run_import(request: HttpRequest) -> HttpResponse:
    import_form = ImportYamlForm(request.POST, request.FILES, user=request.user)
    if not import_form.is_valid():
        form = RunForm(
            initial={"name": "imported run", **initial_from_config(presets.default_values())}, user=request.user
        )
        return _render_new(request, form, import_form=import_form, status=400)
    config: RunConfig = import_form.cleaned_data["config"]
    form = RunForm(initial={"name": "imported run", **initial_from_config(config.to_dict())}, user=request.user)
    return _render_new(request, form)


@require_POST
@login_required
def run_preview(request: HttpRequest) -> JsonResponse:
    """The schedule of the config being edited: length-penalty windows and planned resets."""
    form = RunForm(request.POST, user=request.user)
    form.is_valid()
    try:  # the person's path rules hold here too, without looking at the disk
        config = RunConfig.from_dict(form.values, check_paths=False, path_policy=form.path_policy)
    except ConfigError as exc:
        return JsonResponse({"errors": [f"{name}: {message}" for name, message in exc.errors]}, status=400)
    points = settings.CHART_POINTS  # the preview chart shows the whole run: its marks at chart resolution
    return JsonResponse(
        {
            "steps": config.steps,
            "windows": length_penalty_windows(config, points=points),
            "resets": planned_reset_steps(config, points=points),
        }
    )


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    return render_run_page(request, run_for(request, run_id))


def render_run_page(request: HttpRequest, run: Run, share_token: str = "") -> HttpResponse:
    """The run page of a run the request may see; with `share_token`, the read-only page of a share
    link (studio.sharing), whose metrics and websocket are reached through the token."""
    details = not share_token and can_see_run_details(request.user, run)
    context = {
        "share_token": share_token,
        "run": run,
        "run_error": run.error if details else viewer_error(run.error, run.run_dir),
        "progress": run_progress(run),
        "checkpoints": shown_checkpoints(run, details),  # run.js keeps the list current from the websocket
        "config_yaml": config_yaml(shown_config(run, details)),
        "can_control": can_control_run(request.user, run),
        "can_manage": can_manage_run(request.user, run),
    }
    return render(request, "studio/run_detail.html", context)


def _shown_event(event: Event, run: Run, details: bool) -> dict:
    """The event's payload as stored for those who see the run's details, else its viewer form."""
    return event_payload(event) if details else viewer_event(event_payload(event), run.run_dir)


def shown_checkpoint(checkpoint: Checkpoint, run: Run, details: bool) -> dict:
    """{"pk", "step", "path"}: the path on the workers, or for a viewer relative to the run ("" outside it)."""
    path = checkpoint.path if details else run_relative(checkpoint.path, run.run_dir) or ""
    return {"pk": checkpoint.pk, "step": checkpoint.step, "path": path}


def shown_checkpoints(run: Run, details: bool) -> list[dict]:
    """The run's latest checkpoints, newest first: the run page's list (and the websocket's update of it)."""
    return [shown_checkpoint(c, run, details) for c in run.checkpoints.order_by("-step")[:RECENT_CHECKPOINTS]]


def marker_payload(event: dict) -> dict:
    """An event as the strip draws it: an eval event with its eval/all/* metrics only."""
    if event["kind"] != "eval" or not isinstance(event["data"].get("metrics"), dict):
        return event
    metrics = {k: v for k, v in event["data"]["metrics"].items() if k.startswith("eval/all/")}
    return {**event, "data": {**event["data"], "metrics": metrics}}


def _markers(run: Run, details: bool) -> list[dict]:
    shown = []
    for kind in MARKER_KINDS:
        latest = Event.objects.filter(run=run, kind=kind).order_by("-step", "-id")[:MAX_MARKERS]
        shown.extend(marker_payload(_shown_event(event, run, details)) for event in latest)
    return sorted(shown, key=lambda e: (e["step"], e["id"]))


@require_GET
@login_required
def run_metrics(request: HttpRequest, run_id: int) -> HttpResponse:
    """Every curve of the run (downsampled to about CHART_POINTS points each), its resets,
    length-penalty windows, progress and recent samples: what the run page draws first."""
    run = run_for(request, run_id)
    return metrics_response(request, run, details=can_see_run_details(request.user, run))


def metrics_response(request: HttpRequest, run: Run, details: bool) -> HttpResponse:
    """The run page's data; `details`: the full error and server paths (else the viewer forms of
    studio.payloads: what team viewers and share links get).

    Everything but the clock's fields is the same for every viewer of one version of the run's rows,
    so it is built (and its gzip started) once per version and kept (`metrics_cache`): a request then
    costs one query for the version (`stored_rows`) besides the login and the run. The ETA, the
    worker-lost flag and the server's time depend on the moment: they are the response's tail."""
    stored = stored_rows(run.pk)
    version = (run.created_at, run.status, run.error, run.last_step, run.total_steps, stored, settings.CHART_POINTS)
    head = metrics_cache.get((run.pk, details), version, lambda: _metrics_head(run, details, stored))
    now = time.time()
    tail = {"worker_lost": run.worker_lost(now), "progress": run_progress(run, now), "server_time": now}
    return response_with_head(request, head, json.dumps(tail, cls=DjangoJSONEncoder)[1:], "application/json")


def _metrics_head(run: Run, details: bool, stored: StoredRows) -> str:
    """metrics.json up to its clock's fields: '{"series": ..., "run": ..., ..., ' (the series first:
    the cached JSON text of studio.series, not encoded again)."""
    config = run.run_config
    resets = Event.objects.filter(run=run, kind="reset").order_by("step", "id")
    samples = Sample.objects.filter(run=run).order_by("-step", "-id")[:RECENT_SAMPLES]
    fields = {
        "run": run.pk,
        "status": run.status,
        "error": run.error if details else viewer_error(run.error, run.run_dir),
        "last_step": run.last_step,
        "total_steps": run.total_steps,
        "resets": [_shown_event(event, run, details) for event in resets],
        "commands": [
            _shown_event(event, run, details)
            for event in Event.objects.filter(run=run, kind="command").order_by("step", "id")
        ],
        # the strip's markers, the events table, the checkpoint list
        "markers": _markers(run, details),
        "events": [_shown_event(e, run, details) for e in run.events.order_by("-step", "-id")[:RECENT_EVENTS]],
        "checkpoints": shown_checkpoints(run, details),
        # the planned schedule over the whole run, at chart resolution (bounded for 10^6 steps)
        "windows": length_penalty_windows(config, points=settings.CHART_POINTS) if config else [],
        "planned_resets": planned_reset_steps(config, points=settings.CHART_POINTS) if config else [],
        "samples": [sample_payload(sample) for sample in reversed(samples)],
    }
    series = run_chart_json(run, points=stored.points)  # cached per run and stored points (studio.series)
    return '{"series": ' + series + ", " + json.dumps(fields, cls=DjangoJSONEncoder)[1:-1] + ", "


@require_GET
@login_required
def run_config_yaml(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request, run_id)
    text = config_yaml(shown_config(run, can_see_run_details(request.user, run)))
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.yaml"'
    return response


@require_GET
@login_required
def run_clone(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request, run_id)
    config = shown_config(run, can_see_run_details(request.user, run))  # a viewer names the model and data anew
    initial = {"name": f"{run.name} (copy)", **initial_from_config(config), **copied_fields(run, request.user)}
    form = RunForm(initial=initial, user=request.user)
    return _render_new(request, form, clone_of=run)
