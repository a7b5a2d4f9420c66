"""Comparisons: choose two or more checkpoints (of one run or several) or base models, and an
evaluation job on a worker (worker/eval_tasks.py, queue `eval`) has each answer the same held-out
prompts; the page shows pass@k per task and domain and mean lengths side by side with their
differences, and every prompt's completions with rewards and verifier details.

Who may: starting a comparison needs `can_compare_run` on every run whose checkpoint is in it;
seeing one needs being its owner, or `can_view_run` on every run it uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from prorl_engine.paths import MODEL_REFUSED
from studio import queue
from studio.models import Checkpoint, Comparison, Run
from studio.params import answers_bad_parameters, id_params
from studio.paths import path_policy_for
from studio.payloads import run_relative, viewer_error, viewer_model_path
from studio.permissions import can_compare_run, can_see_run_details, can_view_run, visible_runs

RUNS_LISTED = 30
MAX_MODELS = 6
MAX_KS = 16  # values of k in one comparison (k <= n <= 64)


def _may_use_model(user, model_path: str) -> bool:
    """May `user` evaluate `model_path`? The same answer a run of theirs would get."""
    from prorl_engine.builders import MODEL_BUILDERS

    return path_policy_for(user).locate_model(model_path, MODEL_BUILDERS) is not None


def _offered_base_model(user, run: Run) -> str:
    """The run's model_path as a base-model choice: to those who see the run's details as it is; to a
    viewer only where its viewer form is the same text (a tiny:/base: build), else "" (not offered)."""
    model_path = run.config.get("model_path") if isinstance(run.config, dict) else None
    if not isinstance(model_path, str):
        return ""
    if can_see_run_details(user, run):
        return model_path
    shown = viewer_model_path(model_path, run.run_dir, Path(settings.BASE_DIR), names={})
    return model_path if shown == model_path else ""


class CompareForm(forms.Form):
    checkpoints = forms.ModelMultipleChoiceField(
        queryset=Checkpoint.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    base_models = forms.MultipleChoiceField(
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The model a run started from (its model_path).",
    )
    model_path = forms.CharField(
        required=False,
        max_length=500,
        label="other base model",
        help_text="A save_pretrained folder on the workers (or tiny:/base: path).",
    )
    prompts_from = forms.ModelChoiceField(
        queryset=Run.objects.none(),
        required=False,
        help_text="The run whose data mix holds out the prompts (default: the run of the first checkpoint).",
    )
    n = forms.IntegerField(min_value=1, max_value=64, initial=4, label="samples per prompt (n)")
    ks = forms.CharField(initial="1, 4", label="pass@k for k in", help_text="Each k at most n.")
    prompts = forms.IntegerField(min_value=1, max_value=500, initial=8, label="prompts")
    max_new_tokens = forms.IntegerField(
        min_value=1, max_value=32768, required=False, help_text="Default: the prompt run's max_response_tokens."
    )

    def __init__(self, *args: Any, user, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.user = user
        runs = visible_runs(user)
        self.fields["checkpoints"].queryset = Checkpoint.objects.filter(run__in=runs).select_related("run")
        self.fields["prompts_from"].queryset = runs
        recent = list(runs.order_by("-created_at")[:RUNS_LISTED])
        paths = sorted({_offered_base_model(user, run) for run in recent} - {""})
        self.fields["base_models"].choices = [(path, path) for path in paths]
        self.runs = recent

    def evaluation_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in ("prompts_from", "n", "ks", "prompts", "max_new_tokens")]

    def clean_ks(self) -> list[int]:
        parts = [p for p in re.split(r"[\s,]+", self.cleaned_data["ks"]) if p]
        well_formed = all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts)  # "²" is a digit to isdigit
        if not parts or len(parts) > MAX_KS or not well_formed or not all(int(p) >= 1 for p in parts):
            raise forms.ValidationError(f"a list of at most {MAX_KS} whole numbers of at least 1, like 1, 4")
        return sorted({int(p) for p in parts})

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        checkpoints: list[Checkpoint] = sorted(cleaned.get("checkpoints") or [], key=lambda c: (c.run_id, c.step))
        bases = list(cleaned.get("base_models") or [])
        if cleaned.get("model_path", "").strip():
            bases.append(cleaned["model_path"].strip())
        if any(not _may_use_model(self.user, base) for base in bases):  # the run form's rules (studio.paths)
            self.add_error("model_path", MODEL_REFUSED)
        if len(checkpoints) + len(dict.fromkeys(bases)) < 2:
            raise forms.ValidationError("Choose at least two models: checkpoints, base models, or both.")
        if len(checkpoints) + len(dict.fromkeys(bases)) > MAX_MODELS:
            raise forms.ValidationError(f"Choose at most {MAX_MODELS} models per comparison.")
        for run in {c.run for c in checkpoints}:
            if not can_compare_run(self.user, run):
                self.add_error("checkpoints", f"You may see {run} but not start evaluations on it.")
        n, ks = cleaned.get("n"), cleaned.get("ks")
        if n and ks and max(ks) > n:
            self.add_error("ks", f"pass@{max(ks)} needs at least {max(ks)} samples per prompt (n is {n})")
        prompts_run = cleaned.get("prompts_from") or (checkpoints[0].run if checkpoints else None)
        if prompts_run is None:
            self.add_error("prompts_from", "Choose the run whose held-out prompts the models answer.")
        elif prompts_run.run_config is None:  # a config stored before today's bounds may no longer validate
            self.add_error("prompts_from", f"{prompts_run}'s config no longer validates: choose another run.")
        cleaned["entries"] = _entries(checkpoints, list(dict.fromkeys(bases)))
        cleaned["prompts_run"] = prompts_run
        return cleaned


def _entries(checkpoints: list[Checkpoint], bases: list[str]) -> list[dict[str, Any]]:
    """One column per model, labelled for people: "<run name> #<id> @ <step>" or "base: <path>"."""
    entries = [
        {
            "label": f"{c.run.name} #{c.run_id} @ {c.step}",
            "path": c.path,
            "run": c.run_id,
            "checkpoint": c.pk,
            "step": c.step,
        }
        for c in checkpoints
    ]
    entries += [{"label": f"base: {path}", "path": path, "run": None, "checkpoint": None, "step": 0} for path in bases]
    seen: dict[str, int] = {}
    for entry in entries:
        count = seen[entry["label"]] = seen.get(entry["label"], 0) + 1
        if count > 1:
            entry["label"] += f" ({count})"
    return entries


def can_view_comparison(user, comparison: Comparison) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_staff or comparison.owner_id == user.pk:
        return True
    runs = list(comparison.runs.all())
    return bool(runs) and all(can_view_run(user, run) for run in runs)


def can_see_comparison_details(user, comparison: Comparison) -> bool:
    """The job's full error and its checkpoints' server paths: whoever started it, and staff."""
    return user.is_authenticated and (user.is_staff or comparison.owner_id == user.pk)


def shown_error(user, comparison: Comparison) -> str:
    return comparison.error if can_see_comparison_details(user, comparison) else viewer_error(comparison.error)


def shown_entries(user, comparison: Comparison) -> list[dict[str, Any]]:
    """The columns; for others than its owner, checkpoint paths relative to their run's folder."""
    if can_see_comparison_details(user, comparison):
        return comparison.entries
    return [
        {**entry, "path": run_relative(entry["path"], Path(settings.RUNS_DIR) / str(entry["run"])) or ""}
        if entry["run"]
        else entry
        for entry in comparison.entries
    ]


def _comparison_for(request: HttpRequest, comparison_id: int) -> Comparison:
    comparison = get_object_or_404(Comparison.objects.select_related("owner"), pk=comparison_id)
    if not can_view_comparison(request.user, comparison):
        raise Http404("No such comparison")
    return comparison


@require_http_methods(["GET", "POST"])
@login_required
@answers_bad_parameters(json_body=False)
def compare_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = CompareForm(user=request.user, initial=_initial(request))
        return _render_new(request, form)
    form = CompareForm(request.POST, user=request.user)
    if not form.is_valid():
        return _render_new(request, form, status=400)
    comparison = start_comparison(request.user, form.cleaned_data)
    return redirect(comparison)


def _initial(request: HttpRequest) -> dict[str, Any]:
    """?checkpoint=<id>&checkpoint=<id> or ?run=<id> (every checkpoint of the run) preselects."""
    ids = id_params(request.GET, "checkpoint")
    run_ids = id_params(request.GET, "run")
    if run_ids:
        ids += list(Checkpoint.objects.filter(run_id__in=run_ids).values_list("pk", flat=True))
    return {"checkpoints": ids}


def _render_new(request: HttpRequest, form: CompareForm, status: int = 200) -> HttpResponse:
    selected = {str(v) for v in (form["checkpoints"].value() or [])}
    runs = [(run, list(run.checkpoints.order_by("step"))) for run in form.runs]
    recent = Comparison.objects.filter(owner=request.user)[:10]
    return render(
        request,
        "studio/compare_new.html",
        {"form": form, "runs": [r for r in runs if r[1]], "selected": selected, "recent": recent},
        status=status,
    )


def start_comparison(owner, cleaned: dict[str, Any]) -> Comparison:
    """Store a queued comparison and enqueue its evaluation job once the row is committed."""
    prompts_run: Run = cleaned["prompts_run"]
    config = prompts_run.run_config  # CompareForm refused a run whose config no longer validates
    options = {
        "n": cleaned["n"],
        "ks": cleaned["ks"],
        "prompts": cleaned["prompts"],
        "max_new_tokens": cleaned.get("max_new_tokens") or config.max_response_tokens,
        "prompts_run": prompts_run.pk,
        "config": config.to_dict(),
    }
    entries = cleaned["entries"]
    run_ids = {e["run"] for e in entries if e["run"]} | {prompts_run.pk}
    with transaction.atomic():
        comparison = Comparison.objects.create(owner=owner, entries=entries, settings=options)
        comparison.runs.set(run_ids)
        transaction.on_commit(lambda: queue.enqueue(queue.RUN_COMPARISON, comparison.pk))
    return comparison


@require_GET
@login_required
def compare_detail(request: HttpRequest, comparison_id: int) -> HttpResponse:
    comparison = _comparison_for(request, comparison_id)
    context = {
        "comparison": comparison,
        "labels": [e["label"] for e in comparison.entries],
        "error": shown_error(request.user, comparison),
    }
    if comparison.status == Comparison.Status.FINISHED and comparison.result:
        context.update(side_by_side(comparison.result))
    return render(request, "studio/compare_detail.html", context)


@require_GET
@login_required
def compare_data(request: HttpRequest, comparison_id: int) -> JsonResponse:
    """The job's state, and its result once finished: what the page polls and scripts read."""
    comparison = _comparison_for(request, comparison_id)
    return JsonResponse(
        {
            "id": comparison.pk,
            "status": comparison.status,
            "error": shown_error(request.user, comparison),
            "entries": shown_entries(request.user, comparison),
            "settings": {k: v for k, v in comparison.settings.items() if k != "config"},
            "result": comparison.result if comparison.status == Comparison.Status.FINISHED else None,
        }
    )


def side_by_side(result: dict[str, Any]) -> dict[str, Any]:
    """Rows for the page: metrics with each model's difference from the first column, and each
    prompt's answers with the differences marked (pass rate per model, changed responses)."""
    labels = result["labels"]
    first = labels[0]
    domains = {entry["domain"] for entry in result["prompts"]}
    metrics = []
    for key in sorted(result["metrics"], key=_metric_order):
        row = result["metrics"][key]
        cells = []
        for label in labels:
            value, base = row.get(label), row.get(first)
            delta = value - base if label != first and value is not None and base is not None else None
            cells.append({"value": value, "delta": delta, "delta_text": "" if delta is None else f"{delta:+.3f}"})
        name = key.split("/")[1] if key.count("/") >= 2 else key
        scope = "all" if name == "all" else "domain" if name in domains else "task"
        metrics.append({"key": key, "scope": scope, "cells": cells})
    prompts = []
    for entry in result["prompts"]:
        answers = [entry["answers"].get(label, []) for label in labels]
        rates = [sum(a["correct"] for a in answer) / len(answer) if answer else None for answer in answers]
        reference = answers[0]
        columns = []
        for label, answer, rate in zip(labels, answers, rates):
            samples = [
                {**a, "changed": i >= len(reference) or a["response"] != reference[i]["response"]}
                for i, a in enumerate(answer)
            ]
            columns.append(
                {
                    "label": label,
                    "rate": rate,
                    "samples": samples,
                    "better": rate is not None and rates[0] is not None and rate > rates[0],
                    "worse": rate is not None and rates[0] is not None and rate < rates[0],
                }
            )
        prompts.append(
            {
                **{k: entry[k] for k in ("uid", "prompt", "task", "domain")},
                "columns": columns,
                "differs": len({r for r in rates if r is not None}) > 1,
            }
        )
    return {"metrics": metrics, "prompts": prompts, "differing": sum(p["differs"] for p in prompts)}


def _metric_order(key: str) -> tuple:
    """eval/all first, then domains and tasks by name; within each, pass@k by k, then the means."""
    _, name, stat = key.split("/", 2) if key.count("/") >= 2 else ("", key, "")
    k = int(stat.split("@")[1]) if stat.startswith("pass@") and stat.split("@")[1].isdigit() else 10**6
    return (name != "all", name, k, stat)
