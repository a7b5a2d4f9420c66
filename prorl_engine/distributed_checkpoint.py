"""Checkpoints of a distributed run: the sharded state through torch.distributed.checkpoint (DCP),
beside the consolidated files every checkpoint has (checkpoint.py).

    checkpoints/step-000050/
        config.json, model.safetensors, tokenizer files   the policy, gathered whole (transformers and vLLM load it)
        reference.safetensors                             pi_ref, gathered whole
        trainer_state.pt                                  as a single process writes it, but the optimizer
                                                          is the marker SHARDED: its state is in sharded/
        sharded/                                          DCP: policy, reference and optimizer shards

A distributed run resumes from sharded/ on any number of ranks (DCP reshards on load), or from a
single process's checkpoint (`load_whole`: every rank reads the whole files and keeps its shards); a
single process resumes from the consolidated weights and reads the optimizer from sharded/ without a
process group. The run folder must be on storage every rank sees (one machine, or a shared
filesystem across machines): every rank writes its shards there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from prorl_engine import checkpoint as ckpt
from prorl_engine.distributed import Group

SHARDED = {"sharded": "sharded"}  # trainer_state["optimizer"] of a distributed checkpoint


def _options(**changes):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**changes)


def save(
    run_dir: Path,
    step: int,
    policy: torch.nn.Module,
    tokenizer: Any,
    reference: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    group: Group,
) -> Path:
    """Every rank writes its shards; rank 0 writes the consolidated files and renames the folder
    into place once all shards are written (a crash leaves only a .tmp folder). When the disk
    refuses a write, on any rank, the .tmp folder is removed and every rank raises the same
    CheckpointWriteError (DCP reports a failed shard to every rank; rank 0 tells them its own)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    target = ckpt.folder(run_dir) / f"step-{step:06d}"
    tmp = ckpt.temporary(target)
    if group.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    group.broadcast(None)  # nobody writes shards before the old .tmp is gone
    whole = _options(full_state_dict=True, cpu_offload=True)
    policy_weights = get_model_state_dict(policy, options=whole)  # collective; only rank 0 holds the result
    reference_weights = get_model_state_dict(reference, options=whole)
    sharded = {
        "policy": get_model_state_dict(policy),
        "reference": get_model_state_dict(reference),
        "optimizer": get_optimizer_state_dict(policy, optimizer),
    }
    # about: the whole weights twice (consolidated files and shards) and every rank's optimizer shards
    (optimizer_bytes,) = group.sum([float(ckpt.tensor_bytes(sharded["optimizer"]))])
    needed = 2 * ckpt.tensor_bytes(policy_weights, reference_weights) + int(optimizer_bytes)
    refused = None
    try:
        dcp.save(sharded, checkpoint_id=str(tmp / "sharded"))
        if group.is_main:
            _write_consolidated(tmp, policy, tokenizer, reference, policy_weights, reference_weights, state)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    except (Exception, CheckpointException) as exc:
        if group.is_main:  # every rank is done writing by now: DCP's save ends in a collective
            refused = ckpt.discard_failed_write(exc, tmp, needed)
            if refused is None:
                raise
        elif not isinstance(exc, CheckpointException):  # a failed shard is raised on every rank: rank 0 judges it
            raise
    refused = group.broadcast(refused)  # every rank sees the finished checkpoint, or rank 0's refusal
    if refused is not None:
        raise refused
    return target


def _write_consolidated(
    tmp: Path,
    policy: torch.nn.Module,
    tokenizer: Any,
    reference: torch.nn.Module,
    policy_weights: dict[str, torch.Tensor],
    reference_weights: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Rank 0's files: the policy and reference gathered whole, and the trainer state."""
    policy.save_pretrained(tmp, state_dict=policy_weights)
    tokenizer.save_pretrained(tmp)
    tied = getattr(reference.config, "tie_word_embeddings", False)
    save_file(
        {k: v.contiguous() for k, v in reference_weights.items() if not (tied and k == "lm_head.weight")},
        tmp / "reference.safetensors",
    )
    torch.save({**state, "optimizer": SHARDED}, tmp / "trainer_state.pt")


def is_sharded(state: dict[str, Any]) -> bool:
    return state.get("optimizer") == SHARDED


def load(path: Path, policy: torch.nn.Module, reference: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load a distributed checkpoint's shards into sharded `policy`, `reference` and `optimizer`
    (any number of ranks); return its trainer state (whose optimizer entry is the marker)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    shards = {
        "policy": get_model_state_dict(policy),
        "reference": get_model_state_dict(reference),
        "optimizer": get_optimizer_state_dict(policy, optimizer),  # allocates the state DCP loads into
    }
    dcp.load(shards, checkpoint_id=str(path / "sharded"))
    set_model_state_dict(policy, shards["policy"])
    set_model_state_dict(reference, shards["reference"])
    set_optimizer_state_dict(policy, optimizer, shards["optimizer"])
    return state


def load_whole(
    path: Path, policy: torch.nn.Module, reference: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict:
    """A single process's checkpoint into sharded models and optimizer: each rank reads the whole
    weights and optimizer state and keeps its shards. The optimizer's state is keyed by parameter
    position; the sharded policy has the same parameters in the same order (the optimizer was built
    over `policy.parameters()` in both), so positions become parameter names."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    path = Path(path)
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    whole = _options(full_state_dict=True)
    set_model_state_dict(policy, ckpt.read_policy_weights(path), options=whole)
    weights = load_file(path / "reference.safetensors")
    if getattr(reference.config, "tie_word_embeddings", False):
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    set_model_state_dict(reference, weights, options=whole)
    names = [name for name, _ in policy.named_parameters()]
    saved = state["optimizer"]
    by_name = {
        "state": {names[index]: values for index, values in saved["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in saved["param_groups"]],
    }
    set_optimizer_state_dict(policy, optimizer, by_name, options=whole)
    return state


def load_optimizer(path: Path, policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A single process resuming a distributed checkpoint: the optimizer state from its shards
    (DCP reads them without a process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    shards = {"optimizer": get_optimizer_state_dict(policy, optimizer)}
    dcp.load(shards, checkpoint_id=str(Path(path) / "sharded"))
    set_optimizer_state_dict(policy, optimizer, shards["optimizer"])
