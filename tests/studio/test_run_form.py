"""The run form refuses each kind of bad config with the engine's own message, on the field."""

import pytest
from django.urls import reverse

from prorl_engine.config import ConfigError, RunConfig
from studio.forms import RunForm, initial_from_config
from studio.models import Run
from studio_testing import tiny_config


def form_data(**changes) -> dict:
    """What the browser posts for the tiny preset, with `changes` typed into fields."""
    data = {key: value for key, value in initial_from_config(tiny_config().to_dict()).items()}
    data = {key: ("on" if value is True else value) for key, value in data.items() if value is not False}
    data = {key: ("" if value is None else value) for key, value in data.items()}
    data["name"] = "a run"
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def engine_message(field: str, **changes) -> str:
    """The message the engine gives for `changes` on the field it names."""
    values = {**tiny_config().to_dict(), **changes}
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(values)
    return next(message for name, message in caught.value.errors if name == field)


BAD_CONFIGS = [
    ("samples_per_prompt", {"samples_per_prompt": "1"}, {"samples_per_prompt": 1}),
    ("updates_per_step", {"updates_per_step": "1"}, {"updates_per_step": 1}),
    ("eps_high", {"eps_low": "0.3", "eps_high": "0.2"}, {"eps_low": 0.3, "eps_high": 0.2}),
    ("temperature", {"temperature": "0"}, {"temperature": 0.0}),
    ("steps", {"steps": "many"}, {"steps": "many"}),
    ("model_path", {"model_path": ""}, {"model_path": ""}),
    ("eval_k", {"eval_k": "1, 99"}, {"eval_k": [1, 99]}),
    ("on_steps", {"on_steps": "0"}, {"on_steps": 0}),
    ("reset_interval", {"reset_interval": "0"}, {"reset_interval": 0}),
]


@pytest.mark.parametrize(("field", "typed", "engine_values"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_it_refuses_a_bad_value_with_the_engines_message(field, typed, engine_values):
    form = RunForm(form_data(**typed))
    assert not form.is_valid()
    assert engine_message(field, **engine_values) in form.errors[field]


def test_it_refuses_a_data_mix_that_is_not_yaml():
    form = RunForm(form_data(data="- task: [unclosed"))
    assert not form.is_valid()
    assert "not valid YAML" in form.errors["data"][0]


def test_it_puts_a_data_source_error_on_the_data_field():
    form = RunForm(form_data(data="- task: no_such_task\n  source: reasoning_gym\n"))
    assert not form.is_valid()
    assert form.errors["data"] == ["data[0]: unknown task 'no_such_task': not a reasoning-gym dataset"]


def test_it_accepts_the_tiny_preset_and_builds_the_engine_config():
    form = RunForm(form_data())
    assert form.is_valid(), form.errors
    assert form.config == tiny_config()


def test_it_groups_fields_as_the_engine_does():
    groups = [group for group, _, _ in RunForm().groups()]
    assert groups == ["model", "data", "rollout", "algorithm", "length_penalty", "reset", "evaluation",
                      "checkpointing"]


@pytest.mark.django_db
def test_alice_sees_the_engines_message_on_the_page(client, alice):
    client.force_login(alice)
    response = client.post(reverse("run-new"), form_data(samples_per_prompt="1"))
    assert response.status_code == 400
    assert engine_message("samples_per_prompt", samples_per_prompt=1) in response.content.decode()
    assert not Run.objects.exists()
