"""The ablations command: run the recipe and its variants, then write the report.

    prorl ablate --out DIR [--config CONFIG.yaml] [--steps N] [--runs var/ablations]
                 [--variants full,rerun,...] [--seeds 0,1,2] [--plotly-js cdn|embed|FILE] [--threads 2]
                 [--report-only]
    python -m prorl_engine.ablations --out DIR [the same options]

Run folders go to --runs (relative paths are read from the working directory); a variant whose
folder already holds a finished run is not run again, so the report can be re-rendered with
--report-only. With --seeds, each seed's runs go to RUNS/seed-N and the report judges each claim
by its effect size over the seeds against the full recipe's spread (verdicts.judge_seeded). The
seeds of one ablation may run as separate processes (one --seeds each, same --runs), then one
--report-only with all of them writes the report. The demo configs name their models relative to
a checkout's root: run them from there.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import prorl_engine
from prorl_engine.ablations.report import PLOTLY_CDN, PLOTLY_EMBED, environment, write_report
from prorl_engine.ablations.runs import (
    base_model_counts,
    base_model_eval,
    read_run,
    read_seeds,
    run_all,
    run_seeds,
    seed_dir,
)
from prorl_engine.ablations.seeded import write_seeded_report
from prorl_engine.ablations.variants import VARIANTS
from prorl_engine.config import RunConfig

DEMO_CONFIG = Path(prorl_engine.__file__).resolve().parent / "configs" / "demo.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prorl ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder (README.md, PNGs, report.html)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the full recipe (default: the demo config)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the full recipe (default: the config's)")
    parser.add_argument("--runs", type=Path, default=Path("var") / "ablations", help="where the run folders go")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=None,
        help="comma-separated seeds, each a whole ablation in RUNS/seed-N (default: the config's seed, in RUNS)",
    )
    parser.add_argument(
        "--plotly-js",
        default=PLOTLY_CDN,
        help=f"where report.html loads plotly.js from: {PLOTLY_CDN} (default), {PLOTLY_EMBED} (inside "
        "the page), or a plotly.min.js file, linked relative to the report",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--report-only", action="store_true", help="only re-render the report from finished runs")
    return parser


def seed_list(text: str) -> list[int]:
    """ "0,1,2" -> [0, 1, 2]: distinct whole numbers, in the order given."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are whole numbers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct whole numbers of at least 0, got {text!r}")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.plotly_js not in (PLOTLY_CDN, PLOTLY_EMBED) and not Path(args.plotly_js).is_file():
        parser.error(f"--plotly-js: no file at {args.plotly_js}")

    import torch

    torch.set_num_threads(args.threads)
    base = RunConfig.load(args.config)
    if args.steps:
        base = base.replace(steps=args.steps)
    if args.seeds is not None:
        by_seed = read_seeds(base, names, args.runs, args.seeds) if args.report_only else None
        if by_seed is None:
            by_seed = run_seeds(base, names, args.runs, args.seeds)
        base_evals = {seed: base_model_eval(base.replace(seed=seed), seed_dir(args.runs, seed)) for seed in args.seeds}
        base_counts = {seed: base_model_counts(seed_dir(args.runs, seed)) for seed in args.seeds}
        for seed, results in by_seed.items():
            for result in results:
                result.info["base_eval"] = base_evals[seed]
        report = write_seeded_report(
            by_seed,
            base,
            args.config,
            base_evals,
            base_counts,
            args.out,
            environment(),
            runs_dir=args.runs,
            variants=names,
            plotly_js=args.plotly_js,
        )
        print(f"report: {report}")
        return 0
    if args.report_only:
        results = [read_run(name, base, args.runs / name) for name in ["full", *[n for n in names if n != "full"]]]
    else:
        results = run_all(base, names, args.runs)
    base_eval = base_model_eval(base, args.runs)
    for result in results:
        result.info["base_eval"] = base_eval
    report = write_report(
        results, base, args.config, base_eval, args.out, environment(), runs_dir=args.runs, plotly_js=args.plotly_js
    )
    print(f"report: {report}")
    return 0
