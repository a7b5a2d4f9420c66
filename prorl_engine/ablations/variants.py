"""The variants: the full recipe, and one variant per part of it that switches that part off
and nothing else. Each is a function of the base config that returns its overrides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prorl_engine.config import RunConfig


def full(config: RunConfig) -> dict[str, Any]:
    """The whole recipe, as configured."""
    return {}


def symmetric_clip(config: RunConfig) -> dict[str, Any]:
    """No clip-higher: the upper clip bound equals the lower one."""
    return {"eps_high": config.eps_low}


def no_dynamic_sampling(config: RunConfig) -> dict[str, Any]:
    """Groups whose rewards have no spread stay in the batch (and contribute zero advantage)."""
    return {"dynamic_sampling": False}


def no_length_penalty(config: RunConfig) -> dict[str, Any]:
    """The cosine length penalty is never on."""
    return {"length_penalty": False}


def no_resets(config: RunConfig) -> dict[str, Any]:
    """One fixed reference policy for the whole run."""
    return {"reset_interval": None, "kl_reset_threshold": None, "reset_patience": None}


def rerun(config: RunConfig) -> dict[str, Any]:
    """The full recipe again with the learning rate 0.1% larger: a change too small to matter that
    still sends the run down another path (it moves every update, and sampling amplifies any
    difference). Its distance from `full` is the run-to-run noise that one seed per variant would
    otherwise hide. The learning rate, not beta: a change of beta this small can round away and
    leave the run bit-identical."""
    return {"learning_rate": config.learning_rate * 1.001}


VARIANTS: dict[str, Callable[[RunConfig], dict[str, Any]]] = {
    fn.__name__: fn for fn in (full, symmetric_clip, no_dynamic_sampling, no_length_penalty, no_resets, rerun)
}
