"""Running the variants to the same generation budget, and reading the runs back.

Same seed, same data, same model: the full recipe runs its configured steps, and every variant
runs until it has generated as many response tokens as the full recipe did (a token-budget stop
through the Trainer's ControlSource, with at most `STEP_CAP_FACTOR` times the steps), then gets
one final held-out evaluation. A variant whose folder already holds a finished run of the same
config is read back instead of run again.

With several seeds (`run_seeds`), each seed is such an ablation of its own in RUNS/seed-N (the
config's seed replaced, so data order, sampling and the held-out split all follow it); a variant
spends the token budget of its own seed's full run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prorl_engine.ablations.variants import VARIANTS
from prorl_engine.config import RunConfig
from prorl_engine.demo.problems import shows_work
from prorl_engine.events import Command, CommandKind, FanoutSink, JsonlSink, NoControl, NullSink

STEP_CAP_FACTOR = 3  # a variant may take up to 3x the full recipe's steps to spend the same tokens


GENERATED_TOKENS = "sampling/generated_tokens"  # the trainer's count of response tokens sampled in a step


class TokenBudget(NullSink):
    """An EventSink that counts generated tokens and a ControlSource that stops the run once
    they reach `budget` (None: never stops; the run ends at its configured steps)."""

    def __init__(self, budget: float | None):
        self.budget = budget
        self.tokens = 0.0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.tokens += values[GENERATED_TOKENS]

    def poll(self) -> list[Command]:
        if self.budget is not None and self.tokens >= self.budget:
            return [Command(CommandKind.STOP, requested_by="ablation token budget")]
        return []


@dataclass
class RunResult:
    """One variant's run, read back from its folder."""

    name: str
    overrides: dict[str, Any]
    metrics: list[dict[str, Any]]  # metrics.jsonl rows, each with "tokens" (cumulative) added
    events: list[dict[str, Any]]  # events.jsonl rows
    final_eval: dict[str, float]  # held-out metrics at the end of the run
    minutes: float
    info: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    counts: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # task -> (n, c) per held-out prompt
    started: str = ""  # ISO times of the run's start and end ("" for a run written before they were kept)
    finished: str = ""

    @property
    def tokens(self) -> float:
        return self.metrics[-1]["tokens"] if self.metrics else 0.0

    @property
    def steps(self) -> int:
        return self.metrics[-1]["step"] if self.metrics else 0

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(cumulative generated tokens, value) for every step that logged `key`. Held-out metrics
        also get the base model's value at 0 tokens and the final evaluation at the run's end."""
        rows = [row for row in self.metrics if is_number(row.get(key))]
        x, y = [row["tokens"] for row in rows], [row[key] for row in rows]
        if key.startswith("eval/"):
            base, final = self.info.get("base_eval", {}).get(key), self.final_eval.get(key)
            if is_number(base):
                x, y = [0.0, *x], [base, *y]
            if is_number(final) and (not x or x[-1] < self.tokens):
                x, y = [*x, self.tokens], [*y, final]
        return x, y

    def resets(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "reset"]

    def last_third_mean(self, key: str) -> float:
        values = self.series(key)[1]
        tail = values[len(values) * 2 // 3 :]
        return sum(tail) / len(tail) if tail else math.nan

    def tokens_at(self, step: int) -> float:
        """Cumulative generated tokens at the end of `step` (0 before the first logged step)."""
        rows = [row for row in self.metrics if row["step"] <= step]
        return rows[-1]["tokens"] if rows else 0.0


def run_variant(
    name: str, config: RunConfig, runs_dir: Path, budget: float | None, log: Callable[[str], None]
) -> RunResult:
    """Train one variant into runs_dir/name (unless it already finished there) and read it back."""
    from prorl_engine.trainer import Trainer

    run_dir = runs_dir / name
    done = run_dir / "final_eval.json"
    if done.is_file() and (run_dir / "config.yaml").read_text(encoding="utf-8") != config.to_yaml():
        raise SystemExit(f"{run_dir} holds a finished run of another config: delete it (or choose --runs) to rerun")
    if not done.is_file():
        if run_dir.exists() and any(run_dir.iterdir()):
            raise SystemExit(f"{run_dir} holds an unfinished run: delete it to start that variant again")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        log(f"{name}: {config.steps} steps at most" + (f", stops at {budget:,.0f} generated tokens" if budget else ""))
        started, started_at = time.time(), now_iso()
        counter = TokenBudget(budget)
        sink = FanoutSink(JsonlSink(run_dir), counter)
        try:
            trainer = Trainer(config, run_dir, sink, control=counter)
            status = trainer.train()
            final_eval, counts = evaluate_now(trainer)  # at the budget point, which may fall between evaluations
        finally:
            sink.close()
        minutes = (time.time() - started) / 60
        finished = {
            "status": status,
            "minutes": minutes,
            "started": started_at,
            "finished": now_iso(),
            "metrics": final_eval,
            "counts": counts,
        }
        done.write_text(json.dumps(finished, indent=2), encoding="utf-8")
        log(
            f"{name}: {status} after {minutes:.1f} min, held-out pass@1 "
            f"{final_eval.get('eval/all/pass@1', math.nan):.3f}"
        )
    return read_run(name, config, run_dir)


def now_iso() -> str:
    """The current UTC time, to the second, as ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def evaluate_now(trainer) -> tuple[dict[str, float], dict[str, list[tuple[int, int]]]]:
    """The trainer's held-out evaluation of its current policy, and its `prompt_counts`.

    The metrics are the evaluation's, plus `eval/prompts` (how many),
    `eval/all/pass@1_se` (the standard error of pass@1 from sampling, on this fixed prompt set) and
    `eval/all/shows_work_frac` (the share of responses that write intermediate results before the
    answer: the demo model can also guess).

    Each prompt's pass@1 is the mean of n Bernoulli samples, variance p(1 - p) / n, estimated
    without bias by p^(1 - p^) / (n - 1); the mean over P prompts has SE sqrt(sum of those) / P.
    Every variant is evaluated on the same prompts, so this is the noise that matters when two
    runs are compared (the spread between prompts is common to both).
    """
    report = trainer.evaluate()
    by_prompt: dict[str, list[bool]] = {}
    for sample in report.samples:
        by_prompt.setdefault(sample.uid, []).append(sample.correct)
    n = min(len(outcomes) for outcomes in by_prompt.values())
    rates = [sum(outcomes) / len(outcomes) for outcomes in by_prompt.values()]
    variance = sum(p * (1 - p) / (n - 1) for p in rates) if n > 1 else math.nan
    worked = sum(shows_work(sample.response) for sample in report.samples) / len(report.samples)
    metrics = {
        **report.metrics,
        "eval/prompts": len(rates),
        "eval/all/pass@1_se": math.sqrt(variance) / len(rates),
        "eval/all/shows_work_frac": worked,
    }
    return metrics, prompt_counts(report.samples)


def prompt_counts(samples) -> dict[str, list[tuple[int, int]]]:
    """task -> (samples drawn, samples correct) of each of its prompts, prompts in the order of
    their ids: what `boundary.classify` compares between the base model and a run."""
    by_prompt: dict[str, tuple[str, list[bool]]] = {}
    for sample in samples:
        by_prompt.setdefault(sample.uid, (sample.task, []))[1].append(sample.correct)
    counts: dict[str, list[tuple[int, int]]] = {}
    for uid in sorted(by_prompt):
        task, outcomes = by_prompt[uid]
        counts.setdefault(task, []).append((len(outcomes), sum(outcomes)))
    return counts


def read_run(name: str, config: RunConfig, run_dir: Path) -> RunResult:
    """A finished variant's folder as a RunResult, with cumulative generated tokens on every row."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    total = 0.0
    for row in metrics:
        if not is_number(row.get(GENERATED_TOKENS)):
            raise SystemExit(
                f"{run_dir / 'metrics.jsonl'}: step {row.get('step')} has no {GENERATED_TOKENS} (a trainer "
                "older than that metric wrote it): delete the folder to run that variant again"
            )
        total += row[GENERATED_TOKENS]
        row["tokens"] = total
    final = json.loads((run_dir / "final_eval.json").read_text(encoding="utf-8"))
    return RunResult(
        name,
        VARIANTS[name](config),
        metrics,
        read_jsonl(run_dir / "events.jsonl"),
        final["metrics"],
        final["minutes"],
        {"status": final["status"], "config": config},
        seed=config.seed,
        counts={task: [tuple(pair) for pair in pairs] for task, pairs in final.get("counts", {}).items()},
        started=final.get("started", ""),
        finished=final.get("finished", ""),
    )


def run_all(
    base: RunConfig, names: Sequence[str], runs_dir: Path, log: Callable[[str], None] = print
) -> list[RunResult]:
    """The full recipe first (it sets the token budget), then the variants under that budget."""
    results = [run_variant("full", base, runs_dir, None, log)]
    budget = results[0].tokens
    capped = base.replace(steps=base.steps * STEP_CAP_FACTOR)
    for name in names:
        if name != "full":
            results.append(run_variant(name, capped.replace(**VARIANTS[name](base)), runs_dir, budget, log))
    return results


def seed_dir(runs_dir: Path, seed: int) -> Path:
    """Where one seed's ablation goes among several (`run_seeds`)."""
    return runs_dir / f"seed-{seed}"


def run_seeds(
    base: RunConfig, names: Sequence[str], runs_dir: Path, seeds: Sequence[int], log: Callable[[str], None] = print
) -> dict[int, list[RunResult]]:
    """`run_all` once per seed, into `seed_dir(runs_dir, seed)`: seed -> its runs, full first."""
    return {seed: run_all(base.replace(seed=seed), names, seed_dir(runs_dir, seed), log) for seed in seeds}


def read_seeds(
    base: RunConfig, names: Sequence[str], runs_dir: Path, seeds: Sequence[int]
) -> dict[int, list[RunResult]]:
    """The finished runs `run_seeds` left, read back without running anything (full first)."""
    order = ["full", *[name for name in names if name != "full"]]
    return {seed: read_variants(base.replace(seed=seed), order, seed_dir(runs_dir, seed)) for seed in seeds}


def read_variants(base: RunConfig, names: Sequence[str], runs_dir: Path) -> list[RunResult]:
    """The finished runs of `names` in runs_dir, each with the config `run_all` gave it."""
    capped = base.replace(steps=base.steps * STEP_CAP_FACTOR)
    configs = {name: base if name == "full" else capped.replace(**VARIANTS[name](base)) for name in names}
    missing = [name for name in names if not (runs_dir / name / "final_eval.json").is_file()]
    if missing:
        raise SystemExit(
            f"{runs_dir}: no finished run of {', '.join(missing)} (run the ablation without --report-only)"
        )
    return [read_run(name, configs[name], runs_dir / name) for name in names]


def base_model_eval(config: RunConfig, runs_dir: Path) -> dict[str, float]:
    """Held-out metrics of the untrained policy, with the runs' own evaluation settings (cached in
    runs_dir, with its per-prompt counts in base_counts.json: `base_model_counts`)."""
    cache = runs_dir / "base_eval.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from prorl_engine.trainer import Trainer

    trainer = Trainer(config, runs_dir / "base", NullSink(), control=NoControl())  # step 0: nothing trained
    metrics, counts = evaluate_now(trainer)
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / "base_counts.json").write_text(json.dumps(counts), encoding="utf-8")
    cache.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def base_model_counts(runs_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """task -> (n, c) per held-out prompt of the base model, as `base_model_eval` kept them (none
    for a cache written before they were kept)."""
    path = runs_dir / "base_counts.json"
    if not path.is_file():
        return {}
    return {task: [tuple(pair) for pair in pairs] for task, pairs in json.loads(path.read_text()).items()}


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not None, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file, one per non-blank line (none for a missing file)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
