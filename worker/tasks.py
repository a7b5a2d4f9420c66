"""The training task: one run on the `gpu` queue, resumable after a crash.

Messages are acknowledged late, so a worker killed mid-run leaves its message in the broker, which
hands it to the next worker once the visibility timeout passes. That worker resumes the run from
its latest checkpoint (the engine does it and rewinds the sink). A lease on the run row (worker
name + heartbeat) keeps a second worker from training a run whose worker is still alive; a message
for such a run (or for one that is over) is dropped: should that worker die, the workers'
reconciler (worker/reconcile.py) sends the run again once its lease lapses, so a second message
for a run is always harmless.

Every way out of a task closes the run's sink, whose thread renews the lease: a task that ended
leaves no thread renewing anything.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from enum import Enum

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studio.models import Run, RunStatus
from studio.permissions import can_fork_run
from studio.queue import training_queue
from studio.run_status import record_status
from worker.db_retry import DatabaseUnavailable, retry_transient

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
DB_WAIT_S = 120.0  # how long taking a run up, or recording its failure, waits for the database


class Claim(Enum):
    TAKEN = "taken"  # this worker now holds the run
    DONE = "done"  # finished, failed or stopped: nothing to do
    HELD = "held"  # another live worker holds it


def claim_run(run_id: int, worker: str) -> Claim:
    """Take the run's lease unless it is over or a live worker holds it. Only the lease: the run's
    status is what the engine's status events say (studio.run_status), "running" once it starts."""
    now = time.time()
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return Claim.DONE
        if run.worker and run.worker != worker and run.heartbeat and now - run.heartbeat < settings.WORKER_LEASE_S:
            return Claim.HELD
        run.worker, run.heartbeat = worker, now
        run.attempts += 1
        run.started_at = timezone.now()
        run.resumed_from_step = run.last_step
        run.save(update_fields=["worker", "heartbeat", "attempts", "started_at", "resumed_from_step"])
    return Claim.TAKEN


@shared_task(name="worker.tasks.train_run", acks_late=True, reject_on_worker_lost=True)
def train_run(run_id: int) -> str:
    """Train the run unless it is over or held. A database that stays away longer than DB_WAIT_S
    ends the task; the run stays queued and the reconciler sends it again."""
    claim = retry_transient(lambda: claim_run(run_id, WORKER_NAME), budget_s=DB_WAIT_S, what=f"taking run {run_id} up")
    if claim is not Claim.TAKEN:  # over, or held by a live worker (the reconciler acts if it dies)
        return claim.value
    return _train(retry_transient(lambda: Run.objects.get(pk=run_id), budget_s=DB_WAIT_S, what=f"reading run {run_id}"))


def _train(run: Run) -> str:
    import torch

    from prorl_engine.builders import MODEL_BUILDERS
    from prorl_engine.config import ConfigError, RunConfig
    from prorl_engine.trainer import Trainer
    from studio.paths import run_path_policy
    from worker.sink import SinkError, StudioControl, StudioSink

    torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    sink = StudioSink(run)
    try:
        # The owner's path rules, again, on this machine's disk: a config stored by any route (an
        # admin edit, an old row, a route that forgot to ask) trains only from what the owner may use.
        policy = run_path_policy(run)
        config = policy.resolve(RunConfig.from_dict(run.config, path_policy=policy), MODEL_BUILDERS)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if config.gpus > 1 or config.nodes > 1:
            sink.close()  # rank 0 reports through a sink of its own
            return _train_on_ranks(run, config)
        # the engine's status events (running, paused, finished, stopped) are the run's status; a run
        # paused when its last worker was lost is held paused (worker/reconcile.py sent it again)
        fork_from = _fork_source(run, sink)
        held = run.status == RunStatus.PAUSED
        Trainer(config, run.run_dir, sink, StudioControl(run), fork_from=fork_from, paused=held).train()
    except ConfigError as exc:  # on this machine's disk: a model or data file missing here, or refused
        return _fail(sink, run, f"invalid config: {exc}", exc)
    except Exception as exc:
        log.exception("run %s failed", run.pk)
        return _fail(sink, run, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}", exc)
    try:
        sink.close()
    except SinkError as exc:  # the last batch could not be stored
        return _fail(sink, run, str(exc), exc)
    return "finished"


def _train_on_ranks(run: Run, config) -> str:
    """Train `run` as `config.gpus` ranks under torchrun (worker/rank.py), on the GPUs this worker
    declares, and with `config.nodes` > 1 as the host of a run across machines (worker/nodes.py).
    Their output goes to RUN_DIR/ranks.log; a rank that fails without recording it (killed, out of
    memory, a machine that never joined) fails the run here with the log's last lines."""
    import subprocess

    from worker.gpus import gpu_count
    from worker.nodes import host_rendezvous, rank_command

    gpus, nodes = config.gpus, config.nodes
    if gpus > gpu_count():
        message = f"this worker declares {gpu_count()} GPUs (PRORL_WORKER_GPUS); the run asks for {gpus}"
        record_status(run.pk, run.last_step, RunStatus.FAILED, message)
        return "failed"
    endpoint = host_rendezvous(run, gpus, nodes) if nodes > 1 else None
    log_path = run.run_dir / "ranks.log"
    with open(log_path, "ab") as output:
        command = rank_command(run, gpus, nodes, endpoint, config.collective_timeout_s)
        code = subprocess.call(command, stdout=output, stderr=subprocess.STDOUT)
    run.refresh_from_db()
    if code == 0:
        return "finished"
    if not run.is_terminal:
        tail = log_path.read_bytes()[-4000:].decode("utf-8", errors="replace")
        reason = f"a rank failed (torchrun exit code {code})"
        if "RendezvousTimeoutError" in tail:
            reason = (
                f"the run needs {nodes} machines with {gpus} GPUs each, and fewer joined its rendezvous at "
                f"{endpoint} within {config.collective_timeout_s:g} s (collective_timeout_s): start more "
                f"workers on queue {training_queue(gpus)}"
            )
        record_status(run.pk, run.last_step, RunStatus.FAILED, f"{reason}:\n{tail}")
    return "failed"


def _fork_source(run: Run, sink) -> str | None:
    """The parent checkpoint a fork starts from (the engine ignores it once the fork has
    checkpoints of its own); None for a run that is not a fork."""
    from prorl_engine import checkpoint

    if run.fork_step is None:
        return None
    if run.parent_checkpoint_id is None:
        raise ValueError("the checkpoint this fork starts from no longer exists (its run was deleted)")
    if not can_fork_run(run.owner, run.parent_checkpoint.run):
        raise ValueError(f"{run.owner.get_username()} may no longer fork the run this fork starts from")
    if checkpoint.latest(run.run_dir) is None and run.last_step > run.fork_step:
        sink.rewind(run.fork_step)  # an attempt died before the fork's first checkpoint: start over
    return run.parent_checkpoint.path


def _fail(sink, run: Run, error: str, cause: BaseException) -> str:
    """The run failed: a "failed" status event through the sink (stored and sent to the page), or
    straight to the database when the sink itself is what failed. The sink is closed whatever
    happens. A run whose lease another worker took (LeaseLost) is that worker's now: nothing is
    recorded."""
    from worker.sink import LeaseLost

    try:
        if isinstance(cause, LeaseLost):
            log.warning("run %s: %s; this attempt stops", run.pk, cause)
            return "lease lost"
        try:
            sink.set_status(RunStatus.FAILED, error)
        except Exception:  # the sink is broken, or the database away: record the failure directly
            _record_failure(run.pk, sink.last_step, error)
        return "failed"
    finally:
        sink.close(raise_error=False)


def _record_failure(run_id: int, step: int, error: str) -> None:
    """Store the failure, waiting up to DB_WAIT_S for the database. If it stays away, the run keeps
    its last status and its lease lapses: the page says its worker was lost, and the reconciler
    takes it up again from its last checkpoint once the database is back."""
    try:
        retry_transient(
            lambda: record_status(run_id, step, RunStatus.FAILED, error),
            budget_s=DB_WAIT_S,
            what=f"recording the failure of run {run_id}",
        )
    except DatabaseUnavailable:
        log.exception("run %s failed and the failure could not be recorded: %s", run_id, error)
