"""The code sandbox: hostile programs end within their limits with reward 0, and the worker is unharmed.

Each hostile program prints what only a successful attack could print, and its test expects exactly
that output: a reward of 0 means the attack failed. The host side is checked too (no file written,
no connection received, no process left behind).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from prorl_engine.data.example import Example
from prorl_engine.verifiers.code import CodeVerifier
from prorl_engine.verifiers.sandbox import Sandbox, SandboxUnavailable

BUDGET_S = 2.0  # the verifier's budget in these tests; test_verifiers_code.py checks the real 5 s


def attack(program: str, success_output: str = "escaped\n") -> Example:
    """A code task whose only passing output is the one a successful attack prints."""
    tests = [{"input": "", "output": success_output}]
    return Example(uid="attack", domain="code", task="test", prompt="?", metadata={"tests": tests})


def fenced(program: str) -> str:
    return f"```python\n{program}\n```"


def sandboxed_processes() -> list[int]:
    """PIDs of any process still running the sandbox harness."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"/sandbox/harness.py" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def verifier():
    return CodeVerifier(time_budget_s=BUDGET_S)


@pytest.fixture(autouse=True)
def no_process_survives():
    """After every test: nothing of the sandbox is left running, and the worker can still fork."""
    yield
    deadline = time.monotonic() + 2.0
    while sandboxed_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandboxed_processes() == []
    assert subprocess.run(["true"]).returncode == 0


def judged(verifier: CodeVerifier, program: str, success_output: str = "escaped\n"):
    """The verdict on `program`, and the seconds it took."""
    started = time.monotonic()
    verdict = verifier.verify(fenced(program), attack(program, success_output))
    return verdict, time.monotonic() - started


def test_a_program_cannot_reach_the_network(verifier):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    port = listener.getsockname()[1]
    program = f"""
import socket
for address in [("127.0.0.1", {port}), ("1.1.1.1", 80), ("8.8.8.8", 53)]:
    try:
        socket.create_connection(address, timeout=1).sendall(b"hello")
        print("escaped")
    except OSError:
        pass
"""
    verdict, seconds = judged(verifier, program)
    assert verdict.reward == 0.0 and seconds < BUDGET_S + 1
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()


def test_a_program_cannot_write_outside_its_temporary_folder(verifier, tmp_path):
    token = uuid.uuid4().hex
    targets = [
        f"/tmp/prorl-escape-{token}",
        str(tmp_path / "escape"),
        str(Path.home() / f"prorl-escape-{token}"),
        f"/usr/prorl-escape-{token}",
        f"/prorl-escape-{token}",
        f"/dev/shm/prorl-escape-{token}",
    ]
    program = f"""
import os
written = 0
for path in {targets!r}:
    try:
        with open(path, "w") as handle:
            handle.write("pwned")
        written += os.path.exists(path) and path.startswith("/tmp/")
        if not path.startswith("/tmp/"):
            print("escaped")
    except OSError:
        pass
print("own /tmp is writable" if written else "")
"""
    verdict, _ = judged(verifier, program)
    assert verdict.reward == 0.0
    assert not any(Path(target).exists() for target in targets)


def test_a_program_sees_none_of_the_worker_s_environment_or_files(verifier, tmp_path, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("PRORL_TEST_SECRET", secret)
    (tmp_path / "secret.txt").write_text(secret)
    program = f"""
import glob, os
found = os.environ.get("PRORL_TEST_SECRET", "")
for path in glob.glob("/proc/*/environ") + [{str(tmp_path / "secret.txt")!r}]:
    try:
        found += open(path, "rb").read().decode(errors="ignore")
    except OSError:
        pass
for home in [{str(Path.home())!r}, "/home", "/root", "/work", "/etc"]:
    if os.path.exists(home):
        found += " " + home
print({secret!r} if {secret!r} in found else found)
"""
    verdict, _ = judged(verifier, program, success_output=secret + "\n")
    assert verdict.reward == 0.0
    run = Sandbox().run(program)
    assert secret.encode() not in run.stdout and run.completed
    places = [str(Path.home()), str(tmp_path), "/home", "/root", "/work", "/etc", os.getcwd()]
    run = Sandbox().run(f"import os\nprint([p for p in {places!r} if os.path.exists(p)])")
    assert run.stdout == b"[]\n"


def test_the_environment_inside_is_only_the_sandbox_s_own():
    run = Sandbox().run("import os\nprint(sorted(os.environ))\nprint(os.getuid() != 0)")
    assert run.stdout.decode().splitlines() == ["['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONHASHSEED']", "True"]


def test_a_fork_bomb_is_stopped_by_the_process_limit_and_the_deadline(verifier):
    program = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    verdict, seconds = judged(verifier, program)
    assert verdict.reward == 0.0 and seconds < BUDGET_S + 1.5


def test_endless_allocation_fails_at_the_memory_limit(verifier):
    program = """
chunks = []
try:
    while True:
        chunks.append(bytearray(50 * 1024 * 1024))
except MemoryError:
    print("stopped at", len(chunks) * 50, "MiB")
huge = bytearray(1 << 40)
print("escaped")
"""
    verdict, seconds = judged(verifier, program)
    assert verdict.reward == 0.0 and seconds < BUDGET_S + 1
    run = Sandbox().run(program, timeout_s=10)
    assert run.stdout.startswith(b"stopped at") and int(run.stdout.split()[2]) <= 512
    assert b"MemoryError" in run.stderr


def test_an_endless_loop_is_killed_at_the_deadline(verifier):
    verdict, seconds = judged(verifier, "while True:\n    pass")
    assert verdict.reward == 0.0 and verdict.details["tests"] == ["timeout"]
    assert BUDGET_S <= seconds < BUDGET_S + 1


def test_printing_gigabytes_is_cut_off_at_the_output_cap(verifier):
    program = "import sys\nwhile True:\n    sys.stdout.write('x' * 1_000_000)"
    verdict, seconds = judged(verifier, program)
    assert verdict.reward == 0.0 and verdict.details["tests"] == ["output_limit"]
    assert seconds < BUDGET_S
    run = Sandbox().run(program)
    assert run.output_exceeded and len(run.stdout) == Sandbox().limits.stdout_bytes


def test_filling_the_disk_stops_at_the_file_and_tmpfs_limits():
    program = """
import os, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
total = 0
try:
    with open("big", "wb") as handle:
        while True:
            handle.write(b"x" * 1024 * 1024)
            total += 1
except OSError as error:
    print("one file stopped at", total, "MiB:", error.errno)
count = 0
try:
    while True:
        with open("f%d" % count, "wb") as handle:
            handle.write(b"x" * 1024 * 1024)
        count += 1
except OSError as error:
    print("files stopped at", count, "MiB:", error.errno)
"""
    run = Sandbox().run(program, timeout_s=10)
    lines = run.stdout.decode().splitlines()
    assert lines[0].startswith("one file stopped at 16 MiB")
    assert lines[1].startswith("files stopped at") and int(lines[1].split()[3]) < 32


def test_without_bwrap_the_verifier_refuses_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran-unsandboxed"
    verifier = CodeVerifier(Sandbox(bwrap=str(tmp_path / "no-such-bwrap")))
    verdict = verifier.verify(fenced(f"open({str(marker)!r}, 'w').write('oops')\nprint('escaped')"), attack(""))
    assert (verdict.reward, verdict.format_ok) == (0.0, True)
    assert "sandbox unavailable" in verdict.details["error"] and "no-such-bwrap" in verdict.details["error"]
    assert not marker.exists()


def test_a_bwrap_that_cannot_start_a_sandbox_makes_the_verifier_refuse():
    with tempfile.TemporaryDirectory(prefix="prorl-fake-bwrap-") as folder:
        os.chmod(folder, 0o755)  # a root worker starts the sandbox as nobody, who must reach it
        check_refusal(Path(folder) / "bwrap")


def check_refusal(broken: Path) -> None:
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    verdict = CodeVerifier(Sandbox(bwrap=str(broken))).verify(fenced("print('escaped')"), attack(""))
    assert verdict.reward == 0.0 and "No permissions to create new namespace" in verdict.details["error"]
    with pytest.raises(SandboxUnavailable, match="trial run"):
        Sandbox(bwrap=str(broken)).ensure_available()


def test_a_python_outside_usr_is_refused(tmp_path):
    with pytest.raises(SandboxUnavailable, match="under /usr"):
        Sandbox(python=str(tmp_path / "python3")).ensure_available()


def test_a_program_has_no_capabilities_and_cannot_make_namespaces_of_its_own():
    program = """
import subprocess
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(status["CapEff"].strip(), status["NoNewPrivs"].strip())
print(subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode)
"""
    run = Sandbox().run(program)
    assert run.stdout.decode().split() == ["0000000000000000", "1", "1"]
