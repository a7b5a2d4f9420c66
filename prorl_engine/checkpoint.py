"""Checkpoints: a `save_pretrained` folder (policy + tokenizer, loadable by transformers and vLLM)
plus the trainer state that makes a resumed run continue exactly.

    checkpoints/step-000050/
        config.json, model.safetensors, tokenizer files   the policy
        reference.safetensors                             pi_ref's weights (public trainers lose them)
        trainer_state.pt                                  optimizer, RNG streams, data position,
                                                          reset policy and history, step
A checkpoint is written to a temporary folder and renamed, so a crash never leaves half of one.
Loading is strict: a policy or reference file with a missing or unexpected tensor is refused, with
the tensors named (a tensor tied to another, lm_head to the embeddings, is stored once and is
not missing).
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_model, save_file

if TYPE_CHECKING:
    from prorl_engine.trainer import Trainer

PATTERN = re.compile(r"^step-(\d{6,})$")


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def all_checkpoints(run_dir: Path) -> list[Path]:
    root = folder(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if PATTERN.match(p.name) and (p / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def latest(run_dir: Path) -> Path | None:
    found = all_checkpoints(run_dir)
    return found[-1] if found else None


def latest_step(run_dir: Path) -> int | None:
    path = latest(run_dir)
    return int(PATTERN.match(path.name).group(1)) if path else None


def save(trainer: Trainer) -> Path:
    target = folder(trainer.run_dir) / f"step-{trainer.step:06d}"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.policy.save_pretrained(tmp)
    trainer.tokenizer.save_pretrained(tmp)
    save_file({k: v.contiguous() for k, v in trainer.reference.state_dict().items()
               if not _is_tied_copy(trainer.reference, k)}, tmp / "reference.safetensors")
    torch.save({
        "step": trainer.step,
        "optimizer": trainer.optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(), "python": random.getstate()},
        "data": trainer.mix.state_dict(),
        "reset_policy": trainer.reset_policy.state_dict(),
        "reset_history": trainer.reset_history,
        "config": trainer.config.to_dict(),
    }, tmp / "trainer_state.pt")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def load(trainer: Trainer, path: Path, fork: bool = False) -> None:
    """Restore a trainer from a checkpoint. For a fork (a new run started from another run's
    checkpoint with an edited config) the data position carries over only when the data mix is
    unchanged, and the reset policy's interval grid follows the new config."""
    path = Path(path)
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.pt)")
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    trainer.policy = _load_policy_strict(path, trainer.config.dtype, trainer.device)
    reference_file = path / "reference.safetensors"
    # safetensors' load_model knows tied tensors (stored once): only real gaps are reported
    missing, unexpected = load_model(trainer.reference, reference_file, strict=False, device=str(trainer.device))
    _refuse_mismatch(reference_file, missing, unexpected)
    trainer.optimizer = trainer._new_optimizer()
    trainer.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    if not fork or state["config"]["data"] == trainer.config.data:
        trainer.mix.load_state_dict(state["data"])
    trainer.reset_policy.load_state_dict(state["reset_policy"])
    trainer.reset_history = state["reset_history"]
    trainer.step = state["step"]


class CheckpointMismatch(ValueError):
    """A checkpoint's weights file does not hold exactly the tensors of the model it is loaded into."""


def _refuse_mismatch(weights: Path, missing: Iterable[str], unexpected: Iterable[str]) -> None:
    """Raise CheckpointMismatch naming every missing and unexpected tensor of `weights`, if any."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected:
        problems = ([f"missing tensors {', '.join(missing)}"] if missing else []) + \
                   ([f"unexpected tensors {', '.join(unexpected)}"] if unexpected else [])
        where = f"{weights.parent.name}/{weights.name}"  # relative to the run's checkpoints folder
        raise CheckpointMismatch(f"checkpoint {where} does not match the model: {'; '.join(problems)}")


def _load_policy_strict(path: Path, dtype: str, device: torch.device) -> torch.nn.Module:
    """The checkpoint's policy, as `modeling.load_policy` loads it, refused when its weights lack a
    tensor of the architecture (transformers would initialise it at random) or hold one it has not."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from prorl_engine.modeling import DTYPES

    hf_logging.disable_progress_bar()
    model, info = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=DTYPES[dtype], local_files_only=True, output_loading_info=True)
    single = path / "model.safetensors"
    weights = single if single.is_file() else path / "model.safetensors.index.json"  # sharded when large
    _refuse_mismatch(weights, info["missing_keys"], info["unexpected_keys"])
    return model.to(device).eval()


def prune(run_dir: Path, keep: int) -> list[tuple[int, Path]]:
    """Keep the `keep` most recent checkpoints (0 keeps all); returns the (step, path) removed."""
    removed = []
    if keep:
        for path in all_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append((int(PATTERN.match(path.name).group(1)), path))
    return removed


def _is_tied_copy(model: torch.nn.Module, key: str) -> bool:
    """lm_head.weight shares storage with the embeddings when weights are tied: save it once."""
    return key == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)
