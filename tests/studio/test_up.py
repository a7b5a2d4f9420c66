"""`make up` (python -m studio.up) on an empty folder: everything starts, Ctrl-C stops everything."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from studio_testing import Browserless, descendants

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_up_starts_the_studio_with_a_demo_run_and_ctrl_c_stops_every_child(tmp_path):
    from studio.up import free_port, wait_for_port

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env.update(PRORL_VAR_DIR=str(tmp_path), PRORL_RUNS_DIR=str(tmp_path / "runs"), PRORL_DEMO_PASSWORD="demo-pass")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "studio.up",
            "--port",
            str(port),
            "--demo-config",
            str(REPO / "prorl_engine" / "configs" / "tiny.yaml"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, up, 120, "studio.up")
        browser = Browserless(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while "demo (tiny)" not in (page := _run_list(browser)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "demo (tiny)" in page
        children = descendants(up.pid)
        assert len(children) >= 3  # redis-server, the Celery workers, the ASGI server
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert "log in as   demo" in output and "password    demo-pass" in output
    time.sleep(0.5)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def _run_list(browser: Browserless) -> str:
    if not any(cookie.name == "sessionid" for cookie in browser.cookies):
        browser.log_in("demo", "demo-pass")
    return browser.get("/")[1]
