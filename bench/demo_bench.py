"""The demo run, measured: held-out pass@1 and pass@8 before and after, minutes, tokens/s.

    .venv/bin/python bench/demo_bench.py [--config prorl_engine/configs/demo.yaml] [--steps N] [--out var/bench/demo]

Prints figures; asserts nothing. "Before" is the base model evaluated with the run's own settings
(the engine's evaluation: eval_samples per held-out prompt at eval_temperature / eval_top_p);
"after" is the same evaluation of the policy after the last step. Tokens/s counts generated
response tokens (every group sampled, kept or dropped) per second of the whole run, evaluations
included; the trainer's own throughput/tokens_per_s (rollout + update time only) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prorl_engine.ablations.runs import evaluate_now  # noqa: E402
from prorl_engine.config import RunConfig  # noqa: E402
from prorl_engine.events import FanoutSink, JsonlSink, MemorySink  # noqa: E402
from prorl_engine.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="prorl_engine/configs/demo.yaml")
    parser.add_argument("--steps", type=int, default=None, help="default: the config's steps")
    parser.add_argument("--out", default="var/bench/demo", help="run folder (replaced)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = RunConfig.load(args.config)
    if args.steps:
        config = config.replace(steps=args.steps)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    recorder = MemorySink()
    sink = FanoutSink(JsonlSink(out), recorder)
    started = time.time()
    trainer = Trainer(config, out, sink)
    before = evaluate_now(trainer)
    trainer.train()
    after = evaluate_now(trainer)
    minutes = (time.time() - started) / 60
    sink.close()

    tokens = sum(row["sampling/generated_tokens"] for row in recorder.metrics_rows)
    trainer_tps = [row["throughput/tokens_per_s"] for row in recorder.metrics_rows]
    print(
        f"demo: {config.steps} steps, B={config.prompts_per_step} G={config.samples_per_prompt} "
        f"T={config.max_response_tokens}, {torch.get_num_threads()} threads, {after['eval/prompts']} held-out prompts "
        f"x {config.eval_samples} samples"
    )
    print(f"{'':26s}{'before':>10s}{'after':>10s}")
    for key in (
        [f"eval/all/pass@{j}" for j in config.eval_k]
        + ["eval/all/mean_length", "eval/all/shows_work_frac"]
        + sorted(
            key for key in before if key.endswith("/pass@1") and key not in ("eval/all/pass@1", "eval/logic/pass@1")
        )
    ):
        print(f"{key:26s}{before[key]:10.3f}{after[key]:10.3f}")
    print(f"minutes (evaluations included): {minutes:.1f}")
    print(
        f"generated tokens: {tokens:,.0f}; tokens/s over the run: {tokens / (minutes * 60):.0f}; "
        f"trainer throughput/tokens_per_s (mean): {sum(trainer_tps) / len(trainer_tps):.0f}"
    )
    (out / "bench.json").write_text(
        json.dumps({"before": before, "after": after, "minutes": minutes, "tokens": tokens}, indent=2), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
