"""Is this answer the reference? math-verify's judgement, with a hard bound on its time.

math-verify (HF) parses LaTeX into sympy and compares by value, so `\\frac{1}{2}`, `0.5` and `1/2`
agree. Called in-process it has two problems for a trainer: its default timeouts use signal.alarm,
which fails outside the main thread, and no timeout can stop sympy in the middle of one C-level
computation: the 17 characters `\\boxed{9^{9^{9}}}` hold the GIL for minutes. So the comparison runs
in helper processes (`equivalence_worker.py`, math-verify with its own timeouts off): a call that
runs past `timeout_s` kills its helper and is "not equal", the trainer never stalls, and any thread
may call `MathJudge.equivalent`.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("equivalence_worker.py")
MAX_ANSWER_CHARS = 1000  # longer "answers" are rejected unread: no final answer is that long
STARTUP_TIMEOUT_S = 120.0  # importing sympy on a busy machine; not counted in a comparison's time
READY = b"ready"


@dataclass(frozen=True)
class Judgement:
    """`equal` is the verdict; `error` says why it is False when it was not a plain mismatch."""

    equal: bool
    error: str | None = None


class _Helper:
    """One helper process and its pipes; used by one thread at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(WORKER_SCRIPT)],  # -P: its folder's math.py must not shadow `math`
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no terminal Ctrl-C: helpers end when the trainer's pipe closes
        )
        self.buffer = b""
        if self._read_line(time.monotonic() + STARTUP_TIMEOUT_S) != READY:
            self.close()
            raise RuntimeError(f"the math-verify helper did not start within {STARTUP_TIMEOUT_S:g} s")

    def ask(self, request: dict, timeout_s: float) -> dict | None:
        """Send one request; its reply, or None when the helper died or ran past `timeout_s`."""
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        line = self._read_line(time.monotonic() + timeout_s)
        try:
            return json.loads(line) if line is not None else None
        except ValueError:
            return None  # not a reply: treat the helper as broken (the caller replaces it)

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
        """Kill the helper and reap it."""
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()


class MathJudge:
    """A small pool of math-verify helper processes, shared by every thread of the trainer.

    timeout_s  the most one comparison may take (default 5 s, math-verify's own default); a
               comparison that runs longer is "not equal" with error "timed out".
    size       the most helpers running at once (default: 4, or fewer CPUs); callers beyond that wait.
    """

    def __init__(self, timeout_s: float = 5.0, size: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self._idle: queue.SimpleQueue[_Helper] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.size)

    def equivalent(self, gold: str, answer: str) -> Judgement:
        """Whether `answer` equals the reference `gold` by value (both LaTeX without `$`)."""
        if len(answer) > MAX_ANSWER_CHARS:
            return Judgement(False, f"answer longer than {MAX_ANSWER_CHARS} characters")
        if _spaceless(answer) == _spaceless(gold):
            return Judgement(True)  # the same text: no need to ask sympy
        with self._slots:
            try:
                helper = self._take()
            except (OSError, RuntimeError) as error:
                return Judgement(False, f"math-verify unavailable: {error}")
            reply = helper.ask({"gold": gold, "answer": answer}, self.timeout_s)
            if reply is None:
                helper.close()
                return Judgement(False, f"timed out after {self.timeout_s:g} s (or the checker died)")
            self._idle.put(helper)
        return Judgement(bool(reply["equal"]), reply.get("error"))

    def _take(self) -> _Helper:
        """An idle helper, or a fresh one (started and ready: about a second on an idle machine)."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return _Helper()

    def close(self) -> None:
        """Stop the idle helpers (busy ones are stopped by their callers' timeouts)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _spaceless(text: str) -> str:
    return "".join(text.split())


@functools.cache
def default_judge() -> MathJudge:
    """The process-wide judge that the math and STEM verifiers share."""
    return MathJudge()
