"""The one in-memory record every data source yields and every verifier scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DOMAINS = ("math", "code", "stem", "logic", "ifeval")


@dataclass(frozen=True)
class Example:
    """One prompt with what its verifier needs to score a response.

    `prompt` is the full user-facing question (instructions included); the engine wraps it in the
    model's prompt format. `answer` is the reference (math/stem: the answer string; logic: the
    reasoning-gym entry's answer; code/ifeval: unused, see `metadata`). `metadata` holds the
    verifier's extra inputs: code -> {"tests": [...]}, ifeval -> {"instruction_id_list": [...],
    "kwargs": [...]}, logic -> {"entry": <reasoning-gym entry dict>}, stem -> {"choices": [...]}.
    """

    uid: str
    domain: str
    task: str
    prompt: str
    answer: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
