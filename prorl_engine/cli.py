"""`prorl`: train, resume and evaluate from a terminal.

prorl train CONFIG.yaml [--set key=value ...] --out RUN_DIR [--from CHECKPOINT]
prorl resume RUN_DIR
prorl eval CHECKPOINT_OR_RUN_DIR [--data SOURCE ...] [--n N] [--k 1,4,16] [--out DIR]
prorl eval MODEL_FOLDER --data SOURCE [--data SOURCE ...] [--n 16] [--k 1,4,16] [--out DIR]
prorl base-model --out DIR [--seed 0 ...]        (options: prorl base-model --help)
prorl ablate --out DIR [--steps N ...]           (options: prorl ablate --help)

Exit codes: 0 done, 2 refused before anything ran (a missing file, malformed YAML, an invalid
config, a run folder another trainer holds), 75 a checkpoint the disk refused (full, or a folder
that is not writable: fix it and `prorl resume`), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pkgutil
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prorl_engine.config import ROLLOUT_BACKENDS, ConfigError, DataSource, RunConfig, parse_yaml, values_from_yaml
from prorl_engine.config_fields import NOVELTY_CORPORA
from prorl_engine.data.example import DOMAINS, Example
from prorl_engine.data.sources import DataError
from prorl_engine.events import Event, FanoutSink, JsonlSink, Sample
from prorl_engine.runlock import RunLocked

CHECKPOINT_REFUSED = 75  # sysexits' EX_TEMPFAIL: a temporary failure, to retry once it is fixed


class CliError(Exception):
    """A problem one line on stderr explains, found before anything ran (exit code 2)."""


class ProgressSink:
    """A tqdm progress bar showing the latest reward and KL; remembers the last step completed."""

    def __init__(self, total: int, initial: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.last_step = initial  # the last step whose metrics were logged (or the step the run started from)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.bar.n = self.last_step = step
        shown = {"reward": values.get("reward/mean"), "kl": values.get("kl/ref"), "len": values.get("length/mean")}
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)
        self.bar.refresh()

    def samples(self, step: int, rows: list[Sample]) -> None:
        """The bar shows numbers only; samples go to samples.jsonl."""

    def event(self, event: Event) -> None:
        if event.kind == "status" and event.data.get("status") == "running":
            self.last_step = event.step  # where a resumed or forked run starts
        if event.kind in ("reset", "checkpoint") or (event.kind == "status" and event.data.get("status") != "running"):
            details = ", ".join(f"{k}={v}" for k, v in event.data.items() if v not in ("", None))
            self.bar.write(f"step {event.step}: {event.kind} ({details})")

    def rewind(self, step: int) -> None:
        self.bar.n = self.last_step = step

    def close(self) -> None:
        self.bar.close()


# --- reading configs ------------------------------------------------------------------------------
def read_config_values(path: Path) -> dict[str, Any]:
    """The field values of the YAML config file at `path`. A file that cannot be read or is not YAML
    is a CliError of one line; what is wrong with the values is RunConfig.from_dict's to say."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return values_from_yaml(text)
    except ConfigError as exc:
        raise CliError(f"{path}: {yaml_problem(exc)}") from None


def yaml_problem(exc: ConfigError) -> str:
    """A YAML problem (`parse_yaml`'s ConfigError) on one line. PyYAML's message spans several (it
    quotes the offending line under a caret); its position and words are what a person needs."""
    cause = exc.__context__  # parse_yaml raises its ConfigError while handling PyYAML's error
    if isinstance(cause, yaml.MarkedYAMLError) and cause.problem_mark is not None:
        mark = cause.problem_mark
        context = f" ({cause.context})" if cause.context else ""
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {cause.problem}{context}"
    return " ".join("; ".join(message for _, message in exc.errors).split())


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value`: the value is read as YAML, so numbers, lists and null keep their types."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError([(pair, "--set needs key=value")])
        try:
            overrides[key.strip()] = parse_yaml(value, key.strip())
        except ConfigError as exc:
            raise CliError(f"--set {pair}: {yaml_problem(exc)}") from None
    return overrides


# --- train and resume -----------------------------------------------------------------------------
def run_training(
    config: RunConfig, run_dir: Path, fork_from: str | None = None, ranks: argparse.Namespace | None = None
) -> int:
    """Train in `run_dir` (its JSONL logs and a progress bar). Returns the exit code: 0; 130 after
    Ctrl-C, with where the run stopped and the command that continues it; CHECKPOINT_REFUSED when
    the disk refused a checkpoint, with what to fix and that command, on one line. With `--nproc`
    (`ranks`), the run is trained by that many ranks per machine under torchrun
    (prorl_engine/launch.py) and the exit code is torchrun's."""
    from prorl_engine.checkpoint import CheckpointWriteError, latest_step
    from prorl_engine.trainer import Trainer

    if ranks is not None and ranks.nproc:
        from prorl_engine import launch

        started = time.time()
        try:
            options = {"nnodes": ranks.nnodes, "node_rank": ranks.node_rank, "rdzv_endpoint": ranks.rdzv_endpoint}
            code = launch.run(run_dir, ranks.nproc, fork_from=fork_from, **options)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        refused = launch.refused_checkpoint(run_dir, since=started) if code else None
        if refused is None:
            return code
        print(f"error: {refused}: {resume_command(run_dir, ranks)}", file=sys.stderr)
        return CHECKPOINT_REFUSED

    progress = ProgressSink(config.steps, latest_step(run_dir) or 0)
    sink = FanoutSink(JsonlSink(run_dir), progress)
    try:
        try:
            status = Trainer(config, run_dir, sink, fork_from=fork_from).train()
        finally:
            sink.close()
    except KeyboardInterrupt:
        print(interrupted(run_dir, progress.last_step, config.steps, latest_step(run_dir), fork_from), file=sys.stderr)
        return 130
    except CheckpointWriteError as refused:
        print(f"error: {refused}: {resume_command(run_dir)}", file=sys.stderr)
        return CHECKPOINT_REFUSED
    print(f"{status}: {run_dir}")
    return 0


def resume_command(run_dir: Path, ranks: argparse.Namespace | None = None) -> str:
    """The command that continues the run in `run_dir`, with the ranks it was launched on."""
    command = ["prorl", "resume", str(run_dir)]
    if ranks is not None and ranks.nproc:
        command += ["--nproc", str(ranks.nproc)]
        if ranks.nnodes > 1:
            command += ["--nnodes", str(ranks.nnodes), "--node-rank", str(ranks.node_rank)]
            command += ["--rdzv-endpoint", ranks.rdzv_endpoint]
    return shlex.join(command)


def interrupted(run_dir: Path, done: int, steps: int, checkpoint: int | None, fork_from: str | None) -> str:
    """What Ctrl-C leaves of a run. The trainer saves a checkpoint at a stop command, never at an
    interrupt (the step in progress may be half done), so that step is lost and a resume starts
    again from the last checkpoint, training the steps after it once more."""
    lost = f" (what it had done of step {done + 1} is lost)" if done < steps else ""
    if checkpoint is not None:
        start = f"from its last checkpoint, step {checkpoint}"
        if checkpoint < done:
            again = f"step {done} is" if checkpoint + 1 == done else f"steps {checkpoint + 1}-{done} are"
            start += f"; {again} trained again"
    elif fork_from:
        start = f"from the checkpoint it was forked from, {fork_from}: it has none of its own yet"
    else:
        start = "from step 0: it has no checkpoint yet"
    return (
        f"interrupted: run {run_dir} stopped after step {done} of {steps}{lost}\n"
        f"continue it with: prorl resume {shlex.quote(str(run_dir))}   ({start})"
    )


def cmd_train(args: argparse.Namespace) -> int:
    values = {**read_config_values(Path(args.config)), **parse_overrides(args.set)}
    config = RunConfig.from_dict(values)
    run_dir = Path(args.out)
    if (run_dir / "config.yaml").exists():
        raise CliError(f"{run_dir} already holds a run; continue it with `prorl resume {shlex.quote(str(run_dir))}`")
    if args.fork_from and not (Path(args.fork_from) / "trainer_state.pt").is_file():
        raise CliError(f"--from {args.fork_from}: not a checkpoint (no trainer_state.pt)")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    if args.fork_from:
        (run_dir / "parent.txt").write_text(str(Path(args.fork_from).resolve()) + "\n", encoding="utf-8")
    return run_training(config, run_dir, args.fork_from, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from prorl_engine import runlock
    from prorl_engine.checkpoint import latest_step

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CliError(f"{run_dir} has no config.yaml: not a run folder")
    config = RunConfig.from_dict(read_config_values(run_dir / "config.yaml"))
    last = latest_step(run_dir)
    if last is not None and last >= config.steps:
        print(f"run {run_dir} finished at step {last}; nothing to do")
        return 0
    pid = runlock.holder(run_dir)
    if pid is not None:  # refused now, not after loading the model (train() takes the lock itself)
        raise RunLocked(run_dir, pid or None)
    parent = run_dir / "parent.txt"
    return run_training(config, run_dir, parent.read_text().strip() if parent.is_file() else None, args)


# --- eval -----------------------------------------------------------------------------------------
# `prorl eval` flag -> the run config field it defaults to for a run checkpoint, and its default otherwise
EVAL_DEFAULTS: dict[str, tuple[str, Any]] = {
    "n": ("eval_samples", 16),
    "k": ("eval_k", [1, 4, 16]),
    "temperature": ("eval_temperature", 0.6),
    "top_p": ("eval_top_p", 0.95),
    "max_new_tokens": ("max_response_tokens", 1024),
    "batch_size": ("rollout_batch_size", 64),
    "backend": ("rollout_backend", "hf"),
    "size": ("eval_prompts", 64),
}


@dataclass
class EvalPlan:
    """What `prorl eval` samples and how it scores: the flags given, and where one is not given, the
    run's own evaluation settings for a run checkpoint (so it measures what the run's evaluations
    measured), else fixed defaults."""

    n: int
    ks: list[int]
    temperature: float
    top_p: float
    max_new_tokens: int
    batch_size: int
    backend: str
    size: int
    dtype: str = "float32"
    format_penalty: float = -0.5
    truncated_reward: float | None = 0.0

    @classmethod
    def from_args(cls, args: argparse.Namespace, run: RunConfig | None) -> EvalPlan:
        values = {}
        for flag, (field_name, default) in EVAL_DEFAULTS.items():
            given = getattr(args, flag)
            values[flag] = given if given is not None else getattr(run, field_name) if run else default
        n = values.pop("n")
        if args.k is not None:
            ks = [int(k) for k in args.k.split(",")]
            if any(k > n for k in ks):
                raise ConfigError([("--k", f"each k must be <= --n ({n})")])
        else:  # the run's (or the default) k values that n samples can give
            ks = [k for k in values["k"] if k <= n] or [1]
        del values["k"]
        if run is not None:  # score as the run scored, in the dtype it trained in
            values.update(dtype=run.dtype, format_penalty=run.format_penalty, truncated_reward=run.truncated_reward)
        return cls(n=n, ks=ks, **values)

    def summary(self, prompts: int) -> str:
        return (
            f"{prompts} prompts x {self.n} samples, pass@{','.join(map(str, self.ks))}, up to "
            f"{self.max_new_tokens} new tokens, temperature {self.temperature:g}, top_p {self.top_p:g}, "
            f"backend {self.backend}"
        )


def eval_target(model: str) -> tuple[str, RunConfig | None]:
    """The model to evaluate and, for a run's checkpoint, its run's config (None for a plain model
    folder). A run folder stands for its latest checkpoint."""
    from prorl_engine import checkpoint as ckpt
    from prorl_engine.builders import MODEL_BUILDERS

    if model.partition(":")[0] in MODEL_BUILDERS:  # tiny:FOLDER / base:FOLDER, built on first use
        return model, None
    path = Path(model).expanduser()
    if not path.is_dir():
        raise CliError(f"{model}: no such model folder")
    if (path / "config.yaml").is_file() and not (path / "trainer_state.pt").is_file():
        latest = ckpt.latest(path)
        if latest is None:
            raise CliError(f"{model} is a run folder without a checkpoint yet")
        print(f"{model} is a run folder: evaluating its latest checkpoint, {latest.name}", file=sys.stderr)
        path, model = latest, str(latest)
    if not (path / "trainer_state.pt").is_file():
        return model, None
    return model, checkpoint_config(path)


def checkpoint_config(path: Path) -> RunConfig:
    """The config of the run that wrote checkpoint `path` (its trainer_state.pt holds it)."""
    import torch

    # mmap: only the config is read, not the optimizer's state (twice the model's size)
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False, mmap=True)
    try:
        return RunConfig.from_dict(state["config"], check_paths=False)
    except ConfigError as exc:
        raise CliError(f"{path}: its run's config does not read as a config of this version ({exc})") from None


def eval_examples(specs: list[str], plan: EvalPlan, run: RunConfig | None, seed: int) -> list[Example]:
    """The prompts to evaluate. A run checkpoint without --data: the run's held-out prompts, as its
    own evaluations take them (at most `size`, spread across the tasks). --data names sources; a
    source of the run's mix is read as the run read it (its params, instruction and seed), so its
    held-out prompts are the run's (at most `size`), never a prompt it trained on."""
    from prorl_engine.data.sources import load_source
    from prorl_engine.evaluation import held_out_examples

    if not specs:
        if run is None:
            raise CliError("--data is needed: the model is not a run's checkpoint, so it has no data mix of its own")
        return held_out_examples(run.data, run.seed, plan.size)
    examples = []
    for spec in specs:
        source, source_seed, in_run = eval_source(spec, plan.size, run, seed)
        train, held_out = load_source(source, source_seed)
        if in_run:
            examples.extend(held_out[: plan.size])
        else:  # a task generated for this evaluation, or a whole file of evaluation records
            examples.extend(held_out + (train if source.source == "file" else []))
    return examples


def eval_source(spec: str, size: int, run: RunConfig | None, seed: int) -> tuple[DataSource, int, bool]:
    """(source, seed it is loaded with, whether it is a source of the run's mix) for one --data
    SPEC: `rg:TASK` (reasoning-gym, `size` prompts) or `PATH[:DOMAIN]` (domain defaults to the
    file's stem)."""
    if spec.startswith("rg:"):
        task = spec[3:]
        for index, source in enumerate(run.data if run else []):
            if source.source == "reasoning_gym" and source.task == task:
                return source, run.seed + index, True
        # the instruction the model was trained with: the run's (first reasoning-gym source's) prompt format
        trained = next((s for s in (run.data if run else []) if s.source == "reasoning_gym"), None)
        instruction = {"instruction": trained.instruction} if trained else {}
        return DataSource(task=task, size=1, eval_size=size, **instruction), seed, False
    path, _, domain = spec.partition(":")
    if not Path(path).expanduser().is_file():
        raise CliError(f"--data {spec}: no such file {path}")
    for index, source in enumerate(run.data if run else []):
        if source.source == "file" and Path(source.path).expanduser().resolve() == Path(path).expanduser().resolve():
            return dataclasses.replace(source, domain=domain or source.domain), run.seed + index, True
    domain = domain or Path(path).stem
    if domain not in DOMAINS:
        raise ConfigError([("--data", f"{spec}: say the domain as PATH:DOMAIN (one of {', '.join(DOMAINS)})")])
    return DataSource(task=Path(path).stem, source="file", path=path, domain=domain, eval_size=10**9), seed, False


def eval_novelty(corpus: str | None, run: RunConfig | None):
    """The n-gram index `prorl eval --novelty-corpus` measures novelty against (None: no novelty).

    Not given: a run checkpoint's own `novelty_corpus`, else none. "training_data": the run's
    training split (a run checkpoint only); another name of NOVELTY_CORPORA: that corpus; anything
    else is a text file whose every non-blank line is one text of the corpus."""
    from prorl_engine.novelty import NgramIndex, reference_index, training_examples

    name = corpus if corpus is not None else run.novelty_corpus if run else "none"
    if name == "training_data":
        if run is None:
            raise CliError(
                "--novelty-corpus training_data: the model is not a run's checkpoint, so it has no training data; "
                "name another corpus or a text file"
            )
        return reference_index(name, training_examples(run.data, run.seed))
    if name in NOVELTY_CORPORA:
        return reference_index(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise CliError(f"--novelty-corpus {name}: neither a corpus ({', '.join(NOVELTY_CORPORA)}) nor a text file")
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise CliError(f"--novelty-corpus {name}: the file holds no text (one text per non-blank line)")
    return NgramIndex.build(texts)


def cmd_eval(args: argparse.Namespace) -> int:
    from prorl_engine.evaluation import evaluate_model_folders

    model, run = eval_target(args.model)
    plan = EvalPlan.from_args(args, run)
    examples = eval_examples(args.data, plan, run, args.seed)
    if not examples:
        raise CliError("no prompts to evaluate: the sources hold no held-out examples")
    novelty = eval_novelty(args.novelty_corpus, run)
    origin = f" (defaults from the run config in {model})" if run else ""
    print(f"prorl eval: {plan.summary(len(examples))}{origin}", file=sys.stderr)
    report = evaluate_model_folders(
        {model: model},
        examples,
        n=plan.n,
        ks=plan.ks,
        temperature=plan.temperature,
        top_p=plan.top_p,
        max_new_tokens=plan.max_new_tokens,
        format_penalty=plan.format_penalty,
        truncated_reward=plan.truncated_reward,
        seed=args.seed,
        batch_size=plan.batch_size,
        dtype=plan.dtype,
        backend=plan.backend,
        progress=True,
        novelty=novelty,
    )[model]
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


def add_rank_options(command: argparse.ArgumentParser) -> None:
    """A run across ranks: torchrun's own options (prorl_engine/launch.py)."""
    command.add_argument(
        "--nproc", type=int, default=0, help="ranks on this machine (torchrun + FSDP2); 0 = one process"
    )
    command.add_argument("--nnodes", type=int, default=1, help="machines in the run (each runs this command)")
    command.add_argument("--node-rank", type=int, default=0, help="this machine's index among them")
    command.add_argument("--rdzv-endpoint", help="HOST:PORT of the rendezvous, the same on every machine")


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
    add_rank_options(train)
    train.set_defaults(func=cmd_train)

    resume = commands.add_parser("resume", help="continue a run from its latest checkpoint")
    resume.add_argument("run_dir")
    add_rank_options(resume)
    resume.set_defaults(func=cmd_resume)

    ev = commands.add_parser(
        "eval",
        help="pass@k of a model or checkpoint on held-out data",
        description="For a run's checkpoint (or run folder: its latest checkpoint), every option not given "
        "takes the run's own evaluation setting, named in brackets; for a plain model folder, the default shown.",
    )
    ev.add_argument("model", help="a run's checkpoint folder, a run folder, or a save_pretrained model folder")
    ev.add_argument(
        "--data",
        action="append",
        default=[],
        help="rg:TASK or PATH[:DOMAIN]; repeatable [a checkpoint: the held-out prompts of the run's mix]",
    )
    ev.add_argument("--n", type=int, help="samples per prompt [eval_samples] (default 16)")
    ev.add_argument("--k", help="comma-separated k values [eval_k, those <= n] (default 1,4,16)")
    ev.add_argument(
        "--size",
        type=int,
        help="prompts per --data source, or in all from the run's mix [eval_prompts] (default 64)",
    )
    ev.add_argument("--temperature", type=float, help="[eval_temperature] (default 0.6)")
    ev.add_argument("--top-p", type=float, help="[eval_top_p] (default 0.95)")
    ev.add_argument("--max-new-tokens", type=int, help="response budget [max_response_tokens] (default 1024)")
    ev.add_argument("--batch-size", type=int, help="sequences per generation batch [rollout_batch_size] (default 64)")
    ev.add_argument(
        "--backend", choices=ROLLOUT_BACKENDS, help="what samples: hf generate or vllm [rollout_backend] (default hf)"
    )
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (and data seed of sources not in the run's mix)")
    ev.add_argument(
        "--novelty-corpus",
        metavar="CORPUS",
        help="report eval/<scope>/novelty@n (n = 4..8) against " + ", ".join(NOVELTY_CORPORA[1:]) + " or a text file "
        "(one text per line) [novelty_corpus] (default none)",
    )
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
    except (CliError, RunLocked, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # train and resume say where the run stopped themselves
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
