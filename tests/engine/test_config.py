"""RunConfig: one validation that refuses nonsense and names the field, YAML round trips, form specs."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time

import pytest
import yaml

from prorl_engine.config import BOUNDS, GROUPS, ConfigError, RunConfig


@pytest.fixture
def model_dir(tmp_path):
    """A save_pretrained folder as far as validation cares: a config.json with a 512-token window."""
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    return folder


@pytest.fixture
def alice(model_dir):
    """Alice's valid small config, as a dict she would write in YAML."""
    return {
        "model_path": str(model_dir),
        "steps": 10,
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "max_prompt_tokens": 128,
        "max_response_tokens": 256,
        "updates_per_step": 2,
        "data": [{"task": "chain_sum", "size": 20, "eval_size": 4}],
    }


def errors_of(values: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(values, **kwargs)
    errors = caught.value.errors
    assert all(isinstance(name, str) and isinstance(message, str) and message for name, message in errors)
    assert str(caught.value)  # the exception's text lists them too
    return {name: message for name, message in errors}


def test_alices_config_is_valid(alice):
    config = RunConfig.from_dict(alice)
    assert config.samples_per_prompt == 4 and config.max_response_tokens == 256
    assert config.eps_low == 0.2 and config.eps_high == 0.28 and config.beta == 1e-4  # spec defaults


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"samples_per_prompt": 1}, "samples_per_prompt", "at least 2"),
        ({"eps_low": 0.3, "eps_high": 0.2}, "eps_high", "eps_low"),
        ({"beta": -0.1}, "beta", ">= 0"),
        ({"updates_per_step": 1}, "updates_per_step", "clip never acts"),
        ({"eval_samples": 4, "eval_k": [1, 8]}, "eval_k", "eval_samples"),
        ({"reset_patience": 3, "eval_every": 0}, "reset_patience", "eval_every"),
        ({"temperature": 0}, "temperature", "> 0"),
        ({"top_p": 1.5}, "top_p", "(0, 1]"),
        ({"loss_aggregation": "sum"}, "loss_aggregation", "token_mean"),
        ({"kl_estimator": "k4"}, "kl_estimator", "k2"),
        ({"eta_min": 0.5, "eta_max": 0.0}, "eta_min", "eta_max"),
        ({"length_penalty": True, "on_steps": 0}, "on_steps", "never be on"),
        ({"reset_interval": 0}, "reset_interval", ">= 1"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(alice, change, field, words):
    errors = errors_of({**alice, **change})
    assert field in errors, errors
    assert words in errors[field]


def test_a_response_budget_that_leaves_no_room_in_the_context_window_is_refused(alice):
    # 128 prompt + 400 response > 512 positions.
    errors = errors_of({**alice, "max_response_tokens": 400})
    assert "512" in errors["max_response_tokens"] and "528" in errors["max_response_tokens"]
    # Exactly filling the window is fine.
    assert RunConfig.from_dict({**alice, "max_response_tokens": 384}).max_response_tokens == 384


def test_an_unknown_model_path_is_refused(alice, tmp_path):
    errors = errors_of({**alice, "model_path": str(tmp_path / "no-such-model")})
    assert "no-such-model" in errors["model_path"]
    (tmp_path / "empty").mkdir()
    assert "config.json" in errors_of({**alice, "model_path": str(tmp_path / "empty")})["model_path"]
    assert "required" in errors_of({**alice, "model_path": ""})["model_path"]


def test_a_model_folder_with_an_unreadable_config_json_is_refused(alice, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert "config.json" in errors_of({**alice, "model_path": str(folder)})["model_path"]


def test_a_model_builder_path_is_accepted_and_an_unknown_builder_refused(alice, tmp_path):
    assert RunConfig.from_dict({**alice, "model_path": f"tiny:{tmp_path / 'built'}"}).model_path.startswith("tiny:")
    assert "nosuch" in errors_of({**alice, "model_path": f"nosuch:{tmp_path}"})["model_path"]


def test_paths_are_not_checked_when_asked_not_to(alice):
    config = RunConfig.from_dict({**alice, "model_path": "/nowhere", "max_response_tokens": 100_000}, check_paths=False)
    assert config.model_path == "/nowhere"


def test_an_unknown_reasoning_gym_task_is_refused(alice):
    errors = errors_of({**alice, "data": [{"task": "chain_sum"}, {"task": "no_such_puzzle", "weight": 2}]})
    assert list(errors) == ["data[1]"]
    assert "no_such_puzzle" in errors["data[1]"]


@pytest.mark.parametrize(
    "source, words",
    [
        ({"task": "chain_sum", "weight": 0}, "weight"),
        ({"task": "chain_sum", "size": 0}, "size"),
        ({"task": "chain_sum", "domain": "poetry"}, "domain"),
        ({"task": "chain_sum", "source": "ftp"}, "source"),
        ({"task": "chain_sum", "colour": "red"}, "colour"),
        ({"task": "mine", "source": "file"}, "path"),
        ({"task": "mine", "source": "file", "path": "/no/such/file.jsonl"}, "/no/such/file.jsonl"),
        ({"weight": 1.0}, "task"),
        ({"task": "chain_sum", "weight": float("inf")}, "weight"),
        ({"task": "chain_sum", "weight": True}, "weight"),
        ({"task": ["chain_sum"]}, "task"),
        ({"task": "mine", "source": "file", "path": 5}, "path"),
        ({"task": "chain_sum", "params": "min_terms=2"}, "params"),
    ],
)
def test_a_bad_data_source_is_refused_naming_its_index_and_key(alice, source, words):
    errors = errors_of({**alice, "data": [source]})
    assert words in errors["data[0]"]


def test_an_empty_training_mix_is_refused(alice):
    assert "empty" in errors_of({**alice, "data": []})["data"]


def test_an_unknown_field_is_refused(alice):
    errors = errors_of({**alice, "samples_per_promt": 8})
    assert errors["samples_per_promt"] == "unknown field"


@pytest.mark.parametrize(
    "field, value",
    [
        ("samples_per_prompt", "four"),
        ("samples_per_prompt", 2.5),
        ("samples_per_prompt", True),
        ("beta", "small"),
        ("beta", [0.1]),
        ("beta", float("nan")),
        ("dynamic_sampling", "maybe"),
        ("model_path", 42),
        ("eval_k", "one,two"),
        ("eval_k", 4),
        ("data", "chain_sum"),
        ("reset_interval", "often"),
    ],
)
def test_a_wrong_type_is_refused_naming_its_field(alice, field, value):
    errors = errors_of({**alice, field: value})
    assert field in errors, errors


def test_what_yaml_and_forms_give_is_coerced(alice):
    config = RunConfig.from_dict(
        {
            **alice,
            "samples_per_prompt": "8",
            "beta": "1e-3",
            "learning_rate": 1,
            "dynamic_sampling": "false",
            "eval_k": "1, 4",
            "reset_interval": "",
            "kl_reset_threshold": None,
            "steps": 20.0,
        }
    )
    assert config.samples_per_prompt == 8 and config.beta == 1e-3 and config.learning_rate == 1.0
    assert config.dynamic_sampling is False and config.eval_k == [1, 4]
    assert config.reset_interval is None and config.kl_reset_threshold is None and config.steps == 20
    assert isinstance(config.steps, int) and isinstance(config.learning_rate, float)


def test_several_errors_are_reported_together(alice):
    errors = errors_of({**alice, "samples_per_prompt": 1, "beta": -1.0, "eps_high": 0.1, "max_response_tokens": 1000})
    assert {"samples_per_prompt", "beta", "eps_high", "max_response_tokens"} <= set(errors)


def test_an_unknown_field_and_a_wrong_type_are_reported_with_the_invalid_values(alice):
    errors = errors_of({**alice, "colour": "red", "samples_per_prompt": "many", "beta": -1.0, "updates_per_step": 1})
    assert {"colour", "samples_per_prompt", "beta", "updates_per_step"} <= set(errors)


def test_a_non_mapping_is_refused():
    assert "config" in errors_of(["model_path"])
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml("steps: [1,\n")
    assert caught.value.errors[0][0] == "config"


def test_yaml_round_trip_gives_an_equal_config(alice):
    config = RunConfig.from_dict(
        {
            **alice,
            "beta": 2.5e-5,
            "reset_interval": None,
            "kl_reset_threshold": 0.3,
            "reset_patience": 2,
            "eval_every": 5,
            "eval_k": [1, 2],
            "eval_samples": 4,
            "truncated_reward": None,
            "loss_aggregation": "seq_mean_token_mean",
            "data": [{"task": "chain_sum", "size": 20, "weight": 3, "params": {"min_terms": 2, "max_terms": 3}}],
        }
    )
    again = RunConfig.from_yaml(config.to_yaml())
    assert again == config
    assert again.to_yaml() == config.to_yaml()
    assert RunConfig.from_yaml(RunConfig.from_dict(alice).to_yaml()) == RunConfig.from_dict(alice)


def test_load_reads_a_yaml_file(alice, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RunConfig.from_dict(alice).to_yaml())
    assert RunConfig.load(path) == RunConfig.from_dict(alice)


def test_replace_validates(alice):
    config = RunConfig.from_dict(alice)
    assert config.replace(samples_per_prompt=8).samples_per_prompt == 8
    with pytest.raises(ConfigError) as caught:
        config.replace(samples_per_prompt=1)
    assert caught.value.errors[0][0] == "samples_per_prompt"


def test_field_specs_cover_every_field_with_a_group_and_help():
    specs = RunConfig.field_specs()
    assert [spec.name for spec in specs] == [f.name for f in dataclasses.fields(RunConfig)]
    for spec in specs:
        assert spec.group in GROUPS, spec
        assert spec.help.strip() and spec.help.rstrip().endswith((".", ")")), spec
        assert spec.default == RunConfig().to_dict()[spec.name], spec  # as a config dict (and the form) holds it
        if spec.choices:
            assert spec.default in spec.choices and spec.kind == "choice", spec
    assert {spec.group for spec in specs} == set(GROUPS)
    kinds = {spec.name: spec.kind for spec in specs}
    assert kinds["samples_per_prompt"] == "int" and kinds["beta"] == "float" and kinds["dynamic_sampling"] == "bool"
    assert kinds["reset_interval"] == "optional_int" and kinds["eval_k"] == "int_list"


def test_spec_named_knobs_exist_with_the_spec_defaults():
    config = RunConfig()
    spec_defaults = {
        "samples_per_prompt": 16,
        "prompts_per_step": 256,
        "temperature": 1.2,
        "top_p": 1.0,
        "eps_low": 0.2,
        "eps_high": 0.28,
        "beta": 1e-4,
        "kl_estimator": "k2",
        "truncated_reward": 0.0,
        "format_penalty": -0.5,
        "filter_tol": 1e-6,
        "updates_per_step": 4,
        "loss_aggregation": "token_mean",
        "advantage_estimator": "reinforce_pp_baseline",
        "eval_temperature": 0.6,
        "eval_top_p": 0.95,
        "eval_samples": 16,
        "reset_optimizer": False,
        "on_steps": 100,
        "off_steps": 500,
        "eta_min": -1.0,
        "eta_max": 0.0,
        "lambda_len": 0.1,
    }
    assert {name: getattr(config, name) for name in spec_defaults} == spec_defaults
    for name in (
        "max_response_tokens",
        "max_generation_batches",
        "reset_interval",
        "kl_reset_threshold",
        "reset_patience",
        "learning_rate",
        "seed",
        "steps",
    ):
        assert hasattr(config, name)


def test_filter_on_defaults_to_the_verifiers_reward_and_refuses_anything_but_verifier_or_shaped(alice):
    assert RunConfig.from_dict(alice).filter_on == "verifier"
    assert RunConfig.from_dict({**alice, "filter_on": "shaped"}).filter_on == "shaped"
    errors = errors_of({**alice, "filter_on": "both"})
    assert errors["filter_on"] == "must be one of verifier, shaped, not 'both'"
    spec = next(s for s in RunConfig.field_specs() if s.name == "filter_on")
    assert spec.group == "algorithm" and spec.choices == ("verifier", "shaped") and "verifier" in spec.help


# --- bounds on every number and text, and YAML read with limits (issue 11) ----------------------


def test_steps_of_2_to_the_31_are_refused_fast_with_a_named_message(alice):
    started = time.perf_counter()
    errors = errors_of({**alice, "steps": 2**31})
    assert time.perf_counter() - started < 1.0
    assert errors["steps"] == (
        "must be at most 1,000,000: v2 ran 3,000; 10^6 keeps step numbers inside the database's integer columns"
    )
    assert RunConfig.from_dict({**alice, "steps": 10**6}).steps == 10**6  # the bound itself is a valid run


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"learning_rate": 2**31}, "learning_rate", "must be at most 1: "),
        ({"temperature": 1e40}, "temperature", "must be at most 10: "),
        ({"eval_temperature": 10.5}, "eval_temperature", "must be at most 10: "),
        ({"prompts_per_step": 4097}, "prompts_per_step", "must be at most 4,096: "),
        ({"samples_per_prompt": 1025}, "samples_per_prompt", "must be at most 1,024: "),
        ({"max_response_tokens": 131_073}, "max_response_tokens", "must be at most 131,072: "),
        ({"max_prompt_tokens": 10**9}, "max_prompt_tokens", "must be at most 131,072: "),
        ({"seed": -1}, "seed", "must be at least 0: numpy"),
        ({"seed": 2**32}, "seed", "must be at most 4,294,967,295: "),
        ({"format_penalty": -2}, "format_penalty", "must be at least -1: "),
        ({"truncated_reward": 1.5}, "truncated_reward", "must be at most 1: "),
        ({"beta": 11}, "beta", "must be at most 10: "),
        ({"eps_high": 50}, "eps_high", "must be at most 10: "),
        ({"lambda_len": 1e6}, "lambda_len", "must be at most 10: "),
        ({"eta_min": -1e9}, "eta_min", "must be at least -10: "),
        ({"reset_interval": 10**7}, "reset_interval", "must be at most 1,000,000: "),
        ({"kl_reset_threshold": 1e3}, "kl_reset_threshold", "must be at most 100: "),
        ({"max_generation_batches": 10**5}, "max_generation_batches", "must be at most 1,024: "),
        ({"eval_samples": 4096, "eval_k": [1]}, "eval_samples", "must be at most 1,024: "),
        ({"eval_k": [1] * 33}, "eval_k", "at most 32"),
        ({"samples_per_step_logged": 10**6}, "samples_per_step_logged", "must be at most 1,024: "),
        ({"prompts_per_step": 4096, "samples_per_prompt": 32}, "prompts_per_step", "131,072 responses per step"),
        (
            {"prompts_per_step": 4096, "samples_per_prompt": 16, "max_response_tokens": 131_072},
            "max_response_tokens",
            "tokens; at most 1,073,741,824",
        ),
    ],
)
def test_an_absurd_value_is_refused_with_its_bound_and_reason(alice, change, field, words):
    errors = errors_of({**alice, **change}, check_paths=False)
    assert words in errors[field], errors


@pytest.mark.parametrize(
    "source, words",
    [
        ({"task": "chain_sum", "size": 10**20}, "size must be at most 1,000,000: "),
        ({"task": "chain_sum", "size": 1e20}, "size must be a whole number >= 1, not 1e+20"),
        ({"task": "chain_sum", "eval_size": 10**6}, "eval_size must be at most 100,000: "),
        ({"task": "chain_sum", "eval_size": True}, "eval_size must be a whole number >= 0"),
        ({"task": "chain_sum", "weight": 1e9}, "weight must be at most 1,000,000: "),
        ({"task": "chain_sum", "task_": 1, 2: 3, None: 4}, "unknown keys 2, None, task_"),
        ({"task": "x" * 201}, "task is 201 characters long; at most 200"),
        ({"task": "chain_sum", "instruction": "x" * 5000}, "instruction is 5,000 characters long; at most 4,096"),
        ({"task": "chain_sum", "instruction": "say \x00"}, "instruction contains a NUL character"),
        ({"task": "mine", "source": "file", "path": "/tmp/\x00x.jsonl"}, "path contains a NUL character"),
        ({"task": "mine", "source": "file", "path": "/" + "a" * 10**6}, "path is 1,000,001 characters long"),
        ({"task": "chain_sum", "params": {"size": 10**20}}, "params may not set size"),
        ({"task": "chain_sum", "params": {"when": datetime.date(2020, 1, 1)}}, "params values must be text, numbers"),
        ({"task": "chain_sum", "params": {"x": float("nan")}}, "params values must be finite numbers"),
        ({"task": "chain_sum", "params": {1: 2}}, "params keys must be short text"),
        ({"task": "chain_sum", "params": {"x": [[[[[[[[1]]]]]]]]}}, "params are nested deeper than 8 levels"),
        ({"task": "chain_sum", "params": {"x": list(range(2000))}}, "params hold more than 1,000 values"),
    ],
)
def test_a_data_source_out_of_bounds_is_refused_before_any_path_is_used(alice, source, words):
    errors = errors_of({**alice, "data": [source]})  # paths checked: a NUL or 1 MB path must not reach the disk
    assert words in errors["data[0]"], errors
    assert len(errors["data[0]"]) < 300  # no value is echoed whole


def test_params_that_share_values_are_walked_within_a_budget(alice):
    """A billion laughs built from shared Python lists (40^4 values): refused in a few steps, never expanded."""
    value: list = ["lol"] * 40
    for _ in range(3):
        value = [value] * 40
    started = time.perf_counter()
    errors = errors_of({**alice, "data": [{"task": "chain_sum", "params": {"x": value}}]})
    assert time.perf_counter() - started < 1.0
    assert "more than 1,000 values" in errors["data[0]"]


def test_too_many_sources_are_refused_without_checking_each():
    errors = errors_of({"model_path": "tiny:x", "data": [{"task": "chain_sum"}] * 257}, check_paths=False)
    assert errors["data"].startswith("has 257 sources; at most 256")


def test_a_huge_or_nul_model_path_is_refused_without_touching_the_disk(alice):
    started = time.perf_counter()
    errors = errors_of({**alice, "model_path": "a" * 10**6})
    assert errors["model_path"] == "is 1,000,000 characters long; at most 4,096"
    assert time.perf_counter() - started < 1.0
    assert errors_of({**alice, "model_path": "/tmp/\x00model"})["model_path"] == "contains a NUL character"
    with pytest.raises(ConfigError) as caught:  # validate() on a built config too, not only from_dict
        RunConfig(model_path="/tmp/\x00model").validate()
    assert dict(caught.value.errors)["model_path"] == "contains a NUL character"
    assert "surrogate" in errors_of({**alice, "model_path": "/tmp/\udc80"})["model_path"]


def test_messages_never_echo_a_huge_value(alice):
    errors = errors_of({**alice, "steps": "9" * 100_000, "beta": "x" * 100_000, "x" * 100_000: 1})
    assert all(len(name) < 100 and len(message) < 200 for name, message in errors.items()), errors
    assert errors["steps"].startswith("must be a whole number, not '9999")
    assert "must be a whole number" in errors_of({**alice, "steps": "²"})["steps"]  # a digit to isdigit only


def test_a_config_too_large_to_store_is_refused(alice):
    sources = [{"task": "chain_sum", "size": 20, "instruction": "x" * 4000}] * 40  # each part within its bound
    errors = errors_of({**alice, "data": sources})
    assert errors["config"].startswith("is 16") and "at most 131,072" in errors["config"]


def test_every_number_has_a_documented_bound_and_every_default_lies_in_it():
    numeric = {
        spec.name for spec in RunConfig.field_specs() if spec.kind in ("int", "float", "optional_int", "optional_float")
    }
    assert numeric == set(BOUNDS)
    defaults = RunConfig()
    for name, bound in BOUNDS.items():
        assert bound.low <= bound.high and bound.why, name
        value = getattr(defaults, name)
        assert value is None or bound.low <= value <= bound.high, name
    for spec in RunConfig.field_specs():
        assert "\n" not in spec.help, spec.name  # the form shows one line


@pytest.mark.parametrize("name", ["tiny.yaml", "demo.yaml"])
def test_the_shipped_configs_lie_within_the_bounds(name):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "prorl_engine" / "configs" / name).read_text()
    assert RunConfig.from_yaml(text, check_paths=False).steps >= 1


BOMB = "\n".join(
    [
        "model_path: tiny:x",
        "data:",
        "  - task: chain_sum",
        "    params:",
        '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    + [f"      {b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")]
)


def test_a_yaml_alias_bomb_in_the_params_is_refused_in_milliseconds():
    assert len(BOMB) < 1600
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(BOMB, check_paths=False)
    assert time.perf_counter() - started < 0.1
    assert caught.value.errors == [("config", "refused: more than 64 aliases (*name) in the YAML text")]


def test_yaml_nested_5000_levels_is_a_config_error_not_a_recursion_error():
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml("data: " + "[" * 5000 + "]" * 5000, check_paths=False)
    assert time.perf_counter() - started < 0.5
    assert caught.value.errors == [("config", "refused: the YAML text is nested deeper than 32 levels")]


def test_yaml_anchors_within_the_limits_are_fine_and_dates_stay_text(alice):
    text = yaml.safe_dump({**alice, "data": []}) + (
        "data:\n  - {task: chain_sum, size: 20, params: &p {min_terms: 2, max_terms: 2, note: 2020-01-01}}\n"
        "  - {task: chain_sum, size: 30, params: *p}\n"
    )
    config = RunConfig.from_yaml(text)
    assert config.data[1].params == {"min_terms": 2, "max_terms": 2, "note": "2020-01-01"}
    assert json.loads(json.dumps(config.to_dict()))["data"][0]["params"]["note"] == "2020-01-01"


@pytest.mark.parametrize(
    "text, words",
    [
        ("steps: !!binary aGVsbG8=", "binary values are not accepted"),
        ("steps: " + "9" * 40, "an integer longer than 32 characters"),
        ("a: &a [*a]", "contains it"),
        ("x: y\n" + "#" * 140_000, "at most 131,072 are read"),
        ("steps: [1,\n", "not valid YAML"),
    ],
)
def test_yaml_over_a_limit_or_not_yaml_is_refused_on_config(text, words):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(text, check_paths=False)
    assert caught.value.errors[0][0] == "config" and words in caught.value.errors[0][1]
