"""The bridge from the engine to the studio: a database + websocket `EventSink` and a
`ControlSource` over the run's pending Command rows.

The trainer thread only appends to a queue. One flusher thread drains it: whatever accumulated
while it was busy is written in one transaction (group commit), then published to the run's
channel-layer group. A payload is published only after its rows are committed, so a browser that
reconnects and reads the database never misses a point it was not sent.

Storing is what matters; publishing is best effort. While the database is away the flusher retries
the batch with a backoff and the trainer keeps training, its points held in memory, up to
DB_OUTAGE_S seconds or MAX_HELD items: then the sink fails the run with a message saying so. While
Redis is away the payloads wait (up to MAX_UNPUBLISHED, the oldest dropped first: the consumer fills
any hole in the points from the database) and go out once the layer answers again. A Redis outage
never ends a run.

Each batch renews the run's lease first, and only while this sink's worker holds it: a worker that
lost its lease (another took the run up after it went silent) stores nothing more and stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from prorl_engine.events import Command as EngineCommand
from prorl_engine.events import CommandKind, Event, Sample
from studio.models import TERMINAL_STATUSES, Checkpoint, Command, MetricPoint, Run, RunStatus
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
from studio.queue import publish_queue
from studio.run_status import status_changes
from studio.stored import finite_values, jsonable, sample_row
from studio.watchdogs import RunWatchdogs
from worker.db_retry import TRANSIENT_DB_ERRORS, DatabaseUnavailable, backoff_delays, retry_transient

log = logging.getLogger(__name__)

MAX_BATCH = 1000
DB_OUTAGE_S = 600.0  # how long the sink waits for the database before it fails the run
MAX_HELD = 50_000  # items (points, samples, events) held in memory while the database is away
MAX_UNPUBLISHED = 2000  # payloads kept for the channel layer while Redis is away
PUBLISH_TIMEOUT_S = 5.0  # one group_send; a hung Redis must not stall the writes
STATUS_FOR = {s.value: s for s in RunStatus}


class SinkError(RuntimeError):
    """The sink cannot store the run's data: the trainer must stop."""


class LeaseLost(SinkError):
    """Another worker took the run up (this one went silent too long): this attempt stops, and
    records nothing, since the run is no longer its own."""


class StudioSink:
    """EventSink of one run: batched database writes, then typed payloads to the run's group."""

    def __init__(
        self,
        run: Run,
        *,
        max_batch: int = MAX_BATCH,
        heartbeat_s: float | None = None,
        outage_s: float | None = None,
        max_held: int = MAX_HELD,
    ):
        self.run_id = run.pk
        self.group = run.group_name
        self.worker = run.worker  # the lease holder (worker/tasks.py claim_run): renewed only for it
        self.total = run.total_steps
        self.started = run.started_at.timestamp() if run.started_at else None
        self.resumed_from = run.resumed_from_step
        self.last_step = run.last_step
        self.status = run.status
        self.watchdogs = RunWatchdogs(run.pk)  # metric rules, evaluated on each batch of points
        self.max_batch = max_batch
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else settings.WORKER_LEASE_S / 4
        self.outage_s = outage_s if outage_s is not None else DB_OUTAGE_S
        self.max_held = max_held
        self._items: deque[tuple[str, Any]] = deque()
        self._unpublished: deque[RunPayload] = deque(maxlen=MAX_UNPUBLISHED)
        self._publish_delays = _publish_backoff()
        self._publish_at = 0.0  # monotonic time of the next publishing attempt
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._error: BaseException | None = None  # sticky: a broken sink refuses everything after
        self._error_seen = False
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
        resume = retry_transient(
            lambda: self._write_rewind(step), budget_s=self.outage_s, what=f"rewinding run {self.run_id}"
        )
        self.last_step = self.resumed_from = step
        self._to_publish([rewind_message(step), event_message(resume)])

    def close(self, *, raise_error: bool = True) -> None:
        """Store what is queued, stop the flusher thread (and with it the lease's renewal), then
        raise the sink's error unless the trainer saw it already or `raise_error` is false."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        if raise_error and not self._error_seen:
            self._raise_pending()

    # --- for the task -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Wait until everything queued so far is committed (published once the layer answers)."""
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
            self._error_seen = True
            raise self._error

    def _flusher(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    self._store(batch)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                self._deliver()
        finally:
            self._deliver(last=True)
            self._loop.close()  # channels-redis closes this loop's connections with it
            connection.close()

    def _next_batch(self) -> list[tuple[str, Any]] | None:
        """What to store next (empty: only the lease's renewal, every heartbeat_s); None once the
        sink is closed and drained, or broken."""
        with self._cond:
            if not self._items and not self._stopping and self._error is None:
                self._cond.wait(timeout=self._idle_s())
            if self._error is not None or (not self._items and self._stopping):
                return None
            self._busy = True
            return [self._items.popleft() for _ in range(min(len(self._items), self.max_batch))]

    def _idle_s(self) -> float:
        """How long the flusher may sleep: until the next heartbeat, or the next publishing attempt."""
        if not self._unpublished:
            return self.heartbeat_s
        return max(0.05, min(self.heartbeat_s, self._publish_at - time.monotonic()))

    def _store(self, batch: list[tuple[str, Any]]) -> None:
        """Write the batch, retrying while the database is away; a failure that will not pass
        breaks the sink (the trainer sees it at its next call) and drops what it held."""
        try:
            payloads = retry_transient(
                lambda: self._write(batch),
                budget_s=self.outage_s,
                what=f"run {self.run_id}: storing its data",
                give_up=lambda: self._over_bound(len(batch)),
            )
        except LeaseLost as exc:
            self._break(exc)
        except DatabaseUnavailable as exc:
            self._break(SinkError(f"{exc}. The run stopped; resume it to continue from its last checkpoint."), exc)
        except Exception as exc:
            log.exception("studio sink failed for run %s", self.run_id)
            connection.close()  # the next use reconnects (the thread keeps one connection)
            self._break(SinkError(f"the studio sink could not store the run's data: {exc}"), exc)
        else:
            self._to_publish(payloads)

    def _over_bound(self, in_batch: int) -> str | None:
        held = len(self._items) + in_batch
        return f"{held} items are held in memory, the bound is {self.max_held}" if held > self.max_held else None

    def _break(self, error: SinkError, cause: BaseException | None = None) -> None:
        """Stop storing: the trainer gets `error` (caused by `cause`) from its next call."""
        error.__cause__ = cause
        with self._cond:
            self._error = error
            self._items.clear()
            self._cond.notify_all()

    def _write(self, batch: list[tuple[str, Any]]) -> list[RunPayload]:
        """One transaction for the batch; returns the payloads to publish, in the order logged. When
        it fails, the sink's own view of the run is as before, so the batch can be written again."""
        before = (self.status, self.last_step)
        try:
            return self._write_batch(batch)
        except BaseException:
            self.status, self.last_step = before
            raise

    def _write_batch(self, batch: list[tuple[str, Any]]) -> list[RunPayload]:
        payloads: list[RunPayload] = []
        points: list[Point] = []
        run_changes: dict[str, Any] = {}
        with transaction.atomic():
            self._renew_lease()
            for kind, item in batch:
                if kind == "metrics":
                    step, values = item
                    points.append(point_payload(step, finite_values(values)))
                    continue
                self._flush_points(points, payloads, run_changes)
                if kind == "samples":
                    step, rows = item
                    stored = [sample_row(self.run_id, row) for row in rows]
                    SampleRow.objects.bulk_create(stored)
                    payloads.append(samples_message(stored))
                elif kind == "event":
                    payloads.extend(self._write_event(item, run_changes))
            self._flush_points(points, payloads, run_changes)
            if run_changes:
                Run.objects.filter(pk=self.run_id).update(**run_changes)
            if "status" in run_changes:  # started or ended: where the queued runs stand changed
                transaction.on_commit(lambda: publish_queue(self.run_id))
        return payloads

    def _renew_lease(self) -> None:
        """The batch's first statement: renew the lease, or raise LeaseLost (the batch is rolled
        back) when another worker holds the run now. A run this sink ended has no lease left."""
        if self.status in TERMINAL_STATUSES:
            return
        if not Run.objects.filter(pk=self.run_id, worker=self.worker).update(heartbeat=time.time()):
            holder = Run.objects.filter(pk=self.run_id).values_list("worker", flat=True).first()
            raise LeaseLost(f"run {self.run_id} is no longer held by {self.worker or 'this sink'} (now: {holder!r})")

    def _write_rewind(self, step: int) -> EventRow:
        with transaction.atomic():
            for model in (MetricPoint, EventRow, SampleRow, Checkpoint):
                model.objects.filter(run_id=self.run_id, step__gt=step).delete()
            last = MetricPoint.objects.filter(run_id=self.run_id, step=step).values_list("values", flat=True).first()
            run = Run.objects.select_for_update().get(pk=self.run_id)
            run.last_step = step
            run.resumed_from_step = step
            run.latest_reward = (last or {}).get("reward/mean")
            run.save(update_fields=["last_step", "resumed_from_step", "latest_reward"])
            return EventRow.objects.create(
                run_id=self.run_id,
                step=step,
                kind="resume",
                time=time.time(),
                data={"from_step": step, "attempt": run.attempts},
            )

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
            run_id=self.run_id, step=event.step, kind=event.kind, data=jsonable(event.data), time=event.time
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

    def _to_publish(self, payloads: list[RunPayload]) -> None:
        """Hand payloads to the flusher, which publishes them in order after what it holds. Past
        MAX_UNPUBLISHED the oldest go: the consumer fills holes in the points from the database."""
        with self._cond:
            dropped = len(self._unpublished) + len(payloads) - MAX_UNPUBLISHED
            if dropped > 0:
                log.warning("run %s: the channel layer is away, %d old payloads dropped", self.run_id, dropped)
            self._unpublished.extend(payloads)
            self._cond.notify_all()

    def _deliver(self, last: bool = False) -> None:
        """Publish the held payloads, oldest first, unless the layer failed recently (then later,
        with a backoff). The `last` attempt, at close, is made whatever the backoff says; what it
        cannot send is dropped: viewers read it from the database when they reconnect."""
        if not self._unpublished or (not last and time.monotonic() < self._publish_at):
            return
        try:
            while self._unpublished:
                self._publish([self._unpublished[0]])
                with self._cond:
                    self._unpublished.popleft()
        except Exception as exc:
            self._publish_at = time.monotonic() + next(self._publish_delays)
            log.warning("run %s: %d payloads wait for the channel layer (%s)", self.run_id, len(self._unpublished), exc)
            if last:
                log.warning("run %s: %d payloads were not published", self.run_id, len(self._unpublished))
            return
        if self._publish_at:  # the layer is back: the next failure starts the backoff anew
            self._publish_at = 0.0
            self._publish_delays = _publish_backoff()

    def _publish(self, payloads: list[RunPayload]) -> None:
        """Send payloads to the run's group, from the flusher thread's own event loop."""
        layer = get_channel_layer()
        for payload in payloads:
            self._loop.run_until_complete(asyncio.wait_for(layer.group_send(self.group, payload), PUBLISH_TIMEOUT_S))


class StudioControl:
    """ControlSource: the run's Command rows not yet handed to the engine, oldest first."""

    def __init__(self, run: Run):
        self.run_id = run.pk

    def poll(self) -> list[EngineCommand]:
        """The new commands; none while the database is away (they wait in it for the next poll)."""
        try:
            return self._pending()
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("run %s: commands not read, the database is unreachable (%s)", self.run_id, exc)
            connection.close()  # the next poll reconnects
            return []

    def _pending(self) -> list[EngineCommand]:
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


def _publish_backoff() -> Iterator[float]:
    """Seconds between attempts to reach a channel layer that failed: 0.5, 1, 2, ... 10."""
    return backoff_delays(first=0.5, most=10.0)
