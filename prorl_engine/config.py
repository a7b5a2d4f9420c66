"""`RunConfig`: every knob of the ProRL v2 recipe (PRORL_SPEC.md), typed, documented, validated.

Each field carries its group (the studio form's section) and a one-line help text, which is the
same text the form shows. Names in backticks in the spec are used verbatim. `RunConfig.from_dict`
and `RunConfig.from_yaml` validate; an invalid config raises one `ConfigError` that lists every
problem as (field, message), before anything runs.

Configs come from people who may be hostile (the studio's users): every number has a range with its
reason (`BOUNDS`, `SOURCE_BOUNDS`), every text a length and no NUL, a data source's params are
small JSON-like data, the whole config stores in at most MAX_CONFIG_CHARS, and YAML is read with
limits on size, depth and aliases (`parse_yaml`, prorl_engine/safeyaml.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prorl_engine import safeyaml
from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED, PathPolicy

GROUPS = (
    "model", "data", "rollout", "algorithm", "length_penalty", "reset", "evaluation", "checkpointing",
)
ADVANTAGE_ESTIMATORS = ("reinforce_pp_baseline", "grpo")
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")
FILTER_ON = ("verifier", "shaped")  # which reward dynamic sampling tests (PRORL_SPEC.md section 5)
ROLLOUT_BACKENDS = ("hf",)  # the vLLM backend (GPU) will implement rollout.RolloutBackend
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
SOURCE_KINDS = ("reasoning_gym", "file")

# --- bounds: what a machine can hold and what is sane, each with its reason ---------------------
MAX_STEPS = 1_000_000  # v2 ran 3,000 steps; 10^6 keeps step numbers far inside 32-bit database columns
MAX_TOKENS = 131_072  # 128k tokens: the longest context window of current open models
MAX_RESPONSES_PER_STEP = 65_536  # 16x v1's 256 x 16: every response of a step is held until its update
MAX_TOKENS_PER_STEP = 2**30  # responses x (prompt + response) tokens: ids, log-probs and masks are held at once
MAX_TEXT_CHARS = 4_096  # Linux's PATH_MAX for paths; names and instructions are shorter still
MAX_TASK_CHARS = 200  # reasoning-gym task names are under 40 characters
MAX_SOURCES = 256
_SOURCES_WHY = "v1 mixed 96 reasoning-gym tasks and four other domains"
MAX_PARAMS_VALUES = 1_000  # a generator's params are a handful of numbers and short lists
MAX_PARAMS_DEPTH = 8
MAX_EVAL_K = 32  # values of k in eval_k
MAX_CONFIG_CHARS = 131_072  # a config's YAML text and its stored JSON: the v1 recipe's mix takes under 10k
YAML_LIMITS = safeyaml.Limits(max_chars=MAX_CONFIG_CHARS)


@dataclass(frozen=True)
class Bound:
    """The closed range [low, high] a number must lie in, and why (the reason is in the message)."""

    low: float
    high: float
    why: str


_STEP_COUNT = f"a run has at most {MAX_STEPS:,} steps"
_REWARD = "verifier rewards lie in [0, 1]"
_SAMPLING_T = "above 10 sampling is close to uniform over the vocabulary"
BOUNDS: dict[str, Bound] = {
    "seed": Bound(0, 2**32 - 1, "numpy's seeds are 0 to 2^32 - 1"),
    "max_prompt_tokens": Bound(1, MAX_TOKENS, "128k tokens is the longest context of current open models"),
    "steps": Bound(1, MAX_STEPS, "v2 ran 3,000; 10^6 keeps step numbers inside the database's integer columns"),
    "prompts_per_step": Bound(1, 4_096, "16x v1's 256; every response of a step is held until its update"),
    "samples_per_prompt": Bound(2, 1_024, "4x the 256 samples of the pass@k boundary study"),
    "max_response_tokens": Bound(1, MAX_TOKENS, "128k tokens is the longest context of current open models"),
    "temperature": Bound(0, 10, _SAMPLING_T),
    "top_p": Bound(0, 1, "a probability mass"),
    "rollout_batch_size": Bound(1, 4_096, "sequences generated at once are held in memory together"),
    "truncated_reward": Bound(-1, 1, _REWARD),
    "format_penalty": Bound(-1, 1, _REWARD),
    "updates_per_step": Bound(2, 1_024, "v1 made 4; each update is a pass over one minibatch"),
    "micro_batch_size": Bound(1, 4_096, "sequences in one forward pass are held in memory together"),
    "eps_low": Bound(0, 1, "ratios are positive: a lower clip of 1 - eps_low <= 0 never acts"),
    "eps_high": Bound(0, 10, "v1 used 0.4; an upper clip of 1 + 10 never acts"),
    "beta": Bound(0, 10, "v2 uses 1e-4; above 10 the KL term drowns the policy loss"),
    "learning_rate": Bound(0, 1, "AdamW steps that large destroy any model (the recipe uses about 1e-6)"),
    "weight_decay": Bound(0, 1, "AdamW shrinks the weights by lr * weight_decay of themselves per update"),
    "max_grad_norm": Bound(0, 10_000, "gradients are clipped to this norm; above 10^4 the clip never acts"),
    "filter_tol": Bound(0, 1, f"{_REWARD}: a tolerance of 1 drops every group"),
    "max_generation_batches": Bound(0, 1_024, "each batch is a whole rollout; 0 = no limit"),
    "eta_min": Bound(-10, 10, "eta weighs length beside rewards in [0, 1]"),
    "eta_max": Bound(-10, 10, "eta weighs length beside rewards in [0, 1]"),
    "lambda_len": Bound(0, 10, "the penalty's weight beside rewards in [0, 1]"),
    "on_steps": Bound(0, MAX_STEPS, _STEP_COUNT),
    "off_steps": Bound(0, MAX_STEPS, _STEP_COUNT),
    "length_penalty_start": Bound(0, MAX_STEPS, _STEP_COUNT),
    "reset_interval": Bound(1, MAX_STEPS, _STEP_COUNT),
    "kl_reset_threshold": Bound(0, 100, "the clamped k2 estimate never exceeds 50"),
    "kl_window": Bound(1, MAX_STEPS, _STEP_COUNT),
    "reset_patience": Bound(1, MAX_STEPS, _STEP_COUNT),
    "eval_every": Bound(0, MAX_STEPS, _STEP_COUNT),
    "eval_samples": Bound(1, 1_024, "4x the 256 samples of the pass@k boundary study"),
    "eval_temperature": Bound(0, 10, _SAMPLING_T),
    "eval_top_p": Bound(0, 1, "a probability mass"),
    "eval_prompts": Bound(1, 10_000, "each is answered eval_samples times at every evaluation"),
    "checkpoint_every": Bound(1, MAX_STEPS, _STEP_COUNT),
    "keep_checkpoints": Bound(0, 10_000, "each is a full copy of the model on disk; 0 = keep all"),
    "samples_per_step_logged": Bound(0, 1_024, "rows written to the database at every step"),
}
SOURCE_BOUNDS: dict[str, Bound] = {
    "weight": Bound(0, 1e6, "weights are relative: a ratio over 10^6 never draws the other source"),
    "size": Bound(1, 1_000_000, "7x v1's whole training set of 136K problems; each item is made when the run starts"),
    "eval_size": Bound(0, 100_000, "held-out items are made when the run starts, like the training items"),
}


class ConfigError(ValueError):
    """An invalid run config. `errors` lists (field, message) pairs, one per problem."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors))


def parse_yaml(text: str, field: str = "config") -> Any:
    """YAML that a person wrote, read with YAML_LIMITS (prorl_engine.safeyaml): plain data, or one
    ConfigError on `field` saying which limit was hit or where the text is not YAML."""
    try:
        return safeyaml.load(text, YAML_LIMITS)
    except safeyaml.YamlLimitError as exc:
        raise ConfigError([(field, f"refused: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([(field, f"not valid YAML: {exc}")]) from None


def values_from_yaml(text: str) -> dict[str, Any]:
    """A config's YAML text as its field values (empty text: no values), read by `parse_yaml`."""
    values = parse_yaml(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError([("config", "must be a mapping of field names to values")])
    return values


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
                             "tiny:<folder> or base:<folder> builds the project's own model there on first use. In the studio: a "
                             "registered model, a checkpoint of a run you may fork, or a folder under the allowed model roots.")
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
    filter_on: str = _field("verifier", "algorithm", "Reward the filter tests: verifier (before length shaping) drops groups "
                            "differing only by length, giving up their brevity signal; shaped keeps them, so all-wrong "
                            "groups train on length alone.", choices=FILTER_ON)
    max_generation_batches: int = _field(4, "algorithm", "Prompt batches generated per step at most to fill B kept groups (0 = no limit).")

    # --- length penalty ------------------------------------------------------------------------
    length_penalty: bool = _field(True, "length_penalty", "Apply the scheduled cosine length penalty R' = R + lambda_len * eta(t).")
    eta_min: float = _field(-1.0, "length_penalty", "eta at t = T (the longest response). Not published; editable.")
    eta_max: float = _field(0.0, "length_penalty", "eta at t = 0 (the shortest response). Not published; editable.")
    lambda_len: float = _field(0.1, "length_penalty", "Weight of the length penalty. Not published; editable.")
    on_steps: int = _field(100, "length_penalty", "Steps the penalty is on in each cycle (blog example: 100).")
    off_steps: int = _field(500, "length_penalty", "Steps the penalty is off in each cycle (blog example: 500).")
    length_penalty_start: int = _field(0, "length_penalty", "Offset: the first on-window starts at step start + 1.")
    penalize_correct_only: bool = _field(False, "length_penalty", "Shape only correct responses (verifier reward >= 1, the test pass@k counts).")

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
    def from_dict(cls, values: dict[str, Any], *, check_paths: bool = True,
                  path_policy: PathPolicy | None = None) -> RunConfig:
        """Build and validate a config; unknown keys and wrong types are errors too.
        `path_policy`: see `validate`."""
        if not isinstance(values, dict):
            raise ConfigError([("config", "must be a mapping of field names to values")])
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors = [(_shown_name(name), "unknown field") for name in values if name not in known]
        kwargs = {}
        for name, value in values.items():
            if name in known:
                try:
                    kwargs[name] = _coerce(value, known[name])
                except (TypeError, ValueError) as exc:
                    errors.append((name, str(exc)))
        config = cls(**kwargs)  # fields refused above keep their defaults for the checks below
        try:
            config.validate(check_paths=check_paths, path_policy=path_policy)
        except ConfigError as exc:  # report every problem at once, not only the first kind
            refused = {name for name, _ in errors}
            errors.extend((name, message) for name, message in exc.errors if name not in refused)
        if errors:
            raise ConfigError(errors)
        return config

    @classmethod
    def from_yaml(cls, text: str, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> RunConfig:
        return cls.from_dict(values_from_yaml(text), check_paths=check_paths, path_policy=path_policy)

    @classmethod
    def load(cls, path: str | Path, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> RunConfig:
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"), check_paths=check_paths, path_policy=path_policy)

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
    def validate(self, *, check_paths: bool = True, path_policy: PathPolicy | None = None) -> None:
        """Refuse nonsense before anything runs. Raises one ConfigError listing every problem.

        `check_paths`: look on this machine's disk for the model folder and data files (and read the
        model's context window). `path_policy`: the run is for someone else (the studio): model and
        data paths must be ones the policy lets that person use (prorl_engine/paths.py); None, for a
        person at a terminal, allows any path.
        """
        errors: list[tuple[str, str]] = []

        def need(condition: bool, name: str, message: str) -> None:
            if not condition:
                errors.append((name, message))

        for spec in self.field_specs():
            value = getattr(self, spec.name)
            if spec.choices:
                need(value in spec.choices, spec.name, f"must be one of {', '.join(spec.choices)}, not {value!r}")

        errors.extend(_text_errors(self))  # first: paths too long or with a NUL never reach the disk
        if path_policy is not None and not check_paths:
            path_policy = dataclasses.replace(path_policy, check_disk=False)
        model_errors, model_folder = [], None
        if not any(name == "model_path" for name, _ in errors):
            model_errors, model_folder = _model_errors(self.model_path, check_paths, path_policy)
        errors.extend(model_errors)
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
        errors.extend(_bound_errors(self, refused={name for name, _ in errors}))
        responses = self.prompts_per_step * self.samples_per_prompt
        need(responses <= MAX_RESPONSES_PER_STEP, "prompts_per_step",
             f"prompts_per_step * samples_per_prompt = {responses:,} responses per step; at most "
             f"{MAX_RESPONSES_PER_STEP:,}: every response of a step is held until its update")
        tokens = responses * (self.max_prompt_tokens + self.max_response_tokens)
        need(tokens <= MAX_TOKENS_PER_STEP, "max_response_tokens",
             f"responses per step * (max_prompt_tokens + max_response_tokens) = {tokens:,} tokens; at most "
             f"{MAX_TOKENS_PER_STEP:,}: the token ids, log-probs and masks of a whole step are held at once")
        need(len(self.eval_k) <= MAX_EVAL_K, "eval_k", f"at most {MAX_EVAL_K} values of k")
        errors.extend(_data_errors(self.data, check_paths, path_policy))
        if model_folder is not None:  # report it with the rest
            errors.extend(_budget_errors(self, model_folder))
        if not errors:  # every part is bounded now, so the whole is cheap to measure
            stored = len(json.dumps(self.to_dict()))
            need(stored <= MAX_CONFIG_CHARS, "config",
                 f"is {stored:,} characters as stored; at most {MAX_CONFIG_CHARS:,} (shorten the instructions or params)")
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
            raise TypeError(f"must be a list of whole numbers, not {_shown(value)}")
        if len(value) > MAX_EVAL_K:
            raise ValueError(f"has {len(value):,} values; at most {MAX_EVAL_K}")
        return [_as_int(item) for item in value]
    if kind == "data_sources":
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise TypeError("must be a list of data sources (mappings with at least a task)")
        if len(value) > MAX_SOURCES:
            raise ValueError(f"has {len(value):,} sources; at most {MAX_SOURCES}: {_SOURCES_WHY}")
        return [dict(item) for item in value]
    converter = {"bool": _as_bool, "int": _as_int, "optional_int": _as_int,
                 "float": _as_float, "optional_float": _as_float}.get(kind, _as_str)
    return converter(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise TypeError(f"must be true or false, not {_shown(value)}")


def _as_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    digits = value.strip().removeprefix("-") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 20:  # "²" is a digit to isdigit, not to int
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number, not {_shown(value)}")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 64):
        raise TypeError(f"must be a number, not {_shown(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"must be a number, not {_shown(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, not {_shown(value)}")
    return number


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be text, not {_shown(value)}")
    problem = _text_problem(value, MAX_TEXT_CHARS)
    if problem:
        raise ValueError(problem)
    return value


def _shown(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters: messages never echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _shown_name(name: Any) -> str:
    """A key of the config as text for an error (keys from YAML may be numbers or very long)."""
    text = str(name)
    return text if len(text) <= 60 else f"{text[:60]}..."


def _text_problem(value: str, max_chars: int) -> str | None:
    """Why `value` cannot be stored and used as text (None: it can): too long, a NUL, or not UTF-8."""
    if len(value) > max_chars:
        return f"is {len(value):,} characters long; at most {max_chars:,}"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid text (a lone surrogate character)"
    return None


def _text_errors(config: RunConfig) -> list[tuple[str, str]]:
    """Every text field's length and characters, checked before anything uses it as a path."""
    errors = []
    for spec in config.field_specs():
        value = getattr(config, spec.name)
        if spec.kind in ("str", "choice") and isinstance(value, str):
            problem = _text_problem(value, MAX_TEXT_CHARS)
            if problem:
                errors.append((spec.name, problem))
    return errors


def _bound_errors(config: RunConfig, refused: set[str]) -> list[tuple[str, str]]:
    """Each number of BOUNDS outside its range, for the fields not already refused for another reason."""
    errors = []
    for name, bound in BOUNDS.items():
        value = getattr(config, name)
        if name in refused or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        problem = _bound_problem(value, bound)
        if problem:
            errors.append((name, problem))
    return errors


def _bound_problem(value: float, bound: Bound) -> str | None:
    if value > bound.high:
        return f"must be at most {_number(bound.high)}: {bound.why}"
    if value < bound.low:
        return f"must be at least {_number(bound.low)}: {bound.why}"
    return None


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _model_builders() -> frozenset[str]:
    """The `builder:` prefixes of model_path (modeling imports torch: asked only for such paths)."""
    from prorl_engine.modeling import MODEL_BUILDERS

    return frozenset(MODEL_BUILDERS)


def _model_errors(model_path: str, check_paths: bool,
                  path_policy: PathPolicy | None) -> tuple[list[tuple[str, str]], Path | None]:
    """Problems with `model_path`, and the folder whose config.json gives the context window (None
    when there is nothing to read on this machine: a builder, paths unchecked, or a refusal)."""
    if not model_path:
        return [("model_path", "is required: a local save_pretrained folder")], None
    builder, sep, folder_name = model_path.partition(":")
    builders = _model_builders() if sep else frozenset()
    if sep and builder not in builders:
        return [("model_path", f"unknown model builder {builder!r} (known: {', '.join(sorted(builders))})")], None
    if path_policy is not None:  # the same message whether the path is forbidden or missing
        located = path_policy.locate_model(model_path, builders)
        if located is None:
            return [("model_path", MODEL_REFUSED)], None
        return [], located.folder if located.builder is None and path_policy.check_disk else None
    if sep and not folder_name.strip():
        return [("model_path", f"{builder}: needs the folder to build the model in ({builder}:<folder>)")], None
    if sep or not check_paths:
        return [], None
    folder = Path(model_path).expanduser()
    if not (folder.is_dir() and (folder / "config.json").is_file()):
        return [("model_path", f"{model_path} is not a save_pretrained folder (no config.json there)")], None
    return [], folder


def _data_file_error(path: str, check_paths: bool, path_policy: PathPolicy | None) -> str | None:
    """Why a file source's `path` cannot be used (None: it can)."""
    if not path:
        return "a file source needs a path"
    if path_policy is not None:
        return DATA_REFUSED if path_policy.locate_data(path) is None else None
    if check_paths and not Path(path).expanduser().is_file():
        return f"data file {path} does not exist"
    return None


def _data_errors(data: list[dict[str, Any]], check_paths: bool = True,
                 path_policy: PathPolicy | None = None) -> list[tuple[str, str]]:
    """Check the data mix: known source kinds and tasks, usable files, positive weights."""
    from prorl_engine.data.example import DOMAINS

    if not data:
        return [("data", "the training mix is empty: add at least one source")]
    if len(data) > MAX_SOURCES:
        return [("data", f"has {len(data):,} sources; at most {MAX_SOURCES}: {_SOURCES_WHY}")]
    known = {f.name for f in dataclasses.fields(DataSource)}
    errors = []
    for index, source in enumerate(data):
        where = f"data[{index}]"
        unknown = sorted((_shown_name(key) for key in source if key not in known))
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
        unusable = _source_text_errors(item)
        if unusable:  # the checks below (and the loaders) would use these as paths and names
            errors.extend((where, problem) for problem in unusable)
            continue
        if item.source not in SOURCE_KINDS:
            errors.append((where, f"source must be one of {', '.join(SOURCE_KINDS)}, not {_shown(item.source)}"))
        errors.extend((where, problem) for problem in _source_number_problems(item))
        if item.domain not in DOMAINS:
            errors.append((where, f"domain must be one of {', '.join(DOMAINS)}, not {item.domain!r}"))
        if item.source == "reasoning_gym":
            from prorl_engine.data.sources import reasoning_gym_task_names

            if item.task not in reasoning_gym_task_names():
                errors.append((where, f"unknown task {item.task!r}: not a reasoning-gym dataset"))
        elif item.source == "file":
            problem = _data_file_error(item.path or "", check_paths, path_policy)
            if problem is not None:
                errors.append((where, problem))
    return errors


_SOURCE_NUMBERS = {"weight": ((int, float), "a positive number"), "size": (int, "a whole number >= 1"),
                   "eval_size": (int, "a whole number >= 0")}
RESERVED_PARAMS = ("size", "seed")  # reasoning-gym takes these from the source's size and the run's seed


def _source_number_problems(item: DataSource) -> list[str]:
    """A source's weight, size and eval_size: their types, then SOURCE_BOUNDS."""
    problems = []
    for name, (kind, what) in _SOURCE_NUMBERS.items():
        value, bound = getattr(item, name), SOURCE_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, kind) or not (value > 0 if name == "weight" else value >= bound.low):
            problems.append(f"{name} must be {what}, not {_shown(value)}")
        elif problem := _bound_problem(value, bound):
            problems.append(f"{name} {problem}")
    return problems


def _source_text_errors(item: DataSource) -> list[str]:
    """A source's text (task, path, instruction) and its params, before anything uses them."""
    problems = []
    for name, max_chars in (("task", MAX_TASK_CHARS), ("path", MAX_TEXT_CHARS), ("instruction", MAX_TEXT_CHARS),
                            ("source", MAX_TASK_CHARS), ("domain", MAX_TASK_CHARS)):
        value = getattr(item, name)
        problem = _text_problem(value, max_chars) if isinstance(value, str) else None
        if problem:
            problems.append(f"{name} {problem}")
    problem = _params_problem(item.params)
    if problem:
        problems.append(f"params {problem}")
    return problems


def _params_problem(params: dict[str, Any]) -> str | None:
    """Why a generator's params cannot be stored and passed on (None: they can): JSON-like values
    only (mappings with text keys, lists, text, finite numbers, booleans, null), at most
    MAX_PARAMS_VALUES values and MAX_PARAMS_DEPTH levels. The walk stops at the first problem, so
    it costs at most MAX_PARAMS_VALUES steps whatever it is given (shared values count each time)."""
    reserved = [key for key in RESERVED_PARAMS if key in params]
    if reserved:
        return f"may not set {', '.join(reserved)}: the source's size and the run's seed give them"
    stack: list[tuple[Any, int]] = [(params, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_PARAMS_VALUES:
            return f"hold more than {MAX_PARAMS_VALUES:,} values"
        if depth > MAX_PARAMS_DEPTH:
            return f"are nested deeper than {MAX_PARAMS_DEPTH} levels"
        if isinstance(value, (dict, list)) and len(value) > MAX_PARAMS_VALUES:
            return f"hold more than {MAX_PARAMS_VALUES:,} values"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or _text_problem(key, MAX_TASK_CHARS):
                    return f"keys must be short text, not {_shown(key)}"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = _text_problem(value, MAX_TEXT_CHARS)
            if problem:
                return f"value {problem}"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"values must be finite numbers, not {value!r}"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            return f"whole numbers must be below 2^63 in size, not {_shown(value)}"
        elif value is not None and not isinstance(value, (bool, int, float)):
            return f"values must be text, numbers, booleans, lists or mappings, not {type(value).__name__}"
    return None


def _budget_errors(config: RunConfig, folder: Path) -> list[tuple[str, str]]:
    """The response budget must leave room inside the context window of the model in `folder`."""
    import json

    path = folder / "config.json"
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
