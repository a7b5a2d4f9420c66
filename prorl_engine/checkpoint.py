"""Checkpoints: a `save_pretrained` folder (policy + tokenizer, loadable by transformers and vLLM)
plus the trainer state that makes a resumed run continue exactly.

    checkpoints/step-000050/
        config.json, model.safetensors, tokenizer files   the policy
        reference.safetensors                             pi_ref's weights (public trainers lose them)
        trainer_state.pt                                  optimizer, RNG streams, data position,
                                                          reset policy and history, step
A checkpoint is written to a temporary folder and renamed, so a crash never leaves half of one.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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
    from prorl_engine.modeling import load_policy

    path = Path(path)
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.pt)")
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    trainer.policy = load_policy(path, trainer.config.dtype, trainer.device)
    trainer.reference.load_state_dict(load_file(path / "reference.safetensors", device=str(trainer.device)), strict=False)
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
