"""One run across several processes: torchrun launches the ranks, FSDP2 shards the models.

The trainer talks to its ranks through a `Group`. `SOLO` (a run in one process, the default) does
nothing and costs nothing: every method returns its input. `TorchGroup` is a torch.distributed
process group started by torchrun (gloo on the CPU, nccl on CUDA), with a timeout on every
collective so that a dead rank fails the others instead of hanging them.

What is global in a distributed step (PRORL_SPEC.md sections 5-7) is decided with the group: the
kept groups of dynamic sampling and the refill, the advantages' whitening over all tokens, the
minibatch plan, the loss's token count, the diagnostics, the KL average the reset policy reads.
Every rank draws the same prompts from the same seeded data stream and samples its slice of them;
each prompt's samples are seeded from (seed, step, generation batch, prompt index), so how the
prompts are split across ranks never changes what is sampled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch

COLLECTIVE_TIMEOUT_S = 600  # a rank that stops answering fails the run after this long, never hangs it


class Group:
    """One process: the identity of every collective (the single-process run, unchanged)."""

    rank = 0
    world = 1
    seeds_per_prompt = False  # samples drawn from the global RNG, as a single-process run always has

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order."""
        return [obj]

    def sum(self, values: list[float]) -> list[float]:
        return values

    def max(self, values: list[float]) -> list[float]:
        return values

    def min(self, values: list[float]) -> list[float]:
        return values

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        return obj

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @contextlib.contextmanager
    def whole(self, model: torch.nn.Module) -> Iterator[None]:
        """While inside, every rank holds `model`'s full weights (to sample without collectives)."""
        yield

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor) of every parameter, one at a time (a collective per tensor when sharded)."""
        for name, parameter in model.named_parameters():
            yield name, parameter.detach()

    def close(self) -> None:
        pass


SOLO = Group()


class TorchGroup(Group):
    """The ranks torchrun started (its RANK, WORLD_SIZE, MASTER_ADDR... in the environment)."""

    seeds_per_prompt = True

    def __init__(self, timeout_s: float = COLLECTIVE_TIMEOUT_S):
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if self.cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.mesh = init_device_mesh("cuda" if self.cuda else "cpu", (self.world,))

    def all_gather(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world
        self.dist.all_gather_object(gathered, obj)
        return gathered

    def _reduce(self, values: list[float], op) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device="cuda" if self.cuda else "cpu")
        self.dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def sum(self, values: list[float]) -> list[float]:
        return self._reduce(values, self.dist.ReduceOp.SUM)

    def max(self, values: list[float]) -> list[float]:
        return self._reduce(values, self.dist.ReduceOp.MAX)

    def min(self, values: list[float]) -> list[float]:
        return self._reduce(values, self.dist.ReduceOp.MIN)

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: each decoder layer, then the whole model (embeddings, final norm, head), sharded
        over the ranks; optimizer state follows the sharded parameters. On CUDA: bf16 compute with
        fp32 gradient reduction."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        options: dict[str, Any] = {"mesh": self.mesh}
        if self.cuda:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, **options)
        fully_shard(model, **options)
        return model

    @contextlib.contextmanager
    def whole(self, model: torch.nn.Module) -> Iterator[None]:
        """Unshard every FSDP unit and keep it whole across forward passes: generation then runs on
        each rank alone (sharded, every token of `generate` would all-gather every layer: measured
        4x slower), at the cost of one full copy of the weights per rank while sampling."""
        units = _units(model)
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        from torch.distributed.tensor import DTensor

        for name, parameter in model.named_parameters():
            value = parameter.detach()
            yield name, value.full_tensor() if isinstance(value, DTensor) else value

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def _units(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def prompt_seed(seed: int, step: int, batch: int, index: int) -> int:
    """The seed of one prompt's samples: a hash of (run seed, step, generation batch, prompt index
    in the batch), the same whichever rank samples it."""
    digest = hashlib.blake2b(f"{seed}:{step}:{batch}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def owned(count: int, group: Group) -> range:
    """The indices of `count` items (prompts of a batch, held-out examples) that this rank takes:
    a contiguous slice, the first ranks taking one more when `count` does not divide evenly."""
    base, extra = divmod(count, group.world)
    start = group.rank * base + min(group.rank, extra)
    return range(start, start + base + (group.rank < extra))
