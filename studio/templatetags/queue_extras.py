"""The queue note of a queued run's page (templates/studio/queue_status.html)."""

from __future__ import annotations

from django import template

from studio.models import Run
from studio.payloads import QueueInfo
from studio.workers import queue_info as _queue_info

register = template.Library()


@register.simple_tag(takes_context=True)
def queue_info(context: template.Context, run: Run) -> QueueInfo | None:
    """Why the run waits, as the person looking may read it (studio.workers.queue_info)."""
    request = context.get("request")
    return None if request is None else _queue_info(run, request.user)
