"""The reasoning boundary: per task, pass@k for k = 1..n of a base model and of RL checkpoints, and
which way RL moved it.

ProRL v1 (Liu et al. 2025, "ProRL: Prolonged Reinforcement Learning Expands Reasoning Boundaries
in Large Language Models", arXiv:2505.24864) asks whether RL only sharpens what the base model can
already do or widens it: it plots pass@k up to k = 128 per task for the base and the RL model and
sorts the tasks by how pass@k at large k moved (the boundary diminishes, stays, or keeps growing),
and singles out tasks the base never solves at any k (its out-of-distribution tasks). pass@1 moving
up while pass@k at large k stays put is sharpening; pass@k at large k rising is widening.

The rule here, for one task with its prompts sampled n times by the base (B) and a checkpoint (R),
K = the largest k both were sampled for, and `margin` the change that counts (`classify`):

    base never solves   B(K) = 0: no base sample on any of the task's prompts is correct
    RL widens           R(K) - B(K) >  margin
    RL narrows          R(K) - B(K) < -margin
    RL only sharpens    |R(K) - B(K)| <= margin  and  R(1) - B(1) > margin
    no gain             |R(K) - B(K)| <= margin  and  R(1) - B(1) <= margin

margin = max(tolerance, 2 x the standard error of the mean per-prompt difference of pass@K), so a
difference within the sampling noise of a few prompts counts as none. pass@k is the unbiased
estimator from n samples (`algorithms.pass_at_k`), averaged over the task's prompts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prorl_engine.algorithms import pass_at_k

BASE_NEVER_SOLVES = "base never solves"
WIDENS = "RL widens"
SHARPENS = "RL only sharpens"
NARROWS = "RL narrows"
NO_GAIN = "no gain"
CATEGORIES = (BASE_NEVER_SOLVES, WIDENS, SHARPENS, NARROWS, NO_GAIN)
TOLERANCE = 0.02  # the smallest change of pass@k that counts, whatever the number of prompts
MAX_SAMPLES = 256  # n: samples per prompt a boundary study asks for at most

Counts = Sequence[tuple[int, int]]  # (n, c) per prompt: samples drawn, samples correct


def pass_at_k_curve(counts: Counts) -> list[float]:
    """[pass@1, pass@2, ..., pass@n] averaged over the prompts, n = the fewest samples of any prompt."""
    k_large = min(n for n, _ in counts)
    curves = [_prompt_curve(n, c)[:k_large] for n, c in counts]  # (prompts, K)
    return [sum(column) / len(counts) for column in zip(*curves)]


@functools.lru_cache(maxsize=4096)
def _prompt_curve(n: int, c: int) -> tuple[float, ...]:
    """pass@1..pass@n of one prompt with c of its n samples correct. Cached: however many prompts,
    n samples give at most n + 1 distinct curves (at n = 256, each costs 256 `pass_at_k` calls)."""
    return tuple(pass_at_k(n, c, k) for k in range(1, n + 1))


def category(base_small: float, base_large: float, rl_small: float, rl_large: float, margin: float) -> str:
    """The module's rule on pass@1 (small) and pass@K (large) of the base and the checkpoint."""
    if base_large == 0:
        return BASE_NEVER_SOLVES
    if rl_large - base_large > margin:
        return WIDENS
    if rl_large - base_large < -margin:
        return NARROWS
    return SHARPENS if rl_small - base_small > margin else NO_GAIN


@dataclass(frozen=True)
class TaskBoundary:
    """One task's curves for the base and one checkpoint, and the category the rule gives them."""

    task: str
    prompts: int
    base: list[float]  # pass@1..pass@K
    rl: list[float]
    margin: float
    category: str

    @property
    def k_large(self) -> int:
        return len(self.base)


def classify(task: str, base: Counts, rl: Counts, tolerance: float = TOLERANCE) -> TaskBoundary:
    """`base` and `rl` hold the (n, c) of the same prompts, in the same order."""
    if len(base) != len(rl) or not base:
        raise ValueError(f"{task}: the base and the checkpoint need the same prompts, got {len(base)} and {len(rl)}")
    k = min(n for n, _ in [*base, *rl])
    differences = [pass_at_k(nr, cr, k) - pass_at_k(nb, cb, k) for (nb, cb), (nr, cr) in zip(base, rl)]
    margin = max(tolerance, 2 * _standard_error(differences))
    b, r = pass_at_k_curve(base)[:k], pass_at_k_curve(rl)[:k]
    return TaskBoundary(task, len(base), b, r, margin, category(b[0], b[-1], r[0], r[-1], margin))


def _standard_error(values: Sequence[float]) -> float:
    """The standard error of the mean of `values` (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def counts_by_task(prompts: Sequence[Mapping], label: str) -> dict[str, list[tuple[int, int]]]:
    """task -> (n, c) of each prompt answered by `label`, from a comparison's prompts
    (`compare.Comparison.by_prompt`: each with its task and, per label, its answers)."""
    table: dict[str, list[tuple[int, int]]] = {}
    for entry in prompts:
        answers = entry["answers"].get(label) or []
        if answers:
            table.setdefault(entry["task"], []).append((len(answers), sum(bool(a["correct"]) for a in answers)))
    return table


def boundary(
    prompts: Sequence[Mapping], base: str, checkpoints: Sequence[str], tolerance: float = TOLERANCE
) -> dict[str, list[TaskBoundary]]:
    """checkpoint label -> its TaskBoundary per task against the `base` label, tasks by name; only
    the prompts both answered count."""
    result = {}
    for label in checkpoints:
        answered = [e for e in prompts if e["answers"].get(base) and e["answers"].get(label)]
        base_counts, rl_counts = counts_by_task(answered, base), counts_by_task(answered, label)
        result[label] = [classify(task, base_counts[task], rl_counts[task], tolerance) for task in sorted(base_counts)]
    return result
