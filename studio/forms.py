"""The run form, built from `RunConfig.field_specs()` and validated by the engine itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from django import forms
from django.utils.html import format_html, format_html_join

from prorl_engine.config import MAX_CONFIG_CHARS, ConfigError, FieldSpec, RunConfig, parse_yaml
from studio import watchdogs as watchdog_rules
from studio.models import Run
from studio.paths import User, forkable_checkpoints, operator_policy, path_policy_for, usable_models

MAX_CONFIG_BYTES = 4 * MAX_CONFIG_CHARS  # an uploaded config file: UTF-8 takes at most 4 bytes a character

GROUP_TITLES = {
    "model": "Model",
    "data": "Data mix",
    "rollout": "Rollout",
    "algorithm": "Algorithm",
    "length_penalty": "Length-penalty schedule",
    "reset": "Reference resets",
    "evaluation": "Evaluation",
    "checkpointing": "Checkpointing and logging",
}


def _form_field(spec: FieldSpec) -> forms.Field:
    """Numbers travel as text: the engine converts them, so its message is the one a person reads."""
    common = {"label": spec.name, "help_text": spec.help, "required": False}
    number = forms.NumberInput(attrs={"step": "1" if spec.kind.endswith("int") else "any"})
    if spec.kind in ("int", "float", "optional_int", "optional_float"):
        return forms.CharField(**common, widget=number)
    if spec.kind == "bool":
        return forms.BooleanField(**common)
    if spec.kind == "choice":
        return forms.ChoiceField(choices=[(c, c) for c in spec.choices], **common)
    if spec.kind == "int_list":
        return forms.CharField(**common, widget=forms.TextInput(attrs={"placeholder": "1, 4, 16"}))
    if spec.kind == "data_sources":
        return forms.CharField(**common, widget=forms.Textarea(attrs={"rows": 6, "class": "yaml"}))
    return forms.CharField(**common)


def initial_from_config(values: dict[str, Any]) -> dict[str, Any]:
    """Form initial values from a config dict (lists shown as text the way a person edits them)."""
    initial = dict(values)
    for spec in RunConfig.field_specs():
        value = values.get(spec.name, spec.default)
        if spec.kind == "int_list":
            initial[spec.name] = ", ".join(str(v) for v in value)
        elif spec.kind == "data_sources":
            initial[spec.name] = yaml.safe_dump(value, sort_keys=False).strip()
        else:
            initial[spec.name] = value
    return initial


class RunForm(forms.Form):
    """Every RunConfig field, grouped; `clean()` hands the values to the engine's validation and
    puts each of its messages on the field it names."""

    name = forms.CharField(max_length=200, help_text="A name for the run list.")
    # Watchdog rules on the run's health (studio.watchdogs), the ProRL defaults offered.
    watchdogs = watchdog_rules.rules_field(initial=watchdog_rules.DEFAULT_RULES, label="watchdog rules")
    watchdog_webhook = watchdog_rules.webhook_field()
    watchdog_email = watchdog_rules.email_field()

    def __init__(self, *args: Any, user: User | None = None, fork_parent: Run | None = None, **kwargs: Any):
        """`user`: whose run it is; its paths must be ones `user` may use (studio.paths), and the
        model field suggests them. Without a user, only the operator's roots and builders pass."""
        super().__init__(*args, **kwargs)
        self.specs = RunConfig.field_specs()
        for spec in self.specs:
            self.fields[spec.name] = _form_field(spec)
        self.path_policy = operator_policy() if user is None else path_policy_for(user, fork_parent=fork_parent)
        if user is not None:
            self.fields["model_path"].widget = SuggestingInput("model-path-choices", lambda: model_suggestions(user))
        self.config: RunConfig | None = None
        self.values: dict[str, Any] = {}

    def clean_watchdogs(self) -> list[watchdog_rules.RuleSpec]:
        return watchdog_rules.clean_rules_field(self.cleaned_data["watchdogs"])

    def clean_watchdog_webhook(self) -> str:
        return watchdog_rules.clean_webhook_field(self.cleaned_data["watchdog_webhook"])

    def clean_watchdog_email(self) -> str:
        return watchdog_rules.clean_email_field(self.cleaned_data["watchdog_email"])

    def watchdog_fields(self) -> list[forms.BoundField]:
        return [self["watchdogs"], self["watchdog_webhook"], self["watchdog_email"]]

    def save_watchdogs(self, run: Run, user: User) -> None:
        """Store the form's watchdog rules on the run it launched (a valid form only)."""
        data = self.cleaned_data
        watchdog_rules.save_rules(run, data["watchdogs"], data["watchdog_webhook"], data["watchdog_email"], user)

    def groups(self) -> list[tuple[str, str, list[forms.BoundField]]]:
        """(group, title, bound fields) in the engine's group order, for the template's fieldsets."""
        by_group: dict[str, list[forms.BoundField]] = {}
        for spec in self.specs:
            by_group.setdefault(spec.group, []).append(self[spec.name])
        return [(group, GROUP_TITLES.get(group, group), fields) for group, fields in by_group.items()]

    def config_values(self) -> dict[str, Any]:
        """The cleaned form values as a config dict (the data mix parsed from its YAML)."""
        values: dict[str, Any] = {}
        for spec in self.specs:
            if spec.name not in self.cleaned_data:
                continue
            value = self.cleaned_data[spec.name]
            if spec.kind == "data_sources":
                try:  # with the engine's limits on size, depth and aliases
                    value = parse_yaml(value, spec.name)
                except ConfigError as exc:
                    self.add_error(spec.name, exc.errors[0][1])
                    continue
            values[spec.name] = value
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        values = self.values = self.config_values()
        if self.errors:
            return cleaned
        try:
            self.config = RunConfig.from_dict(values, path_policy=self.path_policy)
        except ConfigError as exc:
            add_config_errors(self, exc)
        return cleaned


class SuggestingInput(forms.TextInput):
    """A text input with a <datalist> of (value, label) suggestions, asked for only when it renders."""

    def __init__(self, list_id: str, suggestions: Callable[[], list[tuple[str, str]]]):
        super().__init__(attrs={"list": list_id})
        self.list_id = list_id
        self.suggestions = suggestions

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> str:
        options = format_html_join("", '<option value="{}">{}</option>', self.suggestions())
        return format_html(
            '{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer), self.list_id, options
        )


def model_suggestions(user: User) -> list[tuple[str, str]]:
    """(model_path, label) of the registered models `user` may use and of the newest checkpoints of
    runs they may fork."""
    models = [(entry.path, f"{entry.name} (registered model)") for entry in usable_models(user)]
    checkpoints = [
        (checkpoint.path, f"{checkpoint.run.name} #{checkpoint.run_id} @ step {checkpoint.step}")
        for checkpoint in forkable_checkpoints(user)
    ]
    return models + checkpoints


def add_config_errors(form: forms.Form, exc: ConfigError) -> None:
    """Put each engine message on the field it names ("data[1]" belongs to the data field)."""
    for name, message in exc.errors:
        field = name.split("[", 1)[0]
        if field in form.fields:
            form.add_error(field, message if field == name else f"{name}: {message}")
        else:
            form.add_error(None, f"{name}: {message}")


class ImportYamlForm(forms.Form):
    """A config in YAML, pasted or uploaded, to fill the run form."""

    yaml_text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 8}), label="YAML", max_length=MAX_CONFIG_CHARS
    )
    yaml_file = forms.FileField(required=False, label="or a file")

    def __init__(self, *args: Any, user: User | None = None, **kwargs: Any):
        """`user`: whose config it is (its paths must be ones `user` may use, as in RunForm)."""
        super().__init__(*args, **kwargs)
        self.path_policy = operator_policy() if user is None else path_policy_for(user)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:  # a text over MAX_CONFIG_CHARS: its field says so
            return cleaned
        upload = cleaned.get("yaml_file")
        if upload and upload.size > MAX_CONFIG_BYTES:
            self.add_error("yaml_file", f"is {upload.size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
            return cleaned
        text = upload.read().decode("utf-8", errors="replace") if upload else cleaned.get("yaml_text", "")
        if not text.strip():
            raise forms.ValidationError("Paste a config or choose a file.")
        try:
            cleaned["config"] = RunConfig.from_yaml(text, path_policy=self.path_policy)
        except ConfigError as exc:
            raise forms.ValidationError([f"{name}: {message}" for name, message in exc.errors]) from exc
        return cleaned
