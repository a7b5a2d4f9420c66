"""Logic: a reasoning-gym task's own verifier on the `<answer>` tag's content (spec section 3).

`example.task` names the reasoning-gym dataset (e.g. "leg_counting", "sudoku") and
`example.metadata["entry"]` is the reasoning-gym entry (`{"question", "answer", "metadata"}`) that
the task's `score_answer(answer, entry)` needs; without it the entry is rebuilt from the prompt,
`example.answer` and `metadata["metadata"]`. The reward is that score (reasoning-gym gives partial
credit on some tasks). No complete `<answer>...</answer>` after the thinking: format_ok is False.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.extract import final_text, last_answer_tag

MAX_ANSWER_CHARS = 20_000  # longer than any reasoning-gym answer (a 30x30 grid is under 2,000)

_SCORERS_LOCK = threading.Lock()


class LogicVerifier:
    """Reward from reasoning-gym's scorer for `example.task`."""

    domain = "logic"

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response; `details` holds the task and the reference answer."""
        scorer = score_answer_fn(example.task)  # unknown task: ValueError naming it
        answer = last_answer_tag(final_text(response))
        if answer is None:
            return Verdict(0.0, format_ok=False, details={"error": "no <answer>...</answer> tag", "task": example.task})
        details: dict[str, Any] = {"task": example.task, "reference": _text(example.answer)}
        if len(answer) > MAX_ANSWER_CHARS:
            details["error"] = f"answer longer than {MAX_ANSWER_CHARS} characters"
            return Verdict(0.0, extracted=answer[:200], details=details)
        try:
            score = float(scorer(answer, _entry(example)))
        except Exception as error:  # noqa: BLE001 - a scorer crash on odd input is a wrong answer
            details["error"] = f"reasoning-gym scorer failed: {type(error).__name__}: {error}"[:500]
            score = 0.0
        return Verdict(min(1.0, max(0.0, score)), extracted=answer, details=details)


def score_answer_fn(task: str) -> Callable[[str, dict], float]:
    """reasoning-gym's `score_answer` for `task`, built once per task (thread-safe)."""
    with _SCORERS_LOCK:
        return _score_answer_fn(task)


@functools.cache
def _score_answer_fn(task: str) -> Callable[[str, dict], float]:
    import reasoning_gym  # imported on first use: it loads data files for its hundred tasks

    try:
        return reasoning_gym.get_score_answer_fn(task)
    except ValueError:
        raise ValueError(f"logic: unknown reasoning-gym task {task!r}") from None


def _entry(example: Example) -> dict:
    """The reasoning-gym entry to score against (a JSON string is accepted, as some files store it)."""
    entry = example.metadata.get("entry")
    if isinstance(entry, str):
        entry = json.loads(entry)
    if entry is None:
        entry = {"question": example.prompt, "answer": example.answer, "metadata": example.metadata.get("metadata") or {}}
    return entry


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
