from collections import defaultdict

import pytest
from studio_testing import tiny_config

from studio import queue
from studio.models import Run


@pytest.fixture
def alices_run(alice) -> Run:
    """A run of Alice's that has logged nothing yet."""
    config = tiny_config()
    return Run.objects.create(owner=alice, name="alice's tiny run", config=config.to_dict(), total_steps=config.steps)


@pytest.fixture
def sent_tasks(monkeypatch) -> dict[str, list[int]]:
    """Task name -> the ids the studio sent it (studio.queue; no broker in these tests)."""
    sent: dict[str, list[int]] = defaultdict(list)
    monkeypatch.setattr(queue, "enqueue", lambda task, object_id, route=None: sent[task].append(object_id))
    return sent


@pytest.fixture
def queued(sent_tasks) -> list[int]:
    """Runs handed to the training queue."""
    return sent_tasks[queue.TRAIN_RUN]


@pytest.fixture
def enqueued(sent_tasks) -> list[int]:
    """Comparisons handed to the evaluation queue."""
    return sent_tasks[queue.RUN_COMPARISON]
