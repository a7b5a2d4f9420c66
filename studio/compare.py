"""Comparisons: choose two or more checkpoints (of one run or several) or base models, and an
evaluation job on a worker (worker/eval_tasks.py, queue `eval`) has each answer the same held-out
prompts; the page shows pass@k (with its standard error over the prompts) per task and domain and
mean lengths side by side, each model's difference from a reference column the person chooses (the
base model by default), and every prompt's completions with rewards and verifier details.

Who may: starting a comparison needs `can_compare_run` on every run whose checkpoint is in it;
seeing one needs being its owner, or `can_view_run` on every run it uses.
"""

from __future__ import annotations

import math
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

from prorl_engine.boundary import MAX_SAMPLES
from prorl_engine.config_fields import NOVELTY_CORPORA
from prorl_engine.paths import MODEL_REFUSED
from studio import queue
from studio.models import Checkpoint, Comparison, Run
from studio.params import answers_bad_parameters, id_params
from studio.paths import path_policy_for
from studio.payloads import run_relative, viewer_error, viewer_model_path
from studio.permissions import can_compare_run, can_see_run_details, can_view_run, visible_runs

RUNS_LISTED = 30
MAX_MODELS = 6
MAX_KS = 16  # values of k in one comparison (k <= n <= MAX_SAMPLES)


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
    n = forms.IntegerField(
        min_value=1,
        max_value=MAX_SAMPLES,
        initial=4,
        label="samples per prompt (n)",
        help_text=f"Up to {MAX_SAMPLES}: the reasoning-boundary view shows pass@k for every k up to n.",
    )
    ks = forms.CharField(initial="1, 4", label="pass@k for k in", help_text="Each k at most n.")
    prompts = forms.IntegerField(min_value=1, max_value=500, initial=8, label="prompts")
    max_new_tokens = forms.IntegerField(
        min_value=1, max_value=32768, required=False, help_text="Default: the prompt run's max_response_tokens."
    )
    novelty_corpus = forms.ChoiceField(
        choices=[("", "the prompt run's"), *((name, name) for name in NOVELTY_CORPORA)],
        required=False,
        label="novelty against",
        help_text="Reference corpus of novelty@n (word 4- to 8-grams never in it): none, training_data (the prompt "
        "run's training split), demo_sft (the demo base model's SFT data), demo_padded_sft (the claims demo's "
        "padded base model's SFT data).",
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
        return [self[name] for name in ("prompts_from", "n", "ks", "prompts", "max_new_tokens", "novelty_corpus")]

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
        "config": {**config.to_dict(), "novelty_corpus": cleaned.get("novelty_corpus") or config.novelty_corpus},
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
    labels = [e["label"] for e in comparison.entries]
    chosen = request.GET.get("reference", "")
    reference = int(chosen) if chosen.isascii() and chosen.isdigit() and int(chosen) < len(labels) else None
    context = {
        "comparison": comparison,
        "labels": labels,
        "error": shown_error(request.user, comparison),
        "reference": default_reference(comparison.entries) if reference is None else reference,
    }
    if comparison.status == Comparison.Status.FINISHED and comparison.result:
        context.update(side_by_side(comparison.result, context["reference"]))
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


LOWER_IS_BETTER = frozenset({"length/truncated_frac"})
SAMPLES_SHOWN = 2  # completions of a model shown per prompt; the rest fold under "n more"


def direction(key: str) -> int:
    """+1 for a metric that should go up (pass@k, rewards), -1 for one that should go down (the
    fraction of responses cut off by the budget), 0 where no direction is better (lengths, KL,
    entropy, throughput...): only a known direction earns a delta its colour."""
    stat = key.rsplit("/", 1)[-1]
    if stat.startswith("pass@") or stat in ("mean_reward", "verifier_mean") or key.startswith("reward/"):
        return 1
    if key in LOWER_IS_BETTER:
        return -1
    return 0


def default_reference(entries: list[dict[str, Any]]) -> int:
    """The column the others are measured against: the first base model, else the first column."""
    return next((i for i, entry in enumerate(entries) if not entry.get("run")), 0)


def standard_errors(result: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(metric key, label) -> standard error of each pass@k over the comparison's prompts: the
    sample standard deviation of the per-prompt unbiased pass@k divided by sqrt(prompts), for every
    scope (all, a domain, a task) with at least two prompts."""
    from prorl_engine.algorithms import pass_at_k

    labels = result["labels"]
    errors: dict[tuple[str, str], float] = {}
    for key in result["metrics"]:
        parts = key.split("/")
        if len(parts) != 3 or not parts[2].startswith("pass@") or not parts[2][5:].isdigit():
            continue
        scope, k = parts[1], int(parts[2][5:])
        entries = [e for e in result["prompts"] if scope in ("all", e["task"], e["domain"])]
        for label in labels:
            values = []
            for entry in entries:
                answers = entry["answers"].get(label, [])
                if len(answers) >= k:
                    values.append(pass_at_k(len(answers), sum(bool(a["correct"]) for a in answers), k))
            if len(values) >= 2:
                mean = sum(values) / len(values)
                variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                errors[(key, label)] = math.sqrt(variance / len(values))
    return errors


def _tone(delta: float | None, sign: int) -> str:
    """The delta's classes: better / worse where the metric has a direction, neutral where it has none."""
    if delta is None or delta == 0:
        return ""
    if sign == 0:
        return "neutral"
    return "better up" if delta * sign > 0 else "worse down"  # up / down: studio.css's green / red


def side_by_side(result: dict[str, Any], reference: int = 0) -> dict[str, Any]:
    """Rows for the page, each model against the `reference` column: metrics with their difference
    (coloured only where the metric's direction is known) and pass@k's standard error; each prompt's
    answers, a completion marked only where its correctness differs from the reference's answer to
    the same sample, the first SAMPLES_SHOWN shown and the rest folded."""
    labels = result["labels"]
    reference = reference if 0 <= reference < len(labels) else 0
    ref = labels[reference]
    domains = {entry["domain"] for entry in result["prompts"]}
    errors = standard_errors(result)
    metrics = []
    for key in sorted(result["metrics"], key=_metric_order):
        row = result["metrics"][key]
        sign = direction(key)
        cells = []
        for label in labels:
            value, base = row.get(label), row.get(ref)
            delta = value - base if label != ref and value is not None and base is not None else None
            cells.append(
                {
                    "value": value,
                    "delta": delta,
                    "delta_text": "" if delta is None else f"{delta:+.3f}",
                    "tone": _tone(delta, sign),
                    "se": errors.get((key, label)),
                    "reference": label == ref,
                }
            )
        name = key.split("/")[1] if key.count("/") >= 2 else key
        scope = "all" if name == "all" else "domain" if name in domains else "task"
        metrics.append({"key": key, "scope": scope, "cells": cells, "direction": sign})
    prompts = []
    for entry in result["prompts"]:
        answers = [entry["answers"].get(label, []) for label in labels]
        rates = [sum(a["correct"] for a in answer) / len(answer) if answer else None for answer in answers]
        ref_answers, ref_rate = answers[reference], rates[reference]
        columns = []
        for index, (label, answer, rate) in enumerate(zip(labels, answers, rates)):
            samples = [
                {
                    **a,
                    "changed": index != reference
                    and i < len(ref_answers)
                    and bool(a["correct"]) != bool(ref_answers[i]["correct"]),
                }
                for i, a in enumerate(answer)
            ]
            compared = index != reference and rate is not None and ref_rate is not None
            columns.append(
                {
                    "label": label,
                    "rate": rate,
                    "shown": samples[:SAMPLES_SHOWN],
                    "folded": [s for s in samples[SAMPLES_SHOWN:] if "response" in s],  # the job keeps 64 texts
                    "samples": samples,
                    "changed": sum(s["changed"] for s in samples),
                    "reference": index == reference,
                    "better": compared and rate > ref_rate,
                    "worse": compared and rate < ref_rate,
                }
            )
        prompts.append(
            {
                **{k: entry[k] for k in ("uid", "prompt", "task", "domain")},
                "columns": columns,
                "differs": len({r for r in rates if r is not None}) > 1,
            }
        )
    return {
        "metrics": metrics,
        "prompts": prompts,
        "differing": sum(p["differs"] for p in prompts),
        "changed": sum(c["changed"] for p in prompts for c in p["columns"]),
        "completions": sum(len(c["samples"]) for p in prompts for c in p["columns"] if not c["reference"]),
        "reference": reference,
        "reference_label": ref,
    }


def _metric_order(key: str) -> tuple:
    """eval/all first, then domains and tasks by name; within each, pass@k by k, then the means."""
    _, name, stat = key.split("/", 2) if key.count("/") >= 2 else ("", key, "")
    k = int(stat.split("@")[1]) if stat.startswith("pass@") and stat.split("@")[1].isdigit() else 10**6
    return (name != "all", name, k, stat)
