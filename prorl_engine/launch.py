"""Launching one run as N ranks with torchrun, and what each rank runs.

    prorl train CONFIG --out RUN --nproc 2                      # one machine, 2 ranks
    prorl train CONFIG --out RUN --nproc 8 --nnodes 2 \\
        --node-rank 0 --rdzv-endpoint host0:29400               # on each of two machines (its own rank)

`torchrun_command` is the torchrun line (torchrun's own rendezvous; `--standalone` on one machine);
`python -m prorl_engine.launch RUN [--from CHECKPOINT]` is one rank: it joins the process group
torchrun set up, trains the run whose config.yaml is in RUN, reports through RUN's JSONL logs on
rank 0, and leaves the group. torchrun stops every rank when one fails (no restarts), and a rank
that stops answering fails the others after the collective timeout, so a failed rank fails the
run instead of hanging it; the run resumes from its last checkpoint like any other. A checkpoint
the disk refused ends every rank together, rank 0 having logged why (a `checkpoint_failed` event):
`refused_checkpoint` reads it back, so that `prorl train --nproc` says it on one line, as one
process does, rather than only inside torchrun's report of the failed ranks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def torchrun(
    nproc: int,
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    run_id: str = "prorl",
    join_timeout_s: float | None = None,
) -> list[str]:
    """torchrun's part of the command line: `nproc` ranks per machine, one machine (`--standalone`)
    or `nnodes` meeting at `rdzv_endpoint` (the machine whose address it is hosts the rendezvous; the
    others wait for it up to `join_timeout_s`, torchrun's default 600 s); the module each rank runs follows it."""
    if nnodes > 1 and not rdzv_endpoint:
        raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")
    rendezvous = (
        ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={run_id}", f"--node-rank={node_rank}"]
        if rdzv_endpoint
        else ["--standalone"]
    )
    if rdzv_endpoint and join_timeout_s is not None:
        rendezvous.append(f"--rdzv-conf=join_timeout={int(join_timeout_s)}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        f"--nnodes={nnodes}",
        *rendezvous,
        "--max-restarts=0",  # a failed rank fails the run; resuming is the user's (or the studio's) call
    ]


def torchrun_command(
    run_dir: Path,
    nproc: int,
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    fork_from: str | None = None,
) -> list[str]:
    """The torchrun command line that trains `run_dir` (its config.yaml) as `nproc` ranks per node."""
    ranks = torchrun(nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, run_id=Path(run_dir).name)
    return [*ranks, "-m", "prorl_engine.launch", str(run_dir), *(["--from", str(fork_from)] if fork_from else [])]


def run(run_dir: Path, nproc: int, **options) -> int:
    """Train `run_dir` under torchrun; returns torchrun's exit code (non-zero when a rank failed)."""
    return subprocess.call(torchrun_command(run_dir, nproc, **options))


def refused_checkpoint(run_dir: Path, since: float) -> str | None:
    """Why the disk refused a checkpoint, if that ended the launch that began at `since` (a
    time.time()): the run's last event is a `checkpoint_failed` logged since then. None otherwise,
    and on a machine whose ranks do not include rank 0 (the run's logs are written there)."""
    events = Path(run_dir) / "events.jsonl"
    if not events.is_file():
        return None
    lines = [line for line in events.read_text(encoding="utf-8").splitlines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
    if last.get("kind") != "checkpoint_failed" or last.get("time", 0.0) < since:
        return None
    return str(last.get("data", {}).get("error") or "the disk refused a checkpoint")


def main(argv: list[str] | None = None) -> int:
    """One rank of a distributed run (started by torchrun)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_rank)(argv)


def _rank(argv: list[str] | None) -> int:
    import torch

    from prorl_engine.config import RunConfig
    from prorl_engine.distributed import TorchGroup
    from prorl_engine.events import JsonlSink
    from prorl_engine.trainer import Trainer

    parser = argparse.ArgumentParser(description="one rank of a distributed ProRL run")
    parser.add_argument("run_dir")
    parser.add_argument("--from", dest="fork_from")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    config = RunConfig.load(run_dir / "config.yaml")
    group = TorchGroup(config.collective_timeout_s)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # torchrun's OMP_NUM_THREADS=1: ranks share the machine's cores
    sink = JsonlSink(run_dir) if group.is_main else None
    try:
        status = Trainer(config, run_dir, sink, fork_from=args.fork_from, group=group).train()
        if group.is_main:
            print(f"{status}: {run_dir}")
    finally:
        if sink is not None:
            sink.close()
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
