"""Distributed training throughput: steps/s at 1 and 2 ranks (torchrun + FSDP2), and the share of a
step spent in collectives.

    .venv/bin/python bench/distributed.py [--models tiny,25m] [--ranks 1,2] [--steps 4]

For each model (the tiny test model, and a random Qwen2 of about 25M parameters built here) and
each rank count, trains a run of the tiny config's shape (4 prompts x 4 samples, 16 new tokens)
under torchrun on this machine's CPU (gloo), and prints steps/s over the steps after the first (its
one-off costs left out), and, from a torch.profiler trace of rank 0's last step, the share of its
time inside collectives (gloo all-gathers, reduce-scatters, all-reduces and object gathers). The
ranks share this machine's cores, so on a 2-core machine 2 ranks cannot be faster than 1: what this
measures here is the overhead of sharding and communication. Prints figures; asserts nothing. On a
GPU machine the same script runs on CUDA (nccl) with one rank per GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "tiny": {},
    "25m": {"hidden_size": 512, "num_layers": 6, "num_heads": 8},
}
COLLECTIVE_NAMES = ("gloo", "nccl", "all_gather", "reduce_scatter", "allreduce", "all_reduce", "broadcast")


def rank_main(run_dir: Path, steps: int) -> None:
    """One rank (under torchrun): train `steps` steps, rank 0 profiling the last one."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    from prorl_engine.config import RunConfig
    from prorl_engine.distributed import TorchGroup
    from prorl_engine.events import NullSink
    from prorl_engine.trainer import Trainer

    config = RunConfig.load(run_dir / "config.yaml")
    group = TorchGroup()
    torch.set_num_threads(1)  # as prorl_engine/launch.py: the ranks share the cores
    trainer = Trainer(config, run_dir, NullSink(), group=group)
    durations = []
    for step in range(1, steps + 1):
        trainer.step = step
        start = time.perf_counter()
        if step == steps and group.is_main:
            with profile(activities=[ProfilerActivity.CPU]) as trace:
                trainer._train_step()
            events = trace.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            talking = sum(e.self_cpu_time_total for e in events if any(n in e.key.lower() for n in COLLECTIVE_NAMES))
            share = talking / max(total, 1)
        else:
            trainer._train_step()
        durations.append(time.perf_counter() - start)
        group.broadcast(None)  # the next step starts together
    if group.is_main:
        timed = durations[1:-1] or durations[1:]  # without the first step and the profiled one
        print(json.dumps({"steps_per_s": len(timed) / sum(timed), "collective_share": share}))
    group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,25m")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    from prorl_engine.config import RunConfig
    from prorl_engine.modeling import load_tokenizer
    from prorl_engine.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        tiny = build_tiny_model(Path(scratch) / "tiny")
        for name in args.models.split(","):
            folder = (
                tiny
                if name == "tiny"
                else build_tiny_model(Path(scratch) / name, tokenizer=load_tokenizer(tiny), **MODELS[name])
            )
            config = RunConfig.load(ROOT / "prorl_engine" / "configs" / "tiny.yaml").replace(
                model_path=str(folder), eval_every=0, checkpoint_every=10**6, steps=args.steps
            )
            for ranks in (int(r) for r in args.ranks.split(",")):
                run_dir = Path(scratch) / f"{name}-{ranks}"
                run_dir.mkdir()
                (run_dir / "config.yaml").write_text(config.to_yaml())
                command = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc-per-node={ranks}",
                    __file__,
                    "--rank-of",
                    str(run_dir),
                    "--steps",
                    str(args.steps),
                ]
                environment = {**os.environ, "PYTHONPATH": str(ROOT)}
                done = subprocess.run(command, capture_output=True, text=True, env=environment)
                if done.returncode:
                    print(f"{name} x{ranks}: failed\n{done.stderr[-2000:]}")
                    continue
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{name:>5} ranks {ranks}: {figures['steps_per_s']:.3f} steps/s, "
                    f"{figures['collective_share']:.0%} of rank 0's step in collectives"
                )


if __name__ == "__main__":
    if "--rank-of" in sys.argv:
        rank_parser = argparse.ArgumentParser()
        rank_parser.add_argument("--rank-of", type=Path)
        rank_parser.add_argument("--steps", type=int)
        rank_args = rank_parser.parse_args()
        rank_main(rank_args.rank_of, rank_args.steps)
    else:
        main()
