"""Is this answer the reference? math-verify's judgement, in the sandboxed scorer pool.

math-verify (HF) parses LaTeX into sympy and compares by value, so `\\frac{1}{2}`, `0.5` and `1/2`
agree. It must not run in the trainer's process: its default timeouts use signal.alarm, which fails
outside the main thread; no timeout can stop sympy in the middle of one C-level computation (the
17 characters `\\boxed{9^{9^{9}}}` hold the GIL for minutes); and its plain-expression reader hands
the answer to sympy's `parse_expr`, which evaluates Python. So each comparison is a call to the
"math" `ScorerPool` (scorer_pool.py: bubblewrap, rlimits, a forked child per call, math-verify's
own timeouts off, `parse_expr` restricted): past `timeout_s` it is "not equal" with the reason, the
trainer never stalls, and any thread may call `MathJudge.equivalent`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prorl_engine.verifiers.scorer_pool import ScorerPool, default_pool

MAX_ANSWER_CHARS = 1000  # longer "answers" are rejected unread: no final answer is that long


@dataclass(frozen=True)
class Judgement:
    """`equal` is the verdict; `error` says why it is False when it was not a plain mismatch."""

    equal: bool
    error: str | None = None


class MathJudge:
    """math-verify comparisons through a sandboxed scorer pool, shared by every thread of the trainer.

    timeout_s  the most one comparison may take (default 5 s, math-verify's own default); a
               comparison that runs longer is "not equal" with error "timed out after ...".
    size       the most helpers running at once when the judge makes its own pool (default: 4, or fewer CPUs).
    pool       the pool to use instead (default: a pool of its own when `size` is given, else the shared one).
    """

    def __init__(self, timeout_s: float = 5.0, size: int | None = None, pool: ScorerPool | None = None) -> None:
        self.timeout_s = timeout_s
        self._own_pool = pool is None and size is not None
        self.pool = pool or (ScorerPool("math", size) if size is not None else default_pool("math"))

    def equivalent(self, gold: str, answer: str) -> Judgement:
        """Whether `answer` equals the reference `gold` by value (both LaTeX without `$`)."""
        if len(answer) > MAX_ANSWER_CHARS:
            return Judgement(False, f"answer longer than {MAX_ANSWER_CHARS} characters")
        if _spaceless(answer) == _spaceless(gold):
            return Judgement(True)  # the same text: no need to ask sympy
        reply = self.pool.call({"op": "math", "gold": gold, "answer": answer}, self.timeout_s)
        if reply.error is not None:
            return Judgement(False, reply.error)
        verdict = reply.value if isinstance(reply.value, dict) else {}
        return Judgement(verdict.get("equal") is True, verdict.get("error"))

    def close(self) -> None:
        """Stop the helpers of a pool this judge made itself (the shared pool lives on)."""
        if self._own_pool:
            self.pool.close()


def _spaceless(text: str) -> str:
    return "".join(text.split())


@functools.cache
def default_judge() -> MathJudge:
    """The process-wide judge that the math and STEM verifiers share."""
    return MathJudge()
