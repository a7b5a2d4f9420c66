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

Each helper is a bubblewrap sandbox of the same family as the code verifier's: scorer_sandbox.py
(`HelperSandbox`, `HelperLimits`) says what it sees and may do, and how it is started. This module
holds the pool, each helper's pipes and the request-reply protocol with scorer_helper.py.

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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prorl_engine.verifiers.isolation import SandboxUnavailable, kill_group
from prorl_engine.verifiers.scorer_sandbox import HelperSandbox

HELPER_SOURCE = Path(__file__).with_name("scorer_helper.py").read_bytes()
PROFILES = ("math", "logic")  # what a helper imports before its first request (scorer_helper.PROFILES)
READY = b"ready"
STARTUP_TIMEOUT_S = 120.0  # imports on a busy machine; never counted in a call's time
PREPARE_TIMEOUT_S = 60.0  # building a task's scorer before the call starts (arc_agi: 0.5 s idle)
GRACE_S = 2.0  # beyond a call's timeout: the helper's own kill, reap and reply
STDERR_TAIL_CHARS = 800


@dataclass(frozen=True)
class Reply:
    """What a scorer said: `value` (a score, math-verify's verdict) or `error` saying why there is none."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False


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
                return Reply(
                    error=f"timed out after {timeout_s:g} s: the scorer helper stopped answering and was replaced",
                    timed_out=True,
                )
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
