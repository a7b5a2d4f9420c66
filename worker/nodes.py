"""A studio run across machines: `nodes` workers, each giving it `gpus` ranks under torchrun.

The worker that takes the run (worker.tasks.train_run) hosts torchrun's c10d rendezvous at its own
address (PRORL_WORKER_ADDRESS, else its host name) on a free port, sends `nodes - 1` join messages to
the run's training queue, and starts its ranks. Each worker that takes a join message starts as many
ranks meeting at that endpoint, so torchrun, not the studio, forms the group: ranks are numbered by
the rendezvous, rank 0 (on whichever machine) reports to the run page, and a machine that never
comes fails the run after `collective_timeout_s` with the reason. A join message outlives nothing:
one for an earlier attempt of the run, or for a run that ended, is dropped. The run folder must be on
storage every machine sees (the checkpoints are written by every rank).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess

from celery import shared_task

from studio.models import Run
from studio.queue import training_queue

log = logging.getLogger(__name__)
JOIN_RUN = "worker.nodes.join_run"


def worker_address() -> str:
    """The address other machines reach this worker at: PRORL_WORKER_ADDRESS, else the host name."""
    return os.environ.get("PRORL_WORKER_ADDRESS", "").strip() or socket.gethostname()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def rendezvous_id(run: Run) -> str:
    """One rendezvous per attempt: a join message of an earlier attempt never meets a later one."""
    return f"run-{run.pk}-attempt-{run.attempts}"


def rank_command(run: Run, gpus: int, nodes: int, endpoint: str | None, join_timeout_s: float) -> list[str]:
    """The torchrun line that trains `run` as `gpus` ranks on this machine, of `nodes` machines."""
    from prorl_engine.launch import torchrun

    options = {"nnodes": nodes, "rdzv_endpoint": endpoint, "join_timeout_s": join_timeout_s} if nodes > 1 else {}
    return [*torchrun(gpus, run_id=rendezvous_id(run), **options), "-m", "worker.rank", str(run.pk)]


def host_rendezvous(run: Run, gpus: int, nodes: int) -> str:
    """This worker hosts the run's rendezvous: its endpoint, after asking `nodes - 1` workers to join."""
    endpoint = f"{worker_address()}:{free_port()}"
    for _ in range(nodes - 1):
        join_run.apply_async(args=[run.pk, run.attempts, endpoint], queue=training_queue(gpus))
    return endpoint


@shared_task(name=JOIN_RUN, acks_late=True)
def join_run(run_id: int, attempt: int, endpoint: str) -> str:
    """Give this worker's ranks to the attempt `attempt` of a run across machines, hosted at `endpoint`.
    The hosting worker holds the run's lease and records how it ends; this one only trains."""
    from prorl_engine.config import RunConfig
    from worker.gpus import gpu_count

    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.is_terminal or run.attempts != attempt:
        return "gone"  # the attempt it was sent for is over: its rendezvous is closed
    config = RunConfig.from_dict(run.config, check_paths=False)
    if config.gpus > gpu_count():
        log.warning("run %s asks for %s GPUs per machine; this worker declares %s", run_id, config.gpus, gpu_count())
        return "refused"
    command = rank_command(run, config.gpus, config.nodes, endpoint, config.collective_timeout_s)
    with open(run.run_dir / f"ranks-{worker_address()}-{os.getpid()}.log", "ab") as output:
        code = subprocess.call(command, stdout=output, stderr=subprocess.STDOUT)
    return "joined" if code == 0 else f"torchrun exit code {code}"
