"""Scorers that parse model text run here: a pool of sandboxed, reused helper processes.

math-verify and sympy (math, STEM) and reasoning-gym's `score_answer` (logic) read a model's answer
with evaluators (`eval`, sympy's `parse_expr`) that run Python: an answer could write files as the
worker's user, never return (`9**9**9**9`), or read the scorer's own reference. So none of them runs
in the trainer's process. `ScorerPool.call(request, timeout_s)` sends one request, the answer and
the example's verification data (the gold answer, the reasoning-gym entry) and nothing else, to a
helper (`scorer_helper.py`) and returns its `Reply`:

    pool = ScorerPool("logic")
    reply = pool.call({"op": "logic", "task": "countdown", "answer": "...", "entry": {...}}, 5.0)
    reply.value, reply.error, reply.timed_out

Each helper is a bubblewrap sandbox of the same family as the code verifier's (`sandbox.py`):

    [as uid 65534 when the worker is root] prlimit --as --fsize --nofile --core=0 -- bwrap
        --unshare-all ... -- PYTHON -S -s -B -P /sandbox/helper.py PROFILE NPROC /sandbox/site-packages/0 ...

- namespaces: all new: no network, its own PIDs, no further user namespaces, no capabilities;
- files: read-only /usr, the interpreter's own prefix when it lives elsewhere (read-only, at its own
  path), the trainer's site-packages folders read-only at /sandbox/site-packages/N, the helper
  script, a bounded /tmp tmpfs; nothing else: no project files, no run folders, no home, no /etc;
- environment: only PATH, HOME=/tmp, LANG, PYTHONHASHSEED=0 and one thread for the BLAS libraries;
- limits (`HelperLimits`): address space, file size, open files and process count for the helper;
  and per call, in the helper's forked child, the wall-clock timeout (SIGKILL) and CPU seconds.

When the worker runs as root, the helper runs as nobody, who may not be able to read the trainer's
interpreter (pyenv under a 0700 /root): then the system's `/usr/bin/pythonX.Y` of the same version
runs the same site-packages (one minor version, one ABI), or the pool says why it cannot start.

Helpers start on first use (imports take about a second) and are reused; each call forks a child
inside the helper (see scorer_helper.py), so a call that times out costs its child, not the helper.
If a helper stops answering within the timeout plus `GRACE_S`, the pool kills its whole sandbox
and starts a fresh one for the next call: a call never blocks longer than that.

No unsandboxed fallback: if the sandbox cannot start, `call` returns a Reply whose error says why
("sandbox unavailable: ..."), and nothing is scored in-process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import selectors
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prorl_engine.verifiers.sandbox import (
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

GIB = 1024 * MIB
HELPER_SOURCE = Path(__file__).with_name("scorer_helper.py").read_bytes()
HELPER_PATH = "/sandbox/helper.py"
SITE_ROOT = "/sandbox/site-packages"
HELPER_ENV = {**SANDBOX_ENV, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PROFILES = ("math", "logic")  # what a helper imports before its first request (scorer_helper.PROFILES)
READY = b"ready"
STARTUP_TIMEOUT_S = 120.0  # imports on a busy machine; never counted in a call's time
PREPARE_TIMEOUT_S = 60.0  # building a task's scorer before the call starts (arc_agi: 0.5 s idle)
GRACE_S = 2.0  # beyond a call's timeout: the helper's own kill, reap and reply
STDERR_TAIL_CHARS = 800


@dataclass(frozen=True)
class HelperLimits:
    """Resource limits of each scorer helper and the children it forks for calls."""

    memory_bytes: int = 2 * GIB
    """RLIMIT_AS: the helper's imports use about 250 MB of it; sympy on a hostile answer gets
    MemoryError beyond it, not the machine's RAM."""
    processes: int = 8
    """RLIMIT_NPROC in the sandbox's user namespace: the helper, one child per call, and spare."""
    file_bytes: int = 1 * MIB
    """RLIMIT_FSIZE: scorers write no files; this bounds one in the /tmp tmpfs."""
    open_files: int = 256
    """RLIMIT_NOFILE: reasoning-gym's imports open data files."""
    tmpfs_bytes: int = 16 * MIB
    """Size of the writable /tmp."""


@dataclass(frozen=True)
class Reply:
    """What a scorer said: `value` (a score, math-verify's verdict) or `error` saying why there is none."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Started:
    """A started helper: the process (stdin and stdout are pipes), its stderr (an anonymous file to
    read when it fails to start) and bwrap's info pipe (JSON with the sandbox's PID 1)."""

    process: subprocess.Popen
    log: IO[bytes]
    info: IO[bytes]

    def namespace_pid(self) -> int | None:
        """The host PID of the sandbox's PID 1 (bwrap has written it once the helper runs), or None."""
        try:
            return int(json.loads(self.info.read())["child-pid"])
        except (ValueError, KeyError, TypeError, OSError):
            return None
        finally:
            self.info.close()


class HelperSandbox:
    """Builds and starts the sandboxed helper command; one instance serves any number of helpers.

    bwrap, prlimit    the executables (looked up on PATH).
    limits            the helper's resource limits.
    unprivileged_uid  the user a root worker drops to before starting the sandbox.
    """

    def __init__(
        self,
        bwrap: str = "bwrap",
        prlimit: str = "prlimit",
        limits: HelperLimits = HelperLimits(),
        unprivileged_uid: int = 65534,
    ) -> None:
        self.bwrap = bwrap
        self.prlimit = prlimit
        self.limits = limits
        self.unprivileged_uid = unprivileged_uid

    def start(self, script: bytes, arguments: list[str]) -> Started:
        """Start `script` as /sandbox/helper.py with `arguments`, then the site-packages folders'
        paths inside the sandbox, as its command-line arguments.

        Raises SandboxUnavailable when the sandbox cannot be set up here.
        """
        bwrap, prlimit = find_tools(self.bwrap, self.prlimit)
        python, binds = self.interpreter()
        sites, site_fds = self._site_arguments()
        script_fd = memory_file("helper.py", script)
        info_read, info_write = os.pipe()
        log = tempfile.TemporaryFile()
        limits = self.limits
        command = [
            *prlimit_arguments(prlimit, memory_bytes=limits.memory_bytes, file_bytes=limits.file_bytes,
                               open_files=limits.open_files),
            *isolation_arguments(bwrap, HELPER_ENV, limits.tmpfs_bytes, {"helper.py": script_fd},
                                 read_only=(*binds, *sites), die_with_parent=False, info_fd=info_write),
            "--", python, "-S", "-s", "-B", "-P", HELPER_PATH, *arguments,
            *(inside for _, inside in sites), *(f"/proc/self/fd/{fd}" for fd in site_fds),
        ]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(script_fd, info_write, *site_fds),
                env=HELPER_ENV,  # bwrap's own process is PID 1 inside: its /proc/1/environ must hold no secrets
                process_group=0,  # no terminal Ctrl-C; the pool kills the whole group
                **unprivileged_options(self.unprivileged_uid),
            )
        except OSError as error:
            log.close()
            os.close(info_read)
            raise SandboxUnavailable(f"cannot start {bwrap}: {error}") from error
        finally:
            for fd in (script_fd, info_write, *site_fds):
                os.close(fd)
        return Started(process, log, os.fdopen(info_read, "rb"))

    def _site_arguments(self) -> tuple[list[tuple[str, str]], list[int]]:
        """The site-packages folders as read-only binds at /sandbox/site-packages/N, and, for those
        the unprivileged user cannot reach by path (a project cloned under a 0700 folder, such as
        `mktemp -d` or /root), open directory descriptors that the helper imports from as
        /proc/self/fd/N. bwrap resolves a bind's source as that user, so it cannot bind them.

        A descriptor shows more than a bind: `..` from it climbs the host's tree until a folder the
        user may not search. So it is used only when that climb stays inside the trainer's own
        environment (sys.prefix: the virtualenv, the same software the helper imports anyway);
        a climb that would reach the project's files (its var/ folder, its database) is refused."""
        binds, fds = [], []
        environment = Path(os.path.realpath(sys.prefix))
        for path in self.site_packages():
            if self._drops_privileges() and not _others_can_read(path):
                exposed = _reachable_from(path)
                if exposed != environment and environment not in exposed.parents:
                    raise SandboxUnavailable(
                        f"uid {self.unprivileged_uid} cannot read the site-packages folder {path}, and "
                        f"handing it over would show {exposed} to the sandbox; make the folders above "
                        f"{environment} searchable by others (chmod o+x) or move the environment")
                fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
            else:
                binds.append((path, f"{SITE_ROOT}/{len(binds)}"))
        return binds, fds

    def interpreter(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The Python the helper runs and the folders to bind for it (read-only, at their own path)."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        prefix = os.path.realpath(sys.base_prefix)
        own = os.path.realpath(os.path.join(prefix, "bin", version))
        if own.startswith("/usr/") and os.access(own, os.X_OK):
            return own, ()
        if os.access(own, os.X_OK) and (not self._drops_privileges() or _others_can_read(prefix)):
            return own, ((prefix, prefix),)
        system = f"/usr/bin/{version}"
        if os.access(system, os.X_OK):
            return system, ()
        raise SandboxUnavailable(
            f"the scorer helper's Python: uid {self.unprivileged_uid} cannot read {prefix}, and there is no "
            f"{system} of the same version; install {version} under /usr or make {prefix} world-readable"
        )

    def site_packages(self) -> list[str]:
        """The trainer's site-packages folders (what the scorers import)."""
        paths = []
        for key in ("purelib", "platlib"):
            path = os.path.realpath(sysconfig.get_path(key))
            if path not in paths and os.path.isdir(path):
                paths.append(path)
        return paths

    def _drops_privileges(self) -> bool:
        return bool(unprivileged_options(self.unprivileged_uid))


def _reachable_from(path: str) -> Path:
    """The highest folder that a user with no relation to the owner reaches from an open descriptor
    of `path` by `..` (each step needs search permission on the folder it starts from)."""
    top = Path(path)
    while top.parent != top and os.stat(top.parent).st_mode & stat.S_IXOTH:
        top = top.parent
    return top


def _others_can_read(path: str) -> bool:
    """Whether a user with no relation to the owner can reach `path` and list it (mode bits only)."""
    current = Path(path)
    for folder in (current, *current.parents):
        mode = os.stat(folder).st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(current).st_mode & stat.S_IROTH)


def _json_default(value: Any) -> Any:
    """numpy scalars (reasoning-gym metadata holds some) as numbers; anything else as its text."""
    return value.item() if hasattr(value, "item") else str(value)


class _Helper:
    """One sandboxed helper and its pipes; used by one thread at a time."""

    def __init__(self, sandbox: HelperSandbox, profile: str, prepare_timeout_s: float) -> None:
        started = sandbox.start(HELPER_SOURCE, [profile, str(sandbox.limits.processes)])
        self.process, self.prepare_timeout_s = started.process, prepare_timeout_s
        self.buffer = b""
        self.pidfd: int | None = None
        line = self._read_line(time.monotonic() + STARTUP_TIMEOUT_S)
        if line == READY:
            pid = started.namespace_pid()
            with contextlib.suppress(OSError):  # it may have ended since: then nothing is left to kill
                self.pidfd = os.pidfd_open(pid) if pid is not None else None
        else:
            started.info.close()
        log = started.log
        if line != READY or self.pidfd is None:
            self.close()
            log.seek(0)
            tail = log.read().decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
            log.close()
            raise SandboxUnavailable(f"the scorer helper did not start: {tail or 'no reply within the startup time'}")
        log.close()

    def ask(self, request: dict, timeout_s: float) -> Reply | None:
        """One call; its Reply, or None when the helper died or stopped answering (close it)."""
        try:
            line = json.dumps({**request, "timeout_s": timeout_s}, default=_json_default).encode() + b"\n"
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        acknowledgement = self._message(time.monotonic() + self.prepare_timeout_s)
        if acknowledgement is None:
            return None
        if "prepare_error" in acknowledgement:
            raise ValueError(str(acknowledgement["prepare_error"]))
        reply = self._message(time.monotonic() + timeout_s + GRACE_S)
        if reply is None:
            return None
        return Reply(reply.get("value"), reply.get("error"), bool(reply.get("timed_out")))

    def _message(self, deadline: float) -> dict | None:
        line = self._read_line(deadline)
        try:
            message = json.loads(line) if line is not None else None
        except ValueError:
            return None  # not a message: the helper is broken (the caller replaces it)
        return message if isinstance(message, dict) else None

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def close(self) -> None:
        """Kill the helper's sandbox and reap it: SIGKILL to the namespace's PID 1 takes down every
        process inside (through a pidfd, so a reused PID is never hit), then bwrap's process group."""
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            os.close(self.pidfd)
            self.pidfd = None
        kill_group(self.process)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()


class ScorerPool:
    """A small pool of sandboxed scorer helpers for one profile, shared by every thread of the trainer.

    profile            "math" (math-verify, sympy) or "logic" (reasoning-gym): what each helper imports at start.
    size               the most helpers running at once (default: 4, or fewer CPUs); callers beyond that wait.
    sandbox            how helpers are started (another bwrap, other limits).
    prepare_timeout_s  how long a helper may take to acknowledge a request (building a task's scorer)
                       before it counts as stuck and is replaced.
    """

    def __init__(
        self,
        profile: str,
        size: int | None = None,
        sandbox: HelperSandbox | None = None,
        prepare_timeout_s: float = PREPARE_TIMEOUT_S,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown scorer profile {profile!r}; known: {', '.join(PROFILES)}")
        self.profile = profile
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self.sandbox = sandbox or HelperSandbox()
        self.prepare_timeout_s = prepare_timeout_s
        self._idle: queue.SimpleQueue[_Helper] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.size)

    def call(self, request: dict, timeout_s: float) -> Reply:
        """Score one request in a helper within `timeout_s` (plus GRACE_S at worst).

        A timeout is `Reply(error="timed out after ...", timed_out=True)`. Raises ValueError when the
        request itself cannot be scored (a task reasoning-gym cannot build): a data error.
        """
        with self._slots:
            try:
                helper = self._take()
            except (OSError, SandboxUnavailable) as error:
                return Reply(error=f"sandbox unavailable, not scored: {error}")
            try:
                reply = helper.ask(request, timeout_s)
            except ValueError:
                self._idle.put(helper)
                raise
            if reply is None:
                helper.close()
                return Reply(error=f"timed out after {timeout_s:g} s: the scorer helper stopped answering "
                                   "and was replaced", timed_out=True)
            self._idle.put(helper)
        return reply

    def _take(self) -> _Helper:
        """An idle helper, or a fresh one (started and ready: about a second on an idle machine)."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return _Helper(self.sandbox, self.profile, self.prepare_timeout_s)

    def close(self) -> None:
        """Stop the idle helpers (busy ones are stopped by their callers)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


@functools.cache
def default_pool(profile: str) -> ScorerPool:
    """The process-wide pool of `profile` that the verifiers share ("math" for math and STEM)."""
    return ScorerPool(profile)
