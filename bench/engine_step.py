"""Throughput of one ProRL step on the tiny config: rollout tokens/s, train tokens/s, peak memory.

    .venv/bin/python bench/engine_step.py [--config prorl_engine/configs/tiny.yaml] [--steps 5]

Prints figures; asserts nothing. Rollout tokens/s counts generated response tokens per second of
rollout (generation + scoring); train tokens/s counts response tokens of the kept groups times the
forward/backward passes over them (one pass per token per step: each minibatch sees its tokens once)
per second of update time. Peak memory is the process's maximum resident set size (CPU) or
torch.cuda.max_memory_allocated (GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prorl_engine.config import RunConfig  # noqa: E402
from prorl_engine.events import JsonlSink  # noqa: E402
from prorl_engine.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="prorl_engine/configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is several times faster than 2 on a 2-core machine with any other load)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = RunConfig.load(args.config).replace(steps=args.steps, eval_every=0, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlSink(Path(tmp))
        trainer = Trainer(config, tmp, sink)
        trainer.train()
        sink.close()
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]

    rows = rows[1:] if len(rows) > 1 else rows  # the first step pays one-off warm-up costs
    rollout_s = sum(r["timing/rollout_s"] for r in rows)
    train_s = sum(r["timing/train_s"] for r in rows)
    G = config.samples_per_prompt
    generated = sum(r["length/mean"] * config.prompts_per_step * G * r["sampling/generation_batches"] for r in rows)
    trained = sum(r["length/mean"] * r["sampling/kept_groups"] * G for r in rows)
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(f"config               {args.config} (B={config.prompts_per_step}, G={G}, T={config.max_response_tokens})")
    print(f"device, threads      {trainer.device}, {torch.get_num_threads()}")
    print(f"steps measured       {len(rows)} (after one warm-up step)")
    print(f"rollout tokens/s     {generated / rollout_s:,.0f}  ({generated:,.0f} tokens in {rollout_s:.2f} s)")
    print(
        f"train tokens/s       {trained / train_s:,.0f}  ({trained:,.0f} tokens in {train_s:.2f} s)"
        if train_s
        else "train tokens/s       n/a (no group kept)"
    )
    print(f"step time            {(rollout_s + train_s) / len(rows):.3f} s")
    print(f"peak memory          {peak_mb:,.0f} MiB")


if __name__ == "__main__":
    main()
