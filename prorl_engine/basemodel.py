"""The demo's base model: a small Qwen2 taught three reasoning-gym arithmetic tasks by supervised
fine-tuning, built so that ProRL has room (and signal) to improve it.

    python -m prorl_engine.basemodel [--out DIR] [--seed 0] [--sft-steps 1600] [--direct-fraction 0.4]
                                     [--guess-error-rate 1.0] [--guess-offset 11 40] [--force]
    prorl base-model --out DIR [--seed 0]

The seed-0 build is committed in prorl_engine/configs/demo-base (4.9 MB of bfloat16 weights, with
its build_info.json); configs/demo.yaml names it as `base:prorl_engine/configs/demo-base`, so the
engine rebuilds it there only if it is missing. The committed build took 14 minutes on the 2-core
development machine with 1 thread, the other core busy (1,600 SFT steps of batch 32, then its
held-out evaluation); rebuilt with the defaults it came out byte for byte the same (14.7 minutes).
Two threads are faster on an idle machine (an earlier build of the same size: 8.7 minutes) but
need not give the same bytes (float sums may run in another order; not compared).

What it does, all on the CPU and reproducible from `--seed`:
1. generates reasoning-gym problems of three tasks (`TASKS`, easy difficulty settings) and writes a
   solution for each in one of two styles: worked (one line of intermediate results, then
   `<answer>X</answer>`) or, for a `--direct-fraction` of them, a bare guess (the answer tag alone;
   a `--guess-error-rate` of the guesses is off by `--guess-offset` LOW to HIGH, either sign);
2. trains a byte-level BPE tokenizer (`tiny.train_tokenizer`) on prompts and solutions;
3. creates a randomly initialised Qwen2 of a few million parameters;
4. trains it with a plain PyTorch loop (AdamW, cross-entropy on response tokens only) on prompts in
   exactly the engine's format (`modeling.format_prompt`);
5. measures held-out pass@1 and pass@8 (temperature 0.6, top_p 0.95: the spec's evaluation
   protocol) on the held-out split that the demo run (configs/demo.yaml) evaluates on, and writes
   a `save_pretrained` folder plus `build_info.json`.

Why two styles: a few-million-parameter transformer cannot add three 2-digit numbers in one token's
worth of computation, but it can do one operation per step when the intermediate results are
written out ("98 + 93 = 191, 191 - 77 = 114"). The demo build (`DEMO_BUILD`) learns both styles by
imitation: 60% of its SFT solutions are worked, 40% are bare answers copied from an unreliable
answer key, every one of them wrong by 11 to 40. So the base model guesses on about half of its
samples (held out, temperature 0.6: 45% of its responses show work), and its guesses are worthless,
while its worked answers are right about a quarter of the time; only a reward can tell it which style
pays. That is the situation RL with verifiable rewards is for: the base model can already reason
but does not reliably choose to, and every sample spent on a guess is a wasted try, so pass@k has
room to rise at every k, not only pass@1. Half of the worked solutions start with a fixed preamble
sentence that adds tokens and nothing else, so the cosine length penalty has something to remove
that costs no accuracy (spec section 13, claim 3).

Why the guesses are always wrong, and far off: an earlier build copied guesses that were right half
the time and off by 1 to 10 otherwise. Its guesses then spread over the numbers near the answer and
hit small answers within 8 to 16 tries, so RL that taught it to work problems out doubled pass@1
(0.117 -> 0.242) but lowered pass@8 (0.434 -> 0.382): the coverage that guessing gave was gone.
Measured on the committed build by prefilling the preamble (forcing the worked style, 16 samples per
held-out prompt): pass@1 0.236, pass@8 0.512, against 0.106 and 0.360 as it samples on its own,
so learning to work raises the ceiling at every k. (With guesses off by 11 to 40 and 60% worked
solutions; 50% gave a base model that guessed two thirds of the time and was worse when it worked.)

The held-out questions of the demo's evaluation split are excluded from the SFT data, so the
model's held-out pass@k (before and after RL) is measured on problems it never saw.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prorl_engine.config import DataSource
from prorl_engine.modeling import format_prompt
from prorl_engine.tiny import EOS, build_tiny_model, train_tokenizer

# The three RL tasks and their difficulty (reasoning-gym generator parameters). Easy settings:
# the committed 2.4M-parameter build gets about a tenth of held-out problems right on one try
# (pass@1 0.10, pass@8 0.36; chain_sum, with its 2-digit sums, is the hardest).
TASKS: dict[str, dict[str, Any]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "basic_arithmetic": {
        "min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1,
        "operators": ["+", "-", "*"], "allow_parentheses": True, "allow_negation": True,
    },
    "simple_equations": {
        "min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 9,
        "operators": ["+", "-", "*"], "operators_weights": [0.45, 0.45, 0.1],
    },
}
INSTRUCTION = DataSource.instruction  # the engine's default: "\nPut your final answer inside <answer></answer> tags."
PREAMBLE = "Let me work this out one step at a time.\n"  # verbose style: tokens that carry nothing
# The committed demo build's recipe (the defaults of build_base_model and of the command).
DEMO_BUILD: dict[str, Any] = {"sft_steps": 1600, "direct_fraction": 0.4, "guess_error_rate": 1.0, "guess_offset": (11, 40)}
DEMO_TRAIN_SIZE = 2000   # training prompts per task in the demo mix
DEMO_EVAL_SIZE = 32      # held-out prompts per task in the demo mix
RL_SEED = 0              # the demo run's seed: its held-out split is excluded from SFT
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = REPO_ROOT / "prorl_engine" / "configs" / "demo-base"  # the committed build (seed 0)


@dataclass(frozen=True)
class Problem:
    """One reasoning-gym item with the prompt the engine shows and the SFT target response."""

    task: str
    entry: dict[str, Any]
    prompt: str      # question + instruction (what `Example.prompt` holds)
    response: str    # worked line + answer tag, without eos


@dataclass(frozen=True)
class ModelShape:
    """Qwen2 size; the defaults give 2.44M parameters (a ~400-token vocabulary: the BPE saturates)."""

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 512
    max_positions: int = 512  # >= max_prompt_tokens (256) + the demo's response budget


def demo_sources(train_size: int = DEMO_TRAIN_SIZE, eval_size: int = DEMO_EVAL_SIZE) -> list[dict[str, Any]]:
    """The demo's training mix as RunConfig `data` entries (configs/demo.yaml holds the same)."""
    return [
        {"task": task, "source": "reasoning_gym", "weight": 1.0, "size": train_size, "params": dict(params),
         "eval_size": eval_size}
        for task, params in TASKS.items()
    ]


# --- worked solutions ------------------------------------------------------------------------

_BINARY_OPS: dict[type, tuple[str, Callable[[int, int], int]]] = {
    ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul), ast.Div: ("/", operator.floordiv),  # reasoning-gym divides exactly
}


def arithmetic_steps(expression: str) -> tuple[list[str], int]:
    """Evaluate an integer expression one operation at a time, in Python's order.

    "98 + 93 - 77" -> (["98 + 93 = 191", "191 - 77 = 114"], 114). Negating a literal or a bracket
    is folded into the value (no step of its own).
    """
    steps: list[str] = []

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
            left, right = value(node.left), value(node.right)
            symbol, apply = _BINARY_OPS[type(node.op)]
            result = apply(left, right)
            steps.append(f"{left} {symbol} {right} = {result}")
            return result
        raise ValueError(f"unsupported expression {expression!r}")

    result = value(ast.parse(expression, mode="eval").body)
    return steps, result


def equation_steps(equation: str, variable: str) -> tuple[list[str], int]:
    """Solve a linear equation a*x + b = c in at most two written steps.

    "8*t - 9 = 23" -> (["8*t = 23 + 9 = 32", "t = 32 / 8 = 4"], 4).
    """
    import sympy

    left, right = equation.split(" = ")
    x = sympy.Symbol(variable)
    expr = sympy.sympify(left, locals={variable: x})
    a, b, c = int(expr.coeff(x)), int(expr.subs(x, 0)), int(right)
    if a == 0 or (c - b) % a:
        raise ValueError(f"{equation!r} is not a linear equation with an integer solution")
    term = variable if a == 1 else f"-{variable}" if a == -1 else f"{a}*{variable}"
    steps, rest = [], c - b
    if b:
        steps.append(f"{term} = {c} {'-' if b > 0 else '+'} {abs(b)} = {rest}")
    if a != 1:
        steps.append(f"{variable} = {rest} / {a} = {rest // a}")
    if not steps:
        steps.append(f"{variable} = {c}")
    return steps, rest // a


def worked_solution(task: str, entry: dict[str, Any]) -> str:
    """The SFT target for one item: the intermediate results on one line, then the answer tag."""
    metadata = entry["metadata"]
    if task == "simple_equations":
        steps, result = equation_steps(metadata["equation"], metadata["variable"])
    else:
        steps, result = arithmetic_steps(metadata["expression"])
    if str(result) != str(entry["answer"]):
        raise ValueError(f"{task}: worked result {result} differs from reasoning-gym's {entry['answer']}")
    return ", ".join(steps) + f"\n<answer>{entry['answer']}</answer>"


def guess_offsets(low: int, high: int) -> tuple[int, ...]:
    """The errors of a wrong guess: every integer whose magnitude is in [low, high], either sign."""
    if not 1 <= low <= high:
        raise ValueError(f"guess offsets need 1 <= low <= high, got {low}..{high}")
    return tuple(d for d in range(-high, high + 1) if low <= abs(d))


def direct_solution(entry: dict[str, Any], offset: int = 0) -> str:
    """The answer with no work shown (`offset` added: a wrong guess). Every demo answer is an integer."""
    return f"<answer>{int(entry['answer']) + offset}</answer>"


def shows_work(response: str) -> bool:
    """True when a response writes at least one intermediate result before its answer tag."""
    return "=" in response.split("<answer>", 1)[0]


# --- data ------------------------------------------------------------------------------------

def generate_problems(
    count_per_task: int, seed: int, *, direct_fraction: float = 0.0, guess_error_rate: float = 0.0,
    guess_offset: tuple[int, int] = (1, 10), verbose_fraction: float = 0.5, exclude: frozenset[str] = frozenset(),
) -> list[Problem]:
    """`count_per_task` problems of every task, shuffled; questions in `exclude` are skipped.

    A `direct_fraction` of the solutions is the bare answer tag (the "guess" style), and a
    `guess_error_rate` of those guesses is off by `guess_offset` (low, high; an unreliable answer
    key); of the worked solutions, a `verbose_fraction` starts with the preamble sentence. Worked
    solutions are always right.

    Item i of a reasoning-gym dataset is drawn from Random(dataset_seed + i), so each task gets
    a dataset seed far from the RL seeds (0, 1, 2, ...) and from the other tasks'.
    """
    import reasoning_gym

    rng = random.Random(seed)
    offsets = guess_offsets(*guess_offset)
    problems = []
    for index, (task, params) in enumerate(TASKS.items()):
        dataset_seed = 1_000_003 * (seed + 1) + 100_000 * index
        dataset = reasoning_gym.create_dataset(task, size=2 * count_per_task, seed=dataset_seed, **params)
        kept = 0
        for item in range(len(dataset)):
            entry = dataset[item]
            if entry["question"] in exclude:
                continue
            if direct_fraction and rng.random() < direct_fraction:  # no draw at 0: older builds reproduce
                wrong = guess_error_rate and rng.random() < guess_error_rate
                response = direct_solution(entry, offset=rng.choice(offsets) if wrong else 0)
            else:
                response = (PREAMBLE if rng.random() < verbose_fraction else "") + worked_solution(task, entry)
            problems.append(Problem(task, entry, entry["question"] + INSTRUCTION, response))
            kept += 1
            if kept == count_per_task:
                break
    rng.shuffle(problems)
    return problems


def held_out_examples(rl_seed: int = RL_SEED) -> list:
    """The demo run's held-out split (what its `eval/...` metrics measure), as engine `Example`s."""
    from prorl_engine.data.sources import load_source

    examples = []
    for index, source in enumerate(demo_sources()):
        _, held_out = load_source(DataSource(**source), rl_seed + index)
        examples.extend(held_out)
    return examples


def tokenizer_corpus(problems: Sequence[Problem]) -> list[str]:
    """Prompts and responses as the model will see them (the format has no chat template)."""
    return [f"{p.prompt}\n{PREAMBLE}{p.response}" for p in problems]


def make_tokenizer(problems: Sequence[Problem], vocab_size: int):
    """`tiny.train_tokenizer`, with <answer> and </answer> made ordinary (non-special) tokens.

    They stay single tokens, and tools that decode with `skip_special_tokens=True` (Hugging Face
    pipelines, most chat front ends) keep them too; the engine itself decodes with
    `modeling.decode_response`, which keeps special tokens. Only <|endoftext|> (eos and pad) stays special.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    trained = train_tokenizer(tokenizer_corpus(problems), vocab_size=vocab_size)
    spec = json.loads(trained.backend_tokenizer.to_str())
    for token in spec["added_tokens"]:
        token["special"] = token["content"] == EOS
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOS, pad_token=EOS)


def encode_pair(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + eos), tokenised separately exactly as the engine does:
    it encodes `format_prompt(prompt)` and generates the response after it."""
    prompt_ids = tokenizer(format_prompt(tokenizer, problem.prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(problem.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, response_ids


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels), each (N, L); labels are -100 except on
    response tokens, so the loss is on the response only."""
    width = max(len(p) + len(r) for p, r in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (prompt, response) in enumerate(pairs):
        sequence = prompt + response
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        labels[row, len(prompt): len(sequence)] = torch.tensor(response)
    return input_ids, attention_mask, labels


# --- supervised fine-tuning ------------------------------------------------------------------

def sft(
    model: torch.nn.Module, pairs: Sequence[tuple[list[int], list[int]]], *, steps: int, batch_size: int,
    learning_rate: float, warmup: int, seed: int, pad_id: int, log: Callable[[str], None] = print,
) -> list[float]:
    """AdamW with linear warmup and cosine decay to 10%; returns the loss of every step.

    Batches walk through `pairs` in a seeded order (a new permutation per epoch).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pairs), generator=generator).tolist()
    cursor, losses = 0, []
    model.train()
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(pairs), generator=generator).tolist(), 0
        batch = [pairs[i] for i in order[cursor: cursor + batch_size]]
        cursor += batch_size
        input_ids, attention_mask, labels = collate(batch, pad_id)  # (N, L) each
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"sft step {step + 1}/{steps}  loss {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    return losses


# --- evaluation ------------------------------------------------------------------------------

def held_out_pass_at_k(
    model: torch.nn.Module, tokenizer, *, n: int = 8, ks: Sequence[int] = (1, 8), temperature: float = 0.6,
    top_p: float = 0.95, max_new_tokens: int = 64, seed: int = 0, rl_seed: int = RL_SEED,
) -> dict[str, float]:
    """The engine's own evaluation (same verifiers, decoding and pass@k) on the demo's held-out
    split: what the demo run reports at its first evaluation, up to sampling noise.

    Returns `<task>/pass@k`, `all/pass@k` and `all/mean_length` (tokens), rounded.
    """
    from prorl_engine.evaluation import evaluate
    from prorl_engine.rollout import HFGenerateBackend

    backend = HFGenerateBackend(model, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=128)
    report = evaluate(backend, tokenizer, held_out_examples(rl_seed), n=n, ks=list(ks), temperature=temperature,
                      top_p=top_p, max_new_tokens=max_new_tokens, format_penalty=-0.5, truncated_reward=0.0, seed=seed)
    wanted = [f"{name}/pass@{k}" for name in (*TASKS, "all") for k in ks] + ["all/mean_length"]
    return {key: round(report.metrics[f"eval/{key}"], 4) for key in wanted}


# --- the command -----------------------------------------------------------------------------

def build_base_model(
    out_dir: str | Path, *, seed: int = 0, sft_steps: int = DEMO_BUILD["sft_steps"], batch_size: int = 32,
    learning_rate: float = 2e-3, examples_per_task: int = 9000, direct_fraction: float = DEMO_BUILD["direct_fraction"],
    guess_error_rate: float = DEMO_BUILD["guess_error_rate"], guess_offset: tuple[int, int] = DEMO_BUILD["guess_offset"],
    shape: ModelShape = ModelShape(), eval_samples: int = 8,
    threads: int = 1, force: bool = False, log: Callable[[str], None] = print,
) -> Path:
    """Train the demo's base model into `out_dir` (a save_pretrained folder) and return its path.

    A folder that already holds a finished build of the same recipe (seed, steps, data knobs) is
    returned as it is (a cache: `model_path: base:<folder>` calls this on every run), unless `force`.
    Deterministic given `seed` and the thread count on one machine: the default (1 thread, as the
    committed build) rebuilt the committed weights and tokenizer byte for byte. Writes build_info.json beside
    the weights: seed, steps, final loss, held-out pass@1/pass@8 per task, timings and versions.
    """
    import transformers
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    recipe = {"seed": seed, "sft_steps": sft_steps, "direct_fraction": direct_fraction,
              "guess_error_rate": guess_error_rate, "guess_offset": list(guess_offset)}
    if not force and _finished_build(out, recipe):
        return out
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.time()
    held_out = held_out_examples()
    exclude = frozenset(e.metadata["entry"]["question"] for e in held_out)
    problems = generate_problems(examples_per_task, seed, direct_fraction=direct_fraction,
                                 guess_error_rate=guess_error_rate, guess_offset=guess_offset, exclude=exclude)
    tokenizer = make_tokenizer(problems[:3000], shape.vocab_size)
    pairs = [encode_pair(tokenizer, p) for p in problems]

    with tempfile.TemporaryDirectory() as scratch:  # build_tiny_model reuses a folder it finds: start clean
        build_tiny_model(scratch, arch="qwen2", hidden_size=shape.hidden_size, num_layers=shape.num_layers,
                         num_heads=shape.num_heads, max_positions=shape.max_positions, seed=seed, tokenizer=tokenizer)
        model = AutoModelForCausalLM.from_pretrained(scratch, local_files_only=True, dtype=torch.float32)
    parameters = sum(p.numel() for p in model.parameters())
    log(f"base model: {parameters / 1e6:.2f}M parameters, {len(pairs)} SFT examples, vocab {len(tokenizer)}")

    losses = sft(model, pairs, steps=sft_steps, batch_size=batch_size, learning_rate=learning_rate,
                 warmup=min(50, sft_steps // 10 + 1), seed=seed, pad_id=tokenizer.pad_token_id, log=log)
    sft_seconds = time.time() - started
    (out / "build_info.json").unlink(missing_ok=True)  # a build is finished only once its info is written
    model.to(torch.bfloat16).save_pretrained(out)  # half the bytes; the engine loads it as float32
    tokenizer.save_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)  # what ships

    report = held_out_pass_at_k(model, tokenizer, n=eval_samples, ks=sorted({1, eval_samples}), seed=seed)
    log("held-out " + "  ".join(f"{key} {value}" for key, value in report.items()))
    info = {
        **recipe, "batch_size": batch_size, "learning_rate": learning_rate,
        "examples": len(pairs), "parameters": parameters, "shape": asdict(shape), "tasks": TASKS,
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "held_out": {"prompts": len(held_out), "samples_per_prompt": eval_samples, "temperature": 0.6,
                     "top_p": 0.95, "rl_seed": RL_SEED, **report},
        "sft_minutes": round(sft_seconds / 60, 2), "total_minutes": round((time.time() - started) / 60, 2),
        "threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


# What an older build_info.json may lack: the values those builds used.
_RECIPE_DEFAULTS = {"direct_fraction": 0.0, "guess_error_rate": 0.0, "guess_offset": [1, 10]}


def _finished_build(folder: Path, recipe: dict[str, Any]) -> bool:
    """True when `folder` holds a finished build of exactly this recipe (seed, steps, data knobs)."""
    info_path = folder / "build_info.json"
    if not (info_path.is_file() and (folder / "config.json").is_file()):
        return False
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return all(info.get(key, _RECIPE_DEFAULTS.get(key)) == value for key, value in recipe.items())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prorl_engine.basemodel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_MODEL_DIR, help=f"output folder (default: {DEMO_MODEL_DIR})")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, tokenizer, weights and SFT order")
    parser.add_argument("--sft-steps", type=int, default=DEMO_BUILD["sft_steps"], help="SFT optimizer steps (batch 32)")
    parser.add_argument("--direct-fraction", type=float, default=DEMO_BUILD["direct_fraction"],
                        help="share of SFT solutions that are the bare answer tag (no work shown)")
    parser.add_argument("--guess-error-rate", type=float, default=DEMO_BUILD["guess_error_rate"],
                        help="share of those bare answers that are wrong (an unreliable answer key)")
    parser.add_argument("--guess-offset", type=int, nargs=2, metavar=("LOW", "HIGH"), default=DEMO_BUILD["guess_offset"],
                        help="a wrong bare answer is off by LOW to HIGH, either sign")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 reproduced the committed build byte for byte)")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out holds a finished build")
    args = parser.parse_args(argv)
    build_base_model(args.out, seed=args.seed, sft_steps=args.sft_steps, direct_fraction=args.direct_fraction,
                     guess_error_rate=args.guess_error_rate, guess_offset=tuple(args.guess_offset),
                     threads=args.threads, force=args.force)
    print(f"base model: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
