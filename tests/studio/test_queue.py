"""The studio hands work to the workers by task name: it never imports `worker` (which imports
studio.models), and the names it sends are tasks the workers run, on the queues they consume."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from studio import queue

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_studio_module_imports_the_worker():
    offenders = {
        path.name: sorted(name for name in imported_modules(path) if name.split(".")[0] == "worker")
        for path in sorted((REPO / "studio").rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_loading_every_studio_module_loads_no_worker_module():
    modules = sorted(f"studio.{path.stem}" for path in (REPO / "studio").glob("*.py") if path.stem != "__init__")
    code = (
        "import django, sys; django.setup(); import importlib\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'worker' or m.startswith('worker.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"DJANGO_SETTINGS_MODULE": "studio.settings", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_names_the_studio_sends_are_worker_tasks_on_the_queues_the_workers_consume():
    from worker.celery import app as worker_app

    worker_app.loader.import_default_modules()  # the task modules a worker process loads
    for name, queue_name in ((queue.TRAIN_RUN, "gpu"), (queue.RUN_COMPARISON, "eval")):
        assert name in worker_app.tasks
        assert queue.app.amqp.router.route({}, name)["queue"].name == queue_name


def test_enqueue_sends_the_task_by_name_with_the_id(monkeypatch):
    sent = []
    monkeypatch.setattr(queue.app, "send_task", lambda name, args: sent.append((name, args)))
    queue.enqueue(queue.TRAIN_RUN, 7)
    assert sent == [("worker.tasks.train_run", [7])]
