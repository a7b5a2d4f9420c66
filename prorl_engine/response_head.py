"""Log-probs and entropy of response tokens from the decoder's hidden states, a chunk at a time.

A causal LM's forward pass makes logits at every position of every sequence: (M, L, V) floats, with
V = 151,936 for Qwen models, most of them at prompt and padding positions the loss never reads. Here
the decoder runs alone, its hidden states are gathered at the positions that predict response
tokens (n of them, n <= M * T), and the LM head runs on at most `chunk_tokens` of them at a time:
the step holds (chunk_tokens, V) logits at once, never (M, L, V). With grad, each chunk is
checkpointed: the backward pass recomputes its logits from the chunk's hidden states instead of
keeping them all from the forward pass (one more head matmul per chunk, the price of the bound).

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
    hidden = model.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state  # (M, L, H)
    rows, cols = (batch.mask > 0).nonzero(as_tuple=True)  # (n,) each: the response tokens
    states = hidden[rows, batch.positions[rows, cols]]  # (n, H): the positions that predict them
    targets = batch.targets[rows, cols]  # (n,)
    head = model.get_output_embeddings()
    size = chunk_tokens(head.weight.shape[0], chunk_bytes)
    pieces = [
        _chunk(head, states[i : i + size], targets[i : i + size], temperature, top_p, with_entropy)
        for i in range(0, max(len(targets), 1), size)  # one empty chunk when n = 0: the graph still reaches the weights
    ]
    shape = batch.mask.shape
    logp = torch.zeros(shape, device=hidden.device).index_put((rows, cols), torch.cat([p[0] for p in pieces]))
    entropy = None
    if with_entropy:
        entropy = torch.zeros(shape, device=hidden.device).index_put((rows, cols), torch.cat([p[1] for p in pieces]))
    return logp, entropy


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
