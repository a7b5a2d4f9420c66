"""Loading policies and tokenizers from local `save_pretrained` folders, on the device a run asks for.

Real checkpoints and the tiny test models go through this same code path. Building the project's
own models (`tiny:` / `base:` paths) is prorl_engine/builders.py; the prompt format is prorl_engine/prompts.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
