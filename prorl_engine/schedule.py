"""What a run's schedule will do, as pure functions of its config: the studio draws it before launch."""

from __future__ import annotations

from prorl_engine import algorithms
from prorl_engine.config import RunConfig


def length_penalty_windows(config: RunConfig) -> list[tuple[int, int]]:
    """The inclusive (first, last) step ranges where the length penalty is on."""
    if not config.length_penalty:
        return []
    return algorithms.length_penalty_windows(
        config.steps, config.on_steps, config.off_steps, config.length_penalty_start)


def length_penalty_on(config: RunConfig, step: int) -> bool:
    return config.length_penalty and algorithms.length_penalty_on(
        step, config.on_steps, config.off_steps, config.length_penalty_start)


def planned_reset_steps(config: RunConfig) -> list[int]:
    """The interval resets of the whole run (KL, patience and manual resets cannot be known ahead)."""
    if not config.reset_interval:
        return []
    return list(range(config.reset_interval, config.steps + 1, config.reset_interval))
