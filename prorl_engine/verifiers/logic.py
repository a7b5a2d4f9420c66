"""Logic: a reasoning-gym task's own verifier on the `<answer>` tag's content (spec section 3).

`example.task` names the reasoning-gym dataset (e.g. "leg_counting", "sudoku") and
`example.metadata["entry"]` is the reasoning-gym entry (`{"question", "answer", "metadata"}`) that
the task's `score_answer(answer, entry)` needs; without it the entry is rebuilt from the prompt,
`example.answer` and `metadata["metadata"]`. The reward is that score (reasoning-gym gives partial
credit on some tasks). No complete `<answer>...</answer>` after the thinking: format_ok is False.

The scorer never runs in the trainer's process: eight of the tasks pass the answer to `eval` or
sympy's `parse_expr`, and any of them may take unbounded time on a hostile answer. Each score is a
call to the "logic" `ScorerPool` (scorer_pool.py), which sends only the answer and the entry to a
sandboxed helper with hardened evaluators (scorer_helper.py). A call past `timeout_s` scores 0 with
"timed out" in `details["error"]`; if the sandbox cannot start, 0 with the reason, unscored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.extract import final_text, last_answer_tag
from prorl_engine.verifiers.scorer_pool import ScorerPool, default_pool

MAX_ANSWER_CHARS = 20_000  # longer than any reasoning-gym answer (a 30x30 grid is under 2,000)


class LogicVerifier:
    """Reward from reasoning-gym's scorer for `example.task`, run in the sandboxed scorer pool.

    pool       the pool of helpers (default: the process-wide "logic" pool).
    timeout_s  the most one score may take; longer is reward 0 with the reason in `details`.
    """

    domain = "logic"

    def __init__(self, pool: ScorerPool | None = None, timeout_s: float = 5.0) -> None:
        self.pool = pool or default_pool("logic")
        self.timeout_s = timeout_s

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response; `details` holds the task and the reference answer."""
        check_task(example.task)  # unknown task: ValueError naming it
        answer = last_answer_tag(final_text(response))
        if answer is None:
            return Verdict(0.0, format_ok=False, details={"error": "no <answer>...</answer> tag", "task": example.task})
        details: dict[str, Any] = {"task": example.task, "reference": _text(example.answer)}
        if len(answer) > MAX_ANSWER_CHARS:
            details["error"] = f"answer longer than {MAX_ANSWER_CHARS} characters"
            return Verdict(0.0, extracted=answer[:200], details=details)
        request = {"op": "logic", "task": example.task, "answer": answer, "entry": _entry(example)}
        try:
            reply = self.pool.call(request, self.timeout_s)
        except ValueError as error:
            raise ValueError(f"logic: reasoning-gym cannot score task {example.task!r}: {error}") from None
        if reply.error is not None:  # timed out, the scorer raised, or the sandbox cannot start
            details["error"] = reply.error[:500]
            return Verdict(0.0, extracted=answer, details=details)
        score = reply.value
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            details["error"] = f"reasoning-gym scorer returned {score!r:.100}, not a number"
            return Verdict(0.0, extracted=answer, details=details)
        return Verdict(min(1.0, max(0.0, float(score))), extracted=answer, details=details)


def check_task(task: str) -> None:
    """ValueError unless `task` names a reasoning-gym dataset (the registry only: nothing is scored here)."""
    from prorl_engine.data.spec import reasoning_gym_task_names

    if task not in reasoning_gym_task_names():
        raise ValueError(f"logic: unknown reasoning-gym task {task!r}")


def _entry(example: Example) -> dict:
    """The reasoning-gym entry to score against (a JSON string is accepted, as some files store it)."""
    entry = example.metadata.get("entry")
    if isinstance(entry, str):
        entry = json.loads(entry)
    if entry is None:
        entry = {
            "question": example.prompt,
            "answer": example.answer,
            "metadata": example.metadata.get("metadata") or {},
        }
    return entry


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
