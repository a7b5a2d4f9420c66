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
) -> RolloutBackend:
    """A backend that samples from `policy`'s current weights. For vllm, `model_folder` is the
    folder of `policy`'s architecture (its base model) that the engine is built from; the weights
    are then synced from `policy` itself, so a restored or forked policy samples as it is."""
    if name == "hf":
        return HFGenerateBackend(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size)
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
    )
