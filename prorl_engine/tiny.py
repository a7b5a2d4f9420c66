"""Tiny models built locally: a tokenizer trained by `tokenizers` and randomly initialised
Qwen2 or Llama weights, saved as an ordinary `save_pretrained` folder.

Nothing can be downloaded at run time, so tests (and the demo's base model, see prorl_engine/demo/) make
their own models. They load through exactly the same code path as a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS = "<|endoftext|>"
CORPUS_TASKS = ("chain_sum", "basic_arithmetic", "simple_equations", "leg_counting", "letter_counting")


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, chat_template: str | None = None):
    """A byte-level BPE tokenizer with one token per digit (arithmetic stays learnable).

    Returns a `PreTrainedTokenizerFast` whose eos and pad token is <|endoftext|>.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, "<answer>", "</answer>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def reasoning_corpus(size_per_task: int = 300, seed: int = 0) -> list[str]:
    """Questions and answers of a few reasoning-gym tasks: the text the tiny tokenizer learns from."""
    import reasoning_gym

    texts = []
    for task in CORPUS_TASKS:
        for entry in reasoning_gym.create_dataset(task, size=size_per_task, seed=seed):
            texts.append(f"{entry['question']}\n<answer>{entry['answer']}</answer>")
    return texts


def build_tiny_model(
    path: str | Path,
    *,
    arch: str = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 1024,
    seed: int = 0,
    tokenizer=None,
) -> Path:
    """Write a randomly initialised model and its tokenizer to `path` (reused if already there)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    if tokenizer is None:
        tokenizer = train_tokenizer(reasoning_corpus(seed=seed), vocab_size=vocab_size)
    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
