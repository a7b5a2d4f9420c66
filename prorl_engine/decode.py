"""A lean sampling loop for the decoder layouts the engine knows (Qwen2, Llama).

Hugging Face `generate` on a small model spends most of each token's time outside the matmuls: it
rebuilds the attention mask, grows every layer's KV cache with `torch.cat`, and runs a list of
logits processors and stopping criteria. This loop runs the model's own modules (embeddings,
norms, projections, rotary embedding, MLPs, head), so the weights and the arithmetic are the
model's, on a KV cache allocated once for the whole generation, with the mask kept as one boolean
row per sequence; the distribution it samples from is the one `rollout.response_logprobs` scores:
softmax(logits / temperature), nucleus-truncated by `algorithms.nucleus_logits` (Hugging Face's
TopPLogitsWarper rule), drawn with `torch.multinomial` as `generate` draws.

`lean_decoding(model)` says whether a model has that layout; anything else (another architecture,
sliding-window attention, an FSDP-sharded model whose layers gather their weights only in their
own forward) samples with `generate` (rollout.HFGenerateBackend).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule

from prorl_engine.algorithms import nucleus_logits

LEAN_MODEL_TYPES = ("qwen2", "llama")


def lean_decoding(model: torch.nn.Module) -> bool:
    """Whether `LeanSampler` can sample from `model` (same layers, same arithmetic as its forward)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in LEAN_MODEL_TYPES:
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False  # sliding-window layers attend to a window this loop does not cut
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    return not any(isinstance(module, FSDPModule) for module in model.modules())


@dataclass
class Sampled:
    """(rows, new) token ids, pad after a row's eos; and the log-prob of each under the distribution it
    was drawn from (rows, new), or None when not asked for (or greedy)."""

    tokens: torch.Tensor
    logprobs: torch.Tensor | None


class LeanSampler:
    """Samples continuations of left-padded prompts with `model`'s modules and a preallocated cache."""

    def __init__(self, model: torch.nn.Module):
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        config = model.config
        self.layers = list(self.decoder.layers[: config.num_hidden_layers])
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.scaling = attention.scaling

    @torch.no_grad()
    def sample(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        eos_token_id: int,
        pad_token_id: int,
        record_logprobs: bool = False,
    ) -> Sampled:
        """`n` continuations of each of the (P, W) left-padded prompts, rows grouped by prompt (prompt
        0's n first), each up to `max_new_tokens` tokens, ending at eos. temperature 0 = greedy."""
        prompts, width = input_ids.shape
        rows = prompts * n
        device = input_ids.device
        dtype = self.head.weight.dtype
        length = width + max_new_tokens
        shape = (rows, self.kv_heads, length, self.head_dim)
        cache = [(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device))]
        cache += [(torch.empty_like(cache[0][0]), torch.empty_like(cache[0][0])) for _ in self.layers[1:]]
        valid = torch.zeros((rows, length), dtype=torch.bool, device=device)  # which cache columns hold tokens
        valid[:, :width] = attention_mask.bool().repeat_interleave(n, dim=0)

        # The prompts once each; their keys and values repeated for their n samples.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        mask = (attention_mask.bool()[:, None, None, :] & causal) | torch.eye(width, dtype=torch.bool, device=device)
        hidden = self._forward(input_ids, positions, mask, cache, 0, repeat=n)
        logits = self.head(hidden[:, -1]).repeat_interleave(n, dim=0)  # (rows, V)

        position = positions[:, -1].repeat_interleave(n) + 1  # (rows,) each row's next position
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
        logprobs = [] if record_logprobs and temperature > 0 else None
        for step in range(max_new_tokens):
            scores = logits.float()
            if temperature > 0:
                scores = nucleus_logits(scores / temperature, top_p)
                token = torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)
                if logprobs is not None:
                    logprobs.append(scores.gather(1, token.unsqueeze(1)).squeeze(1) - scores.logsumexp(dim=-1))
            else:
                token = scores.argmax(dim=-1)
            token = token.masked_fill(finished, pad_token_id)
            tokens[:, step] = token
            finished |= token == eos_token_id
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            column = width + step
            valid[:, column] = True
            mask = valid[:, None, None, : column + 1]
            hidden = self._forward(token.unsqueeze(1), position.unsqueeze(1), mask, cache, column)
            logits = self.head(hidden[:, -1])
            position = position + 1
        recorded = None
        if logprobs is not None:
            recorded = torch.zeros((rows, max_new_tokens), device=device)
            recorded[:, : len(logprobs)] = torch.stack(logprobs, dim=1)
        return Sampled(tokens, recorded)

    def _forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        start: int,
        repeat: int = 1,
    ) -> torch.Tensor:
        """The decoder over (B, S) tokens at cache columns start..start+S-1, attending to columns
        0..start+S-1 where `mask` (B, 1, S, start+S) allows; writes their keys and values (repeated
        `repeat` times along the rows) into `cache`. Returns the final norm's hidden states (B, S, H)."""
        hidden = self.decoder.embed_tokens(input_ids)
        cos, sin = self.decoder.rotary_emb(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, S, D): broadcast over heads
        batch, width = input_ids.shape
        end = start + width
        for layer, (keys, values) in zip(self.layers, cache):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(batch, width, self.heads, self.head_dim).transpose(1, 2)
            k = attention.k_proj(x).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attention.v_proj(x).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if repeat > 1:
                k, v = k.repeat_interleave(repeat, dim=0), v.repeat_interleave(repeat, dim=0)
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            if repeat > 1:  # attend with the prompts' own keys: one row per prompt
                k_all, v_all = keys[::repeat, :, :end], values[::repeat, :, :end]
            else:
                k_all, v_all = keys[:, :, :end], values[:, :, :end]
            out = self._attend(q, k_all, v_all, mask)
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(batch, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.decoder.norm(hidden)

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T * scaling, masked) v: q (B, heads, S, D), keys and values (B, kv_heads, L, D),
        mask (B, 1, S, L) -> (B, heads, S, D). One new token (S = 1) takes two batched matmuls: the
        fused kernel's own set-up costs more than the product at that size (measured: 4x)."""
        if q.shape[2] > 1:
            return F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=self.scaling, enable_gqa=self.heads != self.kv_heads
            )
        batch, groups = q.shape[0], self.heads // self.kv_heads
        q = q.view(batch, self.kv_heads, groups, self.head_dim)  # a query head's group shares its key head
        scores = torch.matmul(q, keys.transpose(2, 3)) * self.scaling  # (B, kv_heads, groups, L)
        scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return torch.matmul(scores, values).view(batch, self.heads, 1, self.head_dim)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, as the models' `apply_rotary_pos_emb`: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
