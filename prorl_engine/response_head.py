"""Log-probs and entropy of response tokens from the decoder's hidden states, a chunk at a time.

A causal LM's forward pass makes logits at every position of every sequence: (M, L, V) floats, with
V = 151,936 for Qwen models, most of them at prompt and padding positions the loss never reads. Here
the decoder runs alone, its hidden states are gathered at the positions that predict response
tokens (n of them, n <= M * T), and the LM head runs on at most `chunk_tokens` of them at a time:
the step holds (chunk_tokens, V) logits at once, never (M, L, V). With grad, each chunk is
checkpointed: the backward pass recomputes its logits from the chunk's hidden states instead of
keeping them all from the forward pass (one more head matmul per chunk, the price of the bound).

Responses that share a prompt (a group's G samples) share its pass: each distinct prompt of a batch
runs once and its responses continue from its KV cache (`response_states`).

The distribution is the one the rollouts were sampled from, as in `rollout.response_logprobs`:
softmax(logits / temperature), nucleus-truncated at top_p and renormalised.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule
from torch.utils.checkpoint import checkpoint

from prorl_engine.algorithms import entropy_from_logits, nucleus_logits

HEAD_CHUNK_BYTES = 32 * 2**20
"""Float32 logits per chunk (32 MiB: 55 positions of a 151,936-token vocabulary, 16,384 of a 512 one)."""


def chunk_tokens(vocab_size: int, chunk_bytes: int = HEAD_CHUNK_BYTES) -> int:
    """How many positions' logits fit in `chunk_bytes` as float32 (at least one)."""
    return max(1, chunk_bytes // (4 * vocab_size))


def head_apart(model: torch.nn.Module) -> bool:
    """Whether `model` splits into a decoder and an LM head that this module can run apart.

    Not for an FSDP-sharded model: its root unit (embeddings, final norm, head) gathers its weights
    and registers its gradients' reduction only inside its own forward pass. Not for a model that
    transforms its logits after the head (Gemma's soft-capping, Cohere's logit scale): running the
    head alone would skip that.
    """
    config = getattr(model, "config", None)
    transformed = any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale"))
    has_parts = hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
    return has_parts and not transformed and not isinstance(model, FSDPModule)


def chunked_response_logprobs(
    model: torch.nn.Module,
    batch,
    with_entropy: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    chunk_bytes: int = HEAD_CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(a_t | s_t) of every response token of `batch` (a PackedBatch), (M, T), and its
    entropy (M, T) if asked; 0.0 at padding positions (`batch.mask` 0). Differentiable through the
    kept logits when grad is enabled; the entropy carries no grad."""
    rows, cols = (batch.mask > 0).nonzero(as_tuple=True)  # (n,) each: the response tokens
    states = response_states(model.get_decoder(), batch, rows, cols)  # (n, H): the positions that predict them
    targets = batch.targets[rows, cols]  # (n,)
    head = model.get_output_embeddings()
    size = chunk_tokens(head.weight.shape[0], chunk_bytes)
    pieces = [
        _chunk(head, states[i : i + size], targets[i : i + size], temperature, top_p, with_entropy)
        for i in range(0, max(len(targets), 1), size)  # one empty chunk when n = 0: the graph still reaches the weights
    ]
    shape = batch.mask.shape
    logp = torch.zeros(shape, device=states.device).index_put((rows, cols), torch.cat([p[0] for p in pieces]))
    entropy = None
    if with_entropy:
        entropy = torch.zeros(shape, device=states.device).index_put((rows, cols), torch.cat([p[1] for p in pieces]))
    return logp, entropy


def response_states(decoder: torch.nn.Module, batch, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The decoder's hidden states at the positions that predict response tokens (rows, cols), (n, H).

    Responses to the same prompt (a group's G samples) share its prefix: when a prompt repeats in
    the batch, each distinct prompt runs once, and its responses continue from its KV cache, with
    the grad of every response flowing back through the one prompt pass. The prompt tokens' share
    of the forward and backward work drops by the number of responses per prompt."""
    prompts, owner = _distinct_prompts(batch)
    if len(prompts) == len(owner):  # nothing shared: one pass over the right-padded sequences
        hidden = decoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state  # (M, L, H)
        return hidden[rows, batch.positions[rows, cols]]

    from transformers import DynamicCache

    width = max(len(p) for p in prompts)
    prompt_ids = batch.input_ids.new_zeros((len(prompts), width))
    prompt_mask = batch.attention_mask.new_zeros((len(prompts), width))
    for u, prompt in enumerate(prompts):  # left-padded: every prompt ends at column width - 1
        prompt_ids[u, width - len(prompt) :] = torch.tensor(prompt)
        prompt_mask[u, width - len(prompt) :] = 1
    cache = DynamicCache(config=decoder.config)
    prompt_hidden = decoder(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state  # (U, width, H)
    owner = torch.tensor(owner, device=prompt_ids.device)
    cache.batch_select_indices(owner)  # (M, ...): each response's prompt's keys and values
    hidden = prompt_hidden[owner, width - 1].unsqueeze(1)  # (M, 1, H): predicts response token 0
    width_r = batch.targets.shape[1]
    if width_r > 1:  # response tokens 0..T-2 predict tokens 1..T-1
        prompt_lengths = batch.positions[:, 0] + 1
        response_lengths = batch.attention_mask.sum(dim=1) - prompt_lengths  # not batch.mask: the loss's own
        steps = torch.arange(width_r - 1, device=prompt_ids.device)
        response_mask = (steps < response_lengths.unsqueeze(1)).to(prompt_mask.dtype)
        response_hidden = decoder(
            input_ids=batch.targets[:, : width_r - 1],
            attention_mask=torch.cat([prompt_mask[owner], response_mask], dim=1),
            position_ids=prompt_lengths.unsqueeze(1) + steps,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # (M, T - 1, H)
        hidden = torch.cat([hidden, response_hidden], dim=1)  # (M, T, H): column j predicts response token j
    return hidden[rows, cols]


def _distinct_prompts(batch) -> tuple[list[list[int]], list[int]]:
    """The batch's distinct prompts (token ids) and, for each row, the index of its prompt."""
    index: dict[tuple[int, ...], int] = {}
    owner = []
    for row, length in enumerate((batch.positions[:, 0] + 1).tolist()):
        owner.append(index.setdefault(tuple(batch.input_ids[row, :length].tolist()), len(index)))
    return [list(prompt) for prompt in index], owner


def _chunk(
    head: torch.nn.Module,
    states: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    top_p: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each target, entropy at each position or nothing), of c positions' states (c, H).
    With grad, checkpointed: its (c, V) logits are not kept for the backward pass but recomputed."""
    args = (head, states, targets, temperature, top_p, with_entropy)
    return checkpoint(_head_terms, *args, use_reentrant=False) if torch.is_grad_enabled() else _head_terms(*args)


def _head_terms(
    head: torch.nn.Module,
    states: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    top_p: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = nucleus_logits(head(states).float() / temperature, top_p)  # (c, V), -inf outside the nucleus
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (c,)
    with torch.no_grad():
        entropy = entropy_from_logits(logits) if with_entropy else logits.new_empty(0)  # (c,) or (0,)
    return logp, entropy
