"""metrics.json built once per version of a run's rows (issue 16): what a cached answer says is what the
rows say, for each view of the run, while the run changes; a repeated request costs one query for the
version besides the login and the run."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from access_testing import team_of
from django.urls import reverse

from studio import series, views
from studio.models import Checkpoint, Event, MetricPoint, Run, RunStatus, Sample, TeamRole

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cold_caches():
    views.metrics_cache.clear()
    series.chart_cache.clear()
    yield
    views.metrics_cache.clear()
    series.chart_cache.clear()


def metrics(client, run: Run) -> dict:
    """metrics.json as a browser gets it: gzipped, from the cached head and this request's tail."""
    response = client.get(reverse("run-metrics", args=[run.pk]), HTTP_ACCEPT_ENCODING="gzip")
    assert (response.status_code, response["Content-Encoding"]) == (200, "gzip")
    return json.loads(gzip.decompress(response.content))


def sample(run: Run, step: int, response: str) -> Sample:
    return Sample.objects.create(
        run=run, step=step, prompt="2+2?", response=response, reward=1.0, verifier_reward=1.0,
        task="basic_arithmetic", domain="math", length=3,
    )  # fmt: skip


def test_stored_rows_counts_and_highest_ids_match_the_tables(alices_run, alice):
    MetricPoint.objects.bulk_create(MetricPoint(run=alices_run, step=s, values={"reward/mean": 0.1}) for s in (1, 2, 3))
    event = Event.objects.create(run=alices_run, step=2, kind="reset", data={"reason": "interval"}, time=1.0)
    other = Run.objects.create(owner=alice, name="other", config=alices_run.config, total_steps=5)
    MetricPoint.objects.create(run=other, step=1, values={})  # another run's rows are not counted
    assert series.stored_rows(alices_run.pk) == series.StoredRows(
        points=(3, max(p.pk for p in MetricPoint.objects.filter(run=alices_run))),
        events=(1, event.pk),
        samples=(0, 0),
        checkpoints=(0, 0),
    )


def test_a_repeated_request_reads_only_the_version(client, alice, alices_run, django_assert_num_queries):
    MetricPoint.objects.create(run=alices_run, step=1, values={"reward/mean": 0.5})
    client.force_login(alice)
    first = metrics(client, alices_run)
    with django_assert_num_queries(4):  # the session, the user, the run, the version (stored_rows)
        again = metrics(client, alices_run)
    assert again["server_time"] >= first["server_time"]
    assert {k: v for k, v in again.items() if k != "server_time"} == {
        k: v for k, v in first.items() if k != "server_time"
    }


def test_the_cached_answer_follows_every_change_of_the_run(client, alice, alices_run):
    client.force_login(alice)
    MetricPoint.objects.create(run=alices_run, step=1, values={"reward/mean": 0.5})
    assert metrics(client, alices_run)["series"]["reward/mean"]["values"] == [0.5]

    MetricPoint.objects.create(run=alices_run, step=2, values={"reward/mean": 0.75})
    Run.objects.filter(pk=alices_run.pk).update(last_step=2, status=RunStatus.RUNNING)
    data = metrics(client, alices_run)
    assert data["series"]["reward/mean"]["values"] == [0.5, 0.75]
    assert (data["status"], data["last_step"]) == ("running", 2)

    Event.objects.create(run=alices_run, step=2, kind="reset", data={"reason": "interval"}, time=2.0)
    sample(alices_run, 2, "4")
    checkpoint = Checkpoint.objects.create(run=alices_run, step=2, path=f"{alices_run.run_dir}/checkpoints/step-2")
    data = metrics(client, alices_run)
    assert [e["step"] for e in data["resets"]] == [2]
    assert [s["response"] for s in data["samples"]] == ["4"]
    assert [c["step"] for c in data["checkpoints"]] == [2]

    checkpoint.delete()  # a removed checkpoint: one row fewer, no new id
    assert metrics(client, alices_run)["checkpoints"] == []

    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.FAILED, error="RuntimeError: out of memory")
    data = metrics(client, alices_run)
    assert (data["status"], data["error"]) == ("failed", "RuntimeError: out of memory")


def test_a_viewer_never_gets_the_owners_cached_paths(client, alice, bob, alices_run):
    """The owner's answer (server paths, the full error) is cached first; Bob, a team viewer, gets the
    viewer forms all the same."""
    Run.objects.filter(pk=alices_run.pk).update(
        team=team_of(alice, (bob, TeamRole.VIEWER)),
        status=RunStatus.FAILED,
        error=f"OSError: cannot write {alices_run.run_dir}/checkpoints/step-000002/model.safetensors",
    )
    alices_run.refresh_from_db()
    Checkpoint.objects.create(run=alices_run, step=2, path=f"{alices_run.run_dir}/checkpoints/step-000002")
    client.force_login(alice)
    owners = metrics(client, alices_run)
    assert owners["checkpoints"][0]["path"] == f"{alices_run.run_dir}/checkpoints/step-000002"
    client.force_login(bob)
    viewers = metrics(client, alices_run)
    assert viewers["checkpoints"][0]["path"] == "checkpoints/step-000002"
    assert str(alices_run.run_dir) not in viewers["error"]
    assert str(alices_run.run_dir) not in str(viewers)


def test_the_clock_fields_are_of_the_moment_of_each_request(client, alice, alices_run, settings):
    """A running run whose worker stops renewing its lease shows as lost on the next request, though
    no row changed."""
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING, heartbeat=time.time(), worker="w1")
    alices_run.refresh_from_db()
    client.force_login(alice)
    assert metrics(client, alices_run)["worker_lost"] is False
    Run.objects.filter(pk=alices_run.pk).update(heartbeat=time.time() - settings.WORKER_LEASE_S - 5)
    assert metrics(client, alices_run)["worker_lost"] is True
