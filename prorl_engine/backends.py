"""The rollout backend a run or an evaluation asks for (`rollout_backend`): hf or vllm.

Separate from rollout.py so that rollout.py never imports the vLLM backend, which builds on it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prorl_engine.rollout import HFGenerateBackend, RolloutBackend


def make_backend(
    name: str,
    policy: torch.nn.Module,
    tokenizer,
    model_folder: str | Path,
    *,
    batch_size: int,
    dtype: str,
    max_model_len: int,
    gpu_memory_utilization: float = 0.5,
    enable_sleep_mode: bool = False,
    record_logprobs: bool = False,
) -> RolloutBackend:
    """A backend that samples from `policy`'s current weights. For vllm, `model_folder` is the
    folder of `policy`'s architecture (its base model) that the engine is built from; the weights
    are then synced from `policy` itself, so a restored or forked policy samples as it is.
    `record_logprobs` (hf): its generations carry their tokens' log-probs (vllm's always do)."""
    if name == "hf":
        return HFGenerateBackend(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size, record_logprobs)
    if name != "vllm":
        raise ValueError(f"rollout_backend: unknown backend {name!r}")
    from prorl_engine import vllm_backend

    spec = vllm_backend.engine_spec(
        model_folder,
        dtype=dtype,
        max_model_len=max_model_len,
        max_num_seqs=batch_size,
        gpu_memory_utilization=gpu_memory_utilization,
        enable_sleep_mode=enable_sleep_mode,
    )
    backend = vllm_backend.build_backend(spec, tokenizer.eos_token_id)
    backend.sync_weights(policy)  # a new engine holds the folder's weights, a reused one another model's
    return backend


def sampler_gives_pi_old(config) -> bool:
    """Whether a run (`RunConfig`) takes pi_old from its sampler's log-probs instead of a forward pass.

    Only where the sampler is the trainer's own float32 model (hf): its log-probs are of the same
    tempered, nucleus-truncated distribution as the recomputed pi_old, and equal to it but for the
    KV-cached forward's rounding (~1e-6). In bf16 or float16 that rounding is no longer small, and
    another engine (vllm) is another policy: there the trainer recomputes pi_old (section 7b).

    A deliberate deviation from PRORL_SPEC.md 7b ("pi_old is always recomputed by the trainer's own
    forward pass"): the recompute evaluates the same weights on the same tokens under the same
    processing, so it adds a no-grad pass per step (12% of the engine's tokens/s in bench/vs_trl.py)
    and no information; the spec's own w = 1 for HF generate says the two are one distribution.
    `pi_old_from_sampler: false` restores the recompute."""
    return config.pi_old_from_sampler and config.rollout_backend == "hf" and config.dtype == "float32"


def backend_for_run(config, policy: torch.nn.Module, tokenizer, model_folder: str | Path) -> RolloutBackend:
    """The backend of a run (`RunConfig`), sampling from `policy`."""
    return make_backend(
        config.rollout_backend,
        policy,
        tokenizer,
        model_folder,
        batch_size=config.rollout_batch_size,
        dtype=config.dtype,
        max_model_len=config.model_len,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        enable_sleep_mode=config.vllm_enable_sleep_mode,
        record_logprobs=sampler_gives_pi_old(config),
    )
