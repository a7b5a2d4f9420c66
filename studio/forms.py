"""The run form, built from `RunConfig.field_specs()` and validated by the engine itself."""

from __future__ import annotations

from typing import Any

import yaml
from django import forms

from prorl_engine.config import ConfigError, FieldSpec, RunConfig

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

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.specs = RunConfig.field_specs()
        for spec in self.specs:
            self.fields[spec.name] = _form_field(spec)
        self.config: RunConfig | None = None
        self.values: dict[str, Any] = {}

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
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    self.add_error(spec.name, f"not valid YAML: {exc}")
                    continue
            values[spec.name] = value
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        values = self.values = self.config_values()
        if self.errors:
            return cleaned
        try:
            self.config = RunConfig.from_dict(values)
        except ConfigError as exc:
            add_config_errors(self, exc)
        return cleaned


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

    yaml_text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 8}), label="YAML")
    yaml_file = forms.FileField(required=False, label="or a file")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload = cleaned.get("yaml_file")
        text = upload.read().decode("utf-8", errors="replace") if upload else cleaned.get("yaml_text", "")
        if not text.strip():
            raise forms.ValidationError("Paste a config or choose a file.")
        try:
            cleaned["config"] = RunConfig.from_yaml(text)
        except ConfigError as exc:
            raise forms.ValidationError([f"{name}: {message}" for name, message in exc.errors]) from exc
        return cleaned
