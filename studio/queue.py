"""Handing work to the workers, by task name only.

The studio sends Celery messages with `send_task` on an app of its own that imports no task module:
the studio never imports `worker` (which imports studio.models). The broker and the queue of each
task name (settings CELERY_TASK_ROUTES: training on `gpu`, comparisons on `eval`) come from the same
settings the workers read.
"""

from __future__ import annotations

from celery import Celery

TRAIN_RUN = "worker.tasks.train_run"
RUN_COMPARISON = "worker.eval_tasks.run_comparison"

# set_as_current=False: in a worker process the worker's own app stays the one its tasks bind to.
app = Celery("studio", set_as_current=False)
app.config_from_object("django.conf:settings", namespace="CELERY")


def training_queue(gpus: int) -> str:
    """The queue of a run that trains on `gpus` ranks: `gpu` for one, `gpu-N` for N. A worker that
    declares N GPUs consumes gpu, gpu-2, ..., gpu-N (`training_queues`), so a run waits for a worker
    that can hold it."""
    return "gpu" if gpus <= 1 else f"gpu-{gpus}"


def training_queues(gpus: int) -> list[str]:
    """Every training queue a worker with `gpus` GPUs serves."""
    return [training_queue(n) for n in range(1, max(gpus, 1) + 1)]


def enqueue(task: str, object_id: int, queue: str | None = None) -> None:
    """Send `task` (TRAIN_RUN with a run id, RUN_COMPARISON with a comparison id) to its queue
    (the task's route, or `queue`: a training run's `training_queue`)."""
    app.send_task(task, args=[object_id], **({"queue": queue} if queue else {}))
