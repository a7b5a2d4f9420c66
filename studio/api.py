"""The JSON API for scripts, under /api/v1/, and the page where people make their API tokens.

Authentication: `Authorization: Bearer <token>` with a personal API token (made and revoked on
/account/api-tokens/; the database keeps only its SHA-256). A request acts as the token's person,
with exactly that person's rights (studio.permissions); anyone else's run is a 404 with the same body as
a missing one. Team viewers get a run's error as one line, with paths relative to the run.

CSRF: the API views are `csrf_exempt` only because they never read cookies: a request without a
valid bearer token is refused even if it carries a logged-in session cookie, so a page on another
site cannot make a visitor's browser call them. Every session (cookie) view keeps CSRF protection.

Endpoints:
    GET  /api/v1/runs/                        runs you may see (?status=running)
    POST /api/v1/runs/                        {"name": "...", "config": {...RunConfig fields}}: 201 with the
                                              new run, or 400 with {"errors": [{"field", "message"}]}; its
                                              paths must be ones you may use (studio.paths)
    GET  /api/v1/runs/<id>/                   one run, with its config and checkpoints
    GET  /api/v1/runs/<id>/metrics/           points after ?since=<step> (default 0), every step
                                              (?limit=, at most 20000, then next_since), only
                                              ?keys=a,b if given; ?downsample=<n> for chart series
    GET  /api/v1/runs/<id>/events/            events after ?since=<step> or ?after_id=<id>, ?kind=
    GET  /api/v1/runs/<id>/commands/          the commands sent to the run
    POST /api/v1/runs/<id>/commands/          {"kind": "reset_reference" | "pause" | "resume" | "stop" |
                                              "save_checkpoint"}: 201 with the command, or 400 / 403 /
                                              409 with the reason (studio.commands decides which run
                                              state takes which command)
    GET  /api/v1/runs/<id>/watchdogs/         the run's watchdog rules with their state and firings
                                              (their webhook and e-mail only to those who may steer it)
    PUT  /api/v1/runs/<id>/watchdogs/         {"rules": ["kl/ref above 0.1 -> pause", ...] or one text of
                                              lines, "webhook_url": "...", "email": "..."}: the run's rules
                                              become these (a field left out keeps its value; those who
                                              may steer the run), or 400 with {"errors": [{"field",
                                              "message"}]}, one per bad line
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from prorl_engine.config import ConfigError, RunConfig
from studio.commands import CommandRefused, command_payload, outcomes, send_command
from studio.launch import launch_run
from studio.middleware import NOT_FOUND_MESSAGE
from studio.models import ApiToken, Command, Event, MetricPoint, Run, RunStatus
from studio.params import MAX_STEP, BadParameter, answers_bad_parameters, int_param, json_object_body, text_param
from studio.paths import path_policy_for
from studio.payloads import (
    event_payload,
    point_payload,
    run_progress,
    run_relative,
    shown_config,
    viewer_error,
    viewer_event,
)
from studio.permissions import (
    can_control_run,
    can_see_run_details,
    can_view_run,
    new_token,
    token_hash,
    user_for_api_token,
    visible_runs,
)
from studio.series import chart_data
from studio.watchdogs import WatchdogFields, destinations, rule_payload, rules_text, save_rules

DEFAULT_LIMIT = 5000
MAX_LIMIT = 20000
MAX_DOWNSAMPLE = 20000
MAX_KEYS_CHARS = 10_000  # ?keys=a,b,...: far more than every metric key of a run


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def bearer_token_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Authenticate by `Authorization: Bearer <token>` only (never the session cookie: see the module
    docstring for why that makes csrf_exempt safe here)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = user_for_api_token(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            response = _error(
                401, "Send a valid API token: 'Authorization: Bearer <token>' (make one on /account/api-tokens/)."
            )
            response["WWW-Authenticate"] = 'Bearer realm="prorl-studio"'
            return response
        request.user = user
        return view(request, *args, **kwargs)

    return wrapper


def _visible_run(request: HttpRequest, run_id: int) -> Run | None:
    run = Run.objects.select_related("owner", "team").filter(pk=run_id).first()
    if run is None or not can_view_run(request.user, run):
        return None
    return run


def _not_found() -> JsonResponse:
    """The same body for a run that does not exist and one the token's person may not see (and the
    same as every other JSON 404 of the studio: studio.middleware)."""
    return _error(404, NOT_FOUND_MESSAGE)


def _int_param(request: HttpRequest, name: str, default: int, low: int = 0, high: int = MAX_STEP) -> int:
    """A whole number moved into low..high (the documented "at most"); anything else is a 400."""
    return int_param(request.GET, name, default, low=low, high=high, clamp=True)


def run_summary(run: Run, details: bool) -> dict:
    """The run as listed; `details` (can_see_run_details): its full error, else the one-line viewer form."""
    error = run.error if details else viewer_error(run.error, run.run_dir)
    return {
        "id": run.pk,
        "name": run.name,
        "owner": run.owner.get_username(),
        "team": run.team.name if run.team else None,
        "status": run.status,
        "error": error,
        "last_step": run.last_step,
        "total_steps": run.total_steps,
        "latest_reward": run.latest_reward,
        "created_at": run.created_at.isoformat(),
        "eta_s": run_progress(run)["eta_s"],
        "url": run.get_absolute_url(),
    }


# --- endpoints ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@bearer_token_required
@answers_bad_parameters(json_body=True)
def api_runs(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _create_run(request)
    runs: QuerySet[Run] = visible_runs(request.user).select_related("owner", "team")
    status = text_param(request.GET, "status", choices=tuple(RunStatus.values))
    if status:
        runs = runs.filter(status=status)
    return JsonResponse({"runs": [run_summary(run, can_see_run_details(request.user, run)) for run in runs]})


def _create_run(request: HttpRequest) -> JsonResponse:
    """A queued run of the token's person, validated as the run form validates it (paths included)."""
    try:
        body = json_object_body(request, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    except BadParameter:
        body = None
    if not body:
        return _error(400, 'Send a JSON object: {"name": "...", "config": {...}}.')
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
        return JsonResponse(
            {"errors": [{"field": "name", "message": "must be text of 1 to 200 characters"}]}, status=400
        )
    try:
        config = RunConfig.from_dict(body.get("config"), path_policy=path_policy_for(request.user))
    except ConfigError as exc:
        return JsonResponse(
            {"errors": [{"field": field, "message": message} for field, message in exc.errors]}, status=400
        )
    run = launch_run(request.user, name.strip(), config)
    return JsonResponse(run_summary(run, True), status=201)


@require_GET
@bearer_token_required
def api_run(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _visible_run(request, run_id)
    if run is None:
        return _not_found()
    details = can_see_run_details(request.user, run)
    checkpoints = [
        {
            "step": c.step,
            "path": c.path if details else run_relative(c.path, run.run_dir) or "",
            "created_at": c.created_at.isoformat(),
        }
        for c in run.checkpoints.order_by("step")
    ]
    return JsonResponse(
        {
            **run_summary(run, details),
            "config": shown_config(run, details),
            "checkpoints": checkpoints,
            "can_control": can_control_run(request.user, run),
        }
    )


@require_GET
@bearer_token_required
@answers_bad_parameters(json_body=True)
def api_run_metrics(request: HttpRequest, run_id: int) -> JsonResponse:
    """Every stored step after `since`, as stored (no downsampling unless `downsample` is given)."""
    run = _visible_run(request, run_id)
    if run is None:
        return _not_found()
    since = _int_param(request, "since", 0)
    keys = [key for key in text_param(request.GET, "keys", max_chars=MAX_KEYS_CHARS).split(",") if key]
    rows = MetricPoint.objects.filter(run=run, step__gt=since).order_by("step").values_list("step", "values")
    if "downsample" in request.GET:
        target = _int_param(request, "downsample", 2000, low=2, high=MAX_DOWNSAMPLE)
        series = chart_data(rows.iterator(chunk_size=2000), target)
        if keys:
            series = {key: curve for key, curve in series.items() if key in keys}
        return JsonResponse({"run": run.pk, "since": since, "last_step": run.last_step, "series": series})
    limit = _int_param(request, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    points = [
        point_payload(step, {k: v for k, v in values.items() if k in keys} if keys else values) for step, values in page
    ]
    return JsonResponse(
        {
            "run": run.pk,
            "since": since,
            "last_step": run.last_step,
            "status": run.status,
            "points": points,
            "next_since": points[-1]["step"] if more else None,
        }
    )


@require_GET
@bearer_token_required
@answers_bad_parameters(json_body=True)
def api_run_events(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _visible_run(request, run_id)
    if run is None:
        return _not_found()
    events = Event.objects.filter(
        run=run, step__gt=_int_param(request, "since", 0), id__gt=_int_param(request, "after_id", 0)
    ).order_by("id")
    kind = text_param(request.GET, "kind", max_chars=Event._meta.get_field("kind").max_length)
    if kind:
        events = events.filter(kind=kind)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    payloads = [event_payload(event) for event in events[:limit]]
    if not can_see_run_details(request.user, run):
        payloads = [viewer_event(payload, run.run_dir) for payload in payloads]
    return JsonResponse({"run": run.pk, "events": payloads})


@require_http_methods(["GET", "POST"])
@bearer_token_required
@answers_bad_parameters(json_body=True)
def api_run_commands(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _visible_run(request, run_id)
    if run is None:
        return _not_found()
    if request.method == "GET":
        commands = list(run.commands.select_related("requested_by"))
        found = outcomes(run, commands)
        return JsonResponse({"run": run.pk, "commands": [command_payload(c, found[c.pk]) for c in commands]})
    if not can_control_run(request.user, run):
        return _error(
            403,
            f"{request.user.get_username()} may see run {run.pk} but not steer it "
            "(ask its owner for the editor role in its team).",
        )
    kind = _command_kind(request)
    if kind not in Command.Kind.values:
        return _error(400, f"Unknown command {kind!r}: use one of {', '.join(Command.Kind.values)}.")
    try:
        command = send_command(run, kind, request.user)
    except CommandRefused as refused:
        return JsonResponse({"error": str(refused), "status": run.status}, status=409)
    if command is None:  # a queued run has no trainer to ask: it stopped at once
        return JsonResponse({"command": None, "status": run.status})
    outcome = outcomes(run, [command])[command.pk]
    return JsonResponse({"command": command_payload(command, outcome), "status": run.status}, status=201)


@require_http_methods(["GET", "PUT"])
@bearer_token_required
@answers_bad_parameters(json_body=True)
def api_run_watchdogs(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _visible_run(request, run_id)
    if run is None:
        return _not_found()
    editor = can_control_run(request.user, run)
    if request.method == "PUT":
        if not editor:
            return _error(
                403,
                f"{request.user.get_username()} may see run {run.pk} but not change its watchdogs "
                "(ask its owner for the editor role in its team).",
            )
        errors = _save_watchdogs(request, run)
        if errors:
            return JsonResponse({"errors": errors}, status=400)
    return JsonResponse(_watchdogs(run, editor))


def _watchdogs(run: Run, editor: bool) -> dict:
    shown = {"run": run.pk, "can_edit": editor, "rules": [rule_payload(rule, editor) for rule in run.watchdogs.all()]}
    if editor:
        shown["webhook_url"], shown["email"] = destinations(run)
    return shown


def _save_watchdogs(request: HttpRequest, run: Run) -> list[dict[str, str]]:
    """Validate the body as the watchdog page's form validates it and store it; the errors, one per
    problem (one per bad rule line), none when it was stored."""
    data, errors = _watchdog_fields(json_object_body(request), run)
    if errors:
        return errors
    form = WatchdogFields(data)
    if not form.is_valid():
        return [{"field": field, "message": message} for field, messages in form.errors.items() for message in messages]
    cleaned = form.cleaned_data
    save_rules(run, cleaned["rules"], cleaned["webhook_url"], cleaned["email"], request.user)
    return []


def _watchdog_fields(body: dict, run: Run) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The form's fields from a JSON body: `rules` as text or a list of lines; a field left out keeps
    the run's current value. Errors for values that are not text and for unknown fields."""
    webhook_url, email = destinations(run)
    data = {"rules": rules_text(run), "webhook_url": webhook_url, "email": email, **body}
    if isinstance(data["rules"], list) and all(isinstance(line, str) for line in data["rules"]):
        data["rules"] = "\n".join(data["rules"])
    errors = [{"field": name, "message": problem} for name, value in data.items() if (problem := _problem(name, value))]
    return data, errors


def _problem(name: str, value: object) -> str | None:
    """What is wrong with field `name` of a watchdog body, or None."""
    if name not in WatchdogFields.base_fields:
        return "is not a watchdog field (use rules, webhook_url, email)"
    if not isinstance(value, str):
        return "must be text or a list of lines" if name == "rules" else "must be text"
    return None


def _command_kind(request: HttpRequest) -> str:
    """`kind` from a JSON body ({"kind": "pause"}) or a form field."""
    if request.content_type == "application/json":
        return str(json_object_body(request).get("kind", ""))
    return request.POST.get("kind", "")


# --- the API tokens page (session, CSRF on) ------------------------------------------------------


def _render_tokens(request: HttpRequest, new_token_value: str = "", status: int = 200) -> HttpResponse:
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "studio/api_tokens.html", {"tokens": tokens, "new_token": new_token_value}, status=status)


@require_GET
@login_required
def api_token_list(request: HttpRequest) -> HttpResponse:
    return _render_tokens(request)


@require_POST
@login_required
@answers_bad_parameters(json_body=False)
def api_token_create(request: HttpRequest) -> HttpResponse:
    """Make a token and show it once, on this response."""
    name = text_param(request.POST, "name", max_chars=10_000).strip()[:100] or "script"
    token = new_token()
    ApiToken.objects.create(user=request.user, name=name, token_hash=token_hash(token))
    return _render_tokens(request, new_token_value=token)


@require_POST
@login_required
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    api_token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    if api_token.revoked_at is None:
        api_token.revoked_at = timezone.now()
        api_token.save(update_fields=["revoked_at"])
    return redirect("api-token-list")
