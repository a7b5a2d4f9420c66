"""`RunConfig`: every knob of the ProRL v2 recipe (PRORL_SPEC.md), typed, documented, validated.

Each field carries its group (the studio form's section) and a one-line help text, which is the
same text the form shows. Names in backticks in the spec are used verbatim. `RunConfig.from_dict`
and `RunConfig.from_yaml` validate; an invalid config raises one `ConfigError` that lists every
problem as (field, message), before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GROUPS = (
    "model", "data", "rollout", "algorithm", "length_penalty", "reset", "evaluation", "checkpointing",
)
ADVANTAGE_ESTIMATORS = ("reinforce_pp_baseline", "grpo")
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")
ROLLOUT_BACKENDS = ("hf",)  # the vLLM backend (GPU) will implement rollout.RolloutBackend
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
SOURCE_KINDS = ("reasoning_gym", "file")


class ConfigError(ValueError):
    """An invalid run config. `errors` lists (field, message) pairs, one per problem."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))


def _field(default: Any, group: str, help: str, *, choices: tuple[str, ...] = (), kind: str = ""):
    metadata = {"group": group, "help": help, "choices": choices, "kind": kind}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: list(default) if isinstance(default, list) else dict(default),
                     metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataSource:
    """One source of the training mix.

    source="reasoning_gym": `task` is a reasoning-gym dataset name, `size` items are generated
    from `seed` with `params` passed to the generator. source="file": `path` is a JSONL or Parquet
    file of records (schema: prorl_engine/verifiers/README.md), `domain` says which verifier scores them.
    """

    task: str
    source: str = "reasoning_gym"
    weight: float = 1.0
    size: int = 1000
    path: str | None = None
    domain: str = "logic"
    params: dict[str, Any] = field(default_factory=dict)
    instruction: str = "\nPut your final answer inside <answer></answer> tags."
    eval_size: int = 32


@dataclass
class RunConfig:
    """A whole ProRL run. Defaults follow PRORL_SPEC.md; `configs/tiny.yaml` shrinks them for the CPU."""

    # --- model ---------------------------------------------------------------------------------
    model_path: str = _field("", "model", "Local save_pretrained folder of the base policy (weights and tokenizer); "
                             "tiny:<folder> or base:<folder> builds the project's own model there on first use.")
    dtype: str = _field("float32", "model", "Parameter dtype for training and rollout.", choices=DTYPES)
    device: str = _field("auto", "model", "Where to train: auto picks CUDA when present, else the CPU.", choices=DEVICES)
    seed: int = _field(0, "model", "Seed for data order, sampling and initialisation; a run is reproducible from it.")

    # --- data ----------------------------------------------------------------------------------
    data: list[dict[str, Any]] = _field(
        [{"task": "chain_sum", "source": "reasoning_gym", "weight": 1.0, "size": 1000}], "data",
        "Training mix: a list of sources (task, source, weight, size, path, domain, params, instruction, eval_size).",
        kind="data_sources",
    )
    max_prompt_tokens: int = _field(256, "data", "Prompts longer than this (in tokens) are refused when the data loads.")

    # --- rollout -------------------------------------------------------------------------------
    steps: int = _field(3000, "rollout", "Number of RL steps in the run (v1: over 2,000; v2: 3,000).")
    prompts_per_step: int = _field(256, "rollout", "B: prompts per step, counted as kept groups after dynamic sampling (v1: 256).")
    samples_per_prompt: int = _field(16, "rollout", "G: responses sampled per prompt (v1: 16). G >= 2, or every advantage is 0.")
    max_response_tokens: int = _field(8192, "rollout", "T: the context limit, new tokens per response (v2: 8k).")
    temperature: float = _field(1.2, "rollout", "Training sampling temperature tau (v1: 1.2).")
    top_p: float = _field(1.0, "rollout", "Training nucleus sampling threshold (v1: 1).")
    rollout_backend: str = _field("hf", "rollout", "hf = Hugging Face generate, batched and KV-cached (CPU and GPU).", choices=ROLLOUT_BACKENDS)
    rollout_batch_size: int = _field(64, "rollout", "Sequences generated (and scored by forward passes) per batch; bounds memory.")
    truncated_reward: float | None = _field(0.0, "rollout", "Reward of a response that hits T without stopping (v2: 0); empty keeps the verifier's.", kind="optional_float")
    format_penalty: float = _field(-0.5, "rollout", "Reward when no answer can be extracted from a response.")

    # --- algorithm -----------------------------------------------------------------------------
    advantage_estimator: str = _field("reinforce_pp_baseline", "algorithm", "REINFORCE++-baseline (v2) or GRPO (for comparison).", choices=ADVANTAGE_ESTIMATORS)
    updates_per_step: int = _field(4, "algorithm", "Minibatch updates per rollout batch (v1: 256 / 64 = 4). With 1 the clip never acts.")
    micro_batch_size: int = _field(16, "algorithm", "Sequences per forward/backward pass inside a minibatch (gradient accumulation); bounds memory.")
    eps_low: float = _field(0.2, "algorithm", "PPO clip below: ratios under 1 - eps_low stop pushing down.")
    eps_high: float = _field(0.28, "algorithm", "Clip-higher: ratios over 1 + eps_high stop pushing up (v2 configs 0.27-0.28; v1 0.4).")
    loss_aggregation: str = _field("token_mean", "algorithm", "token_mean over the whole batch (default) or seq_mean_token_mean.", choices=LOSS_AGGREGATIONS)
    beta: float = _field(1e-4, "algorithm", "Weight of the KL-to-reference term in the loss.")
    kl_estimator: str = _field("k2", "algorithm", "KL estimator: k2 (v2 default, 0.5 * log-ratio^2), k1 or k3.", choices=KL_ESTIMATORS)
    learning_rate: float = _field(2e-6, "algorithm", "AdamW learning rate (constant).")
    weight_decay: float = _field(0.01, "algorithm", "AdamW weight decay.")
    max_grad_norm: float = _field(1.0, "algorithm", "Gradient clipping by global norm.")
    dynamic_sampling: bool = _field(True, "algorithm", "Drop groups whose rewards have no spread and refill the batch (DAPO).")
    filter_tol: float = _field(1e-6, "algorithm", "A group is dropped when max(R) - min(R) <= filter_tol.")
    max_generation_batches: int = _field(4, "algorithm", "Prompt batches generated per step at most to fill B kept groups (0 = no limit).")

    # --- length penalty ------------------------------------------------------------------------
    length_penalty: bool = _field(True, "length_penalty", "Apply the scheduled cosine length penalty R' = R + lambda_len * eta(t).")
    eta_min: float = _field(-1.0, "length_penalty", "eta at t = T (the longest response). Not published; editable.")
    eta_max: float = _field(0.0, "length_penalty", "eta at t = 0 (the shortest response). Not published; editable.")
    lambda_len: float = _field(0.1, "length_penalty", "Weight of the length penalty. Not published; editable.")
    on_steps: int = _field(100, "length_penalty", "Steps the penalty is on in each cycle (blog example: 100).")
    off_steps: int = _field(500, "length_penalty", "Steps the penalty is off in each cycle (blog example: 500).")
    length_penalty_start: int = _field(0, "length_penalty", "Offset: the first on-window starts at step start + 1.")
    penalize_correct_only: bool = _field(False, "length_penalty", "Shape only responses whose verifier reward is positive.")

    # --- reset ---------------------------------------------------------------------------------
    reset_interval: int | None = _field(200, "reset", "Reset the reference to the policy every this many steps (v2: 200-500); empty = never.", kind="optional_int")
    kl_reset_threshold: float | None = _field(None, "reset", "Reset when the moving average of kl/ref passes this; empty = off.", kind="optional_float")
    kl_window: int = _field(10, "reset", "Steps in the KL moving average used by kl_reset_threshold.")
    reset_patience: int | None = _field(None, "reset", "Reset when the validation pass@1 has not improved for this many evaluations; empty = off.", kind="optional_int")
    reset_optimizer: bool = _field(False, "reset", "Also re-initialise the optimizer state at a reset (v1 did; v2 keeps it).")

    # --- evaluation ----------------------------------------------------------------------------
    eval_every: int = _field(0, "evaluation", "Evaluate on the held-out split every this many steps (0 = never).")
    eval_samples: int = _field(16, "evaluation", "n: samples per held-out prompt (v1 protocol: 16).")
    eval_k: list[int] = _field([1, 4, 16], "evaluation", "The k values of pass@k to report (each <= eval_samples).", kind="int_list")
    eval_temperature: float = _field(0.6, "evaluation", "Evaluation sampling temperature (v1: 0.6).")
    eval_top_p: float = _field(0.95, "evaluation", "Evaluation nucleus sampling threshold (v1: 0.95).")
    eval_prompts: int = _field(64, "evaluation", "Held-out prompts evaluated at most, taken evenly over the mix's sources.")

    # --- checkpointing -------------------------------------------------------------------------
    checkpoint_every: int = _field(50, "checkpointing", "Save a checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = _field(3, "checkpointing", "Most recent checkpoints kept on disk (0 = keep all).")
    samples_per_step_logged: int = _field(4, "checkpointing", "Prompt/response/reward rows logged per step for the studio.")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], *, check_paths: bool = True) -> RunConfig:
        """Build and validate a config; unknown keys and wrong types are errors too."""
        if not isinstance(values, dict):
            raise ConfigError([("config", "must be a mapping of field names to values")])
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors = [(name, "unknown field") for name in values if name not in known]
        kwargs = {}
        for name, value in values.items():
            if name in known:
                try:
                    kwargs[name] = _coerce(value, known[name])
                except (TypeError, ValueError) as exc:
                    errors.append((name, str(exc)))
        config = cls(**kwargs)  # fields refused above keep their defaults for the checks below
        try:
            config.validate(check_paths=check_paths)
        except ConfigError as exc:  # report every problem at once, not only the first kind
            refused = {name for name, _ in errors}
            errors.extend((name, message) for name, message in exc.errors if name not in refused)
        if errors:
            raise ConfigError(errors)
        return config

    @classmethod
    def from_yaml(cls, text: str, *, check_paths: bool = True) -> RunConfig:
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([("config", f"not valid YAML: {exc}")]) from exc
        return cls.from_dict(values, check_paths=check_paths)

    @classmethod
    def load(cls, path: str | Path, *, check_paths: bool = True) -> RunConfig:
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"), check_paths=check_paths)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed (CLI --set, forks)."""
        return RunConfig.from_dict({**self.to_dict(), **changes})

    @staticmethod
    def field_specs() -> list[FieldSpec]:
        """Every field with its group, kind, default and help, in declaration order (the studio form)."""
        specs = []
        for f in dataclasses.fields(RunConfig):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            specs.append(FieldSpec(
                name=f.name, group=f.metadata["group"], kind=_kind(f, default), default=default,
                help=f.metadata["help"], choices=f.metadata["choices"],
            ))
        return specs

    @property
    def data_sources(self) -> list[DataSource]:
        return [DataSource(**source) for source in self.data]

    # ------------------------------------------------------------------------------------------
    def validate(self, *, check_paths: bool = True) -> None:
        """Refuse nonsense before anything runs. Raises one ConfigError listing every problem."""
        errors: list[tuple[str, str]] = []

        def need(condition: bool, name: str, message: str) -> None:
            if not condition:
                errors.append((name, message))

        for spec in self.field_specs():
            value = getattr(self, spec.name)
            if spec.choices:
                need(value in spec.choices, spec.name, f"must be one of {', '.join(spec.choices)}, not {value!r}")

        need(bool(self.model_path), "model_path", "is required: a local save_pretrained folder")
        builder = self.model_path.split(":", 1)[0] if ":" in self.model_path else None
        if builder is not None:
            from prorl_engine.modeling import MODEL_BUILDERS

            need(builder in MODEL_BUILDERS, "model_path",
                 f"unknown model builder {builder!r} (known: {', '.join(sorted(MODEL_BUILDERS))})")
        elif self.model_path and check_paths:
            folder = Path(self.model_path).expanduser()
            need(folder.is_dir() and (folder / "config.json").is_file(), "model_path",
                 f"{self.model_path} is not a save_pretrained folder (no config.json there)")
        need(self.steps >= 1, "steps", "must be at least 1")
        need(self.prompts_per_step >= 1, "prompts_per_step", "must be at least 1")
        need(self.samples_per_prompt >= 2, "samples_per_prompt",
             "must be at least 2: with one sample per prompt every group-baseline advantage is 0")
        need(self.max_response_tokens >= 1, "max_response_tokens", "must be at least 1 token")
        need(self.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1 token")
        need(self.temperature > 0, "temperature", "must be > 0 (use a small value for near-greedy sampling)")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(self.rollout_batch_size >= 1, "rollout_batch_size", "must be at least 1")
        need(self.updates_per_step >= 2, "updates_per_step",
             "must be at least 2: with a single update per batch the policy equals pi_old and the PPO clip never acts")
        need(self.updates_per_step <= self.prompts_per_step * self.samples_per_prompt, "updates_per_step",
             "cannot exceed the number of responses per step (prompts_per_step * samples_per_prompt)")
        need(self.micro_batch_size >= 1, "micro_batch_size", "must be at least 1")
        need(0 <= self.eps_low < 1, "eps_low", "must be in [0, 1)")
        need(self.eps_high >= 0, "eps_high", "must be >= 0")
        need(self.eps_high >= self.eps_low, "eps_high",
             f"must be >= eps_low ({self.eps_low}): clip-higher widens the upper bound, never narrows it")
        need(self.beta >= 0, "beta", "must be >= 0 (it weighs the KL penalty)")
        need(self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate", "must be a positive number")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        need(self.filter_tol >= 0, "filter_tol", "must be >= 0")
        need(self.max_generation_batches >= 0, "max_generation_batches", "must be >= 0 (0 = no limit)")
        need(self.eta_min <= self.eta_max, "eta_min", f"must be <= eta_max ({self.eta_max}): eta falls from eta_max to eta_min")
        need(self.lambda_len >= 0, "lambda_len", "must be >= 0")
        need(self.on_steps >= 0 and self.off_steps >= 0, "on_steps", "on_steps and off_steps must be >= 0")
        need(not self.length_penalty or self.on_steps > 0, "on_steps",
             "must be > 0 when the length penalty is enabled (it would never be on)")
        need(self.length_penalty_start >= 0, "length_penalty_start", "must be >= 0")
        need(self.reset_interval is None or self.reset_interval >= 1, "reset_interval", "must be >= 1, or empty for never")
        need(self.kl_reset_threshold is None or self.kl_reset_threshold > 0, "kl_reset_threshold", "must be > 0, or empty for off")
        need(self.kl_window >= 1, "kl_window", "must be at least 1")
        need(self.reset_patience is None or self.reset_patience >= 1, "reset_patience", "must be >= 1, or empty for off")
        need(self.reset_patience is None or self.eval_every > 0, "reset_patience",
             "needs eval_every > 0: the patience counts evaluations")
        need(self.eval_every >= 0, "eval_every", "must be >= 0 (0 = never)")
        need(self.eval_samples >= 1, "eval_samples", "must be at least 1")
        need(bool(self.eval_k) and all(1 <= k <= self.eval_samples for k in self.eval_k), "eval_k",
             f"each k must be in 1..eval_samples ({self.eval_samples})")
        need(self.eval_temperature > 0, "eval_temperature", "must be > 0")
        need(0 < self.eval_top_p <= 1, "eval_top_p", "must be in (0, 1]")
        need(self.eval_prompts >= 1, "eval_prompts", "must be at least 1")
        need(self.checkpoint_every >= 1, "checkpoint_every", "must be at least 1")
        need(self.keep_checkpoints >= 0, "keep_checkpoints", "must be >= 0 (0 = keep all)")
        need(self.samples_per_step_logged >= 0, "samples_per_step_logged", "must be >= 0")
        errors.extend(_data_errors(self.data))
        model_found = not any(name == "model_path" for name, _ in errors)
        if check_paths and self.model_path and builder is None and model_found:  # report it with the rest
            errors.extend(_budget_errors(self))
        if errors:
            raise ConfigError(errors)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    group: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


def _kind(f: dataclasses.Field, default: Any) -> str:
    if f.metadata["kind"]:
        return f.metadata["kind"]
    if f.metadata["choices"]:
        return "choice"
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]


def _coerce(value: Any, f: dataclasses.Field) -> Any:
    """Accept what YAML and HTML forms give (ints for floats, numeric strings); refuse the rest."""
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    kind = _kind(f, default)
    if kind.startswith("optional_") and value in (None, ""):
        return None
    if kind == "int_list":
        if isinstance(value, str):
            value = [part for part in value.replace(" ", "").split(",") if part]
        if not isinstance(value, list):
            raise TypeError(f"must be a list of whole numbers, not {value!r}")
        return [_as_int(item) for item in value]
    if kind == "data_sources":
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise TypeError("must be a list of data sources (mappings with at least a task)")
        return [dict(item) for item in value]
    converter = {"bool": _as_bool, "int": _as_int, "optional_int": _as_int,
                 "float": _as_float, "optional_float": _as_float}.get(kind, _as_str)
    return converter(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise TypeError(f"must be true or false, not {value!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {value!r}")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {value!r}")
    return number


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be text, not {value!r}")
    return value


def _data_errors(data: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Check the data mix: known source kinds and tasks, existing files, positive weights."""
    from prorl_engine.data.example import DOMAINS

    if not data:
        return [("data", "the training mix is empty: add at least one source")]
    known = {f.name for f in dataclasses.fields(DataSource)}
    errors = []
    for index, source in enumerate(data):
        where = f"data[{index}]"
        unknown = sorted(set(source) - known)
        if unknown:
            errors.append((where, f"unknown keys {', '.join(unknown)}"))
            continue
        if "task" not in source:
            errors.append((where, "needs a task name"))
            continue
        item = DataSource(**source)
        wrong_types = [name for name, kind in (("task", str), ("source", str), ("domain", str), ("path", (str, type(None))),
                                               ("params", dict), ("instruction", str))
                       if not isinstance(getattr(item, name), kind)]
        if wrong_types:  # the checks below (and the loaders) need these types
            errors.append((where, f"wrong type for {', '.join(wrong_types)} (text, or a mapping for params)"))
            continue
        if item.source not in SOURCE_KINDS:
            errors.append((where, f"source must be one of {', '.join(SOURCE_KINDS)}, not {item.source!r}"))
        if isinstance(item.weight, bool) or not isinstance(item.weight, (int, float)) or not 0 < item.weight < math.inf:
            errors.append((where, f"weight must be a positive number, not {item.weight!r}"))
        if isinstance(item.size, bool) or not isinstance(item.size, int) or item.size < 1:
            errors.append((where, f"size must be a whole number >= 1, not {item.size!r}"))
        if not isinstance(item.eval_size, int) or item.eval_size < 0:
            errors.append((where, f"eval_size must be a whole number >= 0, not {item.eval_size!r}"))
        if item.domain not in DOMAINS:
            errors.append((where, f"domain must be one of {', '.join(DOMAINS)}, not {item.domain!r}"))
        if item.source == "reasoning_gym":
            from prorl_engine.data.sources import reasoning_gym_task_names

            if item.task not in reasoning_gym_task_names():
                errors.append((where, f"unknown task {item.task!r}: not a reasoning-gym dataset"))
        elif item.source == "file":
            if not item.path:
                errors.append((where, "a file source needs a path"))
            elif not Path(item.path).expanduser().is_file():
                errors.append((where, f"data file {item.path} does not exist"))
    return errors


def _budget_errors(config: RunConfig) -> list[tuple[str, str]]:
    """The response budget must leave room inside the model's context window."""
    import json

    path = Path(config.model_path).expanduser() / "config.json"
    try:
        model_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [("model_path", f"{path} cannot be read as JSON: {exc}")]
    window = model_config.get("max_position_embeddings") if isinstance(model_config, dict) else None
    if isinstance(window, int) and window > 0 and config.max_prompt_tokens + config.max_response_tokens > window:
        return [("max_response_tokens",
                 f"max_prompt_tokens + max_response_tokens = {config.max_prompt_tokens + config.max_response_tokens}"
                 f" exceeds the model's context window of {window} tokens")]
    return []
