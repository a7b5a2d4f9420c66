"""Verifiable rewards, one verifier per ProRL domain (spec section 3); see README.md for the data.

    get_verifier("math").verify(response, example) -> Verdict(reward, format_ok, extracted, details)

`get_verifier` returns one shared, thread-safe instance per domain. `VERIFIERS` maps each domain to
its verifier class, for callers that want their own instance (another sandbox, a shorter timeout).
"""

from __future__ import annotations

import functools

from prorl_engine.verifiers.base import Verdict, Verifier
from prorl_engine.verifiers.code import CodeVerifier
from prorl_engine.verifiers.ifeval import IFEvalVerifier
from prorl_engine.verifiers.logic import LogicVerifier
from prorl_engine.verifiers.math import MathVerifier
from prorl_engine.verifiers.stem import StemVerifier

VERIFIERS: dict[str, type] = {
    "math": MathVerifier,
    "code": CodeVerifier,
    "stem": StemVerifier,
    "logic": LogicVerifier,
    "ifeval": IFEvalVerifier,
}


@functools.cache
def get_verifier(domain: str) -> Verifier:
    """The shared verifier of `domain`; ValueError for a domain that has none."""
    if domain not in VERIFIERS:
        raise ValueError(f"no verifier for domain {domain!r}; known domains: {', '.join(VERIFIERS)}")
    return VERIFIERS[domain]()


__all__ = [
    "VERIFIERS",
    "CodeVerifier",
    "IFEvalVerifier",
    "LogicVerifier",
    "MathVerifier",
    "StemVerifier",
    "Verdict",
    "Verifier",
    "get_verifier",
]
