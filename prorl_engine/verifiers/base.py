"""The verifier interface: response + example -> reward in [0, 1] with details a person can read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from prorl_engine.data.example import Example


@dataclass
class Verdict:
    """What a verifier concluded about one response.

    reward     in [0, 1] (binary domains give 0 or 1; code, logic and ifeval may be fractional).
    format_ok  False when no answer could be extracted at all; the trainer then gives the spec's
               format penalty (RunConfig.format_penalty, -0.5) instead of `reward`.
    extracted  the answer the verifier read from the response (None when format_ok is False).
    details    JSON-serialisable facts for the studio: tests passed, constraints met, why it failed.
    """

    reward: float
    format_ok: bool = True
    extracted: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Verifier(Protocol):
    """One per domain. Must be deterministic and safe to call from worker threads."""

    domain: str

    def verify(self, response: str, example: Example) -> Verdict: ...
