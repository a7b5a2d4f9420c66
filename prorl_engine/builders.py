"""`model_path: "<builder>:<folder>"`: the project's own models, built in <folder> on first use.

A builder is named by "module:function" and imported (`pkgutil.resolve_name`) only when a path asks
for it. So validating a config learns the builders' names without importing torch, and the engine's
core names the demo's base model without importing the demo (prorl_engine/demo/ is built on the
core: it trains with the core's evaluation and model loading).
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from pathlib import Path

MODEL_BUILDERS: dict[str, str] = {
    "tiny": "prorl_engine.tiny:build_tiny_model",  # a tiny random Qwen2 with its tokenizer (tests, smoke runs)
    "base": "prorl_engine.demo.build:build_base_model",  # the demo's small base model (SFT on arithmetic)
}


def model_builder(name: str) -> Callable[[Path], Path]:
    """The function that builds a `name:` model in a folder and returns the folder."""
    return pkgutil.resolve_name(MODEL_BUILDERS[name])


def resolve_model_path(model_path: str) -> Path:
    """The local folder of a model, building it first for `tiny:` / `base:` paths (cached)."""
    builder, sep, folder = model_path.partition(":")
    if sep and builder in MODEL_BUILDERS:
        return model_builder(builder)(Path(folder).expanduser())
    return Path(model_path).expanduser()
