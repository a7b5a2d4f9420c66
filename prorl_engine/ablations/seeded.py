"""The report of an ablation over several seeds: README.md (a verdict per claim with its effect
size and noise band, the reasoning-boundary categories, every run, the ablation's cost), one PNG
per panel, report.html and summary.json, in the folder the caller names.

The verdicts are `verdicts.judge_seeded`'s; the single-seed report is `report.write_report`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prorl_engine.ablations.report import (
    PANELS,
    PLOTLY_CDN,
    _setup,
    _shade_penalty_windows,
    changes,
    plotly_source,
    rel,
    slug,
    smooth,
)
from prorl_engine.ablations.runs import RunResult
from prorl_engine.ablations.verdicts import SeededVerdict, fmt, judge_seeded, pass_ks, seeded_boundary
from prorl_engine.config import RunConfig

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
DASHES = ("solid", "dash", "dot", "dashdot")  # one per seed (plotly names; matplotlib's below)
MPL_DASHES = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-."}


def ablation_cost(by_seed: dict[int, list[RunResult]]) -> dict[str, float]:
    """What the whole ablation cost: runs, steps and generated tokens summed over every run, the
    sum of their minutes, and the wall-clock minutes from the first run's start to the last one's
    end (NaN when a run kept no times; runs of several seeds may overlap, so wall <= sum)."""
    runs = [run for results in by_seed.values() for run in results]
    cost = {
        "runs": float(len(runs)),
        "steps": float(sum(run.steps for run in runs)),
        "generated_tokens": sum(run.tokens for run in runs),
        "run_minutes": sum(run.minutes for run in runs),
        "wall_minutes": float("nan"),
    }
    if runs and all(run.started and run.finished for run in runs):
        start = min(datetime.fromisoformat(run.started) for run in runs)
        end = max(datetime.fromisoformat(run.finished) for run in runs)
        cost["wall_minutes"] = (end - start).total_seconds() / 60
    return cost


def write_seeded_report(
    by_seed: dict[int, list[RunResult]],
    base: RunConfig,
    config_path: Path,
    base_evals: dict[int, dict[str, float]],
    base_counts: dict[int, dict[str, list[tuple[int, int]]]],
    out: Path,
    env: dict[str, str],
    *,
    runs_dir: Path,
    variants: Sequence[str],
    plotly_js: str = PLOTLY_CDN,
) -> Path:
    """README.md, one PNG per panel, report.html and summary.json in `out`; returns README.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    by_name = {seed: {run.name: run for run in results} for seed, results in by_seed.items()}
    verdicts = judge_seeded(by_name, base_evals)
    boundary_verdict, boundaries = seeded_boundary(by_name, base_counts)
    verdicts.append(boundary_verdict)
    cost = ablation_cost(by_seed)
    for key, title, ylabel in PANELS:
        _plot_png(by_seed, key, title, ylabel, out / f"{slug(key)}.png")
    _write_html(by_seed, out / "report.html", plotly_js)
    seeds = sorted(by_seed)
    command = (
        f"prorl ablate --config {rel(config_path)} --seeds {','.join(map(str, seeds))} "
        f"--variants {','.join(variants)} --runs {rel(runs_dir)} --out {rel(out)}"
        + ("" if plotly_js == PLOTLY_CDN else f" --plotly-js {rel(Path(plotly_js))}")
    )
    full_steps = "/".join(str(by_name[s]["full"].steps) for s in seeds)
    lines = [
        "# ProRL ablations on the claims demo",
        "",
        (
            f"The full recipe (`{rel(config_path)}`) and the variants {', '.join(v for v in variants if v != 'full')}, "
            f"each run with seeds {', '.join(map(str, seeds))} on the base model `{base.model_path}`, CPU only. "
            f"Within a seed every run has the same data, held-out split and generation budget: the full recipe runs "
            f"{full_steps} steps, each variant until it has generated as many response tokens as that seed's full "
            f"run. Held-out metrics: {base.eval_samples} samples per prompt at temperature {base.eval_temperature}, "
            f"top_p {base.eval_top_p}, on {base.eval_prompts} held-out prompts at most, at the end of every run."
        ),
        "",
        f"Regenerate: `{command}`. To view and compare the runs in the studio: "
        f"`python manage.py import_run {rel(runs_dir)}/seed-*/*/ --owner USERNAME`.",
        "",
        *_not_run(variants),
        (
            f"The whole ablation: {cost['runs']:.0f} runs, {cost['steps']:,.0f} steps, "
            f"{cost['generated_tokens']:,.0f} generated response tokens, {cost['run_minutes']:.1f} minutes of runs, "
            f"{cost['wall_minutes']:.1f} minutes of wall-clock time from the first run's start to the last one's end "
            "(the seeds ran as parallel processes, one torch thread each, on the machine of the setup table, "
            "which other jobs shared: compare generated tokens, not minutes). Base-model evaluations not counted."
        ),
        "",
        *_claims(verdicts, seeds),
        *_boundary_lines(boundaries),
        *_runs_table(by_seed, base_evals, max(base.eval_k)),
        "",
        "## Plots",
        "",
        "One colour per variant, one line style per seed. Interactive: [report.html](report.html).",
        "",
        *[f"![{title}]({slug(key)}.png)" for key, title, _ in PANELS],
        *_setup(base, env),
        f"| seeds | {', '.join(map(str, seeds))} |",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    summary = {
        "environment": env,
        "command": command,
        "cost": cost,
        "base_eval": {str(s): base_evals[s] for s in seeds},
        "runs": {
            f"{run.name}/seed-{seed}": {
                "steps": run.steps,
                "tokens": run.tokens,
                "minutes": run.minutes,
                "started": run.started,
                "finished": run.finished,
                "final_eval": run.final_eval,
                "overrides": run.overrides,
                "resets": len(run.resets()),
            }
            for seed, results in by_seed.items()
            for run in results
        },
        "claims": [_verdict_json(v) for v in verdicts],
        "boundary": {
            str(seed): [{"task": t.task, "category": t.category, "margin": t.margin} for t in tables]
            for seed, tables in boundaries.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return out / "README.md"


def _not_run(variants: Sequence[str]) -> list[str]:
    """A line naming the variants (and so the claims) this report leaves out, if any."""
    from prorl_engine.ablations.variants import VARIANTS

    left_out = [name for name in VARIANTS if name not in variants and name != "rerun"]  # seeds replace rerun
    if not left_out:
        return []
    return [f"Not run for this report, so their claims are not judged here: {', '.join(left_out)}.", ""]


def _verdict_json(verdict: SeededVerdict) -> dict:
    effect = verdict.effect
    return {
        "claim": verdict.claim,
        "verdict": verdict.verdict,
        "evidence": verdict.evidence,
        "variant": verdict.variant,
        **(
            {"metric": effect.metric, "full": effect.full, "variant_values": effect.variant, "effect": effect.effect}
            | {"noise_band": effect.band}
            if effect
            else {}
        ),
    }


def _claims(verdicts: list[SeededVerdict], seeds: list[int]) -> list[str]:
    lines = [
        "## ProRL's claims at this scale",
        "",
        (
            f"Effect size: the mean over seeds {', '.join(map(str, seeds))} of (variant - full recipe), each seed's "
            "variant against the same seed's full run. Noise band: the full recipe's spread over its seeds (highest "
            "minus lowest), for pass@1 at least two sampling standard errors of the difference. An effect outside the "
            "band counts (`verdicts.judge_seeded`); with "
            f"{len(seeds)} seeds the band is itself a rough estimate."
        ),
        "",
        "| claim | variant | metric | effect size | noise band | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        if v.effect is not None:
            lines.append(
                f"| {v.claim} | {v.variant} | {v.effect.metric} | {v.effect.effect:+.3f} | {v.effect.band:.3f} "
                f"| {v.verdict} |"
            )
        else:
            lines.append(f"| {v.claim} | | | | | {v.verdict} |")
    return lines + ["", *[f"- **{v.claim}: {v.verdict}.** {v.evidence}" for v in verdicts], ""]


def _boundary_lines(boundaries: dict[int, list]) -> list[str]:
    """Per seed and task: base and full pass@1 and pass@K, and the category (prorl_engine/boundary.py)."""
    lines = [
        "## The reasoning boundary (full recipe against the base model)",
        "",
        "Categories as prorl_engine/boundary.py sorts them (ProRL v1), on each seed's held-out prompts:",
        "",
        "| seed | task | base pass@1 | full pass@1 | base pass@K | full pass@K | K | margin | category |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, tables in sorted(boundaries.items()):
        lines += [
            f"| {seed} | {t.task} | {t.base[0]:.3f} | {t.rl[0]:.3f} | {t.base[-1]:.3f} | {t.rl[-1]:.3f} | "
            f"{t.k_large} | {t.margin:.3f} | {t.category} |"
            for t in tables
        ]
    return lines + [""]


def _runs_table(by_seed: dict[int, list[RunResult]], base_evals: dict[int, dict[str, float]], k: int) -> list[str]:
    ks = pass_ks(next(iter(base_evals.values())))
    lines = [
        "## Every run",
        "",
        "| seed | variant | changes | steps | generated tokens | minutes | "
        + " | ".join(f"pass@{j}" for j in ks)
        + " | mean length (eval) | shows work | entropy (last third) | KL (last third) | resets |",
        "| --- |" + " --- |" * (10 + len(ks)),
    ]
    for seed in sorted(by_seed):
        base = base_evals[seed]
        lines.append(
            f"| {seed} | base model | | 0 | 0 | | "
            + " | ".join(fmt(base, f"eval/all/pass@{j}") for j in ks)
            + f" | {fmt(base, 'eval/all/mean_length', 1)} | {fmt(base, 'eval/all/shows_work_frac', 2)} | | | |"
        )
        for r in by_seed[seed]:
            lines.append(
                f"| {seed} | {r.name} | {changes(r) or '(the recipe)'} | {r.steps} | {r.tokens:,.0f} | "
                f"{r.minutes:.1f} | "
                + " | ".join(fmt(r.final_eval, f"eval/all/pass@{j}") for j in ks)
                + f" | {fmt(r.final_eval, 'eval/all/mean_length', 1)} | "
                f"{fmt(r.final_eval, 'eval/all/shows_work_frac', 2)} | {r.last_third_mean('policy/entropy'):.3f} | "
                f"{r.last_third_mean('kl/ref'):.2e} | {len(r.resets())} |"
            )
    return lines


def _styles(by_seed: dict[int, list[RunResult]]):
    """(run, label, colour, dash) for every run: a colour per variant, a dash per seed."""
    names = list(dict.fromkeys(run.name for results in by_seed.values() for run in results))
    for index, seed in enumerate(sorted(by_seed)):
        for run in by_seed[seed]:
            colour = PALETTE[names.index(run.name) % len(PALETTE)]
            yield run, f"{run.name} seed {seed}", colour, DASHES[index % len(DASHES)]


def _plot_png(by_seed: dict[int, list[RunResult]], key: str, title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for run, label, colour, dash in _styles(by_seed):
        x, y = run.series(key)
        if not x:
            continue
        is_eval = key.startswith("eval/")
        ax.plot(
            [t / 1e3 for t in x],
            y if is_eval else smooth(y),
            color=colour,
            linestyle=MPL_DASHES[dash],
            marker="o" if is_eval else None,
            markersize=3,
            linewidth=1.4,
            label=label,
        )
    if key == "length/mean":  # where the first seed's full run had the penalty on
        _shade_penalty_windows(ax, by_seed[min(by_seed)][0])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("generated response tokens (thousands)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_html(by_seed: dict[int, list[RunResult]], path: Path, plotly_js: str) -> None:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=2, subplot_titles=[title for _, title, _ in PANELS], vertical_spacing=0.08)
    for index, (key, _, ylabel) in enumerate(PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for run, label, colour, dash in _styles(by_seed):
            x, y = run.series(key)
            if not x:
                continue
            is_eval = key.startswith("eval/")
            fig.add_scatter(
                x=x,
                y=y if is_eval else smooth(y),
                mode="lines+markers" if is_eval else "lines",
                name=label,
                legendgroup=label,
                showlegend=index == 0,
                row=row,
                col=col,
                line={"color": colour, "width": 1.5, "dash": dash},
            )
        fig.update_yaxes(title_text=ylabel, row=row, col=col)
        fig.update_xaxes(title_text="generated tokens", row=row, col=col)
    fig.update_layout(height=1100, title="ProRL ablations on the claims demo, several seeds", template="plotly_white")
    fig.write_html(path, include_plotlyjs=plotly_source(plotly_js, path.parent), full_html=True)
