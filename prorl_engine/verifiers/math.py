"""Math: the last `\\boxed{}` answer equals the reference, by math-verify (spec section 3).

Reward 1 when the last boxed answer (`\\boxed{...}`, `\\boxed 5` or `\\fbox{...}`) after any
thinking equals `example.answer` by value, else 0. No boxed answer at all: format_ok is False and
the trainer applies the format penalty. The comparison runs in `MathJudge`'s helper processes, so
it is safe from any thread and bounded in time (see equivalence.py).
"""

from __future__ import annotations

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.equivalence import MathJudge, default_judge
from prorl_engine.verifiers.extract import final_text, last_boxed


class MathVerifier:
    """Binary reward: the response's final boxed answer matches `example.answer`."""

    domain = "math"

    def __init__(self, judge: MathJudge | None = None) -> None:
        self.judge = judge or default_judge()

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response; `details` holds the reference and, on a mismatch, math-verify's reason."""
        answer = last_boxed(final_text(response))
        if answer is None:
            return Verdict(0.0, format_ok=False, details={"error": "no \\boxed{} answer"})
        reference = str(example.answer)
        judgement = self.judge.equivalent(reference, answer)
        details = {"reference": reference}
        if judgement.error:
            details["error"] = judgement.error
        return Verdict(1.0 if judgement.equal else 0.0, extracted=answer, details=details)
