"""The Celery app: `celery -A worker worker --queues gpu --concurrency 1` runs one trainer at a time;
`--queues eval` workers run evaluation jobs (comparisons)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
# worker.presence: each worker reports itself (the workers page) and runs the stale-run watchdog check
app = Celery("worker", include=["worker.tasks", "worker.nodes", "worker.eval_tasks", "worker.presence"])
app.config_from_object("django.conf:settings", namespace="CELERY")
