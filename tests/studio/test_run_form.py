"""The run form refuses each kind of bad config with the engine's own message, on the field."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse
from studio_testing import form_data, tiny_config

from prorl_engine.config import ConfigError, RunConfig
from studio.forms import RunForm
from studio.models import Run


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


class Fieldsets(HTMLParser):
    """The run page's fieldsets in page order: (id, legend text, names of the inputs inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, list[str]]] = []
        self._open: tuple[str, list[str], list[str]] | None = None
        self._in_legend = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "fieldset":
            self._open = (named.get("id") or "", [], [])
        elif tag == "legend":
            self._in_legend = True
        elif tag in ("input", "select", "textarea") and self._open is not None and named.get("name"):
            self._open[2].append(named["name"])

    def handle_data(self, data: str) -> None:
        if self._in_legend and self._open is not None:
            self._open[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "legend":
            self._in_legend = False
        elif tag == "fieldset" and self._open is not None:
            self.found.append((self._open[0], "".join(self._open[1]).strip(), self._open[2]))
            self._open = None


@pytest.mark.django_db
def test_the_page_shows_each_engine_field_once_in_a_titled_fieldset_of_its_group(client, alice):
    client.force_login(alice)
    page = Fieldsets()
    page.feed(client.get(reverse("run-new")).content.decode())
    run_form = page.found  # the YAML import form beside it has no fieldset
    *run_form, watchdogs = run_form  # the studio's own fieldset after the engine's (studio.watchdogs)
    assert watchdogs[0] == "group-watchdogs" and watchdogs[2] == ["watchdogs", "watchdog_webhook", "watchdog_email"]
    specs = RunConfig.field_specs()
    in_order = list(dict.fromkeys(spec.group for spec in specs))  # groups in the order their first field is declared
    assert [fieldset_id for fieldset_id, _, _ in run_form] == [f"group-{group}" for group in in_order]
    for fieldset_id, legend, names in run_form:
        group = fieldset_id.removeprefix("group-")
        assert names == [spec.name for spec in specs if spec.group == group]
        assert legend and legend != group  # a title for people ("Length-penalty schedule"), not the key


@pytest.mark.django_db
def test_alice_sees_the_engines_message_on_the_page(client, alice):
    client.force_login(alice)
    response = client.post(reverse("run-new"), form_data(samples_per_prompt="1"))
    assert response.status_code == 400
    assert engine_message("samples_per_prompt", samples_per_prompt=1) in response.content.decode()
    assert not Run.objects.exists()
