"""Supervised fine-tuning of the demo's base model: its tokenizer, its training pairs, its loop.

The pairs are tokenised exactly as the engine will see them at RL time: the prompt through
the engine's prompt format, the response after it, then eos; the loss is on response tokens only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from prorl_engine.demo.problems import PREAMBLE, Problem
from prorl_engine.prompts import format_prompt
from prorl_engine.tiny import EOS, train_tokenizer


@dataclass(frozen=True)
class ModelShape:
    """Qwen2 size. The defaults give a few million parameters; the byte-level BPE trained on the demo's
    problems saturates below `vocab_size`, so the real vocabulary is smaller."""

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 512
    max_positions: int = 512  # >= max_prompt_tokens (256) + the demo's response budget


def tokenizer_corpus(problems: Sequence[Problem]) -> list[str]:
    """Prompts and responses as the model will see them (the format has no chat template)."""
    return [f"{p.prompt}\n{PREAMBLE}{p.response}" for p in problems]


def make_tokenizer(problems: Sequence[Problem], vocab_size: int):
    """`tiny.train_tokenizer`, with <answer> and </answer> made ordinary (non-special) tokens.

    They stay single tokens, and tools that decode with `skip_special_tokens=True` (Hugging Face
    pipelines, most chat front ends) keep them too; the engine itself decodes with
    `prompts.decode_response`, which keeps special tokens. Only <|endoftext|> (eos and pad) stays special.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    trained = train_tokenizer(tokenizer_corpus(problems), vocab_size=vocab_size)
    spec = json.loads(trained.backend_tokenizer.to_str())
    for token in spec["added_tokens"]:
        token["special"] = token["content"] == EOS
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=EOS, pad_token=EOS)


def encode_pair(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids + eos), tokenised separately exactly as the engine does:
    it encodes `format_prompt(prompt)` and generates the response after it."""
    prompt_ids = tokenizer(format_prompt(tokenizer, problem.prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(problem.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, response_ids


def collate(
    pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels), each (N, L); labels are -100 except on
    response tokens, so the loss is on the response only."""
    width = max(len(p) + len(r) for p, r in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    for row, (prompt, response) in enumerate(pairs):
        sequence = prompt + response
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = torch.tensor(response)
    return input_ids, attention_mask, labels


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """The learning-rate multiplier at `step` (0-based): linear warmup over `warmup` steps to 1,
    then cosine decay to 0.1 at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def sft(
    model: torch.nn.Module,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup: int,
    seed: int,
    pad_id: int,
    log: Callable[[str], None] = print,
) -> list[float]:
    """AdamW on the response tokens' cross-entropy, with `lr_factor`'s schedule; returns the loss of
    every step and leaves the model in eval mode.

    Batches walk through `pairs` in a seeded order (a new permutation per epoch).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pairs), generator=generator).tolist()
    cursor, losses = 0, []
    model.train()
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(pairs), generator=generator).tolist(), 0
        batch = [pairs[i] for i in order[cursor : cursor + batch_size]]
        cursor += batch_size
        input_ids, attention_mask, labels = collate(batch, pad_id)  # (N, L) each
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"sft step {step + 1}/{steps}  loss {sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    return losses
