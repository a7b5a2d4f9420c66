"""Loading policies from local `save_pretrained` folders, and the prompt format.

Real checkpoints and the tiny test models go through this same code path.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _build_tiny(folder: Path) -> Path:
    from prorl_engine.tiny import build_tiny_model

    return build_tiny_model(folder)


def _build_base(folder: Path) -> Path:
    from prorl_engine.basemodel import build_base_model

    return build_base_model(folder)


# `model_path: "<builder>:<folder>"` builds the project's own model in <folder> on first use.
MODEL_BUILDERS = {"tiny": _build_tiny, "base": _build_base}


def resolve_model_path(model_path: str) -> Path:
    """The local folder of a model, building it first for `tiny:` / `base:` paths (cached)."""
    builder, sep, folder = model_path.partition(":")
    if sep and builder in MODEL_BUILDERS:
        return MODEL_BUILDERS[builder](Path(folder).expanduser())
    return Path(model_path).expanduser()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but no CUDA device is available on this machine")
    return torch.device(name)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {path} has no eos token: responses could never stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(path: str | Path, dtype: str, device: torch.device) -> torch.nn.Module:
    """A causal LM from a local folder, in eval mode (no dropout: pi_old and pi_theta must agree
    exactly before the first update)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load would drown the run's own progress bar
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], local_files_only=True)
    return model.to(device).eval()


def format_prompt(tokenizer, prompt: str) -> str:
    """The model's chat template when its tokenizer has one, else the bare prompt and a newline."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt + "\n"


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def decode_response(tokenizer, token_ids: list[int]) -> str:
    """The text a verifier judges: the response without its closing eos (and any padding after it).

    Other tokens are kept, special or not. `skip_special_tokens=True` would also delete tokens a
    tokenizer happens to mark special that carry the answer (a tokenizer trained with `<answer>`
    as a special token, a `<think>` marker), so the verifier would judge text the model never wrote.
    """
    end = len(token_ids)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    while end and token_ids[end - 1] in stop:
        end -= 1
    return tokenizer.decode(token_ids[:end], skip_special_tokens=False)
