"""Engine fixtures: a tiny random Qwen2 model (tokenizer trained locally) built once per session."""

from __future__ import annotations

import pytest
import torch

from prorl_engine.tiny import build_tiny_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A save_pretrained folder: loaded by the same code path as a real checkpoint."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama")
