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


def enqueue(task: str, object_id: int) -> None:
    """Send `task` (TRAIN_RUN with a run id, RUN_COMPARISON with a comparison id) to its queue."""
    app.send_task(task, args=[object_id])
