"""The ablation report: README.md (tables, a verdict per claim, machine, versions and seeds),
one PNG per panel (matplotlib), report.html (plotly, interactive) and summary.json.

Everything goes into the folder the caller names. Curves are drawn against cumulative generated
tokens, the cost that dynamic sampling changes. report.html loads plotly.js from where the caller
says: the CDN, embedded in the page, or a local file linked by relative path.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from prorl_engine.ablations.runs import RunResult
from prorl_engine.ablations.verdicts import Verdict, fmt, judge_claims, pass_ks
from prorl_engine.config import RunConfig

PANELS = (  # (metric key, title, y label)
    ("reward/verifier_mean", "Training reward (verifier, before length shaping)", "mean reward"),
    ("eval/all/pass@1", "Held-out pass@1 (temperature 0.6, top_p 0.95)", "pass@1"),
    ("policy/entropy", "Policy entropy on response tokens", "nats / token"),
    ("length/mean", "Mean response length", "tokens"),
    ("kl/ref", "KL to the reference (k2), resets marked", "k2"),
    ("sampling/filtered_frac", "Groups dropped by dynamic sampling", "fraction"),
)
PLOTLY_CDN, PLOTLY_EMBED = "cdn", "embed"


def smooth(values: Sequence[float], window: int = 5) -> list[float]:
    """Trailing moving average (noisy per-step metrics)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_png(results: list[RunResult], key: str, title: str, ylabel: str, path: Path) -> None:
    """One panel: `key` against generated tokens for every run (the full recipe dashed and on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for result in results:
        x, y = result.series(key)
        if not x:
            continue
        is_eval, is_full = key.startswith("eval/"), result.name == "full"
        ax.plot(
            [t / 1e3 for t in x],
            y if is_eval else smooth(y),
            marker="o" if is_eval else None,
            markersize=3,
            linewidth=2.4 if is_full else 1.3,
            linestyle="--" if is_full else "-",
            zorder=3 if is_full else 2,
            label=result.name,
        )
        if key == "kl/ref":
            for reset in result.resets():
                tokens = result.tokens_at(reset["step"])
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
    """Grey bands over the steps where the full recipe's length penalty was on."""
    previous = 0.0
    for row in result.metrics:
        if row.get("schedule/length_penalty_on"):
            ax.axvspan(previous / 1e3, row["tokens"] / 1e3, color="grey", alpha=0.12, linewidth=0)
        previous = row["tokens"]


def plotly_source(plotly_js: str, report_dir: Path) -> str | bool:
    """plotly's `include_plotlyjs` for `plotly_js`: "cdn", "embed" (the whole library inside the page),
    or the path of a plotly.min.js file, linked relative to `report_dir`. Raises ValueError for a
    path that is not a file."""
    if plotly_js == PLOTLY_CDN:
        return PLOTLY_CDN
    if plotly_js == PLOTLY_EMBED:
        return True
    script = Path(plotly_js)
    if not script.is_file():
        raise ValueError(
            f"plotly_js: no file at {plotly_js} (give a plotly.min.js file, {PLOTLY_CDN} or {PLOTLY_EMBED})"
        )
    return os.path.relpath(script.resolve(), report_dir.resolve())


def write_html(results: list[RunResult], path: Path, plotly_js: str = PLOTLY_CDN) -> None:
    """All panels in one interactive page (plotly); plotly.js comes from `plotly_source(plotly_js)`."""
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
            fig.add_scatter(
                x=x,
                y=y if is_eval else smooth(y),
                mode="lines+markers" if is_eval else "lines",
                name=result.name,
                legendgroup=result.name,
                showlegend=index == 0,
                row=row,
                col=col,
                line={"color": color, "width": 3 if is_full else 1.5, "dash": "dash" if is_full else "solid"},
            )
        fig.update_yaxes(title_text=ylabel, row=row, col=col)
        fig.update_xaxes(title_text="generated tokens", row=row, col=col)
    fig.update_layout(height=1100, title="ProRL ablations on the demo model", template="plotly_white")
    fig.write_html(path, include_plotlyjs=plotly_source(plotly_js, path.parent), full_html=True)


def environment() -> dict[str, str]:
    """Machine, versions and the commit of the working directory's checkout, recorded in the report."""
    from importlib import metadata

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "reasoning_gym": metadata.version("reasoning-gym"),
        "commit": commit or "unknown",
    }


def write_report(
    results: list[RunResult],
    base: RunConfig,
    config_path: Path,
    base_eval: dict[str, float],
    out: Path,
    env: dict[str, str],
    *,
    runs_dir: Path,
    plotly_js: str = PLOTLY_CDN,
) -> Path:
    """README.md, one PNG per panel, report.html and summary.json in `out`; returns README.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    for key, title, ylabel in PANELS:
        plot_png(results, key, title, ylabel, out / f"{slug(key)}.png")
    write_html(results, out / "report.html", plotly_js)
    by_name = {r.name: r for r in results}
    verdicts = judge_claims(by_name, base_eval, max(base.eval_k))
    command = regenerate_command(config_path, out, by_name["full"].steps, plotly_js)
    lines = (
        _intro(by_name["full"], base, config_path, command, runs_dir)
        + _tables(results, base_eval, max(base.eval_k))
        + _claims(by_name, verdicts, base)
        + _plots()
        + _setup(base, env)
    )
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "environment": env,
                "base_eval": base_eval,
                "runs": {
                    r.name: {
                        "steps": r.steps,
                        "tokens": r.tokens,
                        "minutes": r.minutes,
                        "final_eval": r.final_eval,
                        "overrides": r.overrides,
                        "resets": len(r.resets()),
                    }
                    for r in results
                },
                "claims": [v.__dict__ for v in verdicts],
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    return out / "README.md"


def regenerate_command(config_path: Path, out: Path, steps: int, plotly_js: str) -> str:
    """The command line that writes this report again."""
    script = "" if plotly_js == PLOTLY_CDN else f" --plotly-js {rel(Path(plotly_js))}"
    return f"prorl ablate --config {rel(config_path)} --out {rel(out)} --steps {steps}{script}"


def _intro(full: RunResult, base: RunConfig, config_path: Path, command: str, runs_dir: Path) -> list[str]:
    return [
        "# ProRL ablations on the demo model",
        "",
        (
            f"The full recipe (`{rel(config_path)}`) and one variant per part of it, on the project's small base model "
            f"(`{base.model_path}`), CPU only. Every run uses seed {base.seed}, the same data and held-out split, and "
            f"the same generation budget: the full recipe ran {full.steps} steps and generated "
            f"{full.tokens:,.0f} response tokens; each variant ran until it had generated as many. "
            "Held-out metrics: the engine's evaluation "
            f"({base.eval_samples} samples per prompt at temperature {base.eval_temperature}, top_p {base.eval_top_p}) "
            f"on {base.eval_prompts} held-out prompts at most, once more at the end of every run."
        ),
        "",
        f"Regenerate: `{command}` (the runs go to {rel(runs_dir)}).",
        "",
    ]


def _tables(results: list[RunResult], base_eval: dict[str, float], k: int) -> list[str]:
    """The results at the same budget, pass@k with the share that shows its work, and pass@1 per task."""
    lines = [
        "## Results at the same generation budget",
        "",
        f"| variant | changes | steps | generated tokens | minutes | pass@1 | pass@{k} | mean length (eval) "
        "| entropy (last third) | resets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        (
            f"| base model (before RL) | | 0 | 0 | | {fmt(base_eval, 'eval/all/pass@1')} | "
            f"{fmt(base_eval, f'eval/all/pass@{k}')} | {fmt(base_eval, 'eval/all/mean_length', 1)} | | |"
        ),
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {changes(r) or '(the recipe as configured)'} | {r.steps} | {r.tokens:,.0f} | "
            f"{r.minutes:.1f} | {fmt(r.final_eval, 'eval/all/pass@1')} | {fmt(r.final_eval, f'eval/all/pass@{k}')} | "
            f"{fmt(r.final_eval, 'eval/all/mean_length', 1)} | {r.last_third_mean('policy/entropy'):.3f} | "
            f"{len(r.resets())} |"
        )
    ks, tasks = pass_ks(base_eval), sorted(_tasks(base_eval))
    rows = [("base model", base_eval)] + [(r.name, r.final_eval) for r in results]
    lines += [
        "",
        (
            "Held-out pass@k at the end, and the share of responses that show their work before the answer "
            "(the demo model can also guess; see prorl_engine/demo/problems.py):"
        ),
        "",
        "| variant | " + " | ".join(f"pass@{j}" for j in ks) + " | shows work |",
        "| --- |" + " --- |" * (len(ks) + 1),
    ]
    lines += [
        f"| {name} | "
        + " | ".join(fmt(metrics, f"eval/all/pass@{j}") for j in ks)
        + f" | {fmt(metrics, 'eval/all/shows_work_frac', 2)} |"
        for name, metrics in rows
    ]
    lines += [
        "",
        "Per task (held-out pass@1 at the end):",
        "",
        "| variant | " + " | ".join(tasks) + " |",
        "| --- |" + " --- |" * len(tasks),
    ]
    lines += [
        f"| {name} | " + " | ".join(fmt(metrics, f"eval/{t}/pass@1") for t in tasks) + " |" for name, metrics in rows
    ]
    return lines


def _claims(by_name: dict[str, RunResult], verdicts: list[Verdict], base: RunConfig) -> list[str]:
    """Run-to-run noise (when `rerun` ran), one line per verdict, and the caveats."""
    lines = ["", "## ProRL's claims (PRORL_SPEC.md section 13) at this scale", ""]
    if "rerun" in by_name:
        rerun_p1 = by_name["rerun"].final_eval.get("eval/all/pass@1", math.nan)
        full_p1 = by_name["full"].final_eval.get("eval/all/pass@1", math.nan)
        lines += [
            (
                f"Run-to-run noise first: `rerun` is the full recipe with {changes(by_name['rerun'])}, a change that "
                f"should not matter. It ends at pass@1 {rerun_p1:.3f} against the full recipe's {full_p1:.3f}, so "
                f"differences of {abs(full_p1 - rerun_p1):.3f} between single runs can be noise. Below, the recipe's "
                "pass@1 is the range of the two runs, and a variant differs from it only outside that range by more "
                "than two sampling standard errors."
            ),
            "",
        ]
    lines += [f"- **{v.claim}: {v.verdict}.** {v.evidence}" for v in verdicts]
    return lines + [
        "",
        (
            "Caveats: one seed per variant, a few million parameters, minutes of CPU training and a held-out set of "
            f"{base.eval_prompts} prompts at most; the standard errors cover sampling noise on that fixed prompt set "
            "and the rerun gives one sample of run-to-run variation, so a difference just past the noise band is a "
            "hint, not a finding. The minutes column is wall-clock time on the machine of the setup table, which "
            "other jobs may have shared: compare generated tokens. The paper's claims concern thousands of steps on "
            "a 1.5B model."
        ),
        "",
    ]


def _plots() -> list[str]:
    return [
        "## Plots",
        "",
        "Interactive: [report.html](report.html) (all panels; zoom, hover, toggle variants).",
        "",
    ] + [f"![{title}]({slug(key)}.png)" for key, title, _ in PANELS]


def _setup(base: RunConfig, env: dict[str, str]) -> list[str]:
    lines = ["", "## Setup", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    return lines + [
        f"| seed | {base.seed} |",
        f"| B x G | {base.prompts_per_step} x {base.samples_per_prompt} |",
        f"| T (max response tokens) | {base.max_response_tokens} |",
        f"| clip | eps_low {base.eps_low}, eps_high {base.eps_high} |",
        f"| KL | {base.kl_estimator}, beta {base.beta} |",
        f"| rollout temperature | {base.temperature} |",
        f"| length penalty | on {base.on_steps} / off {base.off_steps} steps, lambda_len {base.lambda_len} |",
        f"| reset_interval | {base.reset_interval} |",
        f"| learning_rate | {base.learning_rate} |",
        "",
    ]


def _tasks(metrics: dict[str, float]) -> set[str]:
    """The task names of a held-out report (its per-task pass@1 keys; not `all` or a domain)."""
    return {
        key.split("/")[1] for key in metrics if key.endswith("/pass@1") and key.split("/")[1] not in ("all", "logic")
    }


def changes(result: RunResult) -> str:
    """A variant's config overrides, as `key=value` pairs."""
    return ", ".join(f"{key}={value}" for key, value in result.overrides.items())


def slug(key: str) -> str:
    """A metric key as a file name: `eval/all/pass@1` -> `eval_all_passat1`."""
    return key.replace("/", "_").replace("@", "at")


def rel(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
