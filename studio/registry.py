"""The registry page: the models and data sets a person may train from, and adding to them.

- Anyone uploads a data file (JSONL or Parquet, at most settings.UPLOAD_MAX_BYTES). The studio
  keeps it under settings.UPLOADS_DIR and checks its records against the domain's schema with the
  engine's own loader before it is listed.
- Anyone registers, under a name and optionally for a team, a model folder or data file they may
  already use (a checkpoint of a run they may fork, a path under the operator's roots): sharing it
  with a team gives its members nothing the owner could not already use.
- Staff register server paths under settings.REGISTRY_ROOTS, for themselves or a team.
Who may use an entry (studio.paths): its owner, staff and the members of its team; to anyone else
a registered path is a path that does not exist.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_GET, require_POST

from prorl_engine.config import DataSource
from prorl_engine.data.example import DOMAINS
from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED, PathPolicy
from studio.models import RegisteredDataset, RegisteredModel, Team, uploads_root
from studio.paths import User, operator_policy, path_policy_for, usable_datasets, usable_models
from studio.permissions import teams_for_runs_of

UPLOAD_SUFFIXES = (".jsonl", ".json", ".parquet")
KINDS = (("model", "model folder"), ("data", "data file"))


def registry_policy(check_disk: bool | None = None) -> PathPolicy:
    """What staff may register: paths under settings.REGISTRY_ROOTS (no builders)."""
    roots = tuple(settings.REGISTRY_ROOTS)
    return dataclasses.replace(operator_policy(check_disk), model_roots=roots, data_roots=roots)


def registrable_path(user: User, kind: str, path: str) -> str | None:
    """The absolute path `user` may register as a `kind` ("model" or "data"), or None."""
    policy = registry_policy() if user.is_staff else path_policy_for(user)
    if kind == "model":
        located = policy.locate_model(path, builders=())
        return str(located.folder) if located is not None else None
    return policy.locate_data(path)


def _teams(user: User) -> QuerySet[Team]:
    return Team.objects.all() if user.is_staff else teams_for_runs_of(user)


class _EntryForm(forms.Form):
    """Name, team and description of a new entry, with the name unique among the owner's entries."""

    name = forms.CharField(max_length=100)
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        required=False,
        empty_label="only me",
        help_text="Its members may train from it too.",
    )
    description = forms.CharField(max_length=300, required=False)

    id_prefix = "entry"  # both forms share a page: their field ids must differ

    def __init__(self, *args: Any, user: User, **kwargs: Any):
        super().__init__(*args, auto_id=f"{self.id_prefix}_%s", **kwargs)
        self.user = user
        self.fields["team"].queryset = _teams(user)

    def _check_unique(self, model: type[RegisteredModel] | type[RegisteredDataset]) -> None:
        name = self.cleaned_data.get("name", "").strip()
        if name and model.objects.filter(owner=self.user, name=name).exists():
            self.add_error("name", f"you already have a {model._meta.verbose_name} called {name!r}")


class RegisterForm(_EntryForm):
    id_prefix = "register"
    kind = forms.ChoiceField(choices=KINDS)
    path = forms.CharField(
        max_length=1000, help_text="A save_pretrained folder or a JSONL/Parquet file on the workers."
    )
    domain = forms.ChoiceField(
        choices=[(d, d) for d in DOMAINS],
        required=False,
        help_text="For a data file: the verifier that scores its records.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind, path = cleaned.get("kind"), cleaned.get("path", "").strip()
        if kind and path:
            located = registrable_path(self.user, kind, path)
            if located is None:
                self.add_error("path", _refusal(self.user, kind))
            cleaned["path"] = located
        if kind == "data" and not cleaned.get("domain"):
            self.add_error("domain", "a data file needs the domain whose verifier scores it")
        if kind:
            self._check_unique(RegisteredModel if kind == "model" else RegisteredDataset)
        return cleaned

    def save(self) -> RegisteredModel | RegisteredDataset:
        data = self.cleaned_data
        common = {
            "name": data["name"].strip(),
            "owner": self.user,
            "team": data["team"],
            "path": data["path"],
            "description": data["description"],
        }
        if data["kind"] == "model":
            return RegisteredModel.objects.create(**common)
        return RegisteredDataset.objects.create(**common, domain=data["domain"])


def _refusal(user: User, kind: str) -> str:
    if user.is_staff:  # staff run the studio: they may hear where it looks
        what = "model folder (with a config.json)" if kind == "model" else "data file"
        return f"no {what} under the registry roots (PRORL_REGISTRY_ROOTS) is at this path"
    return MODEL_REFUSED if kind == "model" else DATA_REFUSED.removeprefix("path: ")


class UploadForm(_EntryForm):
    id_prefix = "upload"
    domain = forms.ChoiceField(
        choices=[(d, d) for d in DOMAINS],
        help_text="The verifier that scores its records (schema: prorl_engine/verifiers/README.md).",
    )
    file = forms.FileField(help_text="JSONL or Parquet.")

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        if Path(upload.name or "").suffix.lower() not in UPLOAD_SUFFIXES:
            raise forms.ValidationError(f"must be a {', '.join(UPLOAD_SUFFIXES)} file")
        if upload.size > settings.UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"is {upload.size / 2**20:.1f} MB: at most {settings.UPLOAD_MAX_BYTES / 2**20:.0f} MB may be uploaded"
            )
        return upload

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self._check_unique(RegisteredDataset)
        return cleaned

    def save(self) -> RegisteredDataset | None:
        """Store the file and check its records; None (with the reason on the form) if they fail."""
        from prorl_engine.data.sources import DataError, file_examples

        upload: UploadedFile = self.cleaned_data["file"]
        folder = uploads_root() / str(self.user.pk) / uuid.uuid4().hex  # RegisteredDataset.upload_folder
        folder.mkdir(parents=True)
        stored = folder / get_valid_filename(Path(upload.name).name)
        with open(stored, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        name, domain = self.cleaned_data["name"].strip(), self.cleaned_data["domain"]
        try:
            file_examples(DataSource(task=name, source="file", path=str(stored), domain=domain))
        except (DataError, ValueError) as exc:  # UnicodeDecodeError (not text) is a ValueError
            shutil.rmtree(folder)
            self.add_error("file", str(exc).replace(str(stored), upload.name))
            return None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return RegisteredDataset.objects.create(
            name=name,
            owner=self.user,
            team=self.cleaned_data["team"],
            path=str(stored),
            domain=domain,
            description=self.cleaned_data["description"],
            uploaded=True,
            size_bytes=upload.size,
        )


def _render(
    request: HttpRequest,
    *,
    upload_form: UploadForm | None = None,
    register_form: RegisterForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "models": usable_models(request.user),
        "datasets": usable_datasets(request.user),
        "upload_form": upload_form or UploadForm(user=request.user),
        "register_form": register_form or RegisterForm(user=request.user),
        "max_mb": settings.UPLOAD_MAX_BYTES // 2**20,
    }
    return render(request, "studio/registry.html", context, status=status)


@require_GET
@login_required
def registry_list(request: HttpRequest) -> HttpResponse:
    return _render(request)


@require_POST
@login_required
def registry_upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES, user=request.user)
    if not form.is_valid() or form.save() is None:
        return _render(request, upload_form=form, status=400)
    return redirect("registry-list")


@require_POST
@login_required
def registry_register(request: HttpRequest) -> HttpResponse:
    form = RegisterForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render(request, register_form=form, status=400)
    form.save()
    return redirect("registry-list")
