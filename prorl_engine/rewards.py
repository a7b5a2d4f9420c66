"""From responses to rewards: verifiers, the format penalty and the truncation rule (spec section 3).

Verifiers run in a thread pool: the code verifier waits on sandboxed subprocesses, and every
verifier is required to be thread-safe (math-verify is called without signal-based timeouts).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="verifier")


@dataclass
class Score:
    """`reward` is what the recipe trains on before length shaping (reward/verifier_mean)."""

    reward: float
    verdict: Verdict
    truncated: bool

    @property
    def correct(self) -> bool:
        """Full credit, the engine's one test of "correct" (spec section 4: verifier reward >= 1, after
        the format and truncation rules): pass@k counts it and `penalize_correct_only` shapes only
        it. Continuous domains need every test/constraint met."""
        return self.verdict.format_ok and self.reward >= 1.0 - 1e-9


def verifier_for(domain: str):
    from prorl_engine.verifiers import get_verifier

    return get_verifier(domain)


def score(
    example: Example, response: str, truncated: bool, format_penalty: float, truncated_reward: float | None
) -> Score:
    verdict = verifier_for(example.domain).verify(response, example)
    reward = verdict.reward if verdict.format_ok else format_penalty
    if truncated and truncated_reward is not None:
        reward = truncated_reward
    return Score(reward, verdict, truncated)


def score_all(
    examples: list[Example],
    responses: list[str],
    truncated: list[bool],
    format_penalty: float,
    truncated_reward: float | None,
) -> list[Score]:
    """Scores in input order; verifiers run concurrently."""
    jobs = [
        _POOL.submit(score, e, r, t, format_penalty, truncated_reward)
        for e, r, t in zip(examples, responses, truncated)
    ]
    return [job.result() for job in jobs]
