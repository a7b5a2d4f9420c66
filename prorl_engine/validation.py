"""The small checks a config's validation is built from: one error type, text and range checks,
and the conversions that accept what YAML and HTML forms give.

Configs come from people who may be hostile (the studio's users): a message never echoes more than
a short prefix of what it was given (`shown`), every text has a length and no NUL (`text_problem`),
and YAML is read with limits on size, depth and aliases (`parse_yaml`, prorl_engine/safeyaml.py).
Nothing here knows the fields of a run (prorl_engine/config_fields.py) or of a data source
(prorl_engine/data/spec.py); both are checked with these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from prorl_engine import safeyaml

MAX_TEXT_CHARS = 4_096  # Linux's PATH_MAX for paths; names and instructions are shorter still
MAX_TASK_CHARS = 200  # reasoning-gym task names are under 40 characters
MAX_CONFIG_CHARS = 131_072  # a config's YAML text and its stored JSON: the v1 recipe's mix takes under 10k
YAML_LIMITS = safeyaml.Limits(max_chars=MAX_CONFIG_CHARS)

Problems = list[tuple[str, str]]  # (field, message), the pairs a ConfigError lists


class ConfigError(ValueError):
    """An invalid run config. `errors` lists (field, message) pairs, one per problem."""

    def __init__(self, errors: Problems):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))


@dataclass(frozen=True)
class Bound:
    """The closed range [low, high] a number must lie in, and why (the reason is in the message)."""

    low: float
    high: float
    why: str


def bound_problem(value: float, bound: Bound) -> str | None:
    """Why `value` lies outside `bound` (None: it lies inside)."""
    if value > bound.high:
        return f"must be at most {_number(bound.high)}: {bound.why}"
    if value < bound.low:
        return f"must be at least {_number(bound.low)}: {bound.why}"
    return None


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: messages never echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown_name(name: Any) -> str:
    """A key of the config as text for an error (keys from YAML may be numbers or very long)."""
    text = str(name)
    return text if len(text) <= 60 else f"{text[:60]}..."


def text_problem(value: str, max_chars: int) -> str | None:
    """Why `value` cannot be stored and used as text (None: it can): too long, a NUL, or not UTF-8."""
    if len(value) > max_chars:
        return f"is {len(value):,} characters long; at most {max_chars:,}"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid text (a lone surrogate character)"
    return None


# --- conversions: what YAML and HTML forms give (ints for floats, numeric strings) -----------------
def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise TypeError(f"must be true or false, not {shown(value)}")


def as_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    digits = value.strip().removeprefix("-") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 20:  # "²" is a digit to isdigit, not to int
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {shown(value)}")
    return value


def as_float(value: Any) -> float:
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 64):
        raise TypeError(f"must be a number, not {shown(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"must be a number, not {shown(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {shown(value)}")
    return number


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be text, not {shown(value)}")
    problem = text_problem(value, MAX_TEXT_CHARS)
    if problem:
        raise ValueError(problem)
    return value


# --- YAML ------------------------------------------------------------------------------------------
def parse_yaml(text: str, field: str = "config") -> Any:
    """YAML that a person wrote, read with YAML_LIMITS (prorl_engine.safeyaml): plain data, or one
    ConfigError on `field` saying which limit was hit or where the text is not YAML."""
    try:
        return safeyaml.load(text, YAML_LIMITS)
    except safeyaml.YamlLimitError as exc:
        raise ConfigError([(field, f"refused: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([(field, f"not valid YAML: {exc}")]) from None


def values_from_yaml(text: str) -> dict[str, Any]:
    """A config's YAML text as its field values (empty text: no values), read by `parse_yaml`."""
    values = parse_yaml(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError([("config", "must be a mapping of field names to values")])
    return values
