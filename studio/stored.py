"""How the engine's values become database values: one set of rules for every writer of a run's rows.

The worker's sink (worker/sink.py) stores what a live run logs, and the run importer
(studio/imports.py) stores what a CLI run logged to its files; both go through these functions, so
a run's rows read the same whichever way they came. JSON has no NaN or infinity and PostgreSQL's
text and jsonb refuse NUL characters: such values are mapped here, once.
"""

from __future__ import annotations

import math
from typing import Any

from prorl_engine.events import Sample
from studio.models import Sample as SampleRow


def finite_values(values: dict[str, Any]) -> dict[str, float | None]:
    """One step's metrics as MetricPoint.values: NaN and infinity are stored as null (the chart skips them)."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if value is None:
            out[key] = None
            continue
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def stored_text(value: str) -> str:
    """Model output may hold NUL characters, which PostgreSQL text and jsonb refuse."""
    return value.replace("\x00", "\ufffd")


def jsonable(data: Any) -> Any:
    """Plain JSON values, strings without NUL characters, NaN and infinity as null."""
    if isinstance(data, str):
        return stored_text(data)
    if isinstance(data, dict):
        return {stored_text(str(key)): jsonable(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [jsonable(value) for value in data]
    if data is None or isinstance(data, (bool, int)):
        return data
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    return stored_text(str(data))


def sample_row(run_id: int, row: Sample) -> SampleRow:
    """The Sample row of one logged completion of run `run_id` (not saved)."""
    return SampleRow(
        run_id=run_id,
        step=row.step,
        prompt=stored_text(row.prompt),
        response=stored_text(row.response),
        reward=row.reward,
        verifier_reward=row.verifier_reward,
        task=stored_text(row.task),
        domain=stored_text(row.domain),
        length=row.length,
        truncated=row.truncated,
        details=jsonable(row.details),
    )
