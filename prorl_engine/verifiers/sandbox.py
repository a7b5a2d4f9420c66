"""A bubblewrap sandbox for model-written Python, and nothing runs it any other way.

Each run starts a fresh sandbox:

    [as uid 65534 when the worker is root] prlimit <rlimits> -- bwrap <namespaces, mounts> --
        /usr/bin/python3 -s -B /sandbox/harness.py MODE NPROC [FN_NAME]

What the program sees and may do:
- namespaces: all of them new (`--unshare-all`): no network but a dead loopback, its own PIDs (it
  cannot see or signal the worker), its own IPC, hostname and user namespace; it cannot make
  further user namespaces (`--disable-userns`) and gets no capabilities;
- files: read-only `/usr` (with the `/bin`, `/lib*` links), a fresh `/proc` and minimal `/dev`, the
  program and harness read-only in `/sandbox`, and one writable place, a `/tmp` tmpfs of bounded
  size that vanishes with the sandbox. The root and `/dev` are remounted read-only; no home, no
  `/etc`, no project files, no virtualenv;
- environment: only PATH, HOME=/tmp, LANG and PYTHONHASHSEED=0 (so set and dict orders, and with
  them outputs, are the same on every run). prlimit and bwrap are started with that environment
  too, since bwrap's own process is PID 1 in the sandbox and its /proc/1/environ is readable there;
  `--clearenv` then sets it again for the program;
- rlimits (`SandboxLimits`): CPU seconds, address space, file size, open files and no core files
  from `prlimit` before bwrap starts; the process count from the harness right after (see
  sandbox_harness.py for why it must be set inside);
- time: a wall-clock deadline; past it the whole process group is killed with SIGKILL, and
  `--die-with-parent` plus the PID namespace take every process inside down with it;
- output: stdout and stderr are read as they come and the sandbox is killed as soon as either
  passes its cap, so a program printing gigabytes costs at most the cap in memory.

When the worker runs as root, the sandbox is started as `unprivileged_uid` (nobody): the kernel
does not apply the process limit to root, and nobody owns no files worth reading.

If bwrap or prlimit is missing, or a trial run fails, `ensure_available` raises `SandboxUnavailable`
with the reason. Callers report that and run nothing: there is no unsandboxed fallback.

The command line is built from the parts every sandbox of the project shares (isolation.py:
`find_tools`, `isolation_arguments`, `prlimit_arguments`, `unprivileged_options`); the scorer
helpers of scorer_sandbox.py (reasoning-gym, math-verify and sympy on model answers) are built from
the same parts. This module holds the code verifier's sandbox: its limits, one run and its result.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prorl_engine.verifiers.isolation import (
    KIB,
    MIB,
    SANDBOX_ENV,
    SandboxUnavailable,
    find_tools,
    isolation_arguments,
    kill_group,
    memory_file,
    prlimit_arguments,
    unprivileged_options,
)
from prorl_engine.verifiers.sandbox_harness import COMPILE_ERROR_EXIT

HARNESS_SOURCE = Path(__file__).with_name("sandbox_harness.py").read_bytes()


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run resource limits. Each process inside gets the rlimits; the caps bound the whole run."""

    cpu_seconds: int = 5
    """RLIMIT_CPU per process: SIGKILL after this much CPU time (the wall-clock deadline is separate)."""
    memory_bytes: int = 512 * MIB
    """RLIMIT_AS per process: allocations beyond it fail with MemoryError."""
    processes: int = 32
    """RLIMIT_NPROC inside the sandbox's user namespace: processes and threads together."""
    file_bytes: int = 16 * MIB
    """RLIMIT_FSIZE: the largest file a process may write."""
    open_files: int = 64
    """RLIMIT_NOFILE: open file descriptors per process."""
    tmpfs_bytes: int = 32 * MIB
    """Size of the writable /tmp, so many files cannot add up to more."""
    stdout_bytes: int = 1 * MIB
    """The run is killed when its stdout passes this many bytes."""
    stderr_bytes: int = 64 * KIB
    """The run is killed when its stderr passes this many bytes."""


@dataclass(frozen=True)
class SandboxResult:
    """How one sandboxed run ended. `returncode` is negative when a signal ended it."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_exceeded: bool
    seconds: float

    @property
    def compile_error(self) -> bool:
        """The program did not compile, so none of it ran."""
        return self.returncode == COMPILE_ERROR_EXIT and self.stderr.startswith(b"compile error:")

    @property
    def completed(self) -> bool:
        """It exited with status 0 on its own, within its time and output limits."""
        return self.returncode == 0 and not self.timed_out and not self.output_exceeded


class Sandbox:
    """Runs a Python program in bubblewrap with rlimits; thread-safe, one fresh sandbox per run.

    bwrap, prlimit   the executables (names are looked up on PATH).
    python           the interpreter inside the sandbox: the system's, which must live under /usr.
    unprivileged_uid the user a root worker drops to before starting the sandbox.
    """

    def __init__(
        self,
        bwrap: str = "bwrap",
        python: str = "/usr/bin/python3",
        limits: SandboxLimits = SandboxLimits(),
        prlimit: str = "prlimit",
        unprivileged_uid: int = 65534,
    ) -> None:
        self.bwrap = bwrap
        self.python = python
        self.limits = limits
        self.prlimit = prlimit
        self.unprivileged_uid = unprivileged_uid
        self._checked = False
        self._check_lock = threading.Lock()

    def ensure_available(self) -> None:
        """Raise SandboxUnavailable unless a trial program runs in the sandbox (checked once)."""
        with self._check_lock:
            if self._checked:
                return
            trial = self.run("print('sandbox ok')", timeout_s=30.0)
            if trial.stdout != b"sandbox ok\n" or not trial.completed:
                reason = trial.stderr.decode(errors="replace").strip()[-500:] or f"exit status {trial.returncode}"
                raise SandboxUnavailable(f"a trial run in the sandbox failed: {reason}")
            self._checked = True

    def run(
        self,
        program: str,
        stdin: bytes = b"",
        timeout_s: float = 5.0,
        fn_name: str | None = None,
        stdout_bytes: int | None = None,
    ) -> SandboxResult:
        """Run `program` once in a fresh sandbox and return how it ended.

        Without `fn_name` it runs as a script reading `stdin`. With `fn_name`, `stdin` is a JSON array
        of arguments and stdout receives the JSON of `fn_name(*arguments)` (see sandbox_harness.py).
        `stdout_bytes` raises the stdout cap for a test that expects long output. Raises
        SandboxUnavailable when the sandbox's processes cannot even be started.
        """
        bwrap, prlimit = self._executables()
        started = time.monotonic()
        files = {"harness.py": HARNESS_SOURCE, "main.py": program.encode("utf-8", errors="replace")}
        fds = {name: memory_file(name, data) for name, data in files.items()}
        stdin_fd = memory_file("stdin", stdin)
        try:
            command = self._command(bwrap, prlimit, fds, fn_name)
            process = subprocess.Popen(
                command,
                stdin=stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(fds.values()),
                env=SANDBOX_ENV,  # bwrap's own process is PID 1 inside: its /proc/1/environ must hold no secrets
                process_group=0,
                **self._user_options(),
            )
        except OSError as error:
            raise SandboxUnavailable(f"cannot start {bwrap}: {error}") from error
        finally:
            for fd in (*fds.values(), stdin_fd):
                os.close(fd)
        caps = (stdout_bytes or self.limits.stdout_bytes, self.limits.stderr_bytes)
        return _collect(process, started, started + timeout_s, caps)

    def _executables(self) -> tuple[str, str]:
        """Absolute paths of bwrap and prlimit, or SandboxUnavailable naming what is missing."""
        bwrap, prlimit = find_tools(self.bwrap, self.prlimit)
        python = os.path.realpath(self.python)
        if not (python.startswith("/usr/") and os.access(python, os.X_OK)):
            raise SandboxUnavailable(f"the sandbox's python {self.python!r} must be an executable under /usr")
        return bwrap, prlimit

    def _command(self, bwrap: str, prlimit: str, fds: dict[str, int], fn_name: str | None) -> list[str]:
        """prlimit ... -- bwrap ... -- python harness: the whole sandboxed command line."""
        limits = self.limits
        rlimits = prlimit_arguments(
            prlimit,
            memory_bytes=limits.memory_bytes,
            file_bytes=limits.file_bytes,
            open_files=limits.open_files,
            cpu_seconds=limits.cpu_seconds,
        )
        isolation = isolation_arguments(bwrap, SANDBOX_ENV, limits.tmpfs_bytes, fds, die_with_parent=True)
        harness = [
            self.python,
            "-s",
            "-B",
            "/sandbox/harness.py",
            "call" if fn_name else "stdio",
            str(limits.processes),
        ]
        harness += [fn_name] if fn_name else []
        return [*rlimits, *isolation, "--", *harness]

    def _user_options(self) -> dict:
        """Popen options that drop a root worker to the unprivileged uid (done in C, thread-safe)."""
        return unprivileged_options(self.unprivileged_uid)


def _collect(process: subprocess.Popen, started: float, deadline: float, caps: tuple[int, int]) -> SandboxResult:
    """Read stdout and stderr up to their caps until exit or the deadline; kill the group if needed."""
    buffers = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    limits = dict(zip(buffers, caps))
    timed_out = exceeded = False
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not (timed_out or exceeded):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffers[key.fd] += chunk
                exceeded = exceeded or len(buffers[key.fd]) > limits[key.fd]
    if not (timed_out or exceeded):
        timed_out = not _wait(process, deadline)
    if timed_out or exceeded:
        kill_group(process)
    process.wait()
    process.stdout.close()
    process.stderr.close()
    stdout, stderr = (bytes(buffer[: limits[fd]]) for fd, buffer in buffers.items())
    return SandboxResult(process.returncode, stdout, stderr, timed_out, exceeded, time.monotonic() - started)


def _wait(process: subprocess.Popen, deadline: float) -> bool:
    """Wait for the process to exit by the deadline; False if it is still running then."""
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        return False
