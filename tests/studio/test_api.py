"""The JSON API for scripts: Alice makes a token on her page and drives her run with it."""

from __future__ import annotations

import hashlib
import re

import pytest
from access_testing import api_token, bearer, fast_passwords  # noqa: F401 (a fixture)
from django.test import Client
from django.urls import reverse

from studio.models import ApiToken, Command, Event, MetricPoint, Run, RunStatus

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def values(step: int) -> dict[str, float]:
    return {"reward/mean": step / 1000, "kl/ref": 0.01, "length/mean": 100.0 + step}


@pytest.fixture
def long_run(alices_run) -> Run:
    """Alice's running run with 3,000 logged steps and two resets."""
    MetricPoint.objects.bulk_create(MetricPoint(run=alices_run, step=s, values=values(s)) for s in range(1, 3001))
    for step in (1000, 2000):
        Event.objects.create(run=alices_run, step=step, kind="reset", time=0, data={"reason": "interval"})
    Event.objects.create(run=alices_run, step=2500, kind="checkpoint", time=0, data={"path": "/ckpt"})
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING, last_step=3000)
    alices_run.refresh_from_db()
    return alices_run


def test_alice_makes_a_token_that_is_shown_once_and_stored_hashed(client, alice):
    client.force_login(alice)
    page = client.post(reverse("api-token-create"), {"name": "nightly sweep"}).content.decode()
    token = re.search(r'value="([A-Za-z0-9_-]{43})" id="new-token-value"', page).group(1)
    stored = ApiToken.objects.get(user=alice)
    assert stored.name == "nightly sweep" and stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in client.get(reverse("api-token-list")).content.decode()
    runs = Client().get(reverse("api-runs"), **bearer(token))
    assert runs.status_code == 200 and ApiToken.objects.get(pk=stored.pk).last_used_at is not None


def test_a_revoked_token_is_refused(client, alice):
    token = api_token(alice)
    client.force_login(alice)
    client.post(reverse("api-token-revoke", args=[ApiToken.objects.get().pk]))
    response = Client().get(reverse("api-runs"), **bearer(token))
    assert response.status_code == 401 and "Bearer" in response["WWW-Authenticate"]


def test_bob_cannot_revoke_alices_token(client, alice, bob):
    api_token(alice)
    client.force_login(bob)
    assert client.post(reverse("api-token-revoke", args=[ApiToken.objects.get().pk])).status_code == 404
    assert ApiToken.objects.get().revoked_at is None


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="])
def test_the_api_refuses_requests_without_a_valid_bearer_token(alices_run, header):
    response = Client().get(reverse("api-run", args=[alices_run.pk]), HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and "Authorization: Bearer" in response.json()["error"]


def test_a_logged_in_session_cookie_alone_does_not_reach_the_api(alice, alices_run):
    """Why the API may be csrf_exempt: it never reads cookies, so another site's page cannot use them."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING)
    assert browser.get(reverse("api-runs")).status_code == 401
    assert browser.post(reverse("api-run-commands", args=[alices_run.pk]), {"kind": "stop"}).status_code == 401
    assert not Command.objects.exists()


def test_session_views_keep_csrf_protection(alice, alices_run):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(reverse("api-token-create"), {"name": "x"}).status_code == 403
    assert browser.post(reverse("share-link-create", args=[alices_run.pk]), {}).status_code == 403
    assert browser.post(reverse("team-create"), {"name": "x"}).status_code == 403


def test_the_run_list_and_detail(client, alice, long_run):
    token = api_token(alice)
    runs = client.get(reverse("api-runs"), **bearer(token)).json()["runs"]
    assert [(r["id"], r["owner"], r["status"], r["last_step"]) for r in runs] == [
        (long_run.pk, "alice", "running", 3000)
    ]
    assert client.get(reverse("api-runs") + "?status=finished", **bearer(token)).json()["runs"] == []
    detail = client.get(reverse("api-run", args=[long_run.pk]), **bearer(token)).json()
    assert detail["config"] == long_run.config and detail["can_control"] is True and detail["team"] is None


def test_metrics_since_a_step_come_whole_not_downsampled(client, alice, long_run, settings):
    settings.CHART_POINTS = 100
    token = api_token(alice)
    url = reverse("api-run-metrics", args=[long_run.pk])
    data = client.get(url + "?since=10", **bearer(token)).json()
    assert [p["step"] for p in data["points"]] == list(range(11, 3001))
    assert data["points"][0]["values"] == values(11) and data["next_since"] is None
    only = client.get(url + "?since=2990&keys=kl/ref", **bearer(token)).json()["points"]
    assert only[0] == {"step": 2991, "values": {"kl/ref": 0.01}}


def test_metrics_come_in_pages_a_script_follows_with_next_since(client, alice, long_run):
    token = api_token(alice)
    url = reverse("api-run-metrics", args=[long_run.pk])
    steps, since = [], 0
    while since is not None:
        page = client.get(f"{url}?since={since}&limit=1000", **bearer(token)).json()
        steps += [p["step"] for p in page["points"]]
        since = page["next_since"]
    assert steps == list(range(1, 3001))


def test_metrics_are_downsampled_when_asked(client, alice, long_run):
    token = api_token(alice)
    series = client.get(
        reverse("api-run-metrics", args=[long_run.pk]) + "?downsample=200&keys=reward/mean", **bearer(token)
    ).json()["series"]
    assert list(series) == ["reward/mean"] and len(series["reward/mean"]["steps"]) <= 202
    assert series["reward/mean"]["steps"][-1] == 3000


def test_events_since_a_step_or_after_an_id_and_by_kind(client, alice, long_run):
    token = api_token(alice)
    url = reverse("api-run-events", args=[long_run.pk])
    events = client.get(url + "?since=1000", **bearer(token)).json()["events"]
    assert [(e["step"], e["kind"]) for e in events] == [(2000, "reset"), (2500, "checkpoint")]
    resets = client.get(url + "?kind=reset", **bearer(token)).json()["events"]
    assert [e["step"] for e in resets] == [1000, 2000]
    after = client.get(f"{url}?after_id={resets[0]['id']}", **bearer(token)).json()["events"]
    assert [e["step"] for e in after] == [2000, 2500]


def test_alice_sends_a_command_as_json_and_sees_it_listed(client, alice, long_run):
    token = api_token(alice)
    url = reverse("api-run-commands", args=[long_run.pk])
    response = client.post(url, {"kind": "reset_reference"}, content_type="application/json", **bearer(token))
    assert response.status_code == 201
    command = response.json()["command"]
    assert (command["kind"], command["requested_by"], command["state"]) == ("reset_reference", "alice", "pending")
    assert Command.objects.get().requested_by == alice
    listed = client.get(url, **bearer(token)).json()["commands"]
    assert [c["id"] for c in listed] == [command["id"]]


def test_a_form_encoded_command_works_too(client, alice, long_run):
    token = api_token(alice)
    response = client.post(reverse("api-run-commands", args=[long_run.pk]), {"kind": "pause"}, **bearer(token))
    assert response.status_code == 201 and Command.objects.get().kind == "pause"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (RunStatus.FINISHED, "stop"),
        (RunStatus.QUEUED, "pause"),
        (RunStatus.RUNNING, "resume"),
        (RunStatus.PAUSED, "pause"),
    ],
)
def test_a_command_the_run_cannot_take_is_refused_with_the_reason(client, alice, alices_run, status, kind):
    Run.objects.filter(pk=alices_run.pk).update(status=status)
    response = client.post(
        reverse("api-run-commands", args=[alices_run.pk]),
        {"kind": kind},
        content_type="application/json",
        **bearer(api_token(alice)),
    )
    assert response.status_code == 409
    assert f"#{alices_run.pk}" in response.json()["error"] and status in response.json()["error"]
    assert not Command.objects.exists()


def test_an_unknown_command_is_refused(client, alice, long_run):
    response = client.post(
        reverse("api-run-commands", args=[long_run.pk]),
        {"kind": "explode"},
        content_type="application/json",
        **bearer(api_token(alice)),
    )
    assert response.status_code == 400 and "save_checkpoint" in response.json()["error"]


def test_the_api_refuses_other_methods(client, alice, long_run):
    token = api_token(alice)
    assert client.post(reverse("api-run", args=[long_run.pk]), **bearer(token)).status_code == 405
    assert client.delete(reverse("api-run-commands", args=[long_run.pk]), **bearer(token)).status_code == 405
