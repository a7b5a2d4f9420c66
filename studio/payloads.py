"""Typed payloads from the worker to the browser.

Each payload's `type` names the consumer method that handles it ("run.metrics" -> run_metrics),
and the consumer forwards it to the browser with `kind` set to the part after "run.".
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class Point(TypedDict):
    step: int
    values: dict[str, float]


class Progress(TypedDict):
    step: int
    total: int
    eta_s: float | None
    status: str


class MetricsPayload(TypedDict):
    type: Literal["run.metrics"]
    points: list[Point]
    progress: Progress


class EventPayload(TypedDict):
    type: Literal["run.event"]
    event: dict[str, Any]


class SamplesPayload(TypedDict):
    type: Literal["run.samples"]
    rows: list[dict[str, Any]]


class StatusPayload(TypedDict):
    type: Literal["run.status"]
    status: str
    error: str
    progress: Progress


class RewindPayload(TypedDict):
    """The run resumes from its checkpoint at `step`: the browser drops every point after it."""

    type: Literal["run.rewind"]
    step: int


class ShareRevokedPayload(TypedDict):
    """A share link of the run was revoked: sockets it let in close (never sent to the browser)."""

    type: Literal["run.share_revoked"]
    link: int


RunPayload = MetricsPayload | EventPayload | SamplesPayload | StatusPayload | RewindPayload
