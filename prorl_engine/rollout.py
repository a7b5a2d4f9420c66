"""Rollout backends and batched log-probabilities.

A `RolloutBackend` samples responses (token ids) for tokenised prompts. `HFGenerateBackend` uses
Hugging Face `generate` (batched, KV-cached) on the training model itself, so it needs no weight
sync. `vllm_backend.VLLMBackend` samples on a vLLM engine with its own copy of the weights, synced
after each update through `sync_weights`; prorl_engine/backends.py builds the one a config asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from prorl_engine.algorithms import entropy_from_logits, nucleus_logits


@dataclass(frozen=True)
class SamplingParams:
    n: int
    max_new_tokens: int
    temperature: float  # 0 = greedy decoding (the tests compare backends with it)
    top_p: float


@dataclass
class Generation:
    """One sampled response: its token ids (ending with eos unless truncated), and, from a backend
    with its own engine, that engine's log-prob of each of them (None where the sampler is the
    trainer's own model)."""

    prompt_index: int
    token_ids: list[int]
    truncated: bool
    logprobs: list[float] | None = None


class RolloutBackend(Protocol):
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None = None
    ) -> list[Generation]:
        """`params.n` responses per prompt, grouped: prompt 0's n responses first, then prompt 1's...
        `seeds`: one per prompt, fixing its samples whatever else is sampled with it (a distributed
        run's prompts are split across ranks); None draws from the global RNG."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the backend sample from `model`'s current weights."""

    def sleep(self) -> None:
        """The update phase begins: free what sampling holds, if the backend can (vLLM's sleep mode)."""


class HFGenerateBackend:
    """Sampling with `model.generate` on the policy being trained (CPU or GPU)."""

    def __init__(self, model: torch.nn.Module, eos_token_id: int, pad_token_id: int, batch_size: int):
        self.model = model
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # generates with the training weights themselves

    def sleep(self) -> None:
        """Nothing to free: this backend samples with the policy itself, whose memory the update needs."""

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None = None
    ) -> list[Generation]:
        prompts_per_chunk = max(1, self.batch_size // params.n)
        generations = []
        was_training = self.model.training
        self.model.eval()
        if seeds is not None:  # one prompt per call, each under its own seed: the RNG stream is the prompt's
            for index, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
                with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                    torch.manual_seed(seed)
                    generations.extend(self._generate_chunk([prompt], index, params))
        else:
            for start in range(0, len(prompts), prompts_per_chunk):
                chunk = prompts[start : start + prompts_per_chunk]
                generations.extend(self._generate_chunk(chunk, start, params))
        self.model.train(was_training)
        return generations

    def _generate_chunk(self, prompts: list[list[int]], offset: int, params: SamplingParams) -> list[Generation]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        # Left padding, so every prompt ends where generation starts.
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False}  # greedy
        )
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            **sampling,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )  # (len(prompts) * n, width + new), grouped by prompt
        new_tokens = output[:, width:].tolist()  # one CPU-GPU sync for the whole chunk
        generations = []
        for index, tokens in enumerate(new_tokens):
            if self.eos_token_id in tokens:
                tokens, truncated = tokens[: tokens.index(self.eos_token_id) + 1], False
            else:
                truncated = True
            generations.append(Generation(offset + index // params.n, tokens, truncated))
        return generations


@dataclass
class PackedBatch:
    """Prompt + response sequences right-padded into tensors.

    input_ids, attention_mask: (M, L); targets, mask: (M, T) response tokens and their mask;
    positions: (M, T) index of the logit that predicts each response token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.targets, self.mask, self.positions))
        )


def pack(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int) -> PackedBatch:
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    response_width = max(1, max(len(r) for r in responses))
    rows = len(prompts)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    targets = torch.full((rows, response_width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((rows, response_width))
    positions = torch.zeros((rows, response_width), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        sequence = prompt + response
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        targets[row, : len(response)] = torch.tensor(response, dtype=torch.long)
        mask[row, : len(response)] = 1.0
        # the logit at position p predicts token p + 1: response token j sits at len(prompt) + j
        positions[row] = (len(prompt) - 1 + torch.arange(response_width)).clamp(max=width - 1)
    return PackedBatch(input_ids, attention_mask, targets, mask, positions)


def response_logprobs(
    model: torch.nn.Module,
    batch: PackedBatch,
    with_entropy: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(a_t | s_t) of every response token, (M, T); and its entropy (M, T) if asked.

    pi is the distribution the rollouts were sampled from (PRORL_SPEC.md section 7b): the nucleus
    of softmax(logits / temperature), renormalised, as `generate` samples with temperature and
    top_p. At temperature 1.2 (the spec's rollout temperature) the untempered log-probs would make
    pi_old in the PPO ratio a different policy from the one that sampled, and with top_p < 1 the
    untruncated ones would too (every kept token is more likely than softmax says, by the mass cut
    off); pi_old, pi_ref and pi_theta are all taken of this same distribution. A token outside a
    policy's nucleus has log-prob -inf (the sampled token is always inside the sampler's own one);
    the entropy is that of the truncated distribution.

    Differentiable when called with grad enabled (through the kept logits). Padding positions
    (`batch.mask` 0) hold 0.0, so sums over the mask never meet -inf * 0.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (M, L, V)
    index = batch.positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    logits = logits.gather(1, index).float() / temperature  # (M, T, V): only the positions that predict responses
    logits = nucleus_logits(logits, top_p)  # -inf outside the nucleus when top_p < 1
    logp = torch.log_softmax(logits, dim=-1).gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
    logp = logp.masked_fill(batch.mask == 0, 0.0)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits)
    return logp, entropy


@torch.no_grad()
def batched_logprobs(
    model: torch.nn.Module,
    batches: list[PackedBatch],
    device: torch.device,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[torch.Tensor]:
    """Log-probs of several packed micro-batches without grad (pi_old and pi_ref), of the same
    tempered, nucleus-truncated distribution as `response_logprobs`."""
    was_training = model.training
    model.eval()
    out = [response_logprobs(model, b.to(device), temperature=temperature, top_p=top_p)[0].cpu() for b in batches]
    model.train(was_training)
    return out
