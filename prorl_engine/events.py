"""How the Trainer talks to the outside world.

The Trainer reports through an `EventSink` and takes commands from a `ControlSource`, read at step
boundaries. The CLI plugs in `JsonlSink` (files in the run folder) and no control; the studio's
worker plugs in a database + websocket sink and the studio's command queue. `NullSink` drops
everything and `MemorySink` keeps it in lists (evaluations, benchmarks, tests).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol


class CommandKind(str, Enum):
    RESET_REFERENCE = "reset_reference"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    SAVE_CHECKPOINT = "save_checkpoint"


@dataclass(frozen=True)
class Command:
    """A person's request to a live run; `requested_by` ends up in the event it causes."""

    kind: CommandKind
    requested_by: str = ""
    id: str = ""


@dataclass
class Event:
    """Something that happened to a run at a step.

    kind: "reset" (data: reason, requested_by), "checkpoint" (data: path), "checkpoint_removed"
    (data: checkpoint_step, path; pruned by keep_checkpoints), "checkpoint_failed" (data: error, a
    message for people; reason = no_space | not_writable; needed_mb; a steered run pauses), "status"
    (data: status = running | paused | finished | stopped | failed, error), "length_penalty"
    (data: on), "command" (data: kind, requested_by, applied), "eval" (data: metrics).
    """

    kind: str
    step: int
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


@dataclass
class Sample:
    """One logged completion, for the studio's table of recent samples."""

    step: int
    prompt: str
    response: str
    reward: float
    verifier_reward: float
    task: str
    domain: str
    length: int
    truncated: bool
    details: dict[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    def metrics(self, step: int, values: dict[str, float]) -> None:
        """All metric keys of one step (PRORL_SPEC.md section 10), once per step."""

    def samples(self, step: int, rows: list[Sample]) -> None: ...

    def event(self, event: Event) -> None: ...

    def rewind(self, step: int) -> None:
        """Forget everything logged after `step`: the run is resuming from its checkpoint at `step`
        (a crashed worker may have logged steps past it). Called once, before the resumed step."""

    def close(self) -> None: ...


class ControlSource(Protocol):
    def poll(self) -> list[Command]:
        """Commands that arrived since the last poll (never blocks)."""


class NoControl:
    """A run nobody steers (the CLI)."""

    def poll(self) -> list[Command]:
        return []


class JsonlSink:
    """Appends metrics.jsonl, samples.jsonl and events.jsonl in a run folder.

    On resume, lines for steps after the checkpoint being resumed are cut first (`rewind`),
    so a run folder never holds a step twice.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files = {
            name: open(self.run_dir / f"{name}.jsonl", "a", encoding="utf-8")
            for name in ("metrics", "samples", "events")
        }

    def rewind(self, step: int) -> None:
        """Drop every line whose step is > `step` (a crashed run may have logged past its checkpoint)."""
        for name, handle in self._files.items():
            handle.close()
            path = self.run_dir / f"{name}.jsonl"
            kept = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step
            ]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            self._files[name] = open(path, "a", encoding="utf-8")

    def _write(self, name: str, obj: dict[str, Any]) -> None:
        handle = self._files[name]
        handle.write(json.dumps(obj, default=str) + "\n")
        handle.flush()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._write("metrics", {"step": step, **values})

    def samples(self, step: int, rows: list[Sample]) -> None:
        for row in rows:
            self._write("samples", asdict(row))

    def event(self, event: Event) -> None:
        self._write("events", asdict(event))

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


class NullSink:
    """Discards everything: for runs and evaluations whose output nobody reads. Subclass it to
    keep one kind of output and drop the rest."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Dropped."""

    def samples(self, step: int, rows: list[Sample]) -> None:
        """Dropped."""

    def event(self, event: Event) -> None:
        """Dropped."""

    def rewind(self, step: int) -> None:
        """Nothing kept, nothing to forget."""

    def close(self) -> None:
        """Nothing to close."""


class MemorySink:
    """Keeps everything in lists, in the order it arrived (tests, benchmarks, in-process callers).

    `metrics` holds one dict per step, `{"step": step, **values}`; `rewind(step)` drops what was
    logged after `step`, as JsonlSink does on disk.
    """

    def __init__(self) -> None:
        self.metrics_rows: list[dict[str, Any]] = []
        self.sample_rows: list[Sample] = []
        self.events: list[Event] = []

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metrics_rows.append({"step": step, **values})

    def samples(self, step: int, rows: list[Sample]) -> None:
        self.sample_rows.extend(rows)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def rewind(self, step: int) -> None:
        self.metrics_rows = [row for row in self.metrics_rows if row["step"] <= step]
        self.sample_rows = [row for row in self.sample_rows if row.step <= step]
        self.events = [event for event in self.events if event.step <= step]

    def close(self) -> None:
        """Nothing to close: the lists stay readable after the run."""


class FanoutSink:
    """Sends everything to several sinks (for example files and a progress bar)."""

    def __init__(self, *sinks: EventSink):
        self.sinks = sinks

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.metrics(step, values)

    def samples(self, step: int, rows: list[Sample]) -> None:
        for sink in self.sinks:
            sink.samples(step, rows)

    def event(self, event: Event) -> None:
        for sink in self.sinks:
            sink.event(event)

    def rewind(self, step: int) -> None:
        for sink in self.sinks:
            sink.rewind(step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
