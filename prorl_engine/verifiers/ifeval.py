"""Instruction following: the fraction of the prompt's verifiable constraints met (spec section 3).

`example.metadata` holds IFEval's two lists, `{"instruction_id_list": [...], "kwargs": [{...}, ...]}`,
one kwargs object per instruction (None values are ignored, as IFEval's own files pad every object
with all keys). The constraints are checked on the response after any thinking. The reward is
met / total; `details["constraints"]` lists each with `met`. An unknown instruction id, or kwargs
that do not fit it, raise ValueError naming them: a data error, never a silent 0. An empty response
has format_ok False.
"""

from __future__ import annotations

import inspect
from typing import Any

from prorl_engine.data.example import Example
from prorl_engine.verifiers.base import Verdict
from prorl_engine.verifiers.extract import final_text
from prorl_engine.verifiers.ifeval_constraints import CONSTRAINTS


class IFEvalVerifier:
    """Continuous reward: share of IFEval constraints the response satisfies."""

    domain = "ifeval"

    def verify(self, response: str, example: Example) -> Verdict:
        """Score one response; `details` lists every constraint with whether it was met."""
        constraints = instructions(example.metadata)
        text = final_text(response).strip()
        if not text:
            return Verdict(0.0, format_ok=False, details={"error": "empty response"})
        results = [{"id": name, "met": bool(CONSTRAINTS[name](text, **kwargs))} for name, kwargs in constraints]
        met = sum(result["met"] for result in results)
        details = {"met": met, "total": len(results), "constraints": results}
        return Verdict(met / len(results), extracted=text, details=details)


def instructions(metadata: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(id, kwargs) pairs of an IFEval record, checked against `CONSTRAINTS`; ValueError if unusable."""
    ids = metadata.get("instruction_id_list")
    kwargs_list = metadata.get("kwargs")
    if not ids or not isinstance(ids, list):
        raise ValueError("ifeval: metadata['instruction_id_list'] must be a non-empty list of instruction ids")
    if kwargs_list is None:
        kwargs_list = [{}] * len(ids)
    if not isinstance(kwargs_list, list) or len(kwargs_list) != len(ids):
        raise ValueError("ifeval: metadata['kwargs'] must be a list with one object per instruction id")
    return [_checked(name, kwargs or {}) for name, kwargs in zip(ids, kwargs_list)]


def _checked(name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The instruction with its non-None kwargs, after checking they fit its check's parameters."""
    if name not in CONSTRAINTS:
        raise ValueError(f"ifeval: unknown instruction id {name!r}")
    given = {key: value for key, value in kwargs.items() if value is not None}
    try:
        inspect.signature(CONSTRAINTS[name]).bind("response", **given)
    except TypeError as error:
        raise ValueError(f"ifeval: kwargs {given!r} do not fit instruction {name!r}: {error}") from None
    return name, given
