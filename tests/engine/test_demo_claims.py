"""The claims demo (configs/demo-claims.yaml on the committed padded build, configs/demo-base-padded):
its SFT data has the properties the ablation report relies on, measured on that build (its recipe,
its tokenizer), and its schedule holds several reset intervals and length-penalty cycles."""

from __future__ import annotations

import json
import statistics

import pytest

from prorl_engine.config import RunConfig
from prorl_engine.demo import problems as demo
from prorl_engine.demo.build import PACKAGE_DIR, finished_build, sft_problems
from prorl_engine.evaluation import evaluate_model_folders
from prorl_engine.schedule import length_penalty_on, planned_reset_steps

CLAIMS = PACKAGE_DIR / "configs" / "demo-claims.yaml"
PADDED_DIR = PACKAGE_DIR / "configs" / "demo-base-padded"
INFO = json.loads((PADDED_DIR / "build_info.json").read_text())
RECIPE_KEYS = ("direct_fraction", "guess_error_rate", "guess_offset", "padded_fraction", "padding", "held_out_seeds")


def claims_config() -> RunConfig:
    return RunConfig.load(CLAIMS, check_paths=False).replace(model_path=str(PADDED_DIR))


@pytest.fixture(scope="module")
def padded_sft() -> list[demo.Problem]:
    """The committed padded build's SFT data, regenerated from its build_info.json."""
    return sft_problems(9000, INFO["seed"], **{key: INFO[key] for key in RECIPE_KEYS})


def test_the_claims_config_trains_the_committed_padded_build_on_the_demo_mix_and_evaluates_the_ood_family():
    config = RunConfig.load(CLAIMS, check_paths=False)
    assert config.model_path == "prorl_engine/configs/demo-base-padded"  # a plain folder: "base:" would rebuild it
    assert finished_build(PADDED_DIR, {key: INFO[key] for key in ("seed", "sft_steps", *RECIPE_KEYS)})
    assert (INFO["padded_fraction"], INFO["padding"], INFO["held_out_seeds"]) == (0.5, [1, 3], [0, 1, 2])
    assert config.data == [*demo.demo_sources(), *demo.ood_sources()]


def test_the_schedule_holds_three_reset_intervals_and_three_penalty_cycles_ending_on():
    config = claims_config()
    assert planned_reset_steps(config) == [20, 40, 60]  # three intervals of 20 in 60 steps
    on = [step for step in range(1, config.steps + 1) if length_penalty_on(config, step)]
    assert on == [*range(11, 21), *range(31, 41), *range(51, 61)]  # the final evaluation follows an on-window
    assert config.beta == 1.0 and config.eval_every == 0


def test_the_padded_build_never_saw_the_held_out_prompts_of_seeds_0_1_and_2(padded_sft):
    questions = {p.entry["question"] for p in padded_sft}
    held_out = {seed: {e.metadata["entry"]["question"] for e in demo.held_out_examples(seed)} for seed in (0, 1, 2)}
    assert len(questions) > 20_000 and [len(held_out[seed]) for seed in (0, 1, 2)] == [81, 82, 83]
    assert all(not questions & held_out[seed] for seed in (0, 1, 2))


def test_padding_is_length_the_penalty_can_remove_within_the_response_budget(padded_sft):
    """Measured with the build's own tokenizer: the padded worked solutions are about half of them,
    they are longer than plain ones, and all but 30 of the 27,000 targets fit in T = 80 with eos
    (the longest, 82 tokens: three-term sums with a preamble and three identities)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(PADDED_DIR)
    worked = [p for p in padded_sft if demo.shows_work(p.response)]
    plain = {id(p): demo.worked_solution(p.task, p.entry) for p in worked}
    padded = [p for p in worked if p.response.removeprefix(demo.PREAMBLE) != plain[id(p)]]
    assert 0.45 < len(padded) / len(worked) < 0.55
    extra = [
        len(tokenizer(p.response.removeprefix(demo.PREAMBLE))["input_ids"]) - len(tokenizer(plain[id(p)])["input_ids"])
        for p in padded
    ]
    assert min(extra) > 0 and statistics.mean(extra) > 10  # tokens a padded answer carries for nothing
    budget = claims_config().max_response_tokens
    too_long = [p for p in padded_sft if len(tokenizer(p.response)["input_ids"]) + 1 > budget]  # + eos
    assert len(too_long) == 30 and all(demo.PREAMBLE in p.response for p in too_long)


@pytest.mark.slow
def test_the_padded_base_never_solves_the_ood_family_at_k_16():
    report = evaluate_model_folders(
        {"base": PADDED_DIR}, demo.ood_held_out_examples(), n=16, ks=[1, 16], max_new_tokens=80, device="cpu"
    )["base"]
    assert report.metrics["eval/products/pass@16"] == 0.0 and len(report.samples) == 512
