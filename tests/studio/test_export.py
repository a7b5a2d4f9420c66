"""Alice downloads every point of her run as CSV and JSON (not the charts' downsampled curves); Bob,
a viewer in her team, may too; Charlie gets the studio's 404; a share link's holder downloads the
same files through the token until the link is revoked."""

from __future__ import annotations

import csv
import io

import pytest
from access_testing import fast_passwords, share, team_of  # noqa: F401 (a fixture)
from django.urls import reverse

from studio.models import MetricPoint, Run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

STEPS = 3000  # over CHART_POINTS (2000): the charts' data is downsampled, the export is not


@pytest.fixture
def long_run(alices_run) -> Run:
    """3,000 steps of reward/mean = step / 1000; kl/ref logged every 10th step; one NaN (stored null)."""
    points = []
    for step in range(1, STEPS + 1):
        values = {"reward/mean": step / 1000}
        if step % 10 == 0:
            values["kl/ref"] = 0.1 if step != 500 else None
        points.append(MetricPoint(run=alices_run, step=step, values=values))
    MetricPoint.objects.bulk_create(points)
    Run.objects.filter(pk=alices_run.pk).update(last_step=STEPS)
    return alices_run


def read_csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_alice_downloads_every_point_as_csv(client, alice, long_run):
    client.force_login(alice)
    response = client.get(reverse("run-export-csv", args=[long_run.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="run-{long_run.pk}-metrics.csv"'
    rows = read_csv(response)
    assert rows[0] == ["step", "kl/ref", "reward/mean"]
    assert len(rows) == STEPS + 1
    assert rows[1] == ["1", "", "0.001"]
    assert rows[10] == ["10", "0.1", "0.01"]
    assert rows[500] == ["500", "", "0.5"]  # NaN was stored as null: an empty cell
    assert rows[-1] == [str(STEPS), "0.1", "3.0"]
    chart = client.get(reverse("run-metrics", args=[long_run.pk])).json()["series"]["reward/mean"]
    assert len(chart["steps"]) < STEPS  # what the export is not


def test_alice_downloads_every_point_as_json(client, alice, long_run):
    client.force_login(alice)
    response = client.get(reverse("run-export-json", args=[long_run.pk]))
    assert response.status_code == 200
    data = response.json()
    assert (data["run"], data["name"]) == (long_run.pk, long_run.name)
    reward = data["series"]["reward/mean"]
    assert reward["steps"] == list(range(1, STEPS + 1))
    assert reward["values"][:3] == [0.001, 0.002, 0.003] and reward["values"][-1] == 3.0
    kl = data["series"]["kl/ref"]
    assert len(kl["steps"]) == STEPS // 10 - 1 and 500 not in kl["steps"] and kl["steps"][:2] == [10, 20]


def test_bob_in_her_team_may_export_and_charlie_may_not(client, alice, bob, charlie, long_run):
    long_run.team = team_of(alice, (bob, "viewer"))
    long_run.save(update_fields=["team"])
    client.force_login(bob)
    assert client.get(reverse("run-export-csv", args=[long_run.pk])).status_code == 200
    assert client.get(reverse("run-export-json", args=[long_run.pk])).status_code == 200
    client.force_login(charlie)
    for name in ("run-export-csv", "run-export-json"):
        response = client.get(reverse(name, args=[long_run.pk]))
        assert response.status_code == 404
    assert client.get(reverse("run-export-json", args=[long_run.pk])).json() == {"error": "Not found."}


def test_a_visitor_who_is_not_logged_in_is_sent_to_the_login_page(client, long_run):
    response = client.get(reverse("run-export-csv", args=[long_run.pk]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_share_link_exports_read_only_until_it_is_revoked(client, long_run):
    token = share(long_run)
    response = client.get(reverse("share-export-csv", args=[token]))
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"
    assert len(read_csv(response)) == STEPS + 1
    data = client.get(reverse("share-export-json", args=[token])).json()
    assert len(data["series"]["reward/mean"]["steps"]) == STEPS
    assert client.post(reverse("share-export-csv", args=[token])).status_code == 405
    revoked = share(long_run, revoked=True)
    assert client.get(reverse("share-export-csv", args=[revoked])).status_code == 404
    assert client.get(reverse("share-export-json", args=[revoked])).status_code == 404


def test_any_other_url_under_a_share_link_is_the_plain_404_with_debug_on(client, settings, long_run):
    settings.DEBUG = True
    token = share(long_run, revoked=True)
    for url in (f"/s/{token}/", f"/s/{token}/no-such-page/", "/s/", f"/s/{token}/a/b/c"):
        response = client.get(url)
        page = response.content.decode()
        assert response.status_code == 404, url
        assert 'id="not-found"' in page and "URLconf" not in page and "run-detail" not in page, url
