"""Evaluation jobs: a Comparison's models answer the same held-out prompts (queue `eval`).

The job runs the engine's `prorl_engine.compare.compare` on the prompts held out by the data mix
of the config stored with the comparison (the same prompts the run's own evaluations use) and
stores `Comparison.to_dict()` on the row. Production runs CPU or GPU workers with
`--queues eval`; the embedded default (`make up`) starts an evaluation worker of its own beside the
training worker, so a comparison never waits behind a training run.

Paths are checked again here, on this machine's disk, as worker/tasks.py checks a run's: each model
under the comparison owner's rules (studio.paths), the held-out data under the rules of the run it
comes from (which the owner must still be allowed to see). A comparison stored by any route (an
admin edit, an old row) that names a path they may not use fails with the message a run gets.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.novelty import NgramIndex, reference_index, training_examples
from prorl_engine.paths import MODEL_REFUSED
from studio.models import Comparison, Run
from studio.permissions import can_view_run

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
    except ConfigError as exc:  # a path the owner may not use, as worker/tasks.py reports it for a run
        return _fail(comparison_id, f"invalid config: {exc}")
    except Exception as exc:
        log.exception("comparison %s failed", comparison_id)
        return _fail(comparison_id, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=6)}")
    Comparison.objects.filter(pk=comparison_id).update(
        status=Status.FINISHED, result=result, finished_at=timezone.now()
    )
    return "finished"


def _fail(comparison_id: int, error: str) -> str:
    Comparison.objects.filter(pk=comparison_id).update(status=Status.FAILED, error=error, finished_at=timezone.now())
    return "failed"


def evaluate_comparison(comparison: Comparison) -> dict[str, Any]:
    import torch

    from prorl_engine.compare import compare
    from prorl_engine.evaluation import held_out_examples

    torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    options = comparison.settings
    models = permitted_models(comparison)
    config = permitted_prompts_config(comparison)
    examples = held_out_examples(config.data, config.seed, options["prompts"])  # as the run's own evaluations
    if not examples:
        raise ValueError("the data mix of the chosen config holds out no prompts (eval_size is 0 everywhere)")
    result = compare(
        models,
        examples,
        n=options["n"],
        ks=options["ks"],
        temperature=config.eval_temperature,
        top_p=config.eval_top_p,
        max_new_tokens=options["max_new_tokens"],
        seed=config.seed,
        device=config.device,
        batch_size=config.rollout_batch_size,
        format_penalty=config.format_penalty,
        truncated_reward=config.truncated_reward,
        backend=config.rollout_backend,  # the run's own sampler
        novelty=comparison_novelty_index(config),
    )
    return _jsonable(keep_first_texts(result.to_dict()))


TEXTS_KEPT = 64  # completions per model and prompt stored with their text (the form's n up to 64 keeps all)


def keep_first_texts(result: dict[str, Any], kept: int = TEXTS_KEPT) -> dict[str, Any]:
    """The comparison's result with each model's answers to a prompt past the first `kept`
    reduced to correct, reward and length: what pass@k and the boundary view count, without the
    text of up to 256 completions per prompt (a boundary study's n)."""
    for entry in result["prompts"]:
        for answers in entry["answers"].values():
            answers[kept:] = [{key: a[key] for key in ("correct", "reward", "length")} for a in answers[kept:]]
    return result


def comparison_novelty_index(config: RunConfig) -> NgramIndex | None:
    """The index of the prompts config's `novelty_corpus` (None for "none"): its training split
    (the data files as `permitted_prompts_config` located them), or a named corpus."""
    training = training_examples(config.data, config.seed) if config.novelty_corpus == "training_data" else ()
    return reference_index(config.novelty_corpus, training)


def permitted_models(comparison: Comparison) -> dict[str, str]:
    """label -> the model_path to load, each as the owner's path rules locate it for a run of theirs
    (studio.paths.path_policy_for, this machine's disk checked); ConfigError on `model_path` with
    the run's message for any they may not use (a checkpoint of a run they may no longer compare
    included)."""
    from prorl_engine.builders import MODEL_BUILDERS
    from studio.paths import path_policy_for

    policy = path_policy_for(comparison.owner, check_disk=True)
    models = {}
    for entry in comparison.entries:
        located = policy.locate_model(str(entry.get("path") or ""), MODEL_BUILDERS)
        if located is None:
            raise ConfigError([("model_path", MODEL_REFUSED)])
        models[entry["label"]] = located.model_path
    return models


def permitted_prompts_config(comparison: Comparison) -> RunConfig:
    """The stored config whose held-out prompts the models answer, its data files located under the
    rules of the run it was taken from (studio.paths.run_path_policy, as that run's worker reads
    them); ConfigError when the owner may no longer see that run or a file is not one it may use."""
    from studio.paths import run_path_policy

    options = comparison.settings
    config = RunConfig.from_dict(options["config"], check_paths=False)
    prompts_run = Run.objects.select_related("owner", "parent_run").filter(pk=options.get("prompts_run")).first()
    if prompts_run is None or not can_view_run(comparison.owner, prompts_run):
        raise ConfigError(
            [
                (
                    "prompts_from",
                    "the run whose held-out prompts the models answer is gone, "
                    "or its owner's team no longer lets you see it",
                )
            ]
        )
    try:
        data = run_path_policy(prompts_run).resolve_data(config.data)
    except ValueError as refused:  # "data[i]: <DATA_REFUSED>"
        field, _, message = str(refused).partition(": ")
        raise ConfigError([(field, message)]) from None
    return dataclasses.replace(config, data=data)  # parsed once: only the paths change, as the policy located them


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
