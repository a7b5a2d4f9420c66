"""Watchdogs: rules on a run's health that fire while nobody is looking at its charts.

A rule is one line a person writes in the run form or on a live run's watchdog page:

    policy/entropy below 0.05 for 20 steps -> pause
    length/truncated_frac above 0.5 -> notify
    kl/ref above 0.1 for 5 steps -> reset reference
    no new step for 10 minutes -> notify

A metric rule holds at a step when the step logged the metric and its value is below (above) the
threshold; it fires when it has held for `for N steps` consecutive logged steps (a step that did not
log the metric, such as a step without an evaluation, neither counts nor breaks the streak). It fires
once, then re-arms when the condition stops holding, so a run stuck in a bad state sends one
notification, not one per step. A stale rule fires when a running run logged no new step for that
long; it re-arms at the next step.

Where rules are evaluated:
- metric rules in the worker's sink (worker/sink.py), in the transaction that stores the points, so
  the firing's Event row is committed and published with the points that caused it;
- stale rules by a thread in every worker process (worker/presence.py calls `check_stale` every few
  seconds): a worker whose trainer hangs still runs the thread, and another worker (the evaluation
  worker of `make up`) checks the runs of one that died. A conditional UPDATE on the rule decides
  which checker fires it, so it fires once however many check.

Actions: notify (a webhook POST of {"text": ...}, the body Slack, Mattermost, Discord's /slack
endpoint and most chat tools accept, and/or e-mail through Django's mail settings), pause, or reset
the reference; the last two are Commands sent through studio.commands, as the run page's buttons
send them, on behalf of the person who wrote the rule, and only while that person may still steer
the run. Every firing is an Event of kind "watchdog", so it appears with the run's other events.

A clone or a fork starts with its source's rules in its form (`copied_fields`); the JSON API reads
and replaces a run's rules (studio.api, /api/v1/runs/<id>/watchdogs/) as this page does.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.mail import send_mail
from django.core.validators import EmailValidator
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from studio.commands import CommandRefused, send_command
from studio.models import Command, Event, Run, RunStatus, Watchdog
from studio.payloads import Point, event_message
from studio.permissions import can_control_run, can_view_run

log = logging.getLogger(__name__)

MAX_RULES = 20
MAX_FOR_STEPS = 100_000
MAX_STALE_MINUTES = 7 * 24 * 60
MIN_STALE_MINUTES = 0.1
MAX_EMAILS = 5
WEBHOOK_TIMEOUT_S = 10

# Offered in the run form for a ProRL run: entropy collapse, responses cut off by the budget, the
# policy drifting far from its reference (the recipe's answer is a reset), a hung trainer.
DEFAULT_RULES = """\
policy/entropy below 0.05 for 20 steps -> notify
length/truncated_frac above 0.5 for 5 steps -> notify
kl/ref above 0.1 for 5 steps -> notify
no new step for 10 minutes -> notify"""

Kind, Direction, Action = Watchdog.Kind, Watchdog.Direction, Watchdog.Action
ACTION_NAMES = {"notify": Action.NOTIFY, "pause": Action.PAUSE, "reset reference": Action.RESET_REFERENCE}
ACTION_COMMANDS = {Action.PAUSE: Command.Kind.PAUSE, Action.RESET_REFERENCE: Command.Kind.RESET_REFERENCE}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ACTION = r"(?:\s*->\s*(?P<action>[a-z ]+?))?"
_METRIC_RULE = re.compile(
    rf"^(?P<metric>[A-Za-z0-9_./@-]{{1,100}})\s+(?P<direction>below|above|<|>)\s+(?P<threshold>{_NUMBER})"
    rf"(?:\s+for\s+(?P<steps>\d{{1,6}})\s+steps?)?{_ACTION}\s*$"
)
_STALE_RULE = re.compile(rf"^no new step for\s+(?P<minutes>{_NUMBER})\s+minutes?{_ACTION}\s*$")
RULE_HELP = (
    'One rule a line: "<metric> below|above <number> [for <N> steps] [-> notify|pause|reset reference]" '
    'or "no new step for <N> minutes [-> action]"; lines starting with # are ignored.'
)


@dataclass(frozen=True)
class RuleSpec:
    """A parsed rule, before it is stored (the fields of a Watchdog row)."""

    kind: str
    action: str
    metric: str = ""
    direction: str = ""
    threshold: float | None = None
    for_steps: int = 1
    stale_minutes: float | None = None

    def row(self, run: Run, **extra: Any) -> Watchdog:
        return Watchdog(run=run, **self.__dict__, **extra)

    @property
    def text(self) -> str:
        return self.row(Run()).text


def parse_rule(line: str) -> RuleSpec:
    """One line of the watchdog field; ValueError with a message for a person when it is not a rule."""
    line = " ".join(line.split())
    stale = _STALE_RULE.match(line)
    match = stale or _METRIC_RULE.match(line)
    if match is None:
        raise ValueError(f'"{line}" is not a rule. {RULE_HELP}')
    action_name = match.group("action") or "notify"
    if action_name not in ACTION_NAMES:
        raise ValueError(f'"{line}": the action is one of {", ".join(ACTION_NAMES)}, not "{action_name}"')
    action = ACTION_NAMES[action_name]
    if stale:
        minutes = float(stale.group("minutes"))
        if not MIN_STALE_MINUTES <= minutes <= MAX_STALE_MINUTES:
            raise ValueError(f'"{line}": minutes between {MIN_STALE_MINUTES:g} and {MAX_STALE_MINUTES:g}')
        return RuleSpec(kind=Kind.STALE, action=action, stale_minutes=minutes)
    threshold = float(match.group("threshold"))
    steps = int(match.group("steps") or 1)
    if not math.isfinite(threshold):
        raise ValueError(f'"{line}": the threshold must be a finite number')
    if not 1 <= steps <= MAX_FOR_STEPS:
        raise ValueError(f'"{line}": "for N steps" takes N from 1 to {MAX_FOR_STEPS:,}')
    direction = {"<": Direction.BELOW, ">": Direction.ABOVE}.get(match.group("direction"), match.group("direction"))
    return RuleSpec(
        kind=Kind.METRIC,
        action=action,
        metric=match.group("metric"),
        direction=direction,
        threshold=threshold,
        for_steps=steps,
    )


def parse_rules(text: str) -> list[RuleSpec]:
    """Every rule of the field, in order, duplicates dropped; ValueError listing each bad line."""
    rules, errors = [], []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rules.append(parse_rule(line))
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("\n".join(errors))
    rules = list(dict.fromkeys(rules))
    if len(rules) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} rules a run, not {len(rules)}")
    return rules


def rules_text(run: Run) -> str:
    """The run's rules as the field holds them."""
    return "\n".join(rule.text for rule in run.watchdogs.all())


def destinations(run: Run) -> tuple[str, str]:
    """(webhook URL, e-mail addresses) of the run's notifications: every rule of a run shares them
    (`save_rules`); ("", "") for a run without rules."""
    first = run.watchdogs.first()
    return (first.webhook_url, first.email) if first else ("", "")


def copied_fields(source: Run, user) -> dict[str, str]:
    """The run form's watchdog fields for a clone or fork of `source`: its rules, to edit before the
    launch; its webhook and addresses only for `user`s who may steer it (a webhook URL is a secret)."""
    webhook_url, email = destinations(source) if can_control_run(user, source) else ("", "")
    return {"watchdogs": rules_text(source), "watchdog_webhook": webhook_url, "watchdog_email": email}


def rule_payload(rule: Watchdog, editor: bool) -> dict[str, Any]:
    """A rule as the JSON API shows it; `editor` (can_control_run): where it notifies and what became of
    its last notification too."""
    payload: dict[str, Any] = {
        "id": rule.pk,
        "text": rule.text,
        "condition": rule.condition,
        "kind": rule.kind,
        "metric": rule.metric,
        "direction": rule.direction,
        "threshold": rule.threshold,
        "for_steps": rule.for_steps,
        "stale_minutes": rule.stale_minutes,
        "action": rule.action,
        "tripped": rule.tripped,
        "streak": rule.streak,
        "fired_count": rule.fired_count,
        "last_fired_step": rule.last_fired_step,
        "last_fired_at": rule.last_fired_at.isoformat() if rule.last_fired_at else None,
    }
    if editor:
        payload.update(webhook_url=rule.webhook_url, email=rule.email, last_delivery=rule.last_delivery)
    return payload


# --- the form fields (the run form and the watchdog page share them) -----------------------------


def validate_webhook_url(url: str) -> None:
    """http(s) only, no user:password in the URL (it would be shown on the watchdog page)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise forms.ValidationError("a webhook is an http:// or https:// URL")
    if parts.username or parts.password:
        raise forms.ValidationError(
            "put no user name or password in the URL (a Slack webhook carries its secret in the path)"
        )


def parse_emails(text: str) -> list[str]:
    """Comma- or space-separated addresses, each checked; at most MAX_EMAILS."""
    addresses = [a for a in re.split(r"[\s,;]+", text) if a]
    if len(addresses) > MAX_EMAILS:
        raise forms.ValidationError(f"at most {MAX_EMAILS} addresses")
    check = EmailValidator(message="not an e-mail address")
    for address in addresses:
        check(address)
    return addresses


def clean_rules_field(text: str) -> list[RuleSpec]:
    try:
        return parse_rules(text)
    except ValueError as exc:
        raise forms.ValidationError(str(exc).splitlines()) from exc


def clean_webhook_field(url: str) -> str:
    url = url.strip()
    if url:
        forms.URLField().clean(url)
        validate_webhook_url(url)
    return url


def clean_email_field(text: str) -> str:
    return ", ".join(parse_emails(text))


def rules_field(**kwargs: Any) -> forms.CharField:
    return forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 5, "class": "yaml"}),
        help_text=RULE_HELP,
        **kwargs,
    )


def webhook_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        max_length=500,
        label="webhook URL",
        help_text='Notify rules POST JSON {"text": ...} here (a Slack incoming webhook works).',
    )


def email_field() -> forms.CharField:
    return forms.CharField(
        required=False, max_length=500, label="e-mail", help_text="Addresses mailed when a notify rule fires."
    )


class WatchdogFields(forms.Form):
    """The watchdog rules of a live run and where their notifications go (the run form has the
    same fields: studio.forms.RunForm)."""

    rules = rules_field()
    webhook_url = webhook_field()
    email = email_field()

    def clean_rules(self) -> list[RuleSpec]:
        return clean_rules_field(self.cleaned_data["rules"])

    def clean_webhook_url(self) -> str:
        return clean_webhook_field(self.cleaned_data["webhook_url"])

    def clean_email(self) -> str:
        return clean_email_field(self.cleaned_data["email"])


def save_rules(run: Run, rules: list[RuleSpec], webhook_url: str, email: str, user) -> None:
    """Make the run's rules these: a rule whose text and destinations are unchanged keeps its row
    (its streak and firing history), the others are replaced."""
    with transaction.atomic():
        kept: set[RuleSpec] = set()
        for row in Watchdog.objects.select_for_update().filter(run=run):
            spec = RuleSpec(
                kind=row.kind,
                action=row.action,
                metric=row.metric,
                direction=row.direction,
                threshold=row.threshold,
                for_steps=row.for_steps,
                stale_minutes=row.stale_minutes,
            )
            if spec in rules and spec not in kept and (row.webhook_url, row.email) == (webhook_url, email):
                kept.add(spec)
            else:
                row.delete()
        Watchdog.objects.bulk_create(
            [
                rule.row(run, webhook_url=webhook_url, email=email, created_by=user, last_step_at=time.time())
                for rule in rules
                if rule not in kept
            ]
        )


# --- evaluating the rules ------------------------------------------------------------------------


class RunWatchdogs:
    """The metric rules of one run, evaluated by the worker's sink on each batch of stored points."""

    def __init__(self, run_id: int):
        self.run_id = run_id

    def observe(self, points: list[Point]) -> list[Event]:
        """Advance every rule over `points` (in step order) and fire those that trip. Called inside
        the sink's transaction, after the points are stored; returns the firings' Event rows for the
        sink to publish with the batch. One query reads the rules, so rules edited on the live run
        apply from the next batch on.

        A database that went away is not a failing rule: its error is raised, so that the sink
        rolls the whole batch back and writes it again, the firings with it. Their notifications
        wait for the commit (`fire`), so a retried batch notifies once; were the error dropped
        here, the points would be stored without their firings (or, the connection gone, the rest
        of the batch would fail for good)."""
        try:
            with transaction.atomic():  # a savepoint: a failing rule never costs the run its points
                return self._observe(points)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.exception("watchdogs of run %s failed on steps %s", self.run_id, [p["step"] for p in points])
            return []

    def _observe(self, points: list[Point]) -> list[Event]:
        rules = list(Watchdog.objects.filter(run_id=self.run_id).select_related("created_by"))
        if not rules or not points:
            return []
        now = time.time()
        fired: list[Event] = []
        changed: list[Watchdog] = []
        for rule in rules:
            before = (rule.streak, rule.tripped, rule.last_step_at)
            if rule.kind == Kind.STALE:
                rule.last_step_at, rule.tripped = now, False  # a new step: the run is not stale
            else:
                for point in points:
                    value = point["values"].get(rule.metric)
                    if value is None:  # not logged at this step (or not finite)
                        continue
                    if not _holds(rule, value):
                        rule.streak, rule.tripped = 0, False
                        continue
                    rule.streak = min(rule.streak + 1, MAX_FOR_STEPS)
                    if rule.streak >= rule.for_steps and not rule.tripped:
                        rule.tripped = True
                        fired.append(fire(rule, point["step"], value))
            if (rule.streak, rule.tripped, rule.last_step_at) != before:
                changed.append(rule)
        Watchdog.objects.bulk_update(changed, ["streak", "tripped", "last_step_at"])
        return fired


def _holds(rule: Watchdog, value: float) -> bool:
    return value < rule.threshold if rule.direction == Direction.BELOW else value > rule.threshold


def fire(rule: Watchdog, step: int, value: float | None) -> Event:
    """The rule trips at `step`: take its action, store its event; notify once the event is committed.
    Runs inside the caller's transaction."""
    run = Run.objects.select_related("owner").get(pk=rule.run_id)
    author = rule.created_by or run.owner
    data: dict[str, Any] = {
        "rule": rule.pk,
        "rule_text": rule.text,
        "condition": rule.condition,
        "metric": rule.metric,
        "value": value,
        "action": rule.action,
        "by": author.get_username(),
    }
    if not can_control_run(author, run):
        data["not_taken"] = f"{author.get_username()} may no longer steer this run"
    elif rule.action in ACTION_COMMANDS:
        try:
            command = send_command(run, ACTION_COMMANDS[rule.action], author)
            data["command"] = command.pk if command is not None else None
        except CommandRefused as refused:
            data["not_taken"] = str(refused)
    event = Event.objects.create(run_id=run.pk, step=step, kind="watchdog", time=time.time(), data=data)
    Watchdog.objects.filter(pk=rule.pk).update(
        fired_count=F("fired_count") + 1, last_fired_at=timezone.now(), last_fired_step=step
    )
    if "not_taken" not in data and (rule.webhook_url or rule.email):
        text = notification_text(run, rule, step, value)
        transaction.on_commit(lambda: _notify_in_background(rule.pk, text))
    return event


def check_stale(now: float | None = None) -> list[Event]:
    """Fire every stale rule of a running run that logged no step for its minutes; publish each
    firing to the run's page. Called periodically by every worker (worker/presence.py)."""
    now = time.time() if now is None else now
    fired = []
    candidates = Watchdog.objects.filter(kind=Kind.STALE, tripped=False, run__status=RunStatus.RUNNING)
    for rule in candidates.select_related("run", "created_by"):
        if now - _stale_since(rule) < rule.stale_minutes * 60:
            continue
        with transaction.atomic():
            if not Watchdog.objects.filter(pk=rule.pk, tripped=False).update(tripped=True):
                continue  # another worker's check fired it first
            fired.append(fire(rule, rule.run.last_step, None))
    for event in fired:
        _publish(event)
    return fired


def _stale_since(rule: Watchdog) -> float:
    """Since when the run has been silent: its last new step, or, if later, when the rule was made,
    when the current attempt started, or when the run last changed status (a resume after a pause
    starts the clock anew)."""
    run = rule.run
    last_status = Event.objects.filter(run=run, kind="status").order_by("-id").values_list("time", flat=True).first()
    moments = [rule.last_step_at, rule.created_at.timestamp(), last_status]
    if run.started_at is not None:
        moments.append(run.started_at.timestamp())
    return max(m for m in moments if m is not None)


def _publish(event: Event) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    try:
        async_to_sync(get_channel_layer().group_send)(f"run-{event.run_id}", event_message(event))
    except Exception:  # the page shows it on its next load; the firing itself is stored
        log.exception("could not publish watchdog event %s", event.pk)


# --- notifications -------------------------------------------------------------------------------


def notification_text(run: Run, rule: Watchdog, step: int, value: float | None) -> str:
    shown = "" if value is None else f" (value {value:.4g})"
    link = f" {settings.STUDIO_URL.rstrip('/')}{run.get_absolute_url()}" if settings.STUDIO_URL else ""
    return (
        f"Watchdog on run #{run.pk} ({run.name}): {rule.condition} at step {step}{shown}; "
        f"action: {rule.get_action_display()}.{link}"
    )


def _notify_in_background(rule_id: int, text: str) -> None:
    """Webhooks and mail servers can be slow: the sink's flusher never waits for them."""
    threading.Thread(target=deliver, args=(rule_id, text), name=f"watchdog-notify-{rule_id}", daemon=True).start()


def deliver(rule_id: int, text: str) -> str:
    """Send `text` to the rule's webhook and addresses; store and return what became of it."""
    from django.db import connection

    try:
        rule = Watchdog.objects.filter(pk=rule_id).first()
        if rule is None:
            return ""
        outcomes = []
        if rule.webhook_url:
            outcomes.append(post_webhook(rule.webhook_url, text))
        if rule.email:
            outcomes.append(_mail(rule, text))
        outcome = "; ".join(outcomes)[:500]
        Watchdog.objects.filter(pk=rule_id).update(last_delivery=outcome)
        return outcome
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # this thread's own connection


def _mail(rule: Watchdog, text: str) -> str:
    addresses = [a.strip() for a in rule.email.split(",") if a.strip()]
    try:
        send_mail(f"[ProRL Studio] {rule.condition}", text, None, addresses)
    except Exception as exc:
        log.warning("watchdog %s: mail failed: %s", rule.pk, exc)
        return f"e-mail failed: {type(exc).__name__}: {exc}"
    return f"e-mailed {len(addresses)} address{'es' if len(addresses) > 1 else ''}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead the worker anywhere, past the address check: refuse to follow it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)


def refused_address(url: str) -> str | None:
    """Why the worker may not POST to `url`, or None. Workers sit inside the cluster: unless
    WATCHDOG_PRIVATE_WEBHOOKS is on, a webhook whose host resolves to a loopback, private,
    link-local or reserved address (the cluster's own services) is refused. The address is looked
    up just before the request; a DNS answer that changes in between is not caught."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if settings.WATCHDOG_PRIVATE_WEBHOOKS:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            return f"{host} is a non-public address ({ip}); PRORL_WEBHOOK_ALLOW_PRIVATE allows those"
    return None


def post_webhook(url: str, text: str) -> str:
    """POST {"text": text} as JSON; a short outcome for the watchdog page."""
    reason = refused_address(url)
    if reason:
        log.warning("watchdog webhook refused: %s", reason)
        return f"webhook refused: {reason}"
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "prorl-studio-watchdog"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            return f"webhook answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"webhook answered {exc.code}"
    except (OSError, ValueError) as exc:
        log.warning("watchdog webhook failed: %s", exc)
        return f"webhook failed: {exc}"


# --- the watchdog page of a run ------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def run_watchdogs(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run's rules with their state and last firing; those who may steer the run edit them."""
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    editable = can_control_run(request.user, run)
    if request.method == "POST":
        if not editable:
            return HttpResponse("You may see this run but not change its watchdogs.", status=403)
        form = WatchdogFields(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            save_rules(run, data["rules"], data["webhook_url"], data["email"], request.user)
            messages.success(request, f"{len(data['rules'])} watchdog rule(s) saved; they apply from the next step.")
            return redirect("run-watchdogs", run.pk)
        status = 400
    else:
        webhook_url, email = destinations(run)
        form = WatchdogFields(initial={"rules": rules_text(run), "webhook_url": webhook_url, "email": email})
        status = 200
    rows = list(run.watchdogs.all())
    context = {
        "run": run,
        "rules": rows,
        "form": form,
        "editable": editable,
        "defaults": DEFAULT_RULES,
        # destinations are the editors' business (a webhook URL is a secret)
        "show_destinations": editable,
        "firings": run.events.filter(kind="watchdog").order_by("-step", "-id")[:20],
    }
    return render(request, "studio/watchdogs.html", context, status=status)
