"""`RunConfig`: every knob of the ProRL v2 recipe (PRORL_SPEC.md), typed, documented, validated.

The fields, each with its group and help text (the studio form's), are declared in
prorl_engine/config_fields.py; the checks are in prorl_engine/config_checks.py, a data source and
the checks on the mix in prorl_engine/data/spec.py, and the conversions and text checks they share
in prorl_engine/validation.py. This module reads and writes configs: `RunConfig.from_dict` and
`RunConfig.from_yaml` validate, and an invalid config raises one `ConfigError` that lists every
problem as (field, message), before anything runs.

Configs come from people who may be hostile (the studio's users): every number has a range with its
reason (`BOUNDS`, `SOURCE_BOUNDS`), every text a length and no NUL, a data source's params are
small JSON-like data, the whole config stores in at most MAX_CONFIG_CHARS, and YAML is read with
limits on size, depth and aliases (`parse_yaml`, prorl_engine/safeyaml.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prorl_engine.config_checks import (
    BOUNDS,
    MAX_EVAL_K,
    MAX_RESPONSES_PER_STEP,
    MAX_STEPS,
    MAX_TOKENS,
    MAX_TOKENS_PER_STEP,
    config_errors,
)
from prorl_engine.config_fields import (
    ADVANTAGE_ESTIMATORS,
    DEVICES,
    DTYPES,
    FILTER_ON,
    GROUPS,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    ROLLOUT_BACKENDS,
    FieldSpec,
    RunFields,
    field_kind,
)
from prorl_engine.data.spec import (
    MAX_PARAMS_DEPTH,
    MAX_PARAMS_VALUES,
    MAX_SOURCES,
    RESERVED_PARAMS,
    SOURCE_BOUNDS,
    SOURCE_KINDS,
    DataSource,
    read_sources,
)
from prorl_engine.paths import PathPolicy
from prorl_engine.validation import (
    MAX_CONFIG_CHARS,
    MAX_TASK_CHARS,
    MAX_TEXT_CHARS,
    YAML_LIMITS,
    Bound,
    ConfigError,
    as_bool,
    as_float,
    as_int,
    as_str,
    parse_yaml,
    shown,
    shown_name,
    values_from_yaml,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "BOUNDS",
    "DEVICES",
    "DTYPES",
    "FILTER_ON",
    "GROUPS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "MAX_CONFIG_CHARS",
    "MAX_EVAL_K",
    "MAX_PARAMS_DEPTH",
    "MAX_PARAMS_VALUES",
    "MAX_RESPONSES_PER_STEP",
    "MAX_SOURCES",
    "MAX_STEPS",
    "MAX_TASK_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TOKENS",
    "MAX_TOKENS_PER_STEP",
    "RESERVED_PARAMS",
    "ROLLOUT_BACKENDS",
    "SOURCE_BOUNDS",
    "SOURCE_KINDS",
    "YAML_LIMITS",
    "Bound",
    "ConfigError",
    "DataSource",
    "FieldSpec",
    "RunConfig",
    "parse_yaml",
    "values_from_yaml",
]


@dataclass
class RunConfig(RunFields):
    """A whole ProRL run (the fields: `RunFields`), read from a dict or YAML and validated."""

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], *, check_paths: bool = True, path_policy: PathPolicy | None = None
    ) -> RunConfig:
        """Build and validate a config; unknown keys and wrong types are errors too.
        `path_policy`: see `validate`."""
        if not isinstance(values, dict):
            raise ConfigError([("config", "must be a mapping of field names to values")])
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors = [(shown_name(name), "unknown field") for name in values if name not in known]
        kwargs = {}
        for name, value in values.items():
            if name in known:
                try:
                    kwargs[name] = _coerce(value, known[name], check_paths, path_policy)
                except ConfigError as exc:  # a data mix names each source it refuses
                    errors.extend(exc.errors)
                except (TypeError, ValueError) as exc:
                    errors.append((name, str(exc)))
        config = cls(**kwargs)  # fields refused above keep their defaults for the checks below
        try:
            config.validate(check_paths=check_paths, path_policy=path_policy)
        except ConfigError as exc:  # report every problem at once, not only the first kind
            refused = {name for name, _ in errors}
            errors.extend((name, message) for name, message in exc.errors if name not in refused)
        if errors:
            raise ConfigError(errors)
        return config

    @classmethod
    def from_yaml(cls, text: str, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> RunConfig:
        return cls.from_dict(values_from_yaml(text), check_paths=check_paths, path_policy=path_policy)

    @classmethod
    def load(cls, path: str | Path, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> RunConfig:
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"), check_paths=check_paths, path_policy=path_policy)

    @property
    def correction(self) -> str:
        """The rollout correction in force: `rollout_correction`, with auto resolved by the backend."""
        if self.rollout_correction != "auto":
            return self.rollout_correction
        return "icepop" if self.rollout_backend == "vllm" else "none"

    @property
    def model_len(self) -> int:
        """vLLM's context length: `vllm_max_model_len`, or the prompt and response budgets."""
        return self.vllm_max_model_len or self.max_prompt_tokens + self.max_response_tokens

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed (CLI --set, forks)."""
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def validate(self, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> None:
        """Refuse nonsense before anything runs. Raises one ConfigError listing every problem.

        `check_paths`: look on this machine's disk for the model folder and data files (and read the
        model's context window). `path_policy`: the run is for someone else (the studio): model and
        data paths must be ones the policy lets that person use (prorl_engine/paths.py); None, for a
        person at a terminal, allows any path.
        """
        errors = config_errors(self, check_paths, path_policy)
        if errors:
            raise ConfigError(errors)


def _coerce(value: Any, f: dataclasses.Field, check_paths: bool, path_policy: PathPolicy | None) -> Any:
    """Accept what YAML and HTML forms give (ints for floats, numeric strings); refuse the rest.
    (`check_paths` and `path_policy` check the data mix when some of its sources are malformed.)"""
    kind = field_kind(f)
    if kind.startswith("optional_") and value in (None, ""):
        return None
    if kind == "int_list":
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if not isinstance(value, list):
            raise TypeError(f"must be a list of whole numbers, not {shown(value)}")
        if len(value) > MAX_EVAL_K:
            raise ValueError(f"has {len(value):,} values; at most {MAX_EVAL_K}")
        return [as_int(item) for item in value]
    if kind == "data_sources":
        return read_sources(value, check_paths, path_policy)
    converter = {
        "bool": as_bool,
        "int": as_int,
        "optional_int": as_int,
        "float": as_float,
        "optional_float": as_float,
    }.get(kind, as_str)
    return converter(value)
