"""The demo config: the whole recipe on the committed base model, and a short run that learns."""

from __future__ import annotations

import pytest

from prorl_engine.ablations.variants import VARIANTS
from prorl_engine.builders import resolve_model_path
from prorl_engine.config import RunConfig
from prorl_engine.demo.build import DEMO_BUILD, DEMO_MODEL_DIR, PACKAGE_DIR, finished_build
from prorl_engine.demo.problems import RL_SEED, demo_sources
from prorl_engine.events import MemorySink

DEMO = PACKAGE_DIR / "configs" / "demo.yaml"


def demo_config(**changes) -> RunConfig:
    """The demo config with its model path made absolute (tests may run from any folder)."""
    config = RunConfig.load(DEMO, check_paths=False)
    return config.replace(model_path=str(DEMO_MODEL_DIR), **changes)


def test_the_demo_trains_on_the_mix_the_base_model_was_built_for():
    config = demo_config()
    assert config.data == demo_sources()  # tasks, difficulty, sizes and held-out split sizes
    assert config.seed == RL_SEED  # its held-out split is the one kept out of the SFT data


def test_the_demo_runs_every_part_of_the_recipe():
    config = demo_config()
    assert config.eps_high > config.eps_low
    assert config.dynamic_sampling and config.length_penalty and config.reset_interval
    assert config.updates_per_step >= 2  # otherwise the clip never acts
    assert config.eval_every and max(config.eval_k) > 1


def test_the_demo_model_path_is_the_committed_build():
    model_path = RunConfig.load(DEMO, check_paths=False).model_path
    assert model_path == "base:prorl_engine/configs/demo-base"
    recipe = {"seed": 0, **DEMO_BUILD, "guess_offset": list(DEMO_BUILD["guess_offset"])}
    assert finished_build(DEMO_MODEL_DIR, recipe)  # so `base:` reads it and builds nothing
    assert resolve_model_path(f"base:{DEMO_MODEL_DIR}") == DEMO_MODEL_DIR


def test_every_ablation_variant_is_a_valid_config_that_differs_in_one_part():
    config = demo_config()
    for name, variant in VARIANTS.items():
        changed = config.replace(**variant(config))
        assert (changed == config) == (name == "full")


@pytest.mark.slow
def test_a_short_seeded_demo_run_improves_its_reward(tmp_path):
    """The demo recipe, unchanged but for a pool of 8 training prompts per task (so prompts recur
    within a short run, as they recur over the epochs of a long one), 18 steps. Seeded (model,
    data order, sampling), so the run is the same every time on a machine."""
    from prorl_engine.trainer import Trainer

    config = demo_config(steps=18, eval_every=0, checkpoint_every=1000, data=demo_sources(train_size=8))
    recorder = MemorySink()
    Trainer(config, tmp_path / "run", recorder).train()
    rewards = [row["reward/verifier_mean"] for row in recorder.metrics_rows]
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.10, f"mean reward {first:.3f} over steps 1-6, {last:.3f} over steps 13-18"
