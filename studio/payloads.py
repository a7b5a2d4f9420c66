"""Typed payloads from the worker to the browser, and the one serialiser of each.

Each payload's `type` names the consumer method that handles it ("run.metrics" -> run_metrics),
and the consumer forwards it to the browser with `kind` set to the part after "run.". A point, a
sample, an event and a run's progress have one serialiser each (`point_payload`, `sample_payload`,
`event_payload`, `progress_payload`): the worker's sink, the websocket consumer, the pages' JSON and
the token API all build them here, so every reader gets the same fields.
Below them: what a team viewer or a share link receives of a run (its error, events and config).
"""

from __future__ import annotations

import os.path
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TypedDict

from django.conf import settings

from studio.models import Event, RegisteredDataset, RegisteredModel, RegistryEntry, Run, RunStatus


class Point(TypedDict):
    step: int
    values: dict[str, float | None]


class Progress(TypedDict):
    step: int
    total: int
    eta_s: float | None
    status: str


class SamplePayload(TypedDict):
    step: int
    prompt: str
    response: str
    reward: float
    verifier_reward: float
    task: str
    domain: str
    length: int
    truncated: bool


class EventData(TypedDict):
    id: int
    step: int
    kind: str
    data: dict[str, Any]
    time: float


class SampleLike(Protocol):
    """A stored Sample row or the engine's Sample: the fields a sample payload shows."""

    step: int
    prompt: str
    response: str
    reward: float
    verifier_reward: float
    task: str
    domain: str
    length: int
    truncated: bool


def point_payload(step: int, values: dict[str, float | None]) -> Point:
    """One step's metrics as stored (MetricPoint.values) and sent."""
    return {"step": step, "values": values}


def sample_payload(sample: SampleLike) -> SamplePayload:
    """A logged completion without its verifier details (those stay in the database)."""
    return {
        "step": sample.step,
        "prompt": sample.prompt,
        "response": sample.response,
        "reward": sample.reward,
        "verifier_reward": sample.verifier_reward,
        "task": sample.task,
        "domain": sample.domain,
        "length": sample.length,
        "truncated": sample.truncated,
    }


def event_payload(event: Event) -> EventData:
    """A stored event as the pages, the websocket and the API show it (viewers: `viewer_event`)."""
    return {"id": event.pk, "step": event.step, "kind": event.kind, "data": event.data, "time": event.time}


def eta_seconds(
    step: int, total: int, status: str, started_at: float | None, resumed_from: int, now: float | None = None
) -> float | None:
    """Seconds left at the current attempt's pace (steps since `resumed_from`, since `started_at`);
    None unless running and at least one step of this attempt is stored."""
    done = step - resumed_from
    if status != RunStatus.RUNNING or started_at is None or done < 1:
        return None
    elapsed = (now if now is not None else time.time()) - started_at
    return max(0.0, elapsed / done * (total - step))


def progress_payload(
    step: int, total: int, status: str, started_at: float | None, resumed_from: int, now: float | None = None
) -> Progress:
    """Where a run stands: its last stored step of `total`, its status and the ETA of `eta_seconds`."""
    return {
        "step": step,
        "total": total,
        "status": status,
        "eta_s": eta_seconds(step, total, status, started_at, resumed_from, now),
    }


def run_progress(run: Run, now: float | None = None) -> Progress:
    """`progress_payload` of a Run row as stored."""
    return progress_payload(
        run.last_step, run.total_steps, run.status, _timestamp(run.started_at), run.resumed_from_step, now
    )


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class MetricsPayload(TypedDict):
    type: Literal["run.metrics"]
    points: list[Point]
    progress: Progress


class EventPayload(TypedDict):
    type: Literal["run.event"]
    event: EventData


class SamplesPayload(TypedDict):
    type: Literal["run.samples"]
    rows: list[SamplePayload]


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


class BusyWorker(TypedDict):
    """A training worker and the run it holds (`worker` is "a worker" for those who see no host names)."""

    worker: str
    run: int
    step: int
    total: int


class QueueInfo(TypedDict):
    """Why a queued run waits (studio.workers.queue_info): its place in the training queue (1: next;
    0: a worker has taken it up), the queued runs ahead of it (ids, oldest first, at most
    QUEUE_AHEAD_SHOWN), how many workers consume the queue and what the busy ones train."""

    position: int
    ahead: list[int]
    ahead_count: int
    workers: int
    busy: list[BusyWorker]
    reason: str


class QueuePayload(TypedDict):
    """The queue state of a run: `queue` is None once it is no longer queued."""

    type: Literal["run.queue"]
    queue: QueueInfo | None


QUEUE_AHEAD_SHOWN = 5

RunPayload = MetricsPayload | EventPayload | SamplesPayload | StatusPayload | RewindPayload


def metrics_message(points: list[Point], progress: Progress) -> MetricsPayload:
    return {"type": "run.metrics", "points": points, "progress": progress}


def event_message(event: Event) -> EventPayload:
    return {"type": "run.event", "event": event_payload(event)}


def samples_message(rows: list[SampleLike]) -> SamplesPayload:
    return {"type": "run.samples", "rows": [sample_payload(row) for row in rows]}


def status_message(status: str, error: str, progress: Progress) -> StatusPayload:
    return {"type": "run.status", "status": status, "error": error, "progress": progress}


def rewind_message(step: int) -> RewindPayload:
    return {"type": "run.rewind", "step": step}


def queue_message(queue: QueueInfo | None) -> QueuePayload:
    return {"type": "run.queue", "queue": queue}


# --- what a viewer sees -------------------------------------------------------------------------
# The run's owner, staff and those who may steer it (studio.permissions.can_see_run_details) get
# payloads as stored. Team viewers and share links get them through these functions: a run's error
# as its first line with no traceback and no server path, file paths relative to the run's folder,
# no worker host names.

VIEWER_ERROR_CHARS = 300
# An absolute POSIX path: a "/" that starts a word (not part of a URL's "//" or of "a/b") and the
# characters up to the next space, quote, bracket, comma, colon or semicolon.
_ABSOLUTE_PATH = re.compile(r"(?<![\w/.~-])/(?![/\s])[^\s'\"`<>()\[\]{},;:]+")
_SERVER_ONLY_EVENT_FIELDS = frozenset({"worker"})  # host name and process id of the worker


def run_relative(path: str, run_dir: Path) -> str | None:
    """`path` relative to the run's folder ("checkpoints/step-000003"), or None when it lies elsewhere."""
    normal = PurePosixPath(os.path.normpath(path))
    try:
        relative = normal.relative_to(PurePosixPath(os.path.normpath(run_dir)))
    except ValueError:
        return None
    return relative.as_posix()


def _hide_paths(text: str, run_dir: Path | None) -> str:
    """Absolute paths in `text`: relative to the run's folder where inside it, else "…/<name>"."""

    def replace(match: re.Match) -> str:
        inside = run_relative(match.group(0), run_dir) if run_dir is not None else None
        return inside if inside is not None else "…/" + PurePosixPath(match.group(0)).name

    return _ABSOLUTE_PATH.sub(replace, text)


def viewer_error(error: str, run_dir: Path | None = None) -> str:
    """A run's (or comparison's) error for a viewer: its first line, without server paths.

    The worker stores "<Type>: <message>" then a traceback with the files of the studio's machines;
    a viewer learns that and why the run failed, not where its code and files lie."""
    lines = error.strip().splitlines()
    if not lines:
        return ""
    first = _hide_paths(lines[0].strip(), run_dir)
    return first if len(first) <= VIEWER_ERROR_CHARS else first[: VIEWER_ERROR_CHARS - 1] + "…"


def viewer_event(event: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """An event payload ({"id", "step", "kind", "data", "time"}) for a viewer: `path` relative to the
    run (dropped when outside it), `error` as `viewer_error`, no worker host."""
    data = {}
    for key, value in event["data"].items():
        if key in _SERVER_ONLY_EVENT_FIELDS:
            continue
        if key == "path":
            value = run_relative(str(value), run_dir)
            if value is None:
                continue
        elif key == "error":
            value = viewer_error(str(value), run_dir)
        data[key] = value
    return {**event, "data": data}


# --- a run's config as a viewer sees it ---------------------------------------------------------
# Only `model_path` and the data sources' `path` name places on the studio's machines. A viewer
# reads them as names: a registered entry by its name, the run's own files relative to its folder,
# another run's files under "runs/<id>/", a `tiny:NAME` / `base:NAME` build by that (relative)
# name, anything else as "…/<last component>". Every other field is shown as stored.


def viewer_path(path: str, run_dir: Path, base_dir: Path, names: Mapping[Path, str]) -> str:
    """A model folder or data file of a run's config for a viewer (see above). Relative paths are
    read from `base_dir`, as the path rules read them; `names`: absolute path -> registered name."""
    if not path:
        return path
    absolute = Path(os.path.normpath(base_dir / path))
    if absolute in names:
        return names[absolute]
    inside = run_relative(str(absolute), run_dir)
    if inside is not None:
        return inside
    in_other_run = run_relative(str(absolute), run_dir.parent)  # run_dir is <runs folder>/<id>
    if in_other_run is not None and in_other_run != ".":
        return f"runs/{in_other_run}"
    return "…/" + absolute.name


def viewer_model_path(model_path: str, run_dir: Path, base_dir: Path, names: Mapping[Path, str]) -> str:
    """`model_path` for a viewer: a builder's relative NAME as it is (it builds under the studio's
    model folder, wherever that lies), a builder's absolute or escaping NAME as "…/<last>"."""
    builder, sep, name = model_path.partition(":")
    if not sep:
        return viewer_path(model_path, run_dir, base_dir, names)
    folder = PurePosixPath(name)
    if name and not folder.is_absolute() and ".." not in folder.parts:
        return model_path
    return f"{builder}:…/{folder.name}"


def viewer_config(
    config: Mapping[str, Any], run_dir: Path, base_dir: Path, names: Mapping[Path, str]
) -> dict[str, Any]:
    """A stored config dict with `model_path` and each data source's `path` in their viewer forms."""
    shown = dict(config)
    if isinstance(config.get("model_path"), str):
        shown["model_path"] = viewer_model_path(config["model_path"], run_dir, base_dir, names)
    if isinstance(config.get("data"), list):
        shown["data"] = [
            {**source, "path": viewer_path(source["path"], run_dir, base_dir, names)}
            if isinstance(source, dict) and isinstance(source.get("path"), str)
            else source
            for source in config["data"]
        ]
    return shown


def shown_config(run: Run, details: bool) -> dict[str, Any]:
    """The run's config as the person sees it: as stored with `details` (studio.permissions
    .can_see_run_details), else `viewer_config`. The run page, its config.yaml, the API, share links,
    the clone and fork forms and the overlay's config diff all ask this."""
    parsed = run.run_config  # every field as the engine reads it; as stored where today's bounds refuse it
    config = parsed.to_dict() if parsed is not None else run.config if isinstance(run.config, dict) else {}
    if details:
        return config
    base_dir = Path(settings.BASE_DIR)
    return viewer_config(config, run.run_dir, base_dir, registered_names(run, config, base_dir))


def registered_names(run: Run, config: Mapping[str, Any], base_dir: Path) -> dict[Path, str]:
    """absolute path -> "<name> (registered model)" / "<name> (registered data set)" for the
    config's paths that are registry entries; where several name one path, the run owner's entry
    first, then its team's, then by name."""
    model_path = config.get("model_path")
    models = [model_path] if isinstance(model_path, str) and ":" not in model_path else []
    sources = config.get("data") if isinstance(config.get("data"), list) else []
    files = [s["path"] for s in sources if isinstance(s, dict) and isinstance(s.get("path"), str)]
    names: dict[Path, str] = {}
    for model, paths, what in (
        (RegisteredModel, models, "registered model"),
        (RegisteredDataset, files, "registered data set"),
    ):
        for entry in _entries_at(model, run, [p for p in paths if p], base_dir):
            names.setdefault(Path(os.path.normpath(base_dir / entry.path)), f"{entry.name} ({what})")
    return names


def _entries_at(model: type[RegistryEntry], run: Run, paths: list[str], base_dir: Path) -> list[RegistryEntry]:
    """The registry entries stored under any of `paths` (absolute, or relative to `base_dir`)."""
    if not paths:
        return []
    forms = set()
    for path in paths:
        absolute = Path(os.path.normpath(base_dir / path))
        forms.add(str(absolute))
        if absolute.is_relative_to(base_dir):
            forms.add(str(absolute.relative_to(base_dir)))
    entries = model.objects.filter(path__in=forms)
    return sorted(
        entries, key=lambda e: (e.owner_id != run.owner_id, e.team_id is None or e.team_id != run.team_id, e.name, e.pk)
    )
