"""Ablations of the ProRL recipe on the demo model, and the report that says what they show.

    python -m prorl_engine.ablations --out docs/ablations [--steps 120] [--config prorl_engine/configs/demo.yaml]

Runs the full recipe (configs/demo.yaml) and one variant per part of the recipe, each switching
that part off and nothing else:

    symmetric_clip       eps_high = eps_low (no clip-higher)
    no_dynamic_sampling  dynamic_sampling = false (zero-signal groups stay in the batch)
    no_length_penalty    length_penalty = false
    no_resets            reset_interval = null (one fixed reference for the whole run)
    rerun                learning rate 0.1% larger: the full recipe again, to measure run-to-run noise

Same seed, same data, same model, and the same generation budget: the full recipe runs `--steps`
steps, and every variant runs until it has generated as many response tokens as the full recipe
did (a token-budget stop through the Trainer's ControlSource), then gets one final held-out
evaluation. Curves are drawn against generated tokens, the cost that dynamic sampling changes.

Writes into --out: README.md (tables, the spec's section-13 claims with a verdict each, machine,
versions and seeds), PNG plots (matplotlib) and report.html (plotly, interactive; it loads the
studio's own static/studio/plotly.min.js by relative path, so it works offline from a checkout).
Run folders go to --runs (default var/ablations); a variant whose folder already holds a finished
run is not run again, so the report can be re-rendered with --report-only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prorl_engine.basemodel import shows_work
from prorl_engine.config import RunConfig
from prorl_engine.events import Command, CommandKind, Event, FanoutSink, JsonlSink, Sample

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO_ROOT / "prorl_engine" / "configs" / "demo.yaml"
PLOTLY_JS = REPO_ROOT / "static" / "studio" / "plotly.min.js"
STEP_CAP_FACTOR = 3  # a variant may take up to 3x the full recipe's steps to spend the same tokens


# --- the variants: each switches one part of the recipe off ----------------------------------

def full(config: RunConfig) -> dict[str, Any]:
    """The whole recipe, as configured."""
    return {}


def symmetric_clip(config: RunConfig) -> dict[str, Any]:
    """No clip-higher: the upper clip bound equals the lower one."""
    return {"eps_high": config.eps_low}


def no_dynamic_sampling(config: RunConfig) -> dict[str, Any]:
    """Groups whose rewards have no spread stay in the batch (and contribute zero advantage)."""
    return {"dynamic_sampling": False}


def no_length_penalty(config: RunConfig) -> dict[str, Any]:
    """The cosine length penalty is never on."""
    return {"length_penalty": False}


def no_resets(config: RunConfig) -> dict[str, Any]:
    """One fixed reference policy for the whole run."""
    return {"reset_interval": None, "kl_reset_threshold": None, "reset_patience": None}


def rerun(config: RunConfig) -> dict[str, Any]:
    """The full recipe again with the learning rate 0.1% larger: a change too small to matter that
    still sends the run down another path (it moves every update, and sampling amplifies any
    difference). Its distance from `full` is the run-to-run noise that one seed per variant would
    otherwise hide. (A 0.1% larger beta, used before, can round away entirely: at beta 0.1 it
    left every weight of the demo run bit-identical.)"""
    return {"learning_rate": config.learning_rate * 1.001}


VARIANTS: dict[str, Callable[[RunConfig], dict[str, Any]]] = {
    fn.__name__: fn for fn in (full, symmetric_clip, no_dynamic_sampling, no_length_penalty, no_resets, rerun)
}


# --- running ---------------------------------------------------------------------------------

def generated_tokens(values: dict[str, float], config: RunConfig) -> float:
    """Response tokens sampled in one step: mean length x every response generated (kept or not)."""
    responses = values["sampling/generation_batches"] * config.prompts_per_step * config.samples_per_prompt
    return values["length/mean"] * responses


class NullSink:
    """Discards everything (the base-model evaluation logs nothing)."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def samples(self, step: int, rows: list[Sample]) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def rewind(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TokenBudget(NullSink):
    """An EventSink that counts generated tokens and a ControlSource that stops the run once
    they reach `budget` (None: never stops; the run ends at its configured steps)."""

    def __init__(self, config: RunConfig, budget: float | None):
        self.config = config
        self.budget = budget
        self.tokens = 0.0

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.tokens += generated_tokens(values, self.config)

    def poll(self) -> list[Command]:
        if self.budget is not None and self.tokens >= self.budget:
            return [Command(CommandKind.STOP, requested_by="ablation token budget")]
        return []


@dataclass
class RunResult:
    """One variant's run, read back from its folder."""

    name: str
    overrides: dict[str, Any]
    metrics: list[dict[str, Any]]           # metrics.jsonl rows, each with "tokens" (cumulative) added
    events: list[dict[str, Any]]            # events.jsonl rows
    final_eval: dict[str, float]            # held-out metrics at the end of the run
    minutes: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> float:
        return self.metrics[-1]["tokens"] if self.metrics else 0.0

    @property
    def steps(self) -> int:
        return self.metrics[-1]["step"] if self.metrics else 0

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(cumulative generated tokens, value) for every step that logged `key`. Held-out metrics
        also get the base model's value at 0 tokens and the final evaluation at the run's end."""
        rows = [row for row in self.metrics if _number(row.get(key))]
        x, y = [row["tokens"] for row in rows], [row[key] for row in rows]
        if key.startswith("eval/"):
            base, final = self.info.get("base_eval", {}).get(key), self.final_eval.get(key)
            if _number(base):
                x, y = [0.0, *x], [base, *y]
            if _number(final) and (not x or x[-1] < self.tokens):
                x, y = [*x, self.tokens], [*y, final]
        return x, y

    def resets(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "reset"]

    def last_third_mean(self, key: str) -> float:
        values = self.series(key)[1]
        tail = values[len(values) * 2 // 3:]
        return sum(tail) / len(tail) if tail else math.nan


def run_variant(name: str, config: RunConfig, runs_dir: Path, budget: float | None, log: Callable[[str], None]) -> RunResult:
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
        started = time.time()
        counter = TokenBudget(config, budget)
        sink = FanoutSink(JsonlSink(run_dir), counter)
        try:
            trainer = Trainer(config, run_dir, sink, control=counter)
            status = trainer.train()
            final_eval = evaluate_now(trainer)  # at the budget point, which may fall between evaluations
        finally:
            sink.close()
        minutes = (time.time() - started) / 60
        done.write_text(json.dumps({"status": status, "minutes": minutes, "metrics": final_eval}, indent=2), encoding="utf-8")
        log(f"{name}: {status} after {minutes:.1f} min, held-out pass@1 {final_eval.get('eval/all/pass@1', math.nan):.3f}")
    return read_run(name, config, run_dir)


def evaluate_now(trainer) -> dict[str, float]:
    """The trainer's held-out evaluation of its current policy, plus `eval/prompts` (how many) and
    `eval/all/pass@1_se`: the standard error of pass@1 from sampling, on this fixed prompt set, and
    `eval/all/shows_work_frac`: the share of responses that write intermediate results before the
    answer (the demo model also knows how to guess; see basemodel.py).

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
    return {**report.metrics, "eval/prompts": len(rates), "eval/all/pass@1_se": math.sqrt(variance) / len(rates),
            "eval/all/shows_work_frac": worked}


def read_run(name: str, config: RunConfig, run_dir: Path) -> RunResult:
    metrics = _jsonl(run_dir / "metrics.jsonl")
    total = 0.0
    for row in metrics:
        total += generated_tokens(row, config)
        row["tokens"] = total
    final = json.loads((run_dir / "final_eval.json").read_text(encoding="utf-8"))
    return RunResult(name, VARIANTS[name](config), metrics, _jsonl(run_dir / "events.jsonl"), final["metrics"],
                     final["minutes"], {"status": final["status"], "config": config})


def run_all(base: RunConfig, names: Sequence[str], runs_dir: Path, log: Callable[[str], None] = print) -> list[RunResult]:
    """The full recipe first (it sets the token budget), then the variants under that budget."""
    results = [run_variant("full", base, runs_dir, None, log)]
    budget = results[0].tokens
    capped = base.replace(steps=base.steps * STEP_CAP_FACTOR)
    for name in names:
        if name != "full":
            results.append(run_variant(name, capped.replace(**VARIANTS[name](base)), runs_dir, budget, log))
    return results


# --- the report ------------------------------------------------------------------------------

PANELS = (  # (metric key, title, y label)
    ("reward/verifier_mean", "Training reward (verifier, before length shaping)", "mean reward"),
    ("eval/all/pass@1", "Held-out pass@1 (temperature 0.6, top_p 0.95)", "pass@1"),
    ("policy/entropy", "Policy entropy on response tokens", "nats / token"),
    ("length/mean", "Mean response length", "tokens"),
    ("kl/ref", "KL to the reference (k2), resets marked", "k2"),
    ("sampling/filtered_frac", "Groups dropped by dynamic sampling", "fraction"),
)


def smooth(values: Sequence[float], window: int = 5) -> list[float]:
    """Trailing moving average (noisy per-step metrics)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_png(results: list[RunResult], key: str, title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for result in results:
        x, y = result.series(key)
        if not x:
            continue
        is_eval, is_full = key.startswith("eval/"), result.name == "full"
        ax.plot([t / 1e3 for t in x], y if is_eval else smooth(y), marker="o" if is_eval else None,
                markersize=3, linewidth=2.4 if is_full else 1.3, linestyle="--" if is_full else "-",
                zorder=3 if is_full else 2, label=result.name)
        if key == "kl/ref":
            for reset in result.resets():
                tokens = _tokens_at(result, reset["step"])
                ax.axvline(tokens / 1e3, color=ax.lines[-1].get_color(), alpha=0.25, linestyle=":")
    if key == "length/mean":
        _shade_penalty_windows(ax, results[0])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("generated response tokens (thousands)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _shade_penalty_windows(ax, result: RunResult) -> None:
    """Grey bands where the full recipe's length penalty was on."""
    on = [row for row in result.metrics if row.get("schedule/length_penalty_on")]
    for row in on:
        previous = row["tokens"] - generated_tokens(row, _config_of(result))
        ax.axvspan(previous / 1e3, row["tokens"] / 1e3, color="grey", alpha=0.12, linewidth=0)


def write_html(results: list[RunResult], path: Path) -> None:
    """All panels in one interactive page (plotly); plotly.js is loaded from the studio's static folder."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=2, subplot_titles=[title for _, title, _ in PANELS], vertical_spacing=0.08)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for index, (key, _, ylabel) in enumerate(PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for color, result in zip(palette, results):
            x, y = result.series(key)
            if not x:
                continue
            is_eval = key.startswith("eval/")
            is_full = result.name == "full"
            fig.add_scatter(x=x, y=y if is_eval else smooth(y), mode="lines+markers" if is_eval else "lines",
                            name=result.name, legendgroup=result.name, showlegend=index == 0, row=row, col=col,
                            line={"color": color, "width": 3 if is_full else 1.5, "dash": "dash" if is_full else "solid"})
        fig.update_yaxes(title_text=ylabel, row=row, col=col)
        fig.update_xaxes(title_text="generated tokens", row=row, col=col)
    fig.update_layout(height=1100, title="ProRL ablations on the demo model", template="plotly_white")
    script = os.path.relpath(PLOTLY_JS, path.parent) if PLOTLY_JS.is_file() else "cdn"
    fig.write_html(path, include_plotlyjs=script, full_html=True)


@dataclass
class Verdict:
    claim: str
    verdict: str   # "reproduced", "not reproduced", "inconclusive"
    evidence: str


def margin(a: dict[str, float], b: dict[str, float]) -> float:
    """Two standard errors of the difference between two held-out pass@1 estimates."""
    return 2 * math.hypot(a["eval/all/pass@1_se"], b["eval/all/pass@1_se"])


def same_run(a: RunResult, b: RunResult) -> bool:
    """True when two variants produced the very same trajectory (same rewards and lengths every step)."""
    keys = ("reward/verifier_mean", "length/mean")
    return [[row.get(k) for k in keys] for row in a.metrics] == [[row.get(k) for k in keys] for row in b.metrics]


def judge_claims(results: dict[str, RunResult], base_eval: dict[str, float], k: int) -> list[Verdict]:
    """One verdict per claim of PRORL_SPEC.md section 13, from the measured numbers.

    The recipe's held-out pass@1 is a range: the full run's, or, when the `rerun` variant ran, from
    the lower to the higher of the two (run-to-run noise). A variant differs from the recipe only
    when it lies outside that range by more than two standard errors of the difference (sampling
    noise on the fixed held-out set, see `evaluate_now`). An entropy difference under 10% counts as
    direction only.
    """
    full_run = results["full"]
    recipe = [full_run] + ([results["rerun"]] if "rerun" in results else [])
    p1 = {name: r.final_eval.get("eval/all/pass@1", math.nan) for name, r in results.items()}
    recipe_p1 = "/".join(f"{p1[r.name]:.3f}" for r in recipe) + (" (full/rerun)" if len(recipe) > 1 else "")
    pk = f"eval/all/pass@{k}"
    verdicts = []

    def compare(name: str) -> tuple[str, float]:
        """Where the recipe's pass@1 lies against variant `name`'s: "above", "below" or "within",
        and the sampling band used."""
        band = max(margin(r.final_eval, results[name].final_eval) for r in recipe)
        low, high = min(p1[r.name] for r in recipe), max(p1[r.name] for r in recipe)
        if low - p1[name] > band:
            return "above", band
        if p1[name] - high > band:
            return "below", band
        return "within", band

    def verdict_from(position: str) -> str:
        return {"above": "reproduced", "within": "inconclusive", "below": "not reproduced"}[position]

    if "symmetric_clip" in results:
        ent_full, ent_sym = full_run.last_third_mean("policy/entropy"), results["symmetric_clip"].last_third_mean("policy/entropy")
        verdicts.append(Verdict(
            "Clip-higher keeps the policy's entropy from collapsing",
            "reproduced" if ent_full > ent_sym * 1.1 else "direction only (under 10%)" if ent_full > ent_sym else "not reproduced",
            f"entropy over the last third of training: {ent_full:.3f} with eps_high > eps_low vs {ent_sym:.3f} "
            f"symmetric; held-out pass@1 {recipe_p1} vs {p1['symmetric_clip']:.3f}, pass@{k} "
            f"{_fmt(full_run.final_eval, pk)} vs {_fmt(results['symmetric_clip'].final_eval, pk)}.",
        ))
    if "no_dynamic_sampling" in results:
        position, band = compare("no_dynamic_sampling")
        filtered = full_run.last_third_mean("sampling/filtered_frac")
        verdicts.append(Verdict(
            "Dynamic sampling makes each generated token carry more learning signal", verdict_from(position),
            f"at the same generation budget ({full_run.tokens:,.0f} tokens) held-out pass@1 is {recipe_p1} with "
            f"dynamic sampling vs {p1['no_dynamic_sampling']:.3f} without (sampling band: {band:.3f}); the filter "
            f"dropped {filtered:.0%} of groups late in the run, groups whose advantages are all zero.",
        ))
    if "no_length_penalty" in results:
        off = results["no_length_penalty"]
        lengths = [r.final_eval.get("eval/all/mean_length", math.nan) for r in recipe]
        len_off = off.final_eval.get("eval/all/mean_length", math.nan)
        shorter = max(lengths) < len_off * 0.95
        position, band = compare("no_length_penalty")
        verdicts.append(Verdict(
            "The cycled cosine length penalty makes answers shorter without costing accuracy",
            "not reproduced" if not shorter else "partly: shorter, but less accurate" if position == "below" else "reproduced",
            f"held-out mean length {'/'.join(f'{x:.1f}' for x in lengths)} tokens with the penalty vs {len_off:.1f} "
            f"without ({(lengths[0] / len_off - 1) * 100:+.1f}% for the full run); pass@1 {recipe_p1} vs "
            f"{p1['no_length_penalty']:.3f} (sampling band: {band:.3f}).",
        ))
    if "no_resets" in results:
        position, band = compare("no_resets")
        identical = same_run(full_run, results["no_resets"])
        kl_full, kl_fixed = full_run.last_third_mean("kl/ref"), results["no_resets"].last_third_mean("kl/ref")
        verdicts.append(Verdict(
            "Reference resets let improvement continue where a fixed reference would hold it back",
            "not testable here" if identical else verdict_from(position),
            (f"the two runs had the same rewards and response lengths at every step: with beta = {full_run.info['config'].beta} "
             "the KL term is too weak to change what the policy samples, so resetting the reference changes nothing here. "
             if identical else "") +
            f"held-out pass@1 {recipe_p1} with {len(full_run.resets())} reset(s) vs {p1['no_resets']:.3f} with a fixed "
            f"reference (sampling band: {band:.3f}); KL to the reference late in the run {kl_full:.2e} vs {kl_fixed:.2e}.",
        ))
    b1 = base_eval.get("eval/all/pass@1", math.nan)
    band = max(margin(base_eval, r.final_eval) for r in recipe)
    ks = [j for j in pass_ks(base_eval) if all(_number(r.final_eval.get(f"eval/all/pass@{j}")) for r in recipe)]
    rises = {j: all(r.final_eval[f"eval/all/pass@{j}"] > base_eval[f"eval/all/pass@{j}"] for r in recipe) for j in ks}
    curve = ", ".join(f"pass@{j} {base_eval[f'eval/all/pass@{j}']:.3f} -> "
                      + "/".join(f"{r.final_eval[f'eval/all/pass@{j}']:.3f}" for r in recipe) for j in ks)
    low1 = min(p1[r.name] for r in recipe)
    if not low1 > b1 + band:
        verdict = "not reproduced" if max(p1[r.name] for r in recipe) < b1 - band else "inconclusive"
    elif all(rises.values()):
        verdict = "reproduced"
    elif rises[max(ks)]:
        verdict = "inconclusive"
    else:
        first_fall = min(j for j in ks if not rises[j])
        verdict = f"partly: pass@k rises for k < {first_fall} and falls from k = {first_fall} on"
    verdicts.append(Verdict(
        f"Prolonged training raises pass@k as well as pass@1 (k up to {k})", verdict,
        f"over {full_run.steps} steps, {curve}{' (full/rerun)' if len(recipe) > 1 else ''} (sampling band of pass@1: "
        f"{band:.3f}). "
        + ("Where pass@k falls, RL concentrated the samples on what the model answers best instead of widening what "
           "it can answer at all. " if not all(rises.values()) else "")
        + _style_shift(base_eval, recipe)
        + "A short run on a small model: this tests direction, not the paper's scale.",
    ))
    return verdicts


def _style_shift(base_eval: dict[str, float], recipe: Sequence[RunResult]) -> str:
    """What the share of responses that show their work did, where it was measured: with the demo
    model, pass@k at large k moves with it (samples spent on guesses are wasted tries)."""
    key = "eval/all/shows_work_frac"
    if not (_number(base_eval.get(key)) and all(_number(r.final_eval.get(key)) for r in recipe)):
        return ""
    after = "/".join(f"{r.final_eval[key]:.0%}" for r in recipe)
    return (f"Responses that show their work went from {base_eval[key]:.0%} to {after}: at this scale pass@k moves "
            "with how often the model works a problem out instead of guessing, which is not the same as solving "
            "problems it could not solve before (the paper's reading of pass@k at large k). ")


def pass_ks(metrics: dict[str, float]) -> list[int]:
    """The k of every `eval/all/pass@k` in `metrics`, ascending."""
    return sorted(int(key.rsplit("@", 1)[1]) for key in metrics if key.startswith("eval/all/pass@") and key[-1].isdigit())


def environment() -> dict[str, str]:
    """Machine, versions and commit recorded in the report."""
    from importlib import metadata

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "torch threads": str(torch.get_num_threads()), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "reasoning_gym": metadata.version("reasoning-gym"),
        "commit": commit or "unknown",
    }


def write_report(results: list[RunResult], base: RunConfig, config_path: Path, base_eval: dict[str, float], out: Path,
                 env: dict[str, str]) -> Path:
    """README.md, one PNG per panel and report.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for key, title, ylabel in PANELS:
        plot_png(results, key, title, ylabel, out / f"{_slug(key)}.png")
    write_html(results, out / "report.html")
    by_name = {r.name: r for r in results}
    k = max(base.eval_k)
    verdicts = judge_claims(by_name, base_eval, k)
    lines = [
        "# ProRL ablations on the demo model",
        "",
        f"The full recipe (`{_rel(config_path)}`) and one variant per part of it, on the project's small base model "
        f"(`{base.model_path}`), CPU only. Every run uses seed {base.seed}, the same data and held-out split, and the "
        f"same generation budget: the full recipe ran {by_name['full'].steps} steps and generated "
        f"{by_name['full'].tokens:,.0f} response tokens; each variant ran until it had generated as many. "
        "Held-out metrics: the engine's evaluation "
        f"({base.eval_samples} samples per prompt at temperature {base.eval_temperature}, top_p {base.eval_top_p}) on "
        f"{base.eval_prompts} held-out prompts at most, once more at the end of every run.",
        "",
        f"Regenerate: `python -m prorl_engine.ablations --config {_rel(config_path)} --out {_rel(out)} --steps "
        f"{by_name['full'].steps}` (the runs go to var/ablations).",
        "",
        "## Results at the same generation budget",
        "",
        f"| variant | changes | steps | generated tokens | minutes | pass@1 | pass@{k} | mean length (eval) | entropy (last third) | resets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| base model (before RL) | | 0 | 0 | | {_fmt(base_eval, 'eval/all/pass@1')} | {_fmt(base_eval, f'eval/all/pass@{k}')} | "
        f"{_fmt(base_eval, 'eval/all/mean_length', 1)} | | |",
    ]
    for r in results:
        changes = _changes(r) or "(the recipe as configured)"
        lines.append(
            f"| {r.name} | {changes} | {r.steps} | {r.tokens:,.0f} | {r.minutes:.1f} | {_fmt(r.final_eval, 'eval/all/pass@1')} | "
            f"{_fmt(r.final_eval, f'eval/all/pass@{k}')} | {_fmt(r.final_eval, 'eval/all/mean_length', 1)} | "
            f"{r.last_third_mean('policy/entropy'):.3f} | {len(r.resets())} |")
    ks = pass_ks(base_eval)
    lines += ["", "Held-out pass@k at the end, and the share of responses that show their work before the answer "
              "(the demo model can also guess; see prorl_engine/basemodel.py):", "",
              "| variant | " + " | ".join(f"pass@{j}" for j in ks) + " | shows work |",
              "| --- |" + " --- |" * (len(ks) + 1)]
    for name, metrics in [("base model", base_eval)] + [(r.name, r.final_eval) for r in results]:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics, f"eval/all/pass@{j}") for j in ks)
                     + f" | {_fmt(metrics, 'eval/all/shows_work_frac', 2)} |")
    lines += ["", "Per task (held-out pass@1 at the end):", "",
              "| variant | " + " | ".join(sorted(_tasks(base_eval))) + " |",
              "| --- |" + " --- |" * len(_tasks(base_eval))]
    for name, metrics in [("base model", base_eval)] + [(r.name, r.final_eval) for r in results]:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics, f"eval/{t}/pass@1") for t in sorted(_tasks(base_eval))) + " |")
    lines += ["", "## ProRL's claims (PRORL_SPEC.md section 13) at this scale", ""]
    if "rerun" in by_name:
        rerun_p1 = by_name["rerun"].final_eval.get("eval/all/pass@1", math.nan)
        full_p1 = by_name["full"].final_eval.get("eval/all/pass@1", math.nan)
        lines += [f"Run-to-run noise first: `rerun` is the full recipe with {_changes(by_name['rerun'])}, a change that "
                  f"should not matter. It ends at pass@1 {rerun_p1:.3f} against the full recipe's {full_p1:.3f}, so differences "
                  f"of {abs(full_p1 - rerun_p1):.3f} between single runs can be noise. Below, the recipe's pass@1 is "
                  "the range of the two runs, and a variant differs from it only outside that range by more than "
                  "two sampling standard errors.", ""]
    for v in verdicts:
        lines += [f"- **{v.claim}: {v.verdict}.** {v.evidence}"]
    lines += [
        "",
        "Caveats: one seed per variant, a few million parameters, minutes of CPU training and a held-out set of "
        f"{base.eval_prompts} prompts at most; the standard errors cover sampling noise on that fixed prompt set and "
        "the rerun gives one sample of run-to-run variation, so a difference just past the noise band is a hint, "
        "not a finding. "
        "The minutes column is wall-clock time on 2 CPU cores shared with other jobs: compare generated tokens. "
        "The paper's claims concern thousands of steps on a 1.5B model.",
        "",
        "## Plots",
        "",
        "Interactive: [report.html](report.html) (all panels; zoom, hover, toggle variants).",
        "",
    ]
    lines += [f"![{title}]({_slug(key)}.png)" for key, title, _ in PANELS]
    lines += ["", "## Setup", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    lines += [f"| seed | {base.seed} |", f"| B x G | {base.prompts_per_step} x {base.samples_per_prompt} |",
              f"| T (max response tokens) | {base.max_response_tokens} |",
              f"| clip | eps_low {base.eps_low}, eps_high {base.eps_high} |",
              f"| KL | {base.kl_estimator}, beta {base.beta} |", f"| rollout temperature | {base.temperature} |",
              f"| length penalty | on {base.on_steps} / off {base.off_steps} steps, lambda_len {base.lambda_len} |",
              f"| reset_interval | {base.reset_interval} |", f"| learning_rate | {base.learning_rate} |", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({
        "environment": env, "base_eval": base_eval,
        "runs": {r.name: {"steps": r.steps, "tokens": r.tokens, "minutes": r.minutes, "final_eval": r.final_eval,
                          "overrides": r.overrides, "resets": len(r.resets())} for r in results},
        "claims": [v.__dict__ for v in verdicts],
    }, indent=2, default=str), encoding="utf-8")
    return out / "README.md"


def base_model_eval(config: RunConfig, runs_dir: Path) -> dict[str, float]:
    """Held-out metrics of the untrained policy, with the runs' own evaluation settings (cached in runs_dir)."""
    cache = runs_dir / "base_eval.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from prorl_engine.events import NoControl
    from prorl_engine.trainer import Trainer

    trainer = Trainer(config, runs_dir / "base", NullSink(), control=NoControl())  # step 0: nothing trained
    metrics = evaluate_now(trainer)
    runs_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def _config_of(result: RunResult) -> RunConfig:
    return result.info["config"]


def _tokens_at(result: RunResult, step: int) -> float:
    rows = [row for row in result.metrics if row["step"] <= step]
    return rows[-1]["tokens"] if rows else 0.0


def _tasks(metrics: dict[str, float]) -> set[str]:
    return {key.split("/")[1] for key in metrics if key.endswith("/pass@1") and key.split("/")[1] not in ("all", "logic")}


def _fmt(metrics: dict[str, float], key: str, digits: int = 3) -> str:
    value = metrics.get(key)
    return f"{value:.{digits}f}" if _number(value) else "-"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _changes(result: RunResult) -> str:
    """A variant's config overrides, as `key=value` pairs."""
    return ", ".join(f"{key}={value}" for key, value in result.overrides.items())


def _slug(key: str) -> str:
    return key.replace("/", "_").replace("@", "at")


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prorl_engine.ablations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "ablations", help="report folder")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the full recipe (default: the demo config)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the full recipe (default: the config's)")
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "var" / "ablations", help="where the run folders go")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from finished runs")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    base = RunConfig.load(args.config)
    if args.steps:
        base = base.replace(steps=args.steps)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.report_only:
        results = [read_run(name, base, args.runs / name) for name in ["full", *[n for n in names if n != "full"]]]
    else:
        results = run_all(base, names, args.runs)
    base_eval = base_model_eval(base, args.runs)
    for result in results:
        result.info["base_eval"] = base_eval
    report = write_report(results, base, args.config, base_eval, args.out, environment())
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
