"""One rank of a studio run that trains on several GPUs: `worker.tasks` launches torchrun with
`python -m worker.rank RUN_ID`, one process per GPU the run asks for (`gpus`).

Every rank loads the run's config under its owner's path rules, as a single-process run does; rank
0 reports through the run's StudioSink (metrics, samples, events, the lease's heartbeat) and reads
its commands, which the engine hands to every rank at the same step boundary. An error on rank 0
fails the run with its message and traceback; torchrun then stops the other ranks, and the task
that launched them records the failure of a rank that died without a word.
"""

from __future__ import annotations

import os
import sys
import traceback


def main(run_id: int) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    import django

    django.setup()
    import torch
    from django.conf import settings

    from prorl_engine.builders import MODEL_BUILDERS
    from prorl_engine.config import RunConfig
    from prorl_engine.distributed import TorchGroup
    from prorl_engine.trainer import Trainer
    from studio.models import Run, RunStatus
    from studio.paths import run_path_policy
    from worker.sink import StudioControl, StudioSink
    from worker.tasks import _fail, _fork_source

    run = Run.objects.get(pk=run_id)
    group = TorchGroup(RunConfig.from_dict(run.config, check_paths=False).collective_timeout_s)
    if not torch.cuda.is_available():
        torch.set_num_threads(settings.WORKER_TORCH_THREADS)
    sink = StudioSink(run) if group.is_main else None
    try:
        policy = run_path_policy(run)
        config = policy.resolve(RunConfig.from_dict(run.config, path_policy=policy), MODEL_BUILDERS)
        control = StudioControl(run) if group.is_main else None
        fork_from = group.broadcast(_fork_source(run, sink) if group.is_main else None)
        held = run.status == RunStatus.PAUSED  # paused when its last worker was lost: stays paused
        Trainer(config, run.run_dir, sink, control, fork_from=fork_from, group=group, paused=held).train()
    except Exception as exc:
        if sink is not None:
            _fail(sink, run, f"{type(exc).__name__} on rank 0: {exc}\n\n{traceback.format_exc(limit=8)}", exc)
        raise
    finally:
        group.close()
    if sink is not None:
        sink.close()
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)(int(sys.argv[1])))
