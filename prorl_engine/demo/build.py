"""Build the demo's base model into a `save_pretrained` folder, reproducibly from a seed.

    prorl base-model --out DIR [--seed 0] [--sft-steps 1600] [--direct-fraction 0.4]
                     [--guess-error-rate 1.0] [--guess-offset 11 40] [--padded-fraction 0]
                     [--padding 1 3] [--held-out-seeds 0] [--threads 1] [--force]
    python -m prorl_engine.demo --out DIR [the same options]

All on the CPU: generate the problems (`demo.problems`, the demo run's held-out questions left
out), train a byte-level BPE tokenizer on them, create a randomly initialised Qwen2, fine-tune it
(`demo.sft`), save it in bfloat16 with its tokenizer, and write `build_info.json` (recipe, final
loss, held-out pass@k with the spec's evaluation protocol, timings and versions). A folder that
already holds a finished build of the same recipe is returned as it is: `model_path: base:<folder>`
calls `build_base_model` on every run. A build never writes inside the installed prorl_engine
package: the committed build (`DEMO_MODEL_DIR`) is read, never rebuilt in place.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import prorl_engine
from prorl_engine.demo.problems import PADDING, RL_SEED, TASKS, Problem, generate_problems, held_out_examples
from prorl_engine.demo.sft import ModelShape, encode_pair, make_tokenizer, sft
from prorl_engine.evaluation import evaluate_model_folders
from prorl_engine.tiny import build_tiny_model

# The committed demo build's recipe (the defaults of build_base_model and of the command).
DEMO_BUILD: dict[str, Any] = {
    "sft_steps": 1600,
    "direct_fraction": 0.4,
    "guess_error_rate": 1.0,
    "guess_offset": (11, 40),
    "padded_fraction": 0.0,  # padded builds also set the number of redundant steps (`--padding`)
    "held_out_seeds": (RL_SEED,),  # RL seeds whose held-out splits the SFT data leaves out
}
KNOBS = tuple(key for key in DEMO_BUILD if key != "sft_steps")  # what shapes the SFT data
SFT_EXAMPLES_PER_TASK = 9000
PACKAGE_DIR = Path(prorl_engine.__file__).resolve().parent
DEMO_MODEL_DIR = PACKAGE_DIR / "configs" / "demo-base"  # the committed build (seed 0)
PADDED_MODEL_DIR = PACKAGE_DIR / "configs" / "demo-base-padded"  # the claims demo's base (demo-claims.yaml)
# What an older build_info.json may lack: the values those builds used.
_RECIPE_DEFAULTS = {
    "direct_fraction": 0.0,
    "guess_error_rate": 0.0,
    "guess_offset": [1, 10],
    "padded_fraction": 0.0,
    "padding": list(PADDING),
    "held_out_seeds": [RL_SEED],
}


def held_out_pass_at_k(
    folder: Path,
    *,
    n: int = 8,
    ks: Sequence[int] = (1, 8),
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 64,
    seed: int = 0,
    rl_seed: int = RL_SEED,
) -> dict[str, float]:
    """The engine's evaluation of the model saved in `folder` (same verifiers, decoding and pass@k,
    on the CPU) on the demo's held-out split: what the demo run reports at its first evaluation, up
    to sampling noise.

    Returns `<task>/pass@k`, `all/pass@k` and `all/mean_length` (tokens), rounded to 4 digits.
    """
    reports = evaluate_model_folders(
        {"base": folder},
        held_out_examples(rl_seed),
        n=n,
        ks=list(ks),
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        format_penalty=-0.5,
        truncated_reward=0.0,
        seed=seed,
        device="cpu",
        batch_size=128,
    )
    wanted = [f"{name}/pass@{k}" for name in (*TASKS, "all") for k in ks] + ["all/mean_length"]
    return {key: round(reports["base"].metrics[f"eval/{key}"], 4) for key in wanted}


def build_base_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sft_steps: int = DEMO_BUILD["sft_steps"],
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    examples_per_task: int = SFT_EXAMPLES_PER_TASK,
    direct_fraction: float = DEMO_BUILD["direct_fraction"],
    guess_error_rate: float = DEMO_BUILD["guess_error_rate"],
    guess_offset: tuple[int, int] = DEMO_BUILD["guess_offset"],
    padded_fraction: float = DEMO_BUILD["padded_fraction"],
    padding: tuple[int, int] = PADDING,
    held_out_seeds: Sequence[int] = DEMO_BUILD["held_out_seeds"],
    shape: ModelShape | None = None,
    eval_samples: int = 8,
    threads: int = 1,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the demo's base model into `out_dir` (a save_pretrained folder) and return its path.

    A folder that already holds a finished build of the same recipe (seed, steps, data knobs) is
    returned as it is (a cache), unless `force`. The held-out splits of the RL seeds in
    `held_out_seeds` are left out of the SFT data (a run of any of those seeds evaluates on
    problems the model never saw; its held-out pass@k is still reported for seed 0). `shape` is
    the Qwen2 size (default: `ModelShape()`).
    Raises BuildRefused, before writing anything, when it would build inside the installed package.
    Deterministic given `seed` and the thread count on one machine (with more threads, float sums
    may run in another order and change the bytes).
    """
    out = Path(out_dir)
    recipe = {
        "seed": seed,
        "sft_steps": sft_steps,
        "direct_fraction": direct_fraction,
        "guess_error_rate": guess_error_rate,
        "guess_offset": list(guess_offset),
        "padded_fraction": padded_fraction,
        "padding": list(padding),
        "held_out_seeds": list(held_out_seeds),
    }
    if not force and finished_build(out, recipe):
        return out
    refuse_package_folder(out)
    shape = shape or ModelShape()
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.time()
    held_out = held_out_examples()
    problems = sft_problems(
        examples_per_task,
        seed,
        direct_fraction=direct_fraction,
        guess_error_rate=guess_error_rate,
        guess_offset=guess_offset,
        padded_fraction=padded_fraction,
        padding=padding,
        held_out_seeds=held_out_seeds,
    )
    tokenizer = make_tokenizer(problems[:3000], shape.vocab_size)
    pairs = [encode_pair(tokenizer, p) for p in problems]

    with tempfile.TemporaryDirectory() as scratch:  # build_tiny_model reuses a folder it finds: start clean
        build_tiny_model(
            scratch,
            arch="qwen2",
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            max_positions=shape.max_positions,
            seed=seed,
            tokenizer=tokenizer,
        )
        model = AutoModelForCausalLM.from_pretrained(scratch, local_files_only=True, dtype=torch.float32)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"base model: {parameters / 1e6:.2f}M parameters, {len(pairs)} SFT examples, vocab {len(tokenizer)}")

    losses = sft(
        model,
        pairs,
        steps=sft_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup=min(50, sft_steps // 10 + 1),
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        log=log,
    )
    sft_seconds = time.time() - started
    (out / "build_info.json").unlink(missing_ok=True)  # a build is finished only once its info is written
    model.to(torch.bfloat16).save_pretrained(out)  # half the bytes; the engine loads it as float32
    tokenizer.save_pretrained(out)

    report = held_out_pass_at_k(out, n=eval_samples, ks=sorted({1, eval_samples}), seed=seed)  # what ships
    log("held-out " + "  ".join(f"{key} {value}" for key, value in report.items()))
    info = {
        **recipe,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "examples": len(pairs),
        "parameters": parameters,
        "shape": asdict(shape),
        "tasks": TASKS,
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "held_out": {
            "prompts": len(held_out),
            "samples_per_prompt": eval_samples,
            "temperature": 0.6,
            "top_p": 0.95,
            "rl_seed": RL_SEED,
            **report,
        },
        "sft_minutes": round(sft_seconds / 60, 2),
        "total_minutes": round((time.time() - started) / 60, 2),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def sft_problems(
    examples_per_task: int, seed: int, held_out_seeds: Sequence[int] = (RL_SEED,), **knobs: Any
) -> list[Problem]:
    """The SFT data of a build: `generate_problems` with the held-out questions of the demo runs
    seeded `held_out_seeds` left out."""
    exclude = frozenset(
        e.metadata["entry"]["question"] for rl_seed in held_out_seeds for e in held_out_examples(rl_seed)
    )
    return generate_problems(examples_per_task, seed, exclude=exclude, **knobs)


def sft_corpus() -> list[str]:
    """The committed build's SFT data as text (each prompt, then its target response): the
    reference corpus `novelty_corpus: demo_sft` measures the demo run's novelty against."""
    knobs = {key: DEMO_BUILD[key] for key in KNOBS}  # held_out_seeds among them
    return [f"{p.prompt}\n{p.response}" for p in sft_problems(SFT_EXAMPLES_PER_TASK, 0, **knobs)]


def padded_sft_corpus() -> list[str]:
    """The claims demo's base model's SFT data as text (`novelty_corpus: demo_padded_sft`): the
    committed padded build, its problems made again from the recipe its build_info.json records."""
    return build_sft_corpus(PADDED_MODEL_DIR)


def build_sft_corpus(folder: Path) -> list[str]:
    """The SFT data of the build in `folder` (prompt, then target response, per problem), made again
    from its build_info.json: the seed and data knobs fix every problem (`sft_problems`)."""
    info = json.loads((Path(folder) / "build_info.json").read_text(encoding="utf-8"))
    knobs = {key: info.get(key, _RECIPE_DEFAULTS.get(key)) for key in (*KNOBS, "padding")}
    knobs["guess_offset"], knobs["padding"] = tuple(knobs["guess_offset"]), tuple(knobs["padding"])
    problems = sft_problems(SFT_EXAMPLES_PER_TASK, info["seed"], **knobs)
    return [f"{p.prompt}\n{p.response}" for p in problems]


def finished_build(folder: Path, recipe: dict[str, Any]) -> bool:
    """True when `folder` holds a finished build of exactly this recipe (seed, steps, data knobs)."""
    info_path = folder / "build_info.json"
    if not (info_path.is_file() and (folder / "config.json").is_file()):
        return False
    info = json.loads(info_path.read_text(encoding="utf-8"))
    wanted = json.loads(json.dumps(recipe))  # as build_info.json holds it: tuples become lists
    return all(info.get(key, _RECIPE_DEFAULTS.get(key)) == value for key, value in wanted.items())


class BuildRefused(ValueError):
    """A build the builder will not make (see `refuse_package_folder`)."""


def refuse_package_folder(out: Path, package_dir: Path = PACKAGE_DIR) -> None:
    """Raise BuildRefused when `out` lies inside `package_dir` (the installed prorl_engine package):
    its files are what was installed, and a build there would overwrite or add to them."""
    if out.resolve().is_relative_to(package_dir.resolve()):
        raise BuildRefused(
            f"model_path: refusing to build the base model inside the installed prorl_engine package "
            f"({out}); build it elsewhere (for example `prorl base-model --out var/models/demo-base`)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The `prorl base-model` command: build (or find cached) the base model in --out."""
    parser = argparse.ArgumentParser(prog="prorl base-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (outside the installed package)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, tokenizer, weights and SFT order")
    parser.add_argument("--sft-steps", type=int, default=DEMO_BUILD["sft_steps"], help="SFT optimizer steps (batch 32)")
    parser.add_argument(
        "--direct-fraction",
        type=float,
        default=DEMO_BUILD["direct_fraction"],
        help="share of SFT solutions that are the bare answer tag (no work shown)",
    )
    parser.add_argument(
        "--guess-error-rate",
        type=float,
        default=DEMO_BUILD["guess_error_rate"],
        help="share of those bare answers that are wrong (an unreliable answer key)",
    )
    parser.add_argument(
        "--guess-offset",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=DEMO_BUILD["guess_offset"],
        help="a wrong bare answer is off by LOW to HIGH, either sign",
    )
    parser.add_argument(
        "--padded-fraction",
        type=float,
        default=DEMO_BUILD["padded_fraction"],
        help="share of worked solutions padded with redundant steps (identities such as 114 + 0 = 114)",
    )
    parser.add_argument(
        "--padding",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=PADDING,
        help="a padded solution holds LOW to HIGH redundant steps",
    )
    parser.add_argument(
        "--held-out-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        default=list(DEMO_BUILD["held_out_seeds"]),
        help="RL seeds whose held-out splits stay out of the SFT data (runs of several seeds: list them all)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the committed build used 1; another count may give other bytes)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if --out holds a finished build")
    args = parser.parse_args(argv)
    try:
        folder = build_base_model(
            args.out,
            seed=args.seed,
            sft_steps=args.sft_steps,
            direct_fraction=args.direct_fraction,
            guess_error_rate=args.guess_error_rate,
            guess_offset=tuple(args.guess_offset),
            padded_fraction=args.padded_fraction,
            padding=tuple(args.padding),
            held_out_seeds=tuple(args.held_out_seeds),
            threads=args.threads,
            force=args.force,
        )
    except BuildRefused as exc:
        parser.error(str(exc))
    print(f"base model: {folder}")
    return 0
