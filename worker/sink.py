"""The bridge from the engine to the studio: a database + websocket `EventSink` and a
`ControlSource` over the run's pending Command rows.

The trainer thread only appends to a queue. One flusher thread drains it: whatever accumulated
while it was busy is written in one transaction (group commit), then published to the run's
channel-layer group. A payload is published only after its rows are committed, so a browser that
reconnects and reads the database never misses a point it was not sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from prorl_engine.events import Command as EngineCommand
from prorl_engine.events import CommandKind, Event, Sample
from studio.models import Checkpoint, Command, MetricPoint, Run, RunStatus
from studio.models import Event as EventRow
from studio.models import Sample as SampleRow
from studio.payloads import (
    Point,
    Progress,
    RunPayload,
    event_message,
    metrics_message,
    point_payload,
    progress_payload,
    rewind_message,
    samples_message,
    status_message,
)
from studio.run_status import status_changes
from studio.watchdogs import RunWatchdogs

log = logging.getLogger(__name__)

MAX_BATCH = 1000
STATUS_FOR = {s.value: s for s in RunStatus}


class StudioSink:
    """EventSink of one run: batched database writes, then typed payloads to the run's group."""

    def __init__(self, run: Run, *, max_batch: int = MAX_BATCH, heartbeat_s: float | None = None):
        self.run_id = run.pk
        self.group = run.group_name
        self.total = run.total_steps
        self.started = run.started_at.timestamp() if run.started_at else None
        self.resumed_from = run.resumed_from_step
        self.last_step = run.last_step
        self.status = run.status
        self.watchdogs = RunWatchdogs(run.pk)  # metric rules, evaluated on each batch of points
        self.max_batch = max_batch
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else settings.WORKER_LEASE_S / 4
        self._items: deque[tuple[str, Any]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._flusher, name=f"studio-sink-{run.pk}", daemon=True)
        self._thread.start()

    # --- EventSink (called by the trainer thread) ------------------------------------------------
    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._put("metrics", (step, dict(values)))

    def samples(self, step: int, rows: list[Sample]) -> None:
        if rows:
            self._put("samples", (step, list(rows)))

    def event(self, event: Event) -> None:
        self._put("event", event)
        if event.kind == "checkpoint":
            self.flush()  # every point up to a checkpoint is stored before the run can resume from it

    def rewind(self, step: int) -> None:
        """Drop what a crashed attempt logged after `step`, the checkpoint this attempt resumes from."""
        self.flush()
        with transaction.atomic():
            for model in (MetricPoint, EventRow, SampleRow, Checkpoint):
                model.objects.filter(run_id=self.run_id, step__gt=step).delete()
            last = MetricPoint.objects.filter(run_id=self.run_id, step=step).values_list("values", flat=True).first()
            run = Run.objects.select_for_update().get(pk=self.run_id)
            run.last_step = step
            run.resumed_from_step = step
            run.latest_reward = (last or {}).get("reward/mean")
            run.save(update_fields=["last_step", "resumed_from_step", "latest_reward"])
            resume = EventRow.objects.create(
                run_id=self.run_id,
                step=step,
                kind="resume",
                time=time.time(),
                data={"from_step": step, "attempt": run.attempts},
            )
        self.last_step = self.resumed_from = step
        self._publish([rewind_message(step), event_message(resume)])

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._raise_pending()

    # --- for the task -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Wait until everything queued so far is committed and published."""
        with self._cond:
            self._cond.notify_all()
            while (self._items or self._busy) and self._thread.is_alive():
                self._cond.wait(timeout=1.0)
        self._raise_pending()

    def set_status(self, status: RunStatus, error: str = "") -> None:
        self._put("event", Event(kind="status", step=self.last_step, data={"status": status.value, "error": error}))
        self.flush()

    # --- the flusher thread -----------------------------------------------------------------------
    def _put(self, kind: str, item: Any) -> None:
        self._raise_pending()
        with self._cond:
            self._items.append((kind, item))
            self._cond.notify_all()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the studio sink could not store the run's data: {error}") from error

    def _flusher(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            while True:
                with self._cond:
                    if not self._items and not self._stopping:
                        self._cond.wait(timeout=self.heartbeat_s)
                    if not self._items and self._stopping:
                        return
                    batch = [self._items.popleft() for _ in range(min(len(self._items), self.max_batch))]
                    self._busy = True
                try:
                    payloads = self._write(batch)
                    self._publish(payloads)
                except Exception as exc:  # surfaced to the trainer thread at its next call
                    log.exception("studio sink failed for run %s", self.run_id)
                    self._error = exc
                    connection.close()  # the next batch reconnects (the thread keeps one connection)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            loop.close()  # channels-redis closes this loop's connections with it
            connection.close()

    def _write(self, batch: list[tuple[str, Any]]) -> list[RunPayload]:
        """One transaction for the batch; returns the payloads to publish, in the order logged."""
        now = time.time()
        payloads: list[RunPayload] = []
        points: list[Point] = []
        run_changes: dict[str, Any] = {"heartbeat": now}
        with transaction.atomic():
            for kind, item in batch:
                if kind == "metrics":
                    step, values = item
                    points.append(point_payload(step, _finite(values)))
                    continue
                self._flush_points(points, payloads, run_changes)
                if kind == "samples":
                    step, rows = item
                    stored = [_sample_row(self.run_id, row) for row in rows]
                    SampleRow.objects.bulk_create(stored)
                    payloads.append(samples_message(stored))
                elif kind == "event":
                    payloads.extend(self._write_event(item, run_changes))
            self._flush_points(points, payloads, run_changes)
            Run.objects.filter(pk=self.run_id).update(**run_changes)
        return payloads

    def _flush_points(self, points: list[Point], payloads: list[RunPayload], run_changes: dict[str, Any]) -> None:
        if not points:
            return
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=self.run_id, step=p["step"], values=p["values"]) for p in points]
        )
        self.last_step = max(self.last_step, points[-1]["step"])
        run_changes["last_step"] = self.last_step
        reward = points[-1]["values"].get("reward/mean")
        if reward is not None:
            run_changes["latest_reward"] = reward
        payloads.append(metrics_message(list(points), self.progress()))
        payloads.extend(event_message(row) for row in self.watchdogs.observe(points))  # firings, as events
        points.clear()

    def _write_event(self, event: Event, run_changes: dict[str, Any]) -> list[RunPayload]:
        row = EventRow.objects.create(
            run_id=self.run_id, step=event.step, kind=event.kind, data=_jsonable(event.data), time=event.time
        )
        payloads: list[RunPayload] = [event_message(row)]
        if event.kind == "checkpoint":
            Checkpoint.objects.update_or_create(
                run_id=self.run_id, step=event.step, defaults={"path": str(event.data.get("path", ""))}
            )
        if event.kind == "checkpoint_removed":  # pruned by keep_checkpoints: no longer offered for forks
            Checkpoint.objects.filter(run_id=self.run_id, step=event.data.get("checkpoint_step")).delete()
        if event.kind == "status" and event.data.get("status") in STATUS_FOR:  # the run's status (studio.run_status)
            self.status = STATUS_FOR[event.data["status"]]
            error = str(event.data.get("error") or "")
            run_changes.update(status_changes(self.status, error))
            payloads.append(status_message(self.status, error, self.progress()))
        return payloads

    def progress(self) -> Progress:
        """The run's progress as the pages compute it from the row (studio.payloads.run_progress),
        from what this sink has stored."""
        return progress_payload(self.last_step, self.total, self.status, self.started, self.resumed_from)

    def _publish(self, payloads: list[RunPayload]) -> None:
        if not payloads:
            return
        layer = get_channel_layer()
        loop = getattr(self, "_loop", None)
        if loop is None or threading.current_thread() is not self._thread:
            from asgiref.sync import async_to_sync

            for payload in payloads:
                async_to_sync(layer.group_send)(self.group, payload)
            return
        for payload in payloads:
            loop.run_until_complete(layer.group_send(self.group, payload))


class StudioControl:
    """ControlSource: the run's Command rows not yet handed to the engine, oldest first."""

    def __init__(self, run: Run):
        self.run_id = run.pk

    def poll(self) -> list[EngineCommand]:
        pending = list(
            Command.objects.filter(run_id=self.run_id, delivered_at__isnull=True)
            .select_related("requested_by")
            .order_by("created_at", "id")
        )
        if not pending:
            return []
        Command.objects.filter(pk__in=[c.pk for c in pending]).update(delivered_at=timezone.now())
        return [
            EngineCommand(
                kind=CommandKind(c.kind),
                id=str(c.pk),
                requested_by=c.requested_by.get_username() if c.requested_by else "",
            )
            for c in pending
        ]


def _finite(values: dict[str, Any]) -> dict[str, float | None]:
    """JSON has no NaN or infinity: such values are stored as null (the chart skips them)."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if value is None:
            out[key] = None
            continue
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def _text(value: str) -> str:
    """Model output may hold NUL characters, which PostgreSQL text and jsonb refuse."""
    return value.replace("\x00", "\ufffd")


def _jsonable(data: Any) -> Any:
    """Plain JSON values, strings without NUL characters."""
    if isinstance(data, str):
        return _text(data)
    if isinstance(data, dict):
        return {_text(str(key)): _jsonable(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_jsonable(value) for value in data]
    if data is None or isinstance(data, (bool, int)):
        return data
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    return _text(str(data))


def _sample_row(run_id: int, row: Sample) -> SampleRow:
    return SampleRow(
        run_id=run_id,
        step=row.step,
        prompt=_text(row.prompt),
        response=_text(row.response),
        reward=row.reward,
        verifier_reward=row.verifier_reward,
        task=_text(row.task),
        domain=_text(row.domain),
        length=row.length,
        truncated=row.truncated,
        details=_jsonable(row.details),
    )
