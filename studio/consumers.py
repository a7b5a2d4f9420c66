"""The run page's websocket: live points, events, samples and status of one run.

Protocol: the browser connects to /ws/runs/<id>/?after=<last step it holds> (and &share=<token>
when the page was opened from a share link: the token, not a login, lets it in). The consumer joins
the run's group first, then sends every stored point after that step, then forwards live
payloads, dropping points it already sent and filling any hole from the database. A reconnecting
browser therefore gets exactly the steps it missed: no gap, no duplicate.

Besides the worker's payloads, the consumer sends what the page lists from the database, whenever
an event changes it: {"kind": "checkpoints"} (after a checkpoint event, or one pruned) and, to those
who may steer the run, {"kind": "commands"} (after a command event: each command with its outcome).
A socket a share link let in gets {"kind": "revoked"} just before it closes when the link is
revoked (close code 4403, as for an expired link), so the page says why and stops reconnecting.
While the channel layer is unreachable (Redis away), the handshake is accepted and closed at once
with code 1013 "Try Again Later", not answered with HTTP 500: the page reconnects with backoff and,
asking with `after=`, gets every point it missed once the layer is back. The same while the
database is away: a handshake (Channels' auth middleware reads the session and the user, the
consumer the run; `DatabaseAwayGuard` answers for the first) or an open socket whose query fails
is closed with 1013.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from studio.commands import command_payload, outcomes
from studio.middleware import DATABASE_ERRORS
from studio.models import Command, Event, MetricPoint, Run, Sample
from studio.payloads import (
    EventPayload,
    MetricsPayload,
    QueuePayload,
    RewindPayload,
    SamplesPayload,
    ShareRevokedPayload,
    StatusPayload,
    event_payload,
    point_payload,
    run_progress,
    sample_payload,
    viewer_error,
    viewer_event,
)
from studio.permissions import can_control_run, can_see_run_details, can_view_run, share_link_for
from studio.views import shown_checkpoints

log = logging.getLogger(__name__)

BACKLOG_CHUNK = 2000
RECENT_COMMANDS = 10  # as many as the run page lists
CLOSE_REFUSED = 4403  # no (more) access: the page stops reconnecting
CLOSE_TRY_LATER = 1013  # RFC 6455 "Try Again Later": Redis or the database is away; the page retries
# An open socket joins its run's group again this often: membership lapses after channels-redis's
# group_expiry (a day), and a Redis restarted empty forgets every group while the socket stays open.
REJOIN_S = 300.0


class RunConsumer(AsyncJsonWebsocketConsumer):
    run: Run
    last_step: int
    sent_events: set[int]
    share_link_id: int | None = None  # set when a share link let this socket in
    share_expires_at: float | None = None
    details: bool = False  # the full error and server paths (can_see_run_details); else viewer forms
    can_control: bool = False  # may steer the run (can_control_run): gets the command list
    joined: bool = False  # in the run's channel-layer group
    rejoin: asyncio.Task | None = None  # `_keep_joined`, while the socket is open
    layer_lost: bool = False  # the channel layer failed (Redis away): the socket closes with 1013
    accepted: bool = False  # the handshake was answered with an accept

    async def connect(self) -> None:
        run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        run = await self._visible_run(run_id, _query(self.scope.get("query_string", b""), "share"))
        if run is None:
            await self.close(code=CLOSE_REFUSED)
            return
        self.run = run
        self.last_step = _after(self.scope.get("query_string", b""))
        self.sent_events = set()
        try:
            await self.channel_layer.group_add(run.group_name, self.channel_name)
        except Exception as exc:  # whatever the layer's client raises (redis-py's errors are no OSError)
            self._layer_failed(exc)
        if self.layer_lost:
            await self.accept()  # a close code reaches the page only after a handshake
            await self.close(code=CLOSE_TRY_LATER)
            return
        self.joined = True
        await self.accept()
        await self._send_backlog()
        self.rejoin = asyncio.ensure_future(self._keep_joined())

    async def _keep_joined(self) -> None:
        """Join the run's group again every REJOIN_S (group_add is idempotent). Points published while
        the membership was lost are not missed: the next one shows the gap, filled from the database."""
        while True:
            await asyncio.sleep(REJOIN_S)
            try:
                await self.channel_layer.group_add(self.run.group_name, self.channel_name)
            except Exception as exc:  # whatever the layer's client raises
                self._layer_failed(exc)
                await self.close(code=CLOSE_TRY_LATER)
                return

    # --- the channel layer: its failures close the socket with 1013 --------------------------------
    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict]]:
        """This socket's receive from the channel layer (Channels' __call__ sets it), made to report a
        failing layer as a `run.layer_lost` message instead of raising: raised, it would end the
        consumer with an error (HTTP 500 to a handshake, 1011 to an open socket)."""
        return self._guarded_layer_receive

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict]]) -> None:
        self._layer_receive = receive

    async def _guarded_layer_receive(self) -> dict:
        if self.layer_lost:  # nothing more from the layer: the socket is closing
            await asyncio.Event().wait()
        try:
            return await self._layer_receive()
        except Exception as exc:
            self._layer_failed(exc)
            return {"type": "run.layer_lost"}

    def _layer_failed(self, exc: Exception) -> None:
        self.layer_lost = True
        log.warning("run %s: the channel layer is unreachable, websocket closed (1013): %s", self._run_id(), exc)

    async def run_layer_lost(self, message: dict) -> None:
        """An open socket closes with 1013 (a handshake still under way is closed by `connect`)."""
        if self.joined:
            await self.close(code=CLOSE_TRY_LATER)

    def _run_id(self) -> int:
        return int(self.scope["url_route"]["kwargs"]["run_id"])

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def _database_away(self, exc: Exception) -> None:
        """A query failed because the database is away: 1013, as for Redis, after a handshake if
        none was made yet (a close before it reaches the page as a refused upgrade, not a code)."""
        log.warning("run %s: the database is unreachable, websocket closed (1013): %s", self._run_id(), exc)
        if not self.accepted:
            await self.accept()
        await self.close(code=CLOSE_TRY_LATER)

    async def dispatch(self, message: dict) -> None:
        """A socket let in by a share link closes when the link expires (and when it is revoked:
        `run_share_revoked`).

        Channels' own dispatch first closes stale database connections, in the one thread that
        Django's sync code shares: a hop per payload per viewer, queued behind every HTTP view (200
        viewers at 5 points/s: 1000 hops a second, a third of the server's CPU per point:
        bench/viewers.py). Every database call here goes through `database_sync_to_async`, which
        closes them itself, so handlers are called directly."""
        expired = self.share_expires_at is not None and time.time() >= self.share_expires_at
        if expired and message["type"].startswith("run."):
            await self.close(code=CLOSE_REFUSED)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        try:
            await handler(message)
        except DATABASE_ERRORS as exc:  # connecting (the run, the backlog) or filling a gap
            await self._database_away(exc)

    async def disconnect(self, code: int) -> None:
        if self.rejoin is not None:
            self.rejoin.cancel()
        if not self.joined:
            return
        try:
            await self.channel_layer.group_discard(self.run.group_name, self.channel_name)
        except Exception as exc:  # the layer went away meanwhile: its group expiry drops this channel
            log.info("run %s: websocket left without leaving its group: %s", self.run.pk, exc)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """{"type": "ping"} keeps proxies from closing an idle socket."""
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"kind": "pong"})

    # --- payloads from the worker (type "run.<name>" -> run_<name>) -------------------------------
    async def run_metrics(self, payload: MetricsPayload) -> None:
        points = [p for p in payload["points"] if p["step"] > self.last_step]
        if not points:
            return
        if points[0]["step"] > self.last_step + 1:  # the layer dropped a message: fill from the database
            points = await self._points_between(self.last_step, points[0]["step"]) + points
        self.last_step = points[-1]["step"]
        await self.send_json({"kind": "metrics", "points": points, "progress": payload["progress"]})

    async def run_event(self, payload: EventPayload) -> None:
        event = payload["event"]
        if event["id"] in self.sent_events:
            return
        self.sent_events.add(event["id"])
        await self.send_json({"kind": "event", "event": self._for_viewer(event)})
        if event["kind"] in ("checkpoint", "checkpoint_removed"):
            await self.send_json({"kind": "checkpoints", "checkpoints": await self._checkpoints()})
        if event["kind"] == "command" and self.can_control:
            await self.send_json({"kind": "commands", "commands": await self._commands()})

    async def run_samples(self, payload: SamplesPayload) -> None:
        await self.send_json({"kind": "samples", "rows": payload["rows"]})

    async def run_status(self, payload: StatusPayload) -> None:
        await self.send_json(
            {
                "kind": "status",
                "status": payload["status"],
                "error": self._error(payload["error"]),
                "progress": payload["progress"],
            }
        )

    async def run_share_revoked(self, payload: ShareRevokedPayload) -> None:
        if self.share_link_id == payload["link"]:
            await self.send_json({"kind": "revoked"})
            await self.close(code=CLOSE_REFUSED)

    async def run_rewind(self, payload: RewindPayload) -> None:
        self.last_step = min(self.last_step, payload["step"])
        await self.send_json({"kind": "rewind", "step": payload["step"]})

    async def run_queue(self, payload: QueuePayload) -> None:
        """Where the queued run now stands (studio.queue `publish_queue`); a share link's page shows
        no queue (it would name other runs and the workers)."""
        if self.share_link_id is None:
            await self.send_json({"kind": "queue", "queue": payload["queue"]})

    def _for_viewer(self, event: dict) -> dict:
        return event if self.details else viewer_event(event, self.run.run_dir)

    def _error(self, error: str) -> str:
        return error if self.details else viewer_error(error, self.run.run_dir)

    # --- database --------------------------------------------------------------------------------
    async def _send_backlog(self) -> None:
        after = self.last_step
        while True:
            points, events, samples, state = await self._backlog(after)
            if events or samples:
                for event in events:
                    self.sent_events.add(event["id"])
                    await self.send_json({"kind": "event", "event": self._for_viewer(event)})
                if samples:
                    await self.send_json({"kind": "samples", "rows": samples})
            if points:
                self.last_step = points[-1]["step"]
                await self.send_json({"kind": "metrics", "points": points, "progress": state["progress"]})
            if len(points) < BACKLOG_CHUNK:
                break
            after = self.last_step
        await self.send_json({"kind": "status", **state, "error": self._error(state["error"])})

    @database_sync_to_async
    def _visible_run(self, run_id: int, share_token: str) -> Run | None:
        """The run, if the share token is an active link to it, or else if the person may see it."""
        if share_token:
            link = share_link_for(share_token)
            if link is None or link.run_id != run_id:
                return None
            self.share_link_id = link.pk
            self.share_expires_at = link.expires_at.timestamp() if link.expires_at else None
            return link.run
        run = Run.objects.filter(pk=run_id).first()
        if run is None or not can_view_run(self.scope["user"], run):
            return None
        self.details = can_see_run_details(self.scope["user"], run)
        self.can_control = can_control_run(self.scope["user"], run)
        return run

    @database_sync_to_async
    def _checkpoints(self) -> list[dict]:
        """The run page's checkpoint list, in this socket's (viewer's) form."""
        return shown_checkpoints(self.run, self.details)

    @database_sync_to_async
    def _commands(self) -> list[dict]:
        """The run's latest commands, newest first, with outcomes (studio.commands)."""
        recent = list(
            Command.objects.filter(run_id=self.run.pk)
            .select_related("requested_by")
            .order_by("-created_at", "-id")[:RECENT_COMMANDS]
        )
        found = outcomes(self.run, recent)
        return [command_payload(command, found[command.pk]) for command in recent]

    @database_sync_to_async
    def _backlog(self, after: int) -> tuple[list[dict], list[dict], list[dict], dict]:
        run = Run.objects.get(pk=self.run.pk)
        points = [
            point_payload(step, values)
            for step, values in MetricPoint.objects.filter(run=run, step__gt=after)
            .order_by("step")
            .values_list("step", "values")[:BACKLOG_CHUNK]
        ]
        last = points[-1]["step"] if points else after
        events = [event_payload(e) for e in Event.objects.filter(run=run, step__gt=after, step__lte=last)]
        samples = [
            sample_payload(s)
            for s in Sample.objects.filter(run=run, step__gt=after, step__lte=last).order_by("-step", "-id")[:20]
        ][::-1]
        state = {"status": run.status, "error": run.error, "progress": run_progress(run)}
        return points, events, samples, state

    @database_sync_to_async
    def _points_between(self, after: int, before: int) -> list[dict]:
        rows = MetricPoint.objects.filter(run_id=self.run.pk, step__gt=after, step__lt=before).order_by("step")
        return [point_payload(step, values) for step, values in rows.values_list("step", "values")]


class DatabaseAwayGuard:
    """ASGI middleware around the websocket stack. Channels' auth middleware reads the session and
    the user from the database before any consumer runs; while the database is away it raises, and
    the handshake would be answered with HTTP 500. Here it is accepted and closed with 1013, as
    the consumer closes it when its own queries fail (`RunConsumer._database_away`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        handshake: list[dict] = []  # the connect message, once something read it
        answered = False

        async def receive_noting_the_handshake() -> dict:
            message = await receive()
            if message["type"] == "websocket.connect":
                handshake.append(message)
            return message

        async def send_noting_the_answer(message: dict) -> None:
            nonlocal answered
            answered = answered or message["type"] in ("websocket.accept", "websocket.close")
            await send(message)

        try:
            await self.app(scope, receive_noting_the_handshake, send_noting_the_answer)
        except DATABASE_ERRORS as exc:
            if scope["type"] != "websocket" or answered:
                raise
            log.warning("%s: the database is unreachable, websocket closed (1013): %s", scope.get("path"), exc)
            if not handshake and (await receive())["type"] != "websocket.connect":
                return  # the client left before its handshake
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_LATER})


def _query(query_string: bytes, name: str) -> str:
    return parse_qs(query_string.decode("ascii", errors="ignore")).get(name, [""])[0]


def _after(query_string: bytes) -> int:
    raw = _query(query_string, "after")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else 0  # "²" is a digit to isdigit only
