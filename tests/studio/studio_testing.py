"""Helpers of the studio tests."""

from __future__ import annotations

from prorl_engine.config import RunConfig
from studio.presets import default_values


def tiny_config(**changes) -> RunConfig:
    """The engine's tiny CPU preset as a validated RunConfig, with `changes` applied."""
    return RunConfig.from_dict({**default_values(), **changes}, check_paths=False)
