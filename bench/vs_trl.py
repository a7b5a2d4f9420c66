"""The engine against TRL's GRPOTrainer on the same model and the same work per RL step.

    .venv/bin/pip install -e '.[bench]'        # TRL: a benchmark-only extra, never a runtime dependency
    .venv/bin/python bench/vs_trl.py [--repetitions 3] [--steps 3] [--threads 1 2] [--sampler generate]

Both sides train the same random Qwen2 (hidden 256, 4 layers, a 512-token vocabulary from a locally
trained tokenizer: offline) on the same reasoning-gym prompts, as close to ProRL v2 as TRL allows:
8 prompts x 8 samples, at most 64 new tokens, temperature 1.2, 4 minibatch updates per rollout
batch, eps 0.2 / 0.28, beta 1e-4, token-mean loss (TRL's "dapo"), float32 (`--bf16`: both sides
update under bfloat16 autocast), dynamic sampling off on both (TRL has no refill). Each measurement
is a fresh process, one after the other (engine and TRL alternate which goes first), at each thread
count, `--repetitions` times. A process runs `--steps` RL steps and reports the median wall time of
those after the first (warm-up), the generated tokens per second over them (and per CPU second of
the process: on a loaded machine, closer to what it would do alone), and its peak resident memory.
The last line is the median over the (engine, TRL) pairs of the engine's tokens/s over TRL's.

Prints figures; asserts nothing. The machine's other load shows in the spread of the pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS, SAMPLES, NEW_TOKENS, UPDATES = 8, 8, 64, 4
TEMPERATURE, EPS_LOW, EPS_HIGH, BETA, LEARNING_RATE = 1.2, 0.2, 0.28, 1e-4, 1e-6
TASK = {"task": "chain_sum", "source": "reasoning_gym", "weight": 1.0, "size": 512, "eval_size": 8}


def build_model(folder: Path) -> Path:
    """The random 4.33M-parameter Qwen2 both sides train (reused when already built)."""
    from prorl_engine.tiny import build_tiny_model

    return build_tiny_model(folder, hidden_size=256, num_layers=4, num_heads=4, vocab_size=512)


def engine_config(model: Path, steps: int, bf16: bool = False):
    from prorl_engine.config import RunConfig

    return RunConfig.from_dict(
        {
            "model_path": str(model),
            "data": [TASK],
            "steps": steps,
            "prompts_per_step": PROMPTS,
            "samples_per_prompt": SAMPLES,
            "max_response_tokens": NEW_TOKENS,
            "rollout_batch_size": PROMPTS * SAMPLES,
            "updates_per_step": UPDATES,
            "micro_batch_size": PROMPTS * SAMPLES // UPDATES,
            "temperature": TEMPERATURE,
            "eps_low": EPS_LOW,
            "eps_high": EPS_HIGH,
            "beta": BETA,
            "learning_rate": LEARNING_RATE,
            "dynamic_sampling": False,
            "reset_interval": None,
            "eval_every": 0,
            "checkpoint_every": 10**6,
            "device": "cpu",
            "dtype": "float32",
            "bf16_autocast": bf16,
        }
    )


def run_engine(model: Path, steps: int, bf16: bool, sampler: str = "lean") -> tuple[list[float], list[int]]:
    """Wall seconds and generated tokens of each RL step of the engine's Trainer; `sampler` lean is
    its own decode loop (prorl_engine/decode.py), generate is Hugging Face `generate`."""
    from prorl_engine.events import NullSink
    from prorl_engine.trainer import Trainer

    class Clock(NullSink):
        def __init__(self):
            self.times, self.tokens = [], []

        def metrics(self, step: int, values: dict[str, float]) -> None:
            self.times.append(now())
            self.tokens.append(int(values["sampling/generated_tokens"]))

    with tempfile.TemporaryDirectory() as run_dir:
        clock = Clock()
        trainer = Trainer(engine_config(model, steps, bf16), run_dir, clock)
        trainer.backend.lean = sampler == "lean"
        clock.times = [now()]  # the steps, not the set-up
        trainer.train()
    return durations(clock.times), clock.tokens


def run_trl(model: Path, steps: int, bf16: bool, sampler: str = "") -> tuple[list[float], list[int]]:
    """Wall seconds and generated tokens of each RL step (one generation, UPDATES optimizer steps) of
    TRL's GRPOTrainer on the engine's first prompts, formatted as the engine formats them."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prorl_engine.data.sources import TrainingMix
    from prorl_engine.modeling import load_policy, load_tokenizer
    from prorl_engine.prompts import format_prompt
    from prorl_engine.rewards import score_all

    tokenizer = load_tokenizer(model)
    config = engine_config(model, steps)
    examples = TrainingMix(config.data, config.seed).draw(PROMPTS * steps)
    rows = [{"prompt": format_prompt(tokenizer, e.prompt), "example": i} for i, e in enumerate(examples)]
    tokens: list[int] = []

    def reward(completions, completion_ids, example, **_):
        """The engine's own verifiers and reward rules on the same examples: the same scoring work."""
        tokens.append(sum(len(ids) for ids in completion_ids))
        truncated = [tokenizer.eos_token_id not in ids for ids in completion_ids]
        owners = [examples[i] for i in example]
        scores = score_all(owners, completions, truncated, config.format_penalty, config.truncated_reward)
        return [s.reward for s in scores]

    class Clock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.times.append(now())

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % UPDATES == 0:  # the last minibatch update of a rollout batch
                self.times.append(now())

    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=PROMPTS * SAMPLES // UPDATES,
            gradient_accumulation_steps=1,
            num_generations=SAMPLES,
            generation_batch_size=PROMPTS * SAMPLES,  # steps_per_generation = 64 / 16 = UPDATES
            max_completion_length=NEW_TOKENS,
            temperature=TEMPERATURE,
            top_p=1.0,
            epsilon=EPS_LOW,
            epsilon_high=EPS_HIGH,
            beta=BETA,
            loss_type="dapo",  # token-mean over the whole batch, as the engine's default aggregation
            learning_rate=LEARNING_RATE,
            max_steps=steps * UPDATES,
            use_cpu=True,
            bf16=bf16,  # autocast on float32 weights, as the engine's bf16_autocast
            report_to="none",
            save_strategy="no",
            logging_steps=UPDATES,
            shuffle_dataset=False,
            dataloader_num_workers=0,
            seed=0,
        )
        clock = Clock()
        policy = load_policy(model, "float32", torch.device("cpu"))
        trainer = GRPOTrainer(
            model=policy,
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[clock],
        )
        trainer.train()
    return durations(clock.times), tokens


def now() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a loaded machine the CPU time of a 1-thread
    process is what it would have taken alone."""
    return time.perf_counter(), time.process_time()


def durations(times: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(times, times[1:])]


def measure(side: str, model: Path, steps: int, threads: int, bf16: bool, sampler: str) -> dict:
    """One process's figures (run as `--side`): after the warm-up step, median step seconds,
    generated tokens/s over the measured steps, and the process's peak RSS."""
    import torch

    torch.set_num_threads(threads)
    seconds, tokens = {"engine": run_engine, "trl": run_trl}[side](model, steps, bf16, sampler)
    (wall, cpu), tokens = zip(*seconds[1:]), tokens[1:]
    return {
        "side": side,
        "threads": threads,
        "step_s": statistics.median(wall),
        "tokens_per_s": sum(tokens) / sum(wall),
        "tokens_per_cpu_s": sum(tokens) / sum(cpu),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def spawn(side: str, model: Path, steps: int, threads: int, bf16: bool, sampler: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--side", side, "--model", str(model), "--steps", str(steps)]
    command += ["--bf16"] if bf16 else []
    command += ["--sampler", sampler]
    done = subprocess.run([*command, "--threads", str(threads)], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the {side} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="RL steps per process; the first is a warm-up")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", type=Path, default=ROOT / "var" / "models" / "bench-qwen2-h256-l4")
    parser.add_argument(
        "--bf16", action="store_true", help="both sides update under bfloat16 autocast (float32 weights)"
    )
    parser.add_argument(
        "--sampler",
        choices=("lean", "generate"),
        default="lean",
        help="the engine's sampler: its lean decode loop (the default) or Hugging Face generate",
    )
    parser.add_argument("--side", choices=("engine", "trl"), help=argparse.SUPPRESS)  # one measuring process
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: at least 2 (the first step is a warm-up)")
    if args.side:
        figures = measure(args.side, build_model(args.model), args.steps, args.threads[0], args.bf16, args.sampler)
        print(json.dumps(figures))
        return

    model = build_model(args.model)
    precision = "bf16 autocast" if args.bf16 else "float32"
    work = f"{PROMPTS} prompts x {SAMPLES} samples, <= {NEW_TOKENS} new tokens, {UPDATES} updates, {precision}"
    work += f", engine sampler {args.sampler}"
    print(f"model {model}; {work}")
    print(f"{'rep':>3} {'thr':>3} {'side':>6} {'step s':>7} {'tokens/s':>9} {'tokens/CPU s':>12} {'peak RSS MiB':>12}")
    ratios: dict[int, list[float]] = {threads: [] for threads in args.threads}
    cpu_ratios: dict[int, list[float]] = {threads: [] for threads in args.threads}
    for repetition in range(args.repetitions):
        for threads in args.threads:
            order = ("engine", "trl") if repetition % 2 == 0 else ("trl", "engine")
            figures = {side: spawn(side, model, args.steps, threads, args.bf16, args.sampler) for side in order}
            for side in order:
                f = figures[side]
                print(
                    f"{repetition:>3} {threads:>3} {side:>6} {f['step_s']:>7.2f} "
                    f"{f['tokens_per_s']:>9.0f} {f['tokens_per_cpu_s']:>12.0f} {f['peak_rss_mib']:>12.0f}",
                    flush=True,
                )
            ratios[threads].append(figures["engine"]["tokens_per_s"] / figures["trl"]["tokens_per_s"])
            cpu_ratios[threads].append(figures["engine"]["tokens_per_cpu_s"] / figures["trl"]["tokens_per_cpu_s"])
    for threads in args.threads:
        wall, cpu = ratios[threads], cpu_ratios[threads]
        print(
            f"{threads} thread(s): engine/TRL tokens/s {', '.join(f'{r:.2f}' for r in wall)} (median "
            f"{statistics.median(wall):.2f}); per CPU second {', '.join(f'{r:.2f}' for r in cpu)}"
        )
    every = [r for values in ratios.values() for r in values]
    print(f"engine/TRL tokens_per_s ratio: {statistics.median(every):.2f}")


if __name__ == "__main__":
    main()
