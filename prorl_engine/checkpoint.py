"""Checkpoints: a `save_pretrained` folder (policy + tokenizer, loadable by transformers and vLLM)
plus the trainer state that makes a resumed run continue exactly.

    checkpoints/step-000050/
        config.json, model.safetensors, tokenizer files   the policy
        reference.safetensors                             pi_ref's weights (public trainers lose them)
        trainer_state.pt                                  the trainer's `state_dict()`: optimizer, RNG
                                                          streams, data position, reset policy and
                                                          history, step, config
This module stores and loads those files; what the state holds is the trainer's business.
A checkpoint is written to a temporary folder and renamed, so a crash never leaves half of one.
A write the disk refuses (full, or a folder that is not writable) removes that folder and raises
CheckpointWriteError, whose message tells a person what to fix; earlier checkpoints stay as they were.
Loading is strict: a policy or reference file with a missing or unexpected tensor is refused, with
the tensors named (a tensor tied to another, lm_head to the embeddings, is stored once and is
not missing).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_file

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


def save(
    run_dir: Path, step: int, policy: torch.nn.Module, tokenizer: Any, reference: torch.nn.Module, state: dict[str, Any]
) -> Path:
    """Write checkpoints/step-<step> of `run_dir`: the policy and tokenizer (`save_pretrained`), the
    reference's weights and `state` (trainer_state.pt). Returns the checkpoint's folder. Raises
    CheckpointWriteError, leaving no partial folder, when the disk refuses the write."""
    target = folder(run_dir) / f"step-{step:06d}"
    with writing(target, tensor_bytes(policy.state_dict(), reference.state_dict(), state)) as tmp:
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(
            {k: v.contiguous() for k, v in reference.state_dict().items() if not _is_tied_copy(reference, k)},
            tmp / "reference.safetensors",
        )
        torch.save(state, tmp / "trainer_state.pt")
    return target


class CheckpointWriteError(Exception):
    """The disk refused a checkpoint (`reason`: "no_space" or "not_writable"). The partial folder is
    removed and earlier checkpoints are untouched: once a person frees space or fixes the folder's
    permissions, the same checkpoint can be written again. `needed_bytes`: the estimate of its size."""

    def __init__(self, message: str, *, reason: str = "", needed_bytes: int = 0):
        super().__init__(message)
        self.reason = reason
        self.needed_bytes = needed_bytes


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_BYTES = 1_000_000  # a disk with less free space than this when a write failed is full
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def writing(target: Path, needed_bytes: int) -> Iterator[Path]:
    """Yield `target`'s temporary folder to write the checkpoint into, then rename it to `target`.
    When the free space is short of `needed_bytes` nothing is written; when a write fails the
    temporary folder is removed and a refusal of the disk becomes CheckpointWriteError."""
    tmp = temporary(target)
    shutil.rmtree(tmp, ignore_errors=True)
    if _free_bytes(tmp) < needed_bytes:
        raise CheckpointWriteError(_no_space_message(needed_bytes), reason="no_space", needed_bytes=needed_bytes)
    try:
        yield tmp
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except Exception as exc:
        refused = discard_failed_write(exc, tmp, needed_bytes)
        if refused is None:
            raise
        raise refused from exc


def temporary(target: Path) -> Path:
    """The folder a checkpoint is written to before it is renamed into place."""
    return target.with_name(target.name + ".tmp")


def discard_failed_write(exc: BaseException, tmp: Path, needed_bytes: int) -> CheckpointWriteError | None:
    """Remove the partial folder `tmp` of a write that raised `exc`. Returns the CheckpointWriteError
    to raise when the disk refused the write: an OSError of a full or unwritable disk somewhere in
    `exc`'s chain, or, as torch tells a full disk with no errno ("unexpected pos 480000 vs 479888"),
    a disk that, when the write failed, lacked room for the rest of the checkpoint or held less than
    FULL_DISK_BYTES. None when `exc` is some other failure, to raise as it is."""
    left = max(needed_bytes - _bytes_in(tmp), FULL_DISK_BYTES)
    full = _free_bytes(tmp) < left  # measured before the partial folder frees its space
    shutil.rmtree(tmp, ignore_errors=True)
    cause = _os_error(exc)
    if cause is not None and cause.errno in NOT_WRITABLE:
        why = cause.strerror or os.strerror(cause.errno)
        where = f"{tmp.parent.name}/"  # relative to the run folder: a message for people names no server paths
        message = f"checkpoint folder is not writable: {where} ({why}); make it writable and resume"
        return CheckpointWriteError(message, reason="not_writable", needed_bytes=needed_bytes)
    if (cause is not None and cause.errno in NO_SPACE) or full:
        return CheckpointWriteError(_no_space_message(needed_bytes), reason="no_space", needed_bytes=needed_bytes)
    return None


def tensor_bytes(*trees: Any) -> int:
    """Bytes of the tensors in `trees` (state dicts, nested dicts and lists), each storage counted
    once (tied weights share one): about what a checkpoint of them takes on disk."""
    seen: dict[tuple[int, str], int] = {}
    pending = list(trees)
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, torch.Tensor):
            local = item.to_local() if hasattr(item, "to_local") else item  # a DTensor: this rank's shard
            storage = local.untyped_storage()
            seen[(storage.data_ptr(), str(local.device))] = storage.nbytes()
    return sum(seen.values())


def _no_space_message(needed_bytes: int) -> str:
    megabytes = math.ceil(needed_bytes / 1e6)
    return f"no space left on device: the checkpoint needs about {megabytes} MB; free space and resume"


def _os_error(exc: BaseException | None) -> OSError | None:
    """The first OSError with an errno in `exc`, its causes, and the per-rank failures of a
    torch.distributed.checkpoint CheckpointException."""
    pending, seen = [exc], set()
    while pending:
        item = pending.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.errno is not None:
            return item
        pending += [item.__cause__, item.__context__]
        failures = getattr(item, "failures", None)  # {rank: (exception, traceback summary)}
        if isinstance(failures, dict):
            pending += [pair[0] for pair in failures.values()]
    return None


def _bytes_in(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _free_bytes(path: Path) -> int:
    """Free bytes on the filesystem of `path`, or of its nearest existing parent."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def load(path: Path, policy: torch.nn.Module, reference: torch.nn.Module) -> dict[str, Any]:
    """Load a checkpoint's policy and reference weights into `policy` and `reference` in place (the
    same parameter objects, so an optimizer over them stays valid), strictly; return its saved state."""
    path = Path(path)
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no trainer_state.pt)")
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    parameter = next(policy.parameters())
    policy.load_state_dict(_load_policy_strict(path, parameter.dtype).state_dict())
    reference_file = path / "reference.safetensors"
    # safetensors' load_model knows tied tensors (stored once): only real gaps are reported
    missing, unexpected = load_model(reference, reference_file, strict=False, device=str(parameter.device))
    _refuse_mismatch(reference_file, missing, unexpected)
    return state


def read_policy_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's policy weights (every tensor, tied ones included), on the CPU."""
    path = Path(path)
    from safetensors.torch import load_file

    single = path / "model.safetensors"
    if single.is_file():
        weights = load_file(single)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("tie_word_embeddings") and "lm_head.weight" not in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        return weights
    return _load_policy_strict(path, torch.float32).state_dict()  # a sharded save_pretrained folder


def rng_state() -> dict[str, Any]:
    """The process's random streams (torch, CUDA, numpy, Python), for `set_rng_state`."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class CheckpointMismatch(ValueError):
    """A checkpoint's weights file does not hold exactly the tensors of the model it is loaded into."""


def _refuse_mismatch(weights: Path, missing: Iterable[str], unexpected: Iterable[str]) -> None:
    """Raise CheckpointMismatch naming every missing and unexpected tensor of `weights`, if any."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected:
        problems = ([f"missing tensors {', '.join(missing)}"] if missing else []) + (
            [f"unexpected tensors {', '.join(unexpected)}"] if unexpected else []
        )
        where = f"{weights.parent.name}/{weights.name}"  # relative to the run's checkpoints folder
        raise CheckpointMismatch(f"checkpoint {where} does not match the model: {'; '.join(problems)}")


def _load_policy_strict(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint's policy on the CPU, refused when its weights lack a tensor of the
    architecture (transformers would initialise it at random) or hold one it has not."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, info = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, local_files_only=True, output_loading_info=True
    )
    single = path / "model.safetensors"
    weights = single if single.is_file() else path / "model.safetensors.index.json"  # sharded when large
    _refuse_mismatch(weights, info["missing_keys"], info["unexpected_keys"])
    return model


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
