"""Creating runs and handing them to the workers."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from prorl_engine.config import RunConfig
from studio import queue
from studio.models import Checkpoint, Run
from studio.paths import path_policy_for


def launch_run(
    owner: AbstractBaseUser,
    name: str,
    config: RunConfig,
    cloned_from: Run | None = None,
    parent_checkpoint: Checkpoint | None = None,
) -> Run:
    """Store a queued run and send its training (by task name, studio.queue) once the row is committed.

    With `parent_checkpoint` the run is a fork: it starts from that checkpoint (weights, reference,
    optimizer, step, reset history) and its steps continue the parent's from the checkpoint's step.
    Raises ConfigError when the config names a path `owner` may not use (studio.paths): no route
    stores such a run, whatever it validated before.
    """
    fork_parent = parent_checkpoint.run if parent_checkpoint is not None else None
    config.validate(path_policy=path_policy_for(owner, fork_parent=fork_parent))

    fork = {}
    if parent_checkpoint is not None:
        fork = {
            "parent_run_id": parent_checkpoint.run_id,
            "parent_checkpoint": parent_checkpoint,
            "fork_step": parent_checkpoint.step,
            "last_step": parent_checkpoint.step,
            "resumed_from_step": parent_checkpoint.step,
        }
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner,
            name=name,
            config=config.to_dict(),
            total_steps=config.steps,
            cloned_from=cloned_from,
            **fork,
        )
        transaction.on_commit(lambda: queue.send_run(run))
    return run
