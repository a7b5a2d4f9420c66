"""The runs table: many runs, columns chosen from config values and latest/best metrics, sorting,
filters, tags and notes, and a selection that goes straight to the overlay or compare pages.

Everything is a query parameter, so a table is a link people can share:

    ?status=running&status=queued     any of these statuses
    ?owner=alice  ?team=<id>          one owner, one team
    ?tag=baseline&tag=lr-sweep        runs carrying every one of these tags
    ?q=entropy                        name or notes contain the text (or "#12": run 12)
    ?col=config:learning_rate         a config value as a column (any scalar RunConfig field)
    ?col=latest:reward/mean           a metric's latest logged value
    ?col=best:eval/all/pass@1         its best value: the highest for a metric that should go up,
                                      the lowest for one that should go down (studio.compare.direction)
    ?sort=-best:eval/all/pass@1       any shown column, "-" for descending; nulls last either way
    ?page=2

Metric columns are computed in the database (one subquery per column over the MetricPoint rows,
each row one step's JSON), so sorting spans every run that passes the filters, not one page.
Who sees which run: `visible_runs`, as the list always did. Tags and notes are edited by those who
may steer the run (`can_control_run`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import F, FloatField, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from prorl_engine.config import RunConfig
from studio.compare import direction
from studio.models import NOTES_MAX_CHARS, TAG_MAX_CHARS, MetricPoint, Run, RunStatus, RunTag
from studio.permissions import can_control_run, can_view_run, visible_runs, visible_teams

PAGE_SIZE = 50
MAX_COLUMNS = 8
MAX_TAGS = 20
MAX_TEXT = 200
METRIC_KEY = re.compile(r"^[A-Za-z0-9_./@-]{1,100}$")
TAG = re.compile(rf"^[\w.:+-]{{1,{TAG_MAX_CHARS}}}$")
# Config fields that name places on the studio's machines are never columns (viewers read them in
# studio.payloads' viewer forms, which a column would bypass).
CONFIG_COLUMNS = [spec.name for spec in RunConfig.field_specs() if spec.kind not in ("str", "data_sources")]
DEFAULT_COLUMNS = ["latest:reward/mean"]
BUILTIN_SORTS = {
    "name": "name",
    "status": "status",
    "owner": "owner__username",
    "progress": "progress_frac",
    "created": "created_at",
    "id": "id",
}


@dataclass(frozen=True)
class Column:
    """A chosen column: `source` is config, latest or best; `key` the config field or metric key."""

    source: str
    key: str

    @property
    def param(self) -> str:
        return f"{self.source}:{self.key}"

    @property
    def annotation(self) -> str:
        """The queryset annotation holding its value (a safe identifier)."""
        return "col_" + re.sub(r"\W", "_", self.param) + f"_{zlib.crc32(self.param.encode())}"

    @property
    def title(self) -> str:
        if self.source == "config":
            return self.key
        if self.source == "best":
            return f"{self.key} ({'max' if direction(self.key) > 0 else 'min'})"
        return f"{self.key} (latest)"


def parse_column(text: str) -> Column | None:
    """A ?col= value, or None for one that names no column (ignored, as unknown sorts are)."""
    source, _, key = text.partition(":")
    if source == "config" and key in CONFIG_COLUMNS:
        return Column(source, key)
    if source == "latest" and METRIC_KEY.match(key):
        return Column(source, key)
    if source == "best" and METRIC_KEY.match(key) and direction(key) != 0:
        return Column(source, key)
    return None


def _metric_value(key: str):
    return Cast(KeyTextTransform(key, "values"), FloatField())


def annotate_column(runs: QuerySet[Run], column: Column) -> QuerySet[Run]:
    """The column's value on every run, computed by the database."""
    if column.source == "config":
        return runs.annotate(**{column.annotation: KeyTransform(column.key, "config")})
    points = (
        MetricPoint.objects.filter(run=OuterRef("pk")).annotate(v=_metric_value(column.key)).filter(v__isnull=False)
    )
    if column.source == "latest":
        value = Subquery(points.order_by("-step").values("v")[:1], output_field=FloatField())
    else:
        best = Max("v") if direction(column.key) > 0 else Min("v")
        value = Subquery(points.values("run").annotate(best=best).values("best")[:1], output_field=FloatField())
    return runs.annotate(**{column.annotation: value})


def filtered_runs(user, params) -> tuple[QuerySet[Run], dict[str, Any]]:
    """The runs `user` may see that pass the filters of `params`, and the filters as understood."""
    runs = visible_runs(user).select_related("owner", "team").prefetch_related("tags")
    statuses = [s for s in params.getlist("status") if s in RunStatus.values]
    if statuses:
        runs = runs.filter(status__in=statuses)
    owner = params.get("owner", "").strip()[:150]
    if owner:
        runs = runs.filter(owner__username=owner)
    team = params.get("team", "")
    team_id = int(team) if team.isascii() and team.isdigit() and len(team) < 10 else None
    if team_id is not None:
        runs = runs.filter(team_id=team_id)
    tags = [t for t in dict.fromkeys(params.getlist("tag")) if TAG.match(t)][:MAX_TAGS]
    for tag in tags:
        runs = runs.filter(tags__name=tag)
    text = params.get("q", "").strip()[:MAX_TEXT]
    if text:
        number = text[1:] if text.startswith("#") else ""
        query = Q(name__icontains=text) | Q(notes__icontains=text)
        if number.isascii() and number.isdigit() and len(number) < 10:
            query |= Q(pk=int(number))
        runs = runs.filter(query)
    return runs.distinct(), {"statuses": statuses, "owner": owner, "team": team_id, "tags": tags, "q": text}


def _order(runs: QuerySet[Run], sort: str, columns: list[Column]) -> tuple[QuerySet[Run], str]:
    name = sort.lstrip("-")
    by_param = {column.param: column for column in columns}
    if name in BUILTIN_SORTS:
        key = BUILTIN_SORTS[name]
    elif name in by_param:
        key = by_param[name].annotation
    else:
        sort, key = "-created", "created_at"
    field = F(key).desc(nulls_last=True) if sort.startswith("-") else F(key).asc(nulls_last=True)
    return runs.order_by(field, "-id"), sort


def metric_keys(runs: QuerySet[Run], limit: int = 20) -> list[str]:
    """Metric keys to suggest for columns: those of the latest point of the newest runs."""
    ids = list(runs.order_by("-created_at").values_list("pk", flat=True)[:limit])
    keys: set[str] = set()
    for run_id in ids:
        latest = MetricPoint.objects.filter(run_id=run_id).order_by("-step").values_list("values", flat=True).first()
        keys.update(k for k in (latest or {}) if METRIC_KEY.match(k))
    return sorted(keys)


@require_GET
@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    runs, filters = filtered_runs(request.user, request.GET)
    chosen = request.GET.getlist("col") if "col" in request.GET else DEFAULT_COLUMNS
    columns = list(dict.fromkeys(c for c in map(parse_column, chosen) if c is not None))[:MAX_COLUMNS]
    runs = runs.annotate(progress_frac=Cast(F("last_step"), FloatField()) / Cast(F("total_steps"), FloatField()))
    for column in columns:
        runs = annotate_column(runs, column)
    runs, sort = _order(runs, request.GET.get("sort", "-created"), columns)
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [
        {
            "run": run,
            "cells": [_cell(run, column) for column in columns],
            "tags": [t.name for t in run.tags.all()],
            "editable": can_control_run(request.user, run),
        }
        for run in page
    ]
    visible = visible_runs(request.user)
    context = {
        "rows": rows,
        "page": page,
        "columns": [{"column": c, "sort": c.param} for c in columns],
        "sort": sort,
        "filters": filters,
        "statuses": RunStatus.values,
        "teams": visible_teams(request.user),
        "owners": sorted(set(visible.values_list("owner__username", flat=True))),
        "known_tags": sorted(set(RunTag.objects.filter(run__in=visible).values_list("name", flat=True)))[:200],
        "config_columns": CONFIG_COLUMNS,
        "metric_keys": metric_keys(visible),
        "query": _query_without(request, "sort", "page"),
        "page_query": _query_without(request, "page"),
    }
    return render(request, "studio/run_list.html", context)


def _cell(run: Run, column: Column) -> str:
    value = getattr(run, column.annotation, None)
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _query_without(request: HttpRequest, *names: str) -> str:
    """The request's query string without `names`, ending in "&" when not empty (for links)."""
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    encoded = query.urlencode()
    return encoded + "&" if encoded else ""


# --- tags and notes ----------------------------------------------------------------------------------


def parse_tags(text: str) -> list[str]:
    """Comma- or space-separated tags, each letters, digits and . : + - _ (at most TAG_MAX_CHARS)."""
    tags = list(dict.fromkeys(t for t in re.split(r"[\s,]+", text) if t))
    bad = [t for t in tags if not TAG.match(t)]
    if bad:
        raise forms.ValidationError(
            f"{', '.join(bad[:3])}: a tag is letters, digits and . : + - _, at most {TAG_MAX_CHARS} characters"
        )
    if len(tags) > MAX_TAGS:
        raise forms.ValidationError(f"at most {MAX_TAGS} tags a run")
    return tags


class AnnotateForm(forms.Form):
    tags = forms.CharField(required=False, max_length=1000, help_text="Comma-separated, e.g. baseline, lr-sweep.")
    notes = forms.CharField(required=False, max_length=NOTES_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 6}))

    def clean_tags(self) -> list[str]:
        return parse_tags(self.cleaned_data["tags"])


def set_tags(run: Run, tags: list[str]) -> None:
    with transaction.atomic():
        RunTag.objects.filter(run=run).exclude(name__in=tags).delete()
        have = set(RunTag.objects.filter(run=run).values_list("name", flat=True))
        RunTag.objects.bulk_create([RunTag(run=run, name=t) for t in tags if t not in have])


@require_http_methods(["GET", "POST"])
@login_required
def run_annotate(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run's tags and notes: shown to whoever may see the run, edited by those who may steer it."""
    run = get_object_or_404(Run.objects.select_related("owner"), pk=run_id)
    if not can_view_run(request.user, run):
        raise Http404("No such run")
    editable = can_control_run(request.user, run)
    if request.method == "POST":
        if not editable:
            return HttpResponse("You may see this run but not edit its tags and notes.", status=403)
        form = AnnotateForm(request.POST)
        if form.is_valid():
            set_tags(run, form.cleaned_data["tags"])
            Run.objects.filter(pk=run.pk).update(notes=form.cleaned_data["notes"])
            messages.success(request, f"Tags and notes of run #{run.pk} saved.")
            return redirect("run-list")
        status = 400
    else:
        form = AnnotateForm(initial={"tags": ", ".join(t.name for t in run.tags.all()), "notes": run.notes})
        status = 200
    return render(request, "studio/run_annotate.html", {"run": run, "form": form, "editable": editable}, status=status)
