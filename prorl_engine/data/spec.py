"""`DataSource`: one source of a run's training mix, and the checks on a mix of them.

`RunConfig.data` (prorl_engine/config.py) is a `list[DataSource]`; prorl_engine/data/sources.py
loads them. A config stores each source as the mapping it was written as (`DataSource.to_dict`), so
a stored config, the studio's form and the API read the same YAML that went in. The checks refuse
what would be used as a path or a name before anything uses it, and say which source and why.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prorl_engine.data.example import DOMAINS
from prorl_engine.paths import DATA_REFUSED, PathPolicy
from prorl_engine.validation import (
    MAX_TASK_CHARS,
    MAX_TEXT_CHARS,
    Bound,
    ConfigError,
    bound_problem,
    shown,
    shown_name,
    text_problem,
)

SOURCE_KINDS = ("reasoning_gym", "file")
MAX_SOURCES = 256
SOURCES_WHY = "v1 mixed 96 reasoning-gym tasks and four other domains"
MAX_PARAMS_VALUES = 1_000  # a generator's params are a handful of numbers and short lists
MAX_PARAMS_DEPTH = 8
RESERVED_PARAMS = ("size", "seed")  # reasoning-gym takes these from the source's size and the run's seed
SOURCE_BOUNDS: dict[str, Bound] = {
    "weight": Bound(0, 1e6, "weights are relative: a ratio over 10^6 never draws the other source"),
    "size": Bound(1, 1_000_000, "7x v1's whole training set of 136K problems; each item is made when the run starts"),
    "eval_size": Bound(0, 100_000, "held-out items are made when the run starts, like the training items"),
}


@dataclass
class DataSource:
    """One source of the training mix.

    source="reasoning_gym": `task` is a reasoning-gym dataset name, `size` items are generated
    from `seed` with `params` passed to the generator. source="file": `path` is a JSONL or Parquet
    file of records (schema: prorl_engine/verifiers/README.md), `domain` says which verifier scores them.
    """

    task: str
    source: str = "reasoning_gym"
    weight: float = 1.0
    size: int = 1000
    path: str | None = None
    domain: str = "logic"
    params: dict[str, Any] = field(default_factory=dict)
    instruction: str = "\nPut your final answer inside <answer></answer> tags."
    eval_size: int = 32

    _written: ClassVar[tuple[str, ...] | None] = None  # per source: the keys `from_dict` was given

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataSource:
        """The source a mapping describes (its keys checked by `read_sources`); `to_dict` gives back
        the same keys in the same order."""
        source = cls(**values)
        source._written = tuple(values)
        return source

    def to_dict(self) -> dict[str, Any]:
        """The source as a config stores it: the keys it was read with, in their order, then any other
        field that differs from its default; every field for a source built in code (or made by
        `dataclasses.replace`, which starts a new source: `copy.copy` keeps the keys)."""
        names = [f.name for f in dataclasses.fields(self)]
        if self._written is None:
            keys = names
        else:
            changed = [name for name in names if name not in self._written and getattr(self, name) != _default(name)]
            keys = [*self._written, *changed]
        return {key: copy.deepcopy(getattr(self, key)) for key in keys}


def _default(name: str) -> Any:
    spec = DataSource.__dataclass_fields__[name]
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


@functools.cache
def reasoning_gym_task_names() -> frozenset[str]:
    import reasoning_gym

    return frozenset(reasoning_gym.factory.DATASETS)


def read_sources(value: Any, check_paths: bool = True, path_policy: PathPolicy | None = None) -> list[DataSource]:
    """The data mix from what a config holds (a list of mappings, or of DataSources). Raises TypeError
    or ValueError for the list itself, and a ConfigError naming each source (`data[i]`) whose keys are
    wrong; then the other sources are checked in full as well (`mix_errors`, with `check_paths` and
    `path_policy`), so every problem shows at once."""
    if not isinstance(value, list) or not all(isinstance(item, (dict, DataSource)) for item in value):
        raise TypeError("must be a list of data sources (mappings with at least a task)")
    if len(value) > MAX_SOURCES:
        raise ValueError(f"has {len(value):,} sources; at most {MAX_SOURCES}: {SOURCES_WHY}")
    mappings = [item.to_dict() if isinstance(item, DataSource) else item for item in value]
    key_problems = [_key_problem(mapping) for mapping in mappings]
    if not any(key_problems):
        return [DataSource.from_dict(mapping) for mapping in mappings]
    if path_policy is not None and not check_paths:
        path_policy = dataclasses.replace(path_policy, check_disk=False)
    errors = []
    for index, (mapping, key_problem) in enumerate(zip(mappings, key_problems)):
        problems = (
            [key_problem] if key_problem else source_problems(DataSource.from_dict(mapping), check_paths, path_policy)
        )
        errors.extend((f"data[{index}]", problem) for problem in problems)
    raise ConfigError(errors)


def _key_problem(mapping: Mapping[str, Any]) -> str | None:
    """Why a mapping cannot be read as a DataSource (None: it can): unknown keys, or no task."""
    known = {f.name for f in dataclasses.fields(DataSource)}
    unknown = sorted(shown_name(key) for key in mapping if key not in known)
    if unknown:
        return f"unknown keys {', '.join(unknown)}"
    return None if "task" in mapping else "needs a task name"


def mix_errors(
    sources: Sequence[DataSource], check_paths: bool = True, path_policy: PathPolicy | None = None
) -> list[tuple[str, str]]:
    """Check the data mix: known source kinds and tasks, usable files, positive weights.

    `check_paths` and `path_policy` mean what they mean to `RunConfig.validate`."""
    if not sources:
        return [("data", "the training mix is empty: add at least one source")]
    if len(sources) > MAX_SOURCES:
        return [("data", f"has {len(sources):,} sources; at most {MAX_SOURCES}: {SOURCES_WHY}")]
    return [
        (f"data[{index}]", problem)
        for index, source in enumerate(sources)
        for problem in source_problems(source, check_paths, path_policy)
    ]


def source_problems(item: DataSource, check_paths: bool, path_policy: PathPolicy | None) -> list[str]:
    """What is wrong with one source, in the order a person fixes it: types, text, then values."""
    wrong_types = [
        name
        for name, kind in (
            ("task", str),
            ("source", str),
            ("domain", str),
            ("path", (str, type(None))),
            ("params", dict),
            ("instruction", str),
        )
        if not isinstance(getattr(item, name), kind)
    ]
    if wrong_types:  # the checks below (and the loaders) need these types
        return [f"wrong type for {', '.join(wrong_types)} (text, or a mapping for params)"]
    unusable = _text_problems(item)
    if unusable:  # the checks below (and the loaders) would use these as paths and names
        return unusable
    problems = []
    if item.source not in SOURCE_KINDS:
        problems.append(f"source must be one of {', '.join(SOURCE_KINDS)}, not {shown(item.source)}")
    problems.extend(_number_problems(item))
    if item.domain not in DOMAINS:
        problems.append(f"domain must be one of {', '.join(DOMAINS)}, not {item.domain!r}")
    if item.source == "reasoning_gym" and item.task not in reasoning_gym_task_names():
        problems.append(f"unknown task {item.task!r}: not a reasoning-gym dataset")
    elif item.source == "file":
        problem = _file_problem(item.path or "", check_paths, path_policy)
        if problem is not None:
            problems.append(problem)
    return problems


def _file_problem(path: str, check_paths: bool, path_policy: PathPolicy | None) -> str | None:
    """Why a file source's `path` cannot be used (None: it can)."""
    if not path:
        return "a file source needs a path"
    if path_policy is not None:
        return DATA_REFUSED if path_policy.locate_data(path) is None else None
    if check_paths and not Path(path).expanduser().is_file():
        return f"data file {path} does not exist"
    return None


_NUMBERS = {
    "weight": ((int, float), "a positive number"),
    "size": (int, "a whole number >= 1"),
    "eval_size": (int, "a whole number >= 0"),
}


def _number_problems(item: DataSource) -> list[str]:
    """A source's weight, size and eval_size: their types, then SOURCE_BOUNDS."""
    problems = []
    for name, (kind, what) in _NUMBERS.items():
        value, bound = getattr(item, name), SOURCE_BOUNDS[name]
        usable = not isinstance(value, bool) and isinstance(value, kind)
        if not usable or not (value > 0 if name == "weight" else value >= bound.low):
            problems.append(f"{name} must be {what}, not {shown(value)}")
        elif problem := bound_problem(value, bound):
            problems.append(f"{name} {problem}")
    return problems


def _text_problems(item: DataSource) -> list[str]:
    """A source's text (task, path, instruction) and its params, before anything uses them."""
    problems = []
    for name, max_chars in (
        ("task", MAX_TASK_CHARS),
        ("path", MAX_TEXT_CHARS),
        ("instruction", MAX_TEXT_CHARS),
        ("source", MAX_TASK_CHARS),
        ("domain", MAX_TASK_CHARS),
    ):
        value = getattr(item, name)
        problem = text_problem(value, max_chars) if isinstance(value, str) else None
        if problem:
            problems.append(f"{name} {problem}")
    problem = _params_problem(item.params)
    if problem:
        problems.append(f"params {problem}")
    return problems


def _params_problem(params: dict[str, Any]) -> str | None:
    """Why a generator's params cannot be stored and passed on (None: they can): JSON-like values
    only (mappings with text keys, lists, text, finite numbers, booleans, null), at most
    MAX_PARAMS_VALUES values and MAX_PARAMS_DEPTH levels. The walk stops at the first problem, so
    it costs at most MAX_PARAMS_VALUES steps whatever it is given (shared values count each time)."""
    reserved = [key for key in RESERVED_PARAMS if key in params]
    if reserved:
        return f"may not set {', '.join(reserved)}: the source's size and the run's seed give them"
    stack: list[tuple[Any, int]] = [(params, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_PARAMS_VALUES:
            return f"hold more than {MAX_PARAMS_VALUES:,} values"
        if depth > MAX_PARAMS_DEPTH:
            return f"are nested deeper than {MAX_PARAMS_DEPTH} levels"
        if isinstance(value, (dict, list)) and len(value) > MAX_PARAMS_VALUES:
            return f"hold more than {MAX_PARAMS_VALUES:,} values"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or text_problem(key, MAX_TASK_CHARS):
                    return f"keys must be short text, not {shown(key)}"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = text_problem(value, MAX_TEXT_CHARS)
            if problem:
                return f"value {problem}"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"values must be finite numbers, not {value!r}"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            return f"whole numbers must be below 2^63 in size, not {shown(value)}"
        elif value is not None and not isinstance(value, (bool, int, float)):
            return f"values must be text, numbers, booleans, lists or mappings, not {type(value).__name__}"
    return None
