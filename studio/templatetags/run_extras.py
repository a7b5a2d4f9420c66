"""Run-page pieces of issue 5b that need the database: the command log and the fork's parent."""

from __future__ import annotations

from django import template

from studio.commands import Outcome, outcomes
from studio.models import Command, Event, MetricPoint, Run
from studio.permissions import can_view_run

register = template.Library()
RECENT_COMMANDS = 10


@register.simple_tag
def recent_commands(run: Run) -> list[tuple[Command, Outcome]]:
    """The run's latest commands, newest first, each with what became of it."""
    commands = list(
        Command.objects.filter(run=run).select_related("requested_by").order_by("-created_at", "-id")[:RECENT_COMMANDS]
    )
    found = outcomes(run, commands)
    return [(command, found[command.pk]) for command in commands]


@register.simple_tag(takes_context=True)
def visible_parent(context: template.Context, run: Run) -> Run | None:
    """The run this one was forked from, when the person looking may see it."""
    if run.parent_run_id is None:
        return None
    parent = Run.objects.filter(pk=run.parent_run_id).first()
    request = context.get("request")
    if parent is None or request is None or not can_view_run(request.user, parent):
        return None
    return parent


@register.simple_tag(takes_context=True)
def visible_forks(context: template.Context, run: Run) -> list[Run]:
    """Runs forked from this one that the person looking may see."""
    request = context.get("request")
    if request is None:
        return []
    return [fork for fork in run.forks.order_by("created_at") if can_view_run(request.user, fork)]


@register.simple_tag
def run_ranks(run: Run) -> dict | None:
    """Where a run across ranks trains (its latest status event that names its ranks) and how long its latest
    rollout took on the slowest rank, with the spread between the slowest and the fastest; None for a run in
    one process. run.js keeps it current from the websocket."""
    placed = Event.objects.filter(run=run, kind="status", data__has_key="ranks").order_by("-step", "-id").first()
    if placed is None:
        return None
    latest = MetricPoint.objects.filter(run=run).order_by("-step").first()
    values = latest.values if latest else {}
    return {
        "ranks": placed.data["ranks"],
        "devices": ", ".join(str(device) for device in placed.data.get("devices", [])),
        "rollout_s": values.get("timing/rollout_s"),
        "spread_s": values.get("timing/rollout_spread_s"),
    }
