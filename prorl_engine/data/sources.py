"""Data sources (reasoning-gym by name, JSONL/Parquet files) and the weighted training mix.

Every source yields `Example`s split into a training part and a held-out part. `TrainingMix` draws
prompts from the sources in proportion to their weights; its position (RNG state, per-source cursor
and epoch) is part of every checkpoint, so a resumed run sees the same prompts. When a source runs
out it starts its next epoch (a new permutation) rather than dropping anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prorl_engine.data.example import Example
from prorl_engine.data.spec import DataSource

# Record fields each domain's files must carry (besides `prompt`); see prorl_engine/verifiers/README.md.
REQUIRED_FIELDS = {
    "math": ("answer",),
    "stem": ("answer",),
    "code": ("tests",),
    "ifeval": ("instruction_id_list", "kwargs"),
    "logic": ("answer",),
}


class DataError(ValueError):
    """A data file or record that cannot be used; the message names file, line and field."""


def reasoning_gym_examples(source: DataSource, seed: int) -> list[Example]:
    """`size + eval_size` procedurally generated items; reasoning-gym scores them (logic domain)."""
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(source.task, size=source.size + source.eval_size, seed=seed, **source.params)
    examples = []
    for index in range(len(dataset)):
        entry = dataset[index]
        examples.append(
            Example(
                uid=f"{source.task}/{seed}/{index}",
                domain="logic",
                task=source.task,
                prompt=entry["question"] + source.instruction,
                answer=entry["answer"],
                metadata={"entry": _jsonable(entry)},
            )
        )
    return examples


def file_examples(source: DataSource) -> list[Example]:
    """Records of a JSONL or Parquet file, checked against the domain's schema."""
    path = Path(source.path).expanduser()
    rows, lines = _read_rows(path)
    examples = []
    for index, (row, line) in enumerate(zip(rows, lines)):
        for name in ("prompt", *REQUIRED_FIELDS[source.domain]):
            if row.get(name) in (None, ""):
                raise DataError(f"{path}, line {line}: field {name!r} is missing (domain {source.domain})")
        if not isinstance(row["prompt"], str):
            raise DataError(f"{path}, line {line}: field 'prompt' must be text")
        uid = str(row.get("id") or f"{path.stem}/{index}")
        metadata = {key: value for key, value in row.items() if key not in ("id", "prompt", "answer")}
        if source.domain == "logic":
            metadata.setdefault(
                "entry", {"question": row["prompt"], "answer": row["answer"], "metadata": row.get("metadata") or {}}
            )
        examples.append(
            Example(
                uid=uid,
                domain=source.domain,
                task=row.get("task") or source.task,
                prompt=row["prompt"] + (source.instruction if source.domain == "logic" else ""),
                answer=row.get("answer"),
                metadata=metadata,
            )
        )
    if not examples:
        raise DataError(f"{path}: no records")
    return examples


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records, and where each one is: its line in a JSONL file, its 1-based row in a Parquet file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .parquet)")
    try:
        return _read_parquet(path) if suffix == ".parquet" else _read_jsonl(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """One JSON object per line, parsed once; the first line that is not one is named.

    Blank lines (a trailing newline, a separating gap) are skipped. As in a table, every record has
    every field that some record of the file has (None where it has none).
    """
    records, record_lines = [], []
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}, line {line_number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_number}: a record must be a JSON object")
            records.append(record)
            record_lines.append(line_number)
    fields = dict.fromkeys(name for record in records for name in record)
    return [{name: record.get(name) for name in fields} for record in records], record_lines


def _read_parquet(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a Parquet file as dicts (pyarrow), numbered from 1."""
    import pyarrow
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except pyarrow.ArrowException as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from exc
    return rows, list(range(1, len(rows) + 1))


def _jsonable(value: Any) -> Any:
    """reasoning-gym entries hold tuples and numpy scalars; keep them JSON-friendly."""
    return json.loads(json.dumps(value, default=lambda obj: obj.item() if hasattr(obj, "item") else str(obj)))


def load_source(source: DataSource, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held_out) examples of one source. The held-out part never appears in training.

    Procedural tasks with a small space of puzzles (and files with repeated prompts) can produce the
    same prompt twice; a held-out example whose prompt is also a training prompt is dropped, so
    evaluation never measures memorised training items.
    """
    if source.source == "reasoning_gym":
        examples = reasoning_gym_examples(source, seed)
        train, held_out = examples[: source.size], examples[source.size :]
    else:
        examples = file_examples(source)
        order = np.random.default_rng(seed).permutation(len(examples))
        held = min(source.eval_size, len(examples) - 1)
        train, held_out = [examples[i] for i in order[held:]], [examples[i] for i in order[:held]]
    train_prompts = {example.prompt for example in train}
    return train, [example for example in held_out if example.prompt not in train_prompts]


@dataclass
class _Stream:
    examples: list[Example]
    seed: int
    epoch: int = 0
    cursor: int = 0
    _cached_epoch: int = -1
    _cached_order: np.ndarray | None = None

    def next(self) -> Example:
        if self.cursor >= len(self.examples):
            self.epoch, self.cursor = self.epoch + 1, 0
        example = self.examples[self._order(self.epoch)[self.cursor]]
        self.cursor += 1
        return example

    def _order(self, epoch: int) -> np.ndarray:
        """This epoch's permutation: a pure function of (seed, epoch), computed once per epoch."""
        if self._cached_epoch != epoch:
            self._cached_order = np.random.default_rng((self.seed, epoch)).permutation(len(self.examples))
            self._cached_epoch = epoch
        return self._cached_order


class TrainingMix:
    """Draws training prompts from several sources in proportion to their weights."""

    def __init__(self, sources: list[DataSource], seed: int):
        self.sources = sources
        self.seed = seed
        self.weights = np.array([s.weight for s in sources], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.streams: list[_Stream] = []
        self.held_out: list[Example] = []
        for index, source in enumerate(sources):
            train, held_out = load_source(source, seed + index)
            self.streams.append(_Stream(train, seed=seed * 1000 + index))
            self.held_out.extend(held_out)
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> list[Example]:
        picks = self.rng.choice(len(self.streams), size=count, p=self.weights)
        return [self.streams[i].next() for i in picks]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "streams": [{"epoch": s.epoch, "cursor": s.cursor} for s in self.streams],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        for stream, saved in zip(self.streams, state["streams"], strict=True):
            stream.epoch, stream.cursor = saved["epoch"], saved["cursor"]
