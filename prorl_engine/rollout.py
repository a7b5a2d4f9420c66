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
from prorl_engine.decode import LeanSampler, lean_decoding
from prorl_engine.response_head import chunked_response_logprobs, head_apart


@dataclass(frozen=True)
class SamplingParams:
    n: int
    max_new_tokens: int
    temperature: float  # 0 = greedy decoding (the tests compare backends with it)
    top_p: float


@dataclass
class Generation:
    """One sampled response: its token ids (ending with eos unless truncated), and the sampler's
    log-prob of each of them: always from a backend with its own engine, from the trainer's own
    model only when it records them (HFGenerateBackend's `record_logprobs`); else None."""

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
    """Sampling with `model.generate` on the policy being trained (CPU or GPU).

    `record_logprobs`: each sampled Generation also carries log pi of its tokens under the
    distribution it was drawn from (tempered, nucleus-truncated), read off the scores it samples
    from, so a float32 trainer can take them as pi_old instead of a second forward pass.

    `lean`: models of a layout decode.py knows (Qwen2, Llama, unsharded) sample with its lean loop
    (the same modules and distribution, a preallocated KV cache, no per-token processor lists);
    any other, or lean=False, with `generate`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eos_token_id: int,
        pad_token_id: int,
        batch_size: int,
        record_logprobs: bool = False,
        lean: bool = True,
    ):
        self.model = model
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self.record_logprobs = record_logprobs
        self.lean = lean

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
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if self.lean and lean_decoding(self.model):
            sampled = LeanSampler(self.model).sample(
                input_ids,
                attention_mask,
                params.n,
                params.max_new_tokens,
                params.temperature,
                params.top_p,
                self.eos_token_id,
                self.pad_token_id,
                record_logprobs=self.record_logprobs,
            )
            new, logprobs = sampled.tokens, sampled.logprobs
        else:
            new, logprobs = self._generate(input_ids, attention_mask, params)
        new_tokens = new.tolist()  # one CPU-GPU sync for the whole chunk
        logprobs = logprobs.tolist() if logprobs is not None else None  # (rows, new)
        generations = []
        for index, tokens in enumerate(new_tokens):
            if self.eos_token_id in tokens:
                tokens, truncated = tokens[: tokens.index(self.eos_token_id) + 1], False
            else:
                truncated = True
            sampled_logprobs = logprobs[index][: len(tokens)] if logprobs is not None else None
            generations.append(Generation(offset + index // params.n, tokens, truncated, sampled_logprobs))
        return generations

    def _generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, params: SamplingParams
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(rows, new) token ids and, when recorded, their log-probs, from `model.generate`."""
        width = input_ids.shape[1]
        recorder = SampledLogProbs() if self.record_logprobs and params.temperature > 0 else None
        if recorder is not None:  # the same warpers generate would add, then the recorder, last
            sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
            sampling["logits_processor"] = recorder.after_warpers(params.temperature, params.top_p)
        elif params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        else:
            sampling = {"do_sample": False}  # greedy
        if params.n > 1 and width > 1:  # each prompt's prefill once, not once per sample
            cache = self._prompt_cache(input_ids, attention_mask, params.n)
            input_ids, attention_mask = (t.repeat_interleave(params.n, dim=0) for t in (input_ids, attention_mask))
            expand = {"past_key_values": cache, "num_return_sequences": 1}
        else:
            expand = {"num_return_sequences": params.n}
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **sampling,
            **expand,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )  # (len(prompts) * n, width + new), grouped by prompt
        return output[:, width:], recorder.finish(output[:, -1]) if recorder is not None else None

    def _prompt_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int):
        """The KV cache of every prompt but its last token, computed once per prompt and repeated
        for its n samples (rows grouped by prompt, as `num_return_sequences` groups them).

        `generate` with `num_return_sequences=n` repeats the prompts before its prefill and so runs
        each prompt n times; restarting it from this cache, it runs only the last prompt token and
        samples from there (the same positions as its own prefill: from the left-padded mask)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        mask = attention_mask[:, :-1]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.model(  # the whole model (a sharded one gathers in its own forward), one position's logits
            input_ids=input_ids[:, :-1],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(n)
        return cache


class SampledLogProbs:
    """The last logits processor of `generate`: it sees the scores each token is sampled from
    (after temperature and top_p: -inf outside the nucleus) and, at the next step, once that token
    is known, keeps its log-prob: scores[token] - logsumexp(scores). Holds one step's scores,
    (rows, V), never the whole generation's."""

    def __init__(self):
        self.previous: torch.Tensor | None = None  # (rows, V) the scores of the step not yet read
        self.values: list[torch.Tensor] = []  # (rows,) per generated token

    def after_warpers(self, temperature: float, top_p: float):
        """A LogitsProcessorList: HF's own temperature and top-p warpers, in generate's order, then
        this recorder (generate puts a caller's processors before its own warpers)."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        warpers += [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        return LogitsProcessorList([*warpers, self])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self._read(input_ids[:, -1])
        self.previous = scores
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """log pi of every generated token, (rows, new tokens), given the last step's tokens."""
        self._read(last_tokens)
        return torch.stack(self.values, dim=1).float()

    def _read(self, tokens: torch.Tensor) -> None:
        scores = self.previous.float()
        self.values.append(scores.gather(1, tokens.unsqueeze(1)).squeeze(1) - scores.logsumexp(dim=-1))
        self.previous = None


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

    The LM head runs only at response positions, in chunks (response_head.py), unless the model
    cannot run its head apart (`head_apart`); then the whole forward pass's logits are taken.
    """
    if head_apart(model):
        return chunked_response_logprobs(model, batch, with_entropy, temperature, top_p)
    return full_logits_logprobs(model, batch, with_entropy, temperature, top_p)


def full_logits_logprobs(
    model: torch.nn.Module,
    batch: PackedBatch,
    with_entropy: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`response_logprobs` from the model's own forward pass: (M, L, V) logits at every position."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
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
