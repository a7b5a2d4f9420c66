"""Evaluation jobs: a Comparison's models answer the same held-out prompts (queue `eval`).

The job runs the engine's `prorl_engine.compare.compare` on the prompts held out by the data mix
of the config stored with the comparison (the same prompts the run's own evaluations use) and
stores `Comparison.to_dict()` on the row. Production runs CPU or GPU workers with
`--queues eval`; the embedded default's one worker listens to `gpu,eval`, so a comparison waits
for a training run in progress to finish.
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studio.models import Comparison

log = logging.getLogger(__name__)
Status = Comparison.Status


def claim_comparison(comparison_id: int) -> Comparison | None:
    """Mark the comparison running; None when it is already over (or gone)."""
    with transaction.atomic():
        comparison = Comparison.objects.select_for_update().filter(pk=comparison_id).first()
        if comparison is None or comparison.is_done:
            return None
        comparison.status, comparison.started_at, comparison.error = Status.RUNNING, timezone.now(), ""
        comparison.save(update_fields=["status", "started_at", "error"])
    return comparison


@shared_task(name="worker.eval_tasks.run_comparison", acks_late=True, reject_on_worker_lost=True)
def run_comparison(comparison_id: int) -> str:
    comparison = claim_comparison(comparison_id)
    if comparison is None:
        return "done"
    try:
        result = evaluate_comparison(comparison)
    except Exception as exc:
        log.exception("comparison %s failed", comparison_id)
        error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=6)}"
        Comparison.objects.filter(pk=comparison_id).update(status=Status.FAILED, error=error,
                                                           finished_at=timezone.now())
        return "failed"
    Comparison.objects.filter(pk=comparison_id).update(status=Status.FINISHED, result=result,
                                                       finished_at=timezone.now())
    return "finished"


def evaluate_comparison(comparison: Comparison) -> dict[str, Any]:
    import torch

    from prorl_engine.compare import compare
    from prorl_engine.config import RunConfig

    torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    options = comparison.settings
    config = RunConfig.from_dict(options["config"], check_paths=False)
    examples = held_out_examples(config, options["prompts"])
    if not examples:
        raise ValueError("the data mix of the chosen config holds out no prompts (eval_size is 0 everywhere)")
    models = {entry["label"]: entry["path"] for entry in comparison.entries}
    result = compare(
        models, examples, n=options["n"], ks=options["ks"], temperature=config.eval_temperature,
        top_p=config.eval_top_p, max_new_tokens=options["max_new_tokens"], seed=config.seed,
        device=config.device, batch_size=config.rollout_batch_size, format_penalty=config.format_penalty,
        truncated_reward=config.truncated_reward,
    )
    return _jsonable(result.to_dict())


def held_out_examples(config, count: int) -> list:
    """At most `count` held-out examples of the config's data mix, taken evenly across its tasks,
    seeded as the run's training mix seeds them (source i uses seed + i)."""
    from prorl_engine.data.sources import load_source

    by_task: dict[str, list] = {}
    for index, source in enumerate(config.data_sources):
        _, held_out = load_source(source, config.seed + index)
        for example in held_out:
            by_task.setdefault(example.task, []).append(example)
    chosen, position = [], 0
    total = sum(len(items) for items in by_task.values())
    while len(chosen) < min(count, total):
        for items in by_task.values():
            if position < len(items) and len(chosen) < count:
                chosen.append(items[position])
        position += 1
    return chosen


def _jsonable(value: Any) -> Any:
    """Plain JSON (no NaN or infinity, which PostgreSQL's jsonb refuses; no NUL characters)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int)):
        return value
    return _jsonable(str(value))
