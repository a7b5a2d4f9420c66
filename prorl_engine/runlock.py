"""One trainer per run folder: an exclusive lock on RUN_DIR/trainer.lock while a Trainer trains.

Two trainers in one folder would interleave their metrics, cut each other's logs when resuming
(`JsonlSink.rewind`) and overwrite each other's checkpoints, whether they are two `prorl resume`
in two terminals or a terminal and a studio worker. The lock is `fcntl.flock`, so the kernel
releases it when its holder dies (a crash or `kill -9` leaves no stale lock to clear by hand); the
file holds the holder's PID so that a refusal can say who has the folder.
"""

from __future__ import annotations

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = "trainer.lock"
PROBE_GRACE_S = 0.2  # `holder` holds the lock shared for an instant: a trainer retries this long before refusing


class RunLocked(RuntimeError):
    """Another process trains this run folder."""

    def __init__(self, run_dir: Path, pid: int | None):
        self.run_dir, self.pid = run_dir, pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"run folder {run_dir} is being trained by {holder} (lock {run_dir / LOCK_NAME})")


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the body, or raise RunLocked naming the folder and the holder's PID.

    The lock belongs to this open file (not to the process): a second `run_lock` on the same folder
    is refused even from the same process, and the file descriptor is not inherited by programs this
    process starts.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take(fd, run_dir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: the file names nobody
    finally:
        os.close(fd)  # closing the file releases the lock


def holder(run_dir: str | Path) -> int | None:
    """The PID training `run_dir` now (0 when its PID is not written yet), or None when nobody is.

    For a refusal before the slow part of starting (loading a model); `run_lock` is what enforces."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only while no trainer holds it
        except BlockingIOError:
            return _pid_in(fd) or 0
        return None
    finally:
        os.close(fd)


def holding_run_lock(train: Callable[[Any], str]) -> Callable[[Any], str]:
    """Make a trainer's `train()` hold the lock of its `run_dir` from start to end (see `run_lock`)."""

    @functools.wraps(train)
    def locked(trainer: Any) -> str:
        if not trainer.group.is_main:  # a distributed run's other ranks share rank 0's folder and lock
            return train(trainer)
        with run_lock(trainer.run_dir):
            return train(trainer)

    return locked


def _take(fd: int, run_dir: Path) -> None:
    """flock `fd` exclusively, or raise RunLocked once PROBE_GRACE_S has passed without it."""
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RunLocked(run_dir, _pid_in(fd)) from None
            time.sleep(0.02)


def _pid_in(fd: int) -> int | None:
    """The PID the lock file holds (None while the holder has not written it yet)."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
