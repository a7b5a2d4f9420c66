"""`prorl`: train, resume and evaluate from a terminal.

prorl train CONFIG.yaml [--set key=value ...] --out RUN_DIR [--from CHECKPOINT]
prorl resume RUN_DIR
prorl eval MODEL_OR_CHECKPOINT --data SOURCE [--data SOURCE ...] [--n 16] [--k 1,4,16] [--out DIR]
prorl base-model --out DIR [--seed 0 ...]        (options: prorl base-model --help)
prorl ablate --out DIR [--steps N ...]           (options: prorl ablate --help)
"""

from __future__ import annotations

import argparse
import json
import pkgutil
import sys
from pathlib import Path

from prorl_engine.config import ROLLOUT_BACKENDS, ConfigError, DataSource, RunConfig, parse_yaml, values_from_yaml
from prorl_engine.data.example import DOMAINS
from prorl_engine.events import Event, FanoutSink, JsonlSink, Sample


class ProgressSink:
    """A tqdm progress bar showing the latest reward and KL."""

    def __init__(self, total: int, initial: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.bar.n = step
        shown = {"reward": values.get("reward/mean"), "kl": values.get("kl/ref"), "len": values.get("length/mean")}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)
        self.bar.refresh()

    def samples(self, step: int, rows: list[Sample]) -> None:
        """The bar shows numbers only; samples go to samples.jsonl."""

    def event(self, event: Event) -> None:
        if event.kind in ("reset", "checkpoint") or (event.kind == "status" and event.data.get("status") != "running"):
            details = ", ".join(f"{k}={v}" for k, v in event.data.items() if v not in ("", None))
            self.bar.write(f"step {event.step}: {event.kind} ({details})")

    def rewind(self, step: int) -> None:
        self.bar.n = step

    def close(self) -> None:
        self.bar.close()


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value`: the value is read as YAML, so numbers, lists and null keep their types."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError([(pair, "--set needs key=value")])
        overrides[key.strip()] = parse_yaml(value, key.strip())
    return overrides


def run_training(config: RunConfig, run_dir: Path, fork_from: str | None = None) -> str:
    from prorl_engine.checkpoint import latest_step
    from prorl_engine.trainer import Trainer

    sink = FanoutSink(JsonlSink(run_dir), ProgressSink(config.steps, latest_step(run_dir) or 0))
    try:
        return Trainer(config, run_dir, sink, fork_from=fork_from).train()
    finally:
        sink.close()


def cmd_train(args: argparse.Namespace) -> int:
    raw = values_from_yaml(Path(args.config).read_text(encoding="utf-8"))
    config = RunConfig.from_dict({**raw, **parse_overrides(args.set)})
    run_dir = Path(args.out)
    if (run_dir / "config.yaml").exists():
        print(f"error: {run_dir} already holds a run; continue it with `prorl resume {run_dir}`", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    if args.fork_from:
        (run_dir / "parent.txt").write_text(str(Path(args.fork_from).resolve()) + "\n", encoding="utf-8")
    status = run_training(config, run_dir, args.fork_from)
    print(f"{status}: {run_dir}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        print(f"error: {run_dir} has no config.yaml: not a run folder", file=sys.stderr)
        return 2
    config = RunConfig.load(run_dir / "config.yaml")
    parent = run_dir / "parent.txt"
    status = run_training(config, run_dir, parent.read_text().strip() if parent.is_file() else None)
    print(f"{status}: {run_dir}")
    return 0


def eval_sources(specs: list[str], size: int) -> list[DataSource]:
    """`rg:TASK` (reasoning-gym, `size` items) or `PATH[:DOMAIN]` (domain defaults to the file's stem)."""
    sources = []
    for spec in specs:
        if spec.startswith("rg:"):
            sources.append(DataSource(task=spec[3:], size=1, eval_size=size))
            continue
        path, _, domain = spec.partition(":")
        domain = domain or Path(path).stem
        if domain not in DOMAINS:
            raise ConfigError([("--data", f"{spec}: say the domain as PATH:DOMAIN (one of {', '.join(DOMAINS)})")])
        sources.append(DataSource(task=Path(path).stem, source="file", path=path, domain=domain, eval_size=10**9))
    return sources


def cmd_eval(args: argparse.Namespace) -> int:
    from prorl_engine.data.sources import load_source
    from prorl_engine.evaluation import evaluate_model_folders

    ks = [int(k) for k in args.k.split(",")]
    if any(k > args.n for k in ks):
        raise ConfigError([("--k", f"each k must be <= --n ({args.n})")])
    examples = []
    for source in eval_sources(args.data, args.size):
        train, held_out = load_source(source, args.seed)
        examples.extend(held_out + (train if source.source == "file" else []))
    report = evaluate_model_folders(
        {args.model: args.model},
        examples,
        n=args.n,
        ks=ks,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
        backend=args.backend,
    )[args.model]
    for key, value in report.metrics.items():
        print(f"{key:40s} {value:.4f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report.metrics, indent=2), encoding="utf-8")
        with open(out / "eval_samples.jsonl", "w", encoding="utf-8") as handle:
            for row in report.rows():
                handle.write(json.dumps(row, default=str) + "\n")
        print(f"wrote {out / 'eval.json'} and {out / 'eval_samples.jsonl'}")
    return 0


# Commands built on the engine, which parse their own options: named, not imported (the engine's
# core imports nothing of the demo or the ablations); `pkgutil.resolve_name` imports one when it runs.
BUILT_ON_THE_ENGINE = {"base-model": "prorl_engine.demo.build:main", "ablate": "prorl_engine.ablations.cli:main"}


def cmd_built_on_the_engine(args: argparse.Namespace) -> int:
    return pkgutil.resolve_name(BUILT_ON_THE_ENGINE[args.command])(args.extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prorl", description="Prolonged RL for LLMs with the ProRL v2 recipe.")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice; 1 is fastest for tiny models on a busy machine)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="start a run from a YAML config")
    train.add_argument("config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    train.add_argument("--out", required=True, help="run folder to create")
    train.add_argument(
        "--from",
        dest="fork_from",
        metavar="CHECKPOINT",
        help="fork: start from another run's checkpoint (weights, reference, optimizer, step)",
    )
    train.set_defaults(func=cmd_train)

    resume = commands.add_parser("resume", help="continue a run from its latest checkpoint")
    resume.add_argument("run_dir")
    resume.set_defaults(func=cmd_resume)

    ev = commands.add_parser("eval", help="pass@k of a model or checkpoint on held-out data")
    ev.add_argument("model", help="save_pretrained folder (a checkpoint folder works)")
    ev.add_argument("--data", action="append", required=True, help="rg:TASK or PATH[:DOMAIN]; repeatable")
    ev.add_argument("--n", type=int, default=16, help="samples per prompt")
    ev.add_argument("--k", default="1,4,16", help="comma-separated k values")
    ev.add_argument("--size", type=int, default=64, help="prompts per reasoning-gym task")
    ev.add_argument("--temperature", type=float, default=0.6)
    ev.add_argument("--top-p", type=float, default=0.95)
    ev.add_argument("--max-new-tokens", type=int, default=1024)
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--backend", choices=ROLLOUT_BACKENDS, default="hf", help="what samples: hf generate or vllm")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", help="folder for eval.json and eval_samples.jsonl")
    ev.set_defaults(func=cmd_eval)

    base = commands.add_parser(
        "base-model",
        add_help=False,
        help="build the project's small base model (SFT on reasoning tasks; options: prorl base-model --help)",
    )
    base.set_defaults(func=cmd_built_on_the_engine)  # its own options are parsed by prorl_engine.demo.build.main

    ablate = commands.add_parser(
        "ablate",
        add_help=False,
        help="the recipe and one variant per part of it, with a report (options: prorl ablate --help)",
    )
    ablate.set_defaults(func=cmd_built_on_the_engine)  # its own options are parsed by prorl_engine.ablations.cli.main
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in BUILT_ON_THE_ENGINE:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except ConfigError as exc:
        print("error: invalid config:", file=sys.stderr)
        for name, message in exc.errors:
            print(f"  {name}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
