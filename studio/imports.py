"""Importing run folders the CLI wrote (`prorl train`, `prorl ablate --runs DIR`) as studio runs.

A CLI run folder holds config.yaml, metrics.jsonl, samples.jsonl and events.jsonl (the engine's
JsonlSink) and its checkpoints. `import_run_folder` turns one folder into a Run with its MetricPoint,
Event, Sample, Checkpoint and RunTag rows, stored as the worker's sink stores a live run's
(studio/stored.py), so the run page, its charts, the overlay and the compare pages read an imported
run as they read one the studio trained. Its checkpoints stay where the CLI wrote them: they can be
forked and compared, but the run itself is not resumed by the studio (studio/commands.py).

Everything of one folder is written in one transaction, or nothing is: a folder that is not a run
folder, a line that is not what the engine writes (named by file and line), a config the engine
refuses, or a folder imported before (same path or same files: unless `again`) is an ImportRefused.
Rows go in with bulk_create in batches of BATCH_ROWS, read from the files as they are written, so a
run of 10^5 steps imports in seconds without holding its files in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Model, Q

from prorl_engine import runlock
from prorl_engine.cli import CliError, read_config_values
from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.events import Sample
from studio.models import TERMINAL_STATUSES, Checkpoint, MetricPoint, Run, RunStatus, RunTag
from studio.models import Event as EventRow
from studio.models import Sample as SampleRow
from studio.runs_table import parse_tags
from studio.stored import finite_values, jsonable, sample_row

BATCH_ROWS = 2000  # rows per bulk_create: a few hundred kB of SQL each, well under every database's limits
CONFIG_FILE = "config.yaml"
LOG_FILES = ("metrics.jsonl", "events.jsonl", "samples.jsonl")  # JsonlSink's files
REQUIRED_FILES = (CONFIG_FILE, "metrics.jsonl")
NAME_MAX_CHARS = Run._meta.get_field("name").max_length
STATUS_FOR = {s.value: s for s in RunStatus}
SAMPLE_FIELDS: dict[str, tuple[type, ...]] = {  # prorl_engine.events.Sample, as JSON reads it back
    "step": (int,),
    "prompt": (str,),
    "response": (str,),
    "reward": (int, float),
    "verifier_reward": (int, float),
    "task": (str,),
    "domain": (str,),
    "length": (int,),
    "truncated": (bool,),
    "details": (dict,),
}

T = TypeVar("T")


class ImportRefused(Exception):
    """A folder that is not imported; the message names the folder (or file and line) and why."""


@dataclass
class RunHistory:
    """What a folder's events.jsonl says of the run as a whole: how it ended and when."""

    status: RunStatus = RunStatus.FAILED
    error: str = ""
    created: float | None = None  # the first event: the run's start
    started: float | None = None  # the last "running" status: its last attempt's start
    finished: float | None = None
    attempts: int = 0
    resumed_from: int = 0
    checkpoints: dict[int, tuple[str, float]] = field(default_factory=dict)  # step -> (path, time), as pruned


def owner_named(username: str) -> AbstractBaseUser:
    """The user whose runs the imports become; ImportRefused when there is none of that name."""
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None:
        raise ImportRefused(f"no user named {username!r}: create it first (python manage.py createsuperuser)")
    return user


def checked_tags(tags: Sequence[str]) -> list[str]:
    """The tags as the runs table takes them (letters, digits and . : + - _), or ImportRefused."""
    try:
        return parse_tags(" ".join(tags))
    except forms.ValidationError as exc:
        raise ImportRefused(f"--tag: {' '.join(exc.messages)}") from None


def import_run_folder(
    folder: Path, owner: AbstractBaseUser, *, name: str = "", tags: Sequence[str] = (), again: bool = False
) -> Run:
    """Store the CLI run in `folder` as a Run of `owner` named `name` (default: the folder's path,
    relative to the working directory when under it) with `tags`. Raises ImportRefused, storing
    nothing, when the folder cannot be imported, or was imported before and not `again`."""
    folder = Path(os.path.abspath(folder))
    _check_run_folder(folder)
    config = _read_config(folder / CONFIG_FILE)
    fingerprint = folder_fingerprint(folder)
    if not again:
        _refuse_imported(folder, fingerprint)
    history = read_history(folder / "events.jsonl")
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner,
            name=name or default_name(folder),
            config=config.to_dict(),
            total_steps=config.steps,
            status=history.status,
            error=history.error,
            created_at=_when(history.created) or datetime.now(UTC),
            started_at=_when(history.started),
            finished_at=_when(history.finished),
            attempts=history.attempts,
            resumed_from_step=history.resumed_from,
            imported_from=str(folder),
            import_fingerprint=fingerprint,
        )
        last_step, latest_reward = _store_metrics(run, folder / "metrics.jsonl")
        _store_events(run, folder / "events.jsonl")
        _store_samples(run, folder / "samples.jsonl")
        Checkpoint.objects.bulk_create(
            [
                Checkpoint(run=run, step=step, path=_local_checkpoint(folder, path), created_at=_when(time))
                for step, (path, time) in sorted(history.checkpoints.items())
            ]
        )
        RunTag.objects.bulk_create([RunTag(run=run, name=tag) for tag in checked_tags(tags)])
        run.last_step, run.latest_reward = last_step, latest_reward
        run.save(update_fields=["last_step", "latest_reward"])
    return run


def default_name(folder: Path) -> str:
    """The folder's path relative to the working directory when it lies under it ("var/ablations/
    seed-0/full" tells the runs apart), else its absolute path; its end when longer than a name may be."""
    try:
        shown = str(folder.relative_to(Path.cwd()))
    except ValueError:
        shown = str(folder)
    return shown[-NAME_MAX_CHARS:]


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the config and the log files (name, size and bytes of each): the same files give
    the same fingerprint wherever the folder lies; a run trained further gives another."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, *LOG_FILES):
        path = folder / name
        if not path.is_file():
            continue
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def read_history(path: Path) -> RunHistory:
    """How the run ended and when, from its events: the status of its last status event when that
    ended it (finished, stopped, failed). A folder whose events stop without one (the trainer was
    killed or crashed, or the disk refused a checkpoint) is failed, with that said in its error."""
    history = RunHistory()
    last_status: RunStatus | None = None
    last_error = ""
    last_time: float | None = None
    for number, line in _json_lines(path):
        kind, data, time = _event_fields(path, number, line)
        history.created = time if history.created is None else history.created
        last_time = time
        if kind == "checkpoint":
            history.checkpoints[line["step"]] = (str(data.get("path", "")), time)
        elif kind == "checkpoint_removed":
            history.checkpoints.pop(data.get("checkpoint_step"), None)
        elif kind == "checkpoint_failed":
            last_error = str(data.get("error") or "")
        elif kind == "status" and data.get("status") in STATUS_FOR:
            last_status = STATUS_FOR[data["status"]]
            last_error = str(data.get("error") or "")
            if last_status == RunStatus.RUNNING:
                history.attempts += "requested_by" not in data  # a resume after a pause is no new attempt
                history.started = time
                resumed_from = data.get("resumed_from")
                history.resumed_from = resumed_from if type(resumed_from) is int and resumed_from >= 0 else 0
            elif last_status in TERMINAL_STATUSES:
                history.finished = time
    if last_status in TERMINAL_STATUSES:
        history.status, history.error = last_status, last_error
        return history
    history.finished = last_time
    if last_error:  # the disk refused a checkpoint: that ends a run nobody steers
        history.error = last_error
    else:
        history.error = "its events end without a final status: the trainer was killed or crashed"
    return history


# --- reading the folder -----------------------------------------------------------------------------
def _check_run_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ImportRefused(f"{folder}: no such folder")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ImportRefused(f"{folder}: not a run folder (no {' and no '.join(missing)})")
    pid = runlock.holder(folder)
    if pid is not None:
        raise ImportRefused(f"{folder}: still being trained (by process {pid or 'unknown'}): import it once it ends")


def _read_config(path: Path) -> RunConfig:
    """The folder's config as the engine validates it, its paths not looked up: a run trained on
    another machine imports (the workers check paths when they train from it)."""
    try:
        return RunConfig.from_dict(read_config_values(path), check_paths=False)
    except CliError as exc:
        raise ImportRefused(str(exc)) from None
    except ConfigError as exc:
        raise ImportRefused(f"{path}: invalid config: {exc}") from None


def _refuse_imported(folder: Path, fingerprint: str) -> None:
    earlier = Run.objects.filter(Q(imported_from=str(folder)) | Q(import_fingerprint=fingerprint)).first()
    if earlier is None:
        return
    same = "these files" if earlier.import_fingerprint == fingerprint else "this folder (its files changed since)"
    raise ImportRefused(
        f"{folder}: {same} already imported as run #{earlier.pk} ({earlier.name}, {earlier.get_absolute_url()}); "
        "--again imports it once more as a new run"
    )


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file, a missing file having none;
    a line that is not a JSON object with a step >= 0 is ImportRefused naming the file and line."""
    if not path.is_file():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)  # NaN and Infinity as JsonlSink wrote them
            except UnicodeDecodeError:
                raise ImportRefused(f"{path}, line {number}: not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                raise ImportRefused(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(line, dict):
                raise ImportRefused(f"{path}, line {number}: not a JSON object")
            if type(line.get("step")) is not int or line["step"] < 0:
                raise ImportRefused(f"{path}, line {number}: no step (an integer >= 0)")
            yield number, line


def _event_fields(path: Path, number: int, line: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
    """An events.jsonl line's kind, data and time, or ImportRefused naming what is missing."""
    kind, data, time = line.get("kind"), line.get("data", {}), line.get("time")
    if not isinstance(kind, str) or not kind or len(kind) > EventRow._meta.get_field("kind").max_length:
        raise ImportRefused(f"{path}, line {number}: no kind (a short string)")
    if not isinstance(data, dict):
        raise ImportRefused(f"{path}, line {number}: its data is not a JSON object")
    if not _is_number(time):
        raise ImportRefused(f"{path}, line {number}: no time (a number)")
    return kind, data, float(time)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _batches(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- storing ----------------------------------------------------------------------------------------
def _store_metrics(run: Run, path: Path) -> tuple[int, float | None]:
    """One MetricPoint per metrics line; returns the last step and the latest reward/mean, as the
    sink leaves them on the run."""
    last_step, latest_reward = 0, None
    seen: set[int] = set()

    def points() -> Iterator[MetricPoint]:
        nonlocal last_step, latest_reward
        for number, line in _json_lines(path):
            step = line.pop("step")
            if step in seen:
                raise ImportRefused(f"{path}, line {number}: step {step} is logged twice")
            seen.add(step)
            try:
                values = finite_values(line)
            except (TypeError, ValueError, OverflowError):
                wrong = next((k for k, v in line.items() if v is not None and not _is_number(v)), "a value")
                raise ImportRefused(f"{path}, line {number}: {wrong} is not a number") from None
            last_step = max(last_step, step)
            if values.get("reward/mean") is not None:  # the latest reward the run logged, NaN skipped
                latest_reward = values["reward/mean"]
            yield MetricPoint(run_id=run.pk, step=step, values=values)

    _insert(MetricPoint, points())
    return last_step, latest_reward


def _store_events(run: Run, path: Path) -> None:
    """One Event row per events line, its data made plain JSON as the sink makes it."""

    def rows() -> Iterator[EventRow]:
        for number, line in _json_lines(path):
            kind, data, time = _event_fields(path, number, line)
            yield EventRow(run_id=run.pk, step=line["step"], kind=kind, data=jsonable(data), time=time)

    _insert(EventRow, rows())


def _store_samples(run: Run, path: Path) -> None:
    """One Sample row per samples line (each field of prorl_engine.events.Sample, nothing else)."""

    def rows() -> Iterator[SampleRow]:
        for number, line in _json_lines(path):
            if set(line) != set(SAMPLE_FIELDS):
                fields = ", ".join(SAMPLE_FIELDS)
                raise ImportRefused(f"{path}, line {number}: not a sample (its fields are not: {fields})")
            wrong = next((key for key, types in SAMPLE_FIELDS.items() if not isinstance(line[key], types)), None)
            if wrong is not None or isinstance(line["length"], bool):
                raise ImportRefused(f"{path}, line {number}: {wrong or 'length'} has the wrong type")
            yield sample_row(run.pk, Sample(**line))

    _insert(SampleRow, rows())


def _insert(model: type[Model], rows: Iterable[Model]) -> None:
    """Insert `rows` as they are read: bulk_create in batches of BATCH_ROWS, except on PostgreSQL,
    where COPY takes them. Django's bulk insert there sends each column as one array, and psycopg
    escapes every jsonb value of that array in Python: half a minute for 10^5 metric rows of 40
    keys, where COPY takes seconds. Either way the rows are in the caller's transaction."""
    if connection.vendor != "postgresql":
        for batch in _batches(rows, BATCH_ROWS):
            model.objects.bulk_create(batch)
        return
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row([f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields])


def _local_checkpoint(folder: Path, logged: str) -> str:
    """Where the checkpoint is now: in this folder's checkpoints/ when it is there (the CLI may have
    logged a relative path, or the folder was moved since), else the path the run logged."""
    here = folder / "checkpoints" / Path(logged).name
    return str(here) if logged and here.is_dir() else logged


def _when(unix_time: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix_time, UTC) if unix_time is not None else None
