"""The values a new run starts from: the engine's tiny CPU preset when it ships one."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from prorl_engine.config import RunConfig


def default_values() -> dict[str, Any]:
    """configs/tiny.yaml over the RunConfig defaults (a run a laptop CPU finishes in minutes)."""
    values = {spec.name: spec.default for spec in RunConfig.field_specs()}
    tiny = resources.files("prorl_engine") / "configs" / "tiny.yaml"
    if tiny.is_file():
        values.update(yaml.safe_load(tiny.read_text(encoding="utf-8")) or {})
    return values
