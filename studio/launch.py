"""Creating runs and handing them to the workers."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from prorl_engine.config import RunConfig
from studio.models import Run


def launch_run(owner: AbstractBaseUser, name: str, config: RunConfig, cloned_from: Run | None = None) -> Run:
    """Store a queued run and enqueue its training on the `gpu` queue once the row is committed."""
    from worker.tasks import train_run

    with transaction.atomic():
        run = Run.objects.create(
            owner=owner, name=name, config=config.to_dict(), total_steps=config.steps, cloned_from=cloned_from,
        )
        transaction.on_commit(lambda: train_run.delay(run.pk))
    return run
