"""Several runs on shared charts (one chart per metric, one trace per run) and the fields in which
their configs differ."""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from prorl_engine.config import RunConfig
from studio.models import MetricPoint, Run
from studio.params import answers_bad_parameters, id_params
from studio.payloads import shown_config
from studio.permissions import can_see_run_details, can_view_run, visible_runs
from studio.series import AXIS_KEYS, chart_data

RUNS_LISTED = 50
MAX_RUNS = 8
# Charts in this order first (the run page's), then every other key by name.
FIRST_KEYS = [
    "reward/mean",
    "reward/verifier_mean",
    "eval/all/pass@1",
    "length/mean",
    "kl/ref",
    "policy/entropy",
    "policy/clip_frac_low",
    "policy/clip_frac_high",
    "sampling/filtered_frac",
    "throughput/tokens_per_s",
]


def _chosen_runs(request: HttpRequest) -> list[Run]:
    """The runs of ?run=<id>&run=<id>, in that order; 404 if any is not visible (or absent)."""
    ids = list(dict.fromkeys(id_params(request.GET, "run")))[:MAX_RUNS]
    found = {run.pk: run for run in Run.objects.filter(pk__in=ids).select_related("owner")}
    runs = [found[pk] for pk in ids if pk in found]
    if len(runs) != len(ids) or not all(can_view_run(request.user, run) for run in runs):
        raise Http404("No such run")
    return runs


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(field, value of each config as text) for every RunConfig field whose values differ."""
    rows = []
    for spec in RunConfig.field_specs():
        values = [config.get(spec.name, spec.default) for config in configs]
        if all(value == values[0] for value in values[1:]):
            continue
        rows.append((spec.name, [_as_text(value) for value in values]))
    return rows


def _as_text(value: Any) -> str:
    if isinstance(value, (list, dict)):
        if value and all(isinstance(v, (int, float)) for v in value):
            return ", ".join(str(v) for v in value)
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).strip()  # "…/data.jsonl" as it is
    return "" if value is None else str(value)


def chart_keys(series_of_runs: list[dict[str, Any]]) -> list[str]:
    """The metric keys to chart (the running totals the x-axis uses are not charts of their own)."""
    keys = {key for series in series_of_runs for key in series if key not in AXIS_KEYS}
    return [k for k in FIRST_KEYS if k in keys] + sorted(keys - set(FIRST_KEYS))


@require_GET
@login_required
@answers_bad_parameters(json_body=False)
def overlay(request: HttpRequest) -> HttpResponse:
    runs = _chosen_runs(request)
    configs = [shown_config(run, can_see_run_details(request.user, run)) for run in runs]
    context = {
        "runs": runs,
        "chosen": {run.pk for run in runs},
        "choices": visible_runs(request.user).select_related("owner").order_by("-created_at")[:RUNS_LISTED],
        "diff": config_diff(configs) if len(runs) >= 2 else [],
        "query": "&".join(f"run={run.pk}" for run in runs),
    }
    return render(request, "studio/overlay.html", context)


@require_GET
@login_required
@answers_bad_parameters(json_body=True)
def overlay_data(request: HttpRequest) -> JsonResponse:
    """{runs: [{id, name, series}], keys}: each run's curves, downsampled like the run page's, with
    its running totals of generated tokens and wall time (the x-axes other than the step)."""
    runs = _chosen_runs(request)
    out = []
    for run in runs:
        rows = MetricPoint.objects.filter(run=run).order_by("step").values_list("step", "values")
        out.append(
            {
                "id": run.pk,
                "name": f"#{run.pk} {run.name}",
                "series": chart_data(rows.iterator(chunk_size=2000), settings.CHART_POINTS, axes=True),
            }
        )
    return JsonResponse({"runs": out, "keys": chart_keys([r["series"] for r in out])})
