"""The demo's problems: three reasoning-gym arithmetic tasks and an SFT target for each item.

A target is written in one of two styles. Worked: the intermediate results on one line, one
operation per step ("98 + 93 = 191, 191 - 77 = 114"), then `<answer>X</answer>`; a model of a few
million parameters can follow that, where it cannot add three 2-digit numbers within one token.
Guessed: the answer tag alone, copied from an answer key that may be wrong by a set offset. A
model fine-tuned on both styles can reason but does not reliably choose to, and only a reward
tells it which style pays: the situation RL with verifiable rewards is for. Some worked targets
start with a preamble sentence that adds tokens and nothing else, and a build may pad some with
redundant steps (identities such as "114 + 0 = 114"): both are length the cosine length penalty can
remove at no cost in accuracy.

An out-of-distribution family (`OOD_TASKS`: two-digit products, a question form and a step the SFT
data never holds) is held out for evaluation only: the committed base never solves it at k = 16,
room for the reasoning-boundary view (prorl_engine/boundary.py) to show RL widening or not.

The demo run's held-out split (`held_out_examples`) is excluded from the SFT data, so its
held-out pass@k is measured on problems the model never saw.
"""

from __future__ import annotations

import ast
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prorl_engine import evaluation
from prorl_engine.data.example import Example
from prorl_engine.data.spec import DataSource

# The three RL tasks and their reasoning-gym generator parameters (easy settings: a model of a
# few million parameters solves some of them, not most; chain_sum's 2-digit sums are the hardest).
TASKS: dict[str, dict[str, Any]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "basic_arithmetic": {
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 1,
        "operators": ["+", "-", "*"],
        "allow_parentheses": True,
        "allow_negation": True,
    },
    "simple_equations": {
        "min_terms": 2,
        "max_terms": 2,
        "min_value": 1,
        "max_value": 9,
        "operators": ["+", "-", "*"],
        "operators_weights": [0.45, 0.45, 0.1],
    },
}
INSTRUCTION = DataSource.instruction  # the engine's default: "\nPut your final answer inside <answer></answer> tags."
PREAMBLE = "Let me work this out one step at a time.\n"  # verbose style: tokens that carry nothing
PADDING = (1, 3)  # redundant steps in a padded worked solution: low, high
DEMO_TRAIN_SIZE = 2000  # training prompts per task in the demo mix
DEMO_EVAL_SIZE = 32  # held-out prompts per task in the demo mix
RL_SEED = 0  # the demo run's seed: its held-out split is excluded from SFT
# Evaluation-only tasks the SFT data never shows: 2-digit x 2-digit products (no SFT step multiplies
# two numbers of two digits). Measured on the committed base: pass@16 = 0 on 32 prompts.
OOD_TASKS: dict[str, dict[str, Any]] = {
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2},
}


@dataclass(frozen=True)
class Problem:
    """One reasoning-gym item with the prompt the engine shows and the SFT target response."""

    task: str
    entry: dict[str, Any]
    prompt: str  # question + instruction (what `Example.prompt` holds)
    response: str  # the target response, without eos


def demo_sources(train_size: int = DEMO_TRAIN_SIZE, eval_size: int = DEMO_EVAL_SIZE) -> list[DataSource]:
    """The demo's training mix as RunConfig data sources (configs/demo.yaml holds the same)."""
    return [
        DataSource(task=task, size=train_size, params=dict(params), eval_size=eval_size)
        for task, params in TASKS.items()
    ]


def held_out_examples(rl_seed: int = RL_SEED) -> list[Example]:
    """The demo run's held-out split (what its `eval/...` metrics measure), as engine `Example`s."""
    return evaluation.held_out_examples(demo_sources(), rl_seed)


def ood_sources(eval_size: int = DEMO_EVAL_SIZE) -> list[DataSource]:
    """The out-of-distribution family as data sources, to follow the demo's in a mix: one training
    item each (a source needs one), `eval_size` held out, and a weight small enough that training
    all but never draws it."""
    return [
        DataSource(task=task, size=1, weight=1e-6, params=dict(params), eval_size=eval_size)
        for task, params in OOD_TASKS.items()
    ]


def ood_held_out_examples(rl_seed: int = RL_SEED) -> list[Example]:
    """The OOD family's held-out prompts, split as a run whose mix is the demo's then `ood_sources`."""
    examples = evaluation.held_out_examples([*demo_sources(), *ood_sources()], rl_seed)
    return [example for example in examples if example.task in OOD_TASKS]


# --- worked solutions ------------------------------------------------------------------------

_BINARY_OPS: dict[type, tuple[str, Callable[[int, int], int]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.floordiv),  # reasoning-gym divides exactly
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


def worked_solution(task: str, entry: dict[str, Any], padding: int = 0, rng: random.Random | None = None) -> str:
    """The SFT target for one item: the intermediate results on one line, then the answer tag;
    `padding` redundant steps among them (`pad_steps`, drawn from `rng`, by default Random(0))."""
    metadata = entry["metadata"]
    if task == "simple_equations":
        steps, result = equation_steps(metadata["equation"], metadata["variable"])
    else:
        steps, result = arithmetic_steps(metadata["expression"])
    if str(result) != str(entry["answer"]):
        raise ValueError(f"{task}: worked result {result} differs from reasoning-gym's {entry['answer']}")
    if padding:
        steps = pad_steps(steps, padding, rng or random.Random(0))
    return ", ".join(steps) + f"\n<answer>{entry['answer']}</answer>"


IDENTITIES = ("{v} + 0 = {v}", "{v} - 0 = {v}", "{v} * 1 = {v}")  # a step that leaves its value as it was


def pad_steps(steps: list[str], count: int, rng: random.Random) -> list[str]:
    """`steps` with `count` redundant steps inserted, each right after a step chosen at random and
    restating that step's result through an identity: ["8*t = 32", "t = 32 / 8 = 4"] -> for
    example ["8*t = 32", "32 * 1 = 32", "t = 32 / 8 = 4", "4 + 0 = 4"]. Every step stays true and
    the answer is the same: only the length changes."""
    padded = list(steps)
    for _ in range(count):
        after = rng.randrange(len(padded))
        value = padded[after].rsplit(" = ", 1)[1]
        padded.insert(after + 1, rng.choice(IDENTITIES).format(v=value))
    return padded


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
    count_per_task: int,
    seed: int,
    *,
    direct_fraction: float = 0.0,
    guess_error_rate: float = 0.0,
    guess_offset: tuple[int, int] = (1, 10),
    verbose_fraction: float = 0.5,
    padded_fraction: float = 0.0,
    padding: tuple[int, int] = PADDING,
    exclude: frozenset[str] = frozenset(),
) -> list[Problem]:
    """`count_per_task` problems of every task, shuffled; questions in `exclude` are skipped.

    A `direct_fraction` of the solutions is the bare answer tag (the "guess" style), and a
    `guess_error_rate` of those guesses is off by `guess_offset` (low, high; an unreliable answer
    key); of the worked solutions, a `verbose_fraction` starts with the preamble sentence, and a
    `padded_fraction` holds `padding` (low, high) redundant steps. Worked solutions are always right.

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
            if direct_fraction and rng.random() < direct_fraction:  # no draw at 0: the same stream as without guesses
                wrong = guess_error_rate and rng.random() < guess_error_rate
                response = direct_solution(entry, offset=rng.choice(offsets) if wrong else 0)
            else:
                preamble = PREAMBLE if rng.random() < verbose_fraction else ""
                pad = rng.randint(*padding) if padded_fraction and rng.random() < padded_fraction else 0  # no draw at 0
                response = preamble + worked_solution(task, entry, pad, rng)
            problems.append(Problem(task, entry, entry["question"] + INSTRUCTION, response))
            kept += 1
            if kept == count_per_task:
                break
    rng.shuffle(problems)
    return problems
