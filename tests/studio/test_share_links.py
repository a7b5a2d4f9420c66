"""Share links: Alice makes one for her run; whoever holds it sees the live page read-only, without
logging in, until she revokes it or it expires. Only the token's hash is stored."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import timedelta

import pytest
from access_testing import fast_passwords, share  # noqa: F401 (a fixture)
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from studio.models import Checkpoint, Command, Event, MetricPoint, Run, RunStatus, ShareLink
from studio.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def running_run(alices_run) -> Run:
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": s / 10}) for s in range(1, 4)
    )
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING, last_step=3)
    alices_run.refresh_from_db()
    return alices_run


def test_alice_makes_a_link_that_is_shown_once_and_stored_only_as_a_hash(client, alice, running_run):
    client.force_login(alice)
    response = client.post(
        reverse("share-link-create", args=[running_run.pk]), {"label": "for Dana", "expires_in_days": "7"}
    )
    page = response.content.decode()
    token = re.search(r"/s/([A-Za-z0-9_-]{43})/", page).group(1)
    link = ShareLink.objects.get(run=running_run)
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(ShareLink.objects.filter(pk=link.pk).values().get())
    assert link.label == "for Dana" and link.created_by == alice
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    assert token not in client.get(reverse("run-sharing", args=[running_run.pk])).content.decode()


def test_a_link_without_expiry_never_expires_and_two_links_differ(client, alice, running_run):
    client.force_login(alice)
    pages = [client.post(reverse("share-link-create", args=[running_run.pk]), {}).content.decode() for _ in "ab"]
    tokens = {re.search(r"/s/([A-Za-z0-9_-]{43})/", page).group(1) for page in pages}
    assert len(tokens) == 2
    assert list(ShareLink.objects.values_list("expires_at", flat=True)) == [None, None]


def test_a_bad_expiry_is_refused_with_a_message(client, alice, running_run):
    client.force_login(alice)
    response = client.post(reverse("share-link-create", args=[running_run.pk]), {"expires_in_days": "0"})
    assert response.status_code == 400 and not ShareLink.objects.exists()
    assert "greater than or equal to 1" in response.content.decode()


def test_an_anonymous_visitor_with_the_link_sees_the_live_page_without_any_control(client, running_run):
    token = share(running_run)
    response = client.get(reverse("share-detail", args=[token]))
    page = response.content.decode()
    assert response.status_code == 200 and "alice&#x27;s tiny run" in page
    assert 'data-metric="reward/mean"' in page
    assert f'data-metrics-url="{reverse("share-metrics", args=[token])}"' in page
    assert f'data-ws-query="&amp;share={token}"' in page
    assert "<button" not in page and "<form" not in page and "csrfmiddlewaretoken" not in page
    assert reverse("run-config-yaml", args=[running_run.pk]) not in page
    assert response["Referrer-Policy"] == "no-referrer"


def test_alice_herself_gets_no_buttons_on_her_share_link(client, alice, running_run):
    client.force_login(alice)
    page = client.get(reverse("share-detail", args=[share(running_run)])).content.decode()
    assert "<button" not in page and reverse("run-stop", args=[running_run.pk]) not in page


def test_the_link_serves_the_runs_curves(client, running_run):
    data = client.get(reverse("share-metrics", args=[share(running_run)])).json()
    assert data["series"]["reward/mean"]["steps"] == [1, 2, 3] and data["status"] == "running"


def test_an_anonymous_visitor_cannot_steer_the_run_with_or_without_the_link(client, running_run):
    token = share(running_run)
    for name in ["run-stop", "run-reset-reference", "run-pause", "run-save-checkpoint"]:
        response = client.post(reverse(name, args=[running_run.pk]), {"share": token})
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert client.post(reverse("share-detail", args=[token])).status_code == 405
    api = client.post(
        reverse("api-run-commands", args=[running_run.pk]), {"kind": "stop"}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert api.status_code == 401
    assert not Command.objects.exists()


@pytest.mark.parametrize("link", ["revoked", "expired", "unknown"])
def test_a_revoked_expired_or_unknown_link_is_a_404(client, running_run, link):
    token = {
        "revoked": lambda: share(running_run, revoked=True),
        "expired": lambda: share(running_run, expires_in=timedelta(seconds=-1)),
        "unknown": lambda: "x" * 43,
    }[link]()
    assert client.get(reverse("share-detail", args=[token])).status_code == 404
    assert client.get(reverse("share-metrics", args=[token])).status_code == 404


def test_alice_revokes_a_link_and_it_stops_working(client, alice, running_run):
    token = share(running_run)
    link = ShareLink.objects.get()
    assert client.get(reverse("share-detail", args=[token])).status_code == 200
    client.force_login(alice)
    response = client.post(reverse("share-link-revoke", args=[running_run.pk, link.pk]))
    assert response.status_code == 302
    client.logout()
    assert client.get(reverse("share-detail", args=[token])).status_code == 404
    client.force_login(alice)
    page = client.get(reverse("run-sharing", args=[running_run.pk])).content.decode()
    assert "revoked" in page


def test_the_sharing_page_lists_links_with_their_state(client, alice, running_run):
    share(running_run)
    share(running_run, revoked=True)
    share(running_run, expires_in=timedelta(seconds=-1))
    client.force_login(alice)
    page = client.get(reverse("run-sharing", args=[running_run.pk])).content.decode()
    assert page.count(">active<") == 1 and page.count(">expired<") == 1 and page.count("revoked ") == 1
    assert page.count(">Revoke</button>") == 2


def test_a_link_to_another_runs_share_url_cannot_be_revoked_through_alices_run(client, alice, running_run):
    other = Run.objects.create(owner=alice, name="other", config=running_run.config, total_steps=6)
    share(other)
    client.force_login(alice)
    link = ShareLink.objects.get(run=other)
    assert client.post(reverse("share-link-revoke", args=[running_run.pk, link.pk])).status_code == 404


# --- the websocket, authorised by the token -------------------------------------------------------


def communicator(run: Run, token: str) -> WebsocketCommunicator:
    c = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after=0&share={token}")
    c.scope["user"] = AnonymousUser()
    return c


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_the_links_websocket_sends_the_curves_and_closes_when_alice_revokes_it(client, alice, running_run):
    token = share(running_run)
    link = ShareLink.objects.get()

    client.force_login(alice)

    def revoke():
        try:
            client.post(reverse("share-link-revoke", args=[running_run.pk, link.pk]))
        finally:
            connection.close()

    async def scenario():
        ws = communicator(running_run, token)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["kind"] == "metrics" and [p["step"] for p in first["points"]] == [1, 2, 3]
        await asyncio.get_running_loop().run_in_executor(None, revoke)
        while True:
            message = await ws.receive_output(timeout=5)
            if message["type"] == "websocket.close":
                assert message["code"] == 4403
                break
        assert await communicator(running_run, token).connect() == (False, 4403)

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_a_revoked_or_expired_link_opens_no_websocket(running_run, state):
    token = (
        share(running_run, revoked=True) if state == "revoked" else share(running_run, expires_in=timedelta(seconds=-1))
    )
    assert async_to_sync(communicator(running_run, token).connect)() == (False, 4403)


# --- what a link shows: the run's progress, not the studio's file system ---------------------------

CHECKPOINT_PATH = "/srv/prorl/runs/17/checkpoints/step-000003"


def checkpointed(run: Run) -> Run:
    Event.objects.create(run=run, step=3, kind="checkpoint", data={"path": CHECKPOINT_PATH}, time=0.0)
    Checkpoint.objects.create(run=run, step=3, path=CHECKPOINT_PATH)
    return run


def test_the_shared_page_names_checkpoints_without_their_server_paths(client, alice, running_run):
    token = share(checkpointed(running_run))
    page = client.get(reverse("share-detail", args=[token])).content.decode()
    assert "step 3" in page and "checkpoint" in page
    assert CHECKPOINT_PATH not in page
    client.force_login(alice)
    assert CHECKPOINT_PATH in client.get(reverse("run-detail", args=[running_run.pk])).content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_the_links_websocket_sends_events_without_server_paths(running_run):
    token = share(checkpointed(running_run))

    async def scenario():
        ws = communicator(running_run, token)
        assert (await ws.connect())[0]
        event = await ws.receive_json_from(timeout=5)
        assert event["kind"] == "event" and event["event"]["kind"] == "checkpoint"
        assert event["event"]["data"] == {} and CHECKPOINT_PATH not in str(event)
        await ws.disconnect()

    async_to_sync(scenario)()
