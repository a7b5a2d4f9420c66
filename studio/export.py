"""A run's metrics as files: every stored point (never the downsampled curves of the charts).

`metrics.csv`: one row per step, a column per metric key (sorted), an empty cell where a step did not
log the key or logged NaN/infinity (the sink stores those as null). `metrics.json`: {key: {"steps",
"values"}} per key, the shape of metrics.json's `series`, with every point. Both are allowed to whoever
may see the run page (`can_view_run`), and to the holder of an active share link of the run (the
same files through the token, read-only like everything a link opens).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from studio.models import MetricPoint, Run
from studio.series import to_series
from studio.sharing import shared_run
from studio.views import run_for

CHUNK = 2000  # rows read from the database at a time: a 10^6-step run streams in bounded memory


def metric_keys(run: Run) -> list[str]:
    """Every key any step of the run logged, sorted (one pass over the stored values)."""
    keys: set[str] = set()
    for values in MetricPoint.objects.filter(run=run).values_list("values", flat=True).iterator(chunk_size=CHUNK):
        keys.update(values)
    return sorted(keys)


class _Echo:
    """csv.writer's file: hands each written line back instead of storing it."""

    def write(self, line: str) -> str:
        return line


def csv_lines(run: Run) -> Iterator[str]:
    """The header `step,<key>,...`, then one line per stored step in step order."""
    keys = metric_keys(run)
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(["step", *keys])
    rows = MetricPoint.objects.filter(run=run).order_by("step").values_list("step", "values")
    for step, values in rows.iterator(chunk_size=CHUNK):
        yield writer.writerow([step, *(_cell(values.get(key)) for key in keys)])


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))  # repr: the stored float exactly, no rounding


def series_payload(run: Run) -> dict:
    """{"run", "name", "series": {key: {"steps", "values"}}} with every finite point of the run."""
    rows = MetricPoint.objects.filter(run=run).order_by("step").values_list("step", "values")
    series = to_series(rows.iterator(chunk_size=CHUNK))
    return {
        "run": run.pk,
        "name": run.name,
        "series": {key: {"steps": xs.tolist(), "values": ys.tolist()} for key, (xs, ys) in series.items()},
    }


def csv_response(run: Run) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(run), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-metrics.csv"'
    return response


def json_response(run: Run) -> JsonResponse:
    response = JsonResponse(series_payload(run))
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-metrics.json"'
    return response


def _shared(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"  # the token is the only key: keep no copy anywhere
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_GET
@login_required
def run_metrics_csv(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    return csv_response(run_for(request, run_id))


@require_GET
@login_required
def run_metrics_json(request: HttpRequest, run_id: int) -> JsonResponse:
    return json_response(run_for(request, run_id))


@require_GET
def share_metrics_csv(request: HttpRequest, token: str) -> HttpResponse:
    return _shared(csv_response(shared_run(token)))


@require_GET
def share_metrics_json(request: HttpRequest, token: str) -> HttpResponse:
    return _shared(json_response(shared_run(token)))
