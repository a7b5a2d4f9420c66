"""The ASGI server as `make up` starts it (studio.up.server_command): uvicorn in several processes
sharing one listening socket with a listen backlog for a burst of viewers (issue 16)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from studio_testing import descendants

from studio.up import free_port, server_command, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def serving_processes(pid: int) -> set[int]:
    """The processes of the server's tree that run the studio's application (uvicorn's workers)."""
    return {
        child
        for child in descendants(pid)
        if b"multiprocessing" in Path(f"/proc/{child}/cmdline").read_bytes()
        and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on `port` (`ss`: Send-Q of a listening socket)."""
    line = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(line.split()[2])


@pytest.mark.slow
def test_the_server_listens_with_the_backlog_in_two_processes_and_stops_whole(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "PRORL_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'server.sqlite3'}",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        server_command(port, backlog=300, workers=2),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server, 60, "the ASGI server")
        assert listen_backlog(port) == 300
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/studio/run.js", timeout=30) as response:
            assert response.status == 200 and b"WebSocket" in response.read()
        deadline = time.monotonic() + 30  # the workers start one after the other
        while len(serving_processes(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = serving_processes(server.pid)
        assert len(workers) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_daphne_stays_available_with_its_backlog_in_the_endpoint():
    command = server_command(8123, backlog=700, server="daphne")
    assert command[1:4] == ["-m", "daphne", "-e"]
    assert command[4] == "tcp:port=8123:interface=127.0.0.1:backlog=700"


def test_an_unknown_server_or_no_worker_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown ASGI server 'gunicorn': choose one of uvicorn, daphne"):
        server_command(8123, server="gunicorn")
    with pytest.raises(ValueError, match="at least 1 worker process, not 0"):
        server_command(8123, workers=0)
