"""Who gets what, for every page, JSON endpoint, command, websocket and API endpoint of a run.

Alice owns a running run in her team; Bob is in the team as a viewer, then as an editor; Charlie is
in no team of hers and gets a 404 for everything, exactly as for a run that does not exist.
"""

from __future__ import annotations

import pytest
from access_testing import api_token, bearer, fast_passwords, share, team_of  # noqa: F401 (a fixture)
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from studio.models import Command, Membership, Run, RunStatus, ShareLink, TeamRole
from studio.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

PEOPLE = ("alice", "bob-viewer", "bob-editor", "charlie")


@pytest.fixture
def team_run(alices_run, alice, bob) -> Run:
    """Alice's run, running, in her team where Bob is a viewer."""
    team = team_of(alice, (bob, TeamRole.VIEWER))
    Run.objects.filter(pk=alices_run.pk).update(team=team, status=RunStatus.RUNNING)
    alices_run.refresh_from_db()
    return alices_run


@pytest.fixture
def people(alice, bob, charlie):
    def person(who: str):
        if who == "bob-editor":
            Membership.objects.filter(user=bob).update(role=TeamRole.EDITOR)
        return {"alice": alice, "bob-viewer": bob, "bob-editor": bob, "charlie": charlie}[who]

    return person


def table(rows: list[tuple[str, tuple[int, int, int, int]]]) -> list:
    """(url name, statuses for Alice, Bob as viewer, Bob as editor, Charlie) -> one case per person."""
    return [
        pytest.param(name, who, status, id=f"{name}-{who}")
        for name, statuses in rows
        for who, status in zip(PEOPLE, statuses, strict=True)
    ]


def run_url(name: str, run: Run) -> str:
    if name == "team-detail":
        return reverse(name, args=[run.team_id])
    return reverse(name, args=[run.pk])


PAGES = table(
    [
        ("run-detail", (200, 200, 200, 404)),
        ("run-metrics", (200, 200, 200, 404)),
        ("run-config-yaml", (200, 200, 200, 404)),
        ("run-clone", (200, 200, 200, 404)),
        ("run-commands", (200, 200, 200, 404)),
        ("run-sharing", (200, 403, 403, 404)),
        ("team-detail", (200, 200, 200, 404)),
    ]
)


@pytest.mark.parametrize(("name", "who", "status"), PAGES)
def test_each_person_gets_the_pages_of_alices_run_they_may_see(client, team_run, people, name, who, status):
    client.force_login(people(who))
    assert client.get(run_url(name, team_run)).status_code == status


@pytest.mark.parametrize("name", ["run-detail", "run-metrics", "run-config-yaml", "run-clone", "run-sharing"])
def test_charlie_cannot_tell_alices_run_from_a_run_that_does_not_exist(client, team_run, charlie, name):
    client.force_login(charlie)
    missing = client.get(reverse(name, args=[team_run.pk + 1000]))
    hers = client.get(reverse(name, args=[team_run.pk]))
    assert (hers.status_code, hers.content) == (missing.status_code, missing.content) == (404, missing.content)


@pytest.mark.parametrize(("who", "controls"), [("alice", True), ("bob-viewer", False), ("bob-editor", True)])
def test_the_run_page_shows_control_buttons_only_to_those_who_may_steer(client, team_run, people, who, controls):
    client.force_login(people(who))
    page = client.get(reverse("run-detail", args=[team_run.pk])).content.decode()
    assert (f'action="{reverse("run-stop", args=[team_run.pk])}"' in page) is controls
    assert (f'action="{reverse("run-reset-reference", args=[team_run.pk])}"' in page) is controls


COMMANDS = [
    ("run-reset-reference", RunStatus.RUNNING),
    ("run-pause", RunStatus.RUNNING),
    ("run-resume", RunStatus.PAUSED),
    ("run-stop", RunStatus.RUNNING),
    ("run-save-checkpoint", RunStatus.RUNNING),
]


@pytest.mark.parametrize(("name", "run_status"), COMMANDS)
@pytest.mark.parametrize(
    ("who", "status", "sent"),
    [("alice", 302, True), ("bob-viewer", 403, False), ("bob-editor", 302, True), ("charlie", 404, False)],
)
def test_only_alice_and_editors_send_commands_from_the_run_page(
    client, team_run, people, name, run_status, who, status, sent
):
    Run.objects.filter(pk=team_run.pk).update(status=run_status)
    client.force_login(people(who))
    assert client.post(reverse(name, args=[team_run.pk])).status_code == status
    assert Command.objects.filter(run=team_run).exists() is sent


MANAGEMENT = table(
    [
        ("share-link-create", (200, 403, 403, 404)),
        ("run-set-team", (302, 403, 403, 404)),
        ("share-link-revoke", (302, 403, 403, 404)),
        ("team-member-add", (302, 403, 403, 404)),
        ("team-member-role", (302, 403, 403, 404)),
    ]
)


@pytest.mark.parametrize(("name", "who", "status"), MANAGEMENT)
def test_only_alice_manages_her_runs_sharing_and_her_team(client, team_run, people, charlie, name, who, status):
    share(team_run)
    link = ShareLink.objects.get(run=team_run)
    bob = Membership.objects.get(team=team_run.team, role=TeamRole.VIEWER).user
    args, data = {
        "share-link-create": ([team_run.pk], {"label": "for the paper"}),
        "run-set-team": ([team_run.pk], {"team": ""}),
        "share-link-revoke": ([team_run.pk, link.pk], {}),
        "team-member-add": ([team_run.team_id], {"username": "charlie", "role": "viewer"}),
        "team-member-role": ([team_run.team_id, bob.pk], {"role": "owner"}),
    }[name]
    url = reverse(name, args=args)
    client.force_login(people(who))
    assert client.post(url, data).status_code == status
    changed = {
        "share-link-create": lambda: ShareLink.objects.filter(run=team_run).count() == 2,
        "run-set-team": lambda: Run.objects.get(pk=team_run.pk).team_id is None,
        "share-link-revoke": lambda: ShareLink.objects.get(pk=link.pk).revoked_at is not None,
        "team-member-add": lambda: Membership.objects.filter(user=charlie).exists(),
        "team-member-role": lambda: Membership.objects.get(user=bob).role == TeamRole.OWNER,
    }[name]()
    assert changed is (who == "alice")


def test_the_run_list_shows_alices_team_run_to_bob_and_not_to_charlie(client, team_run, bob, charlie):
    client.force_login(bob)
    assert "alice&#x27;s tiny run" in client.get(reverse("run-list")).content.decode()
    client.force_login(charlie)
    assert "alice&#x27;s tiny run" not in client.get(reverse("run-list")).content.decode()


@pytest.mark.parametrize("name", ["run-detail", "run-metrics", "run-sharing", "team-detail"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, team_run, name):
    response = client.get(run_url(name, team_run))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


# --- the JSON API, with each person's own token ---------------------------------------------------

API = table(
    [
        ("api-run", (200, 200, 200, 404)),
        ("api-run-metrics", (200, 200, 200, 404)),
        ("api-run-events", (200, 200, 200, 404)),
        ("api-run-commands", (200, 200, 200, 404)),
    ]
)


@pytest.mark.parametrize(("name", "who", "status"), API)
def test_each_person_gets_the_api_endpoints_of_alices_run_they_may_see(client, team_run, people, name, who, status):
    token = api_token(people(who))
    assert client.get(reverse(name, args=[team_run.pk]), **bearer(token)).status_code == status


@pytest.mark.parametrize(
    ("who", "status"), [("alice", 201), ("bob-viewer", 403), ("bob-editor", 201), ("charlie", 404)]
)
def test_only_alice_and_editors_send_commands_through_the_api(client, team_run, people, who, status):
    token = api_token(people(who))
    response = client.post(
        reverse("api-run-commands", args=[team_run.pk]),
        {"kind": "save_checkpoint"},
        content_type="application/json",
        **bearer(token),
    )
    assert response.status_code == status, response.content
    assert Command.objects.filter(run=team_run).exists() is (status == 201)


@pytest.mark.parametrize(("who", "listed"), [("alice", True), ("bob-viewer", True), ("charlie", False)])
def test_the_api_lists_alices_run_to_alice_and_bob_only(client, team_run, people, who, listed):
    runs = client.get(reverse("api-runs"), **bearer(api_token(people(who)))).json()["runs"]
    assert (team_run.pk in [run["id"] for run in runs]) is listed


def test_charlies_api_404_for_alices_run_reads_as_for_a_missing_run(client, team_run, charlie):
    token = api_token(charlie)
    hers = client.get(reverse("api-run", args=[team_run.pk]), **bearer(token)).json()["error"]
    missing = client.get(reverse("api-run", args=[team_run.pk + 1000]), **bearer(token)).json()["error"]
    assert hers.replace(str(team_run.pk), "N") == missing.replace(str(team_run.pk + 1000), "N")


# --- the websocket --------------------------------------------------------------------------------


def ws_connects(user, run: Run, query: str = "") -> tuple[bool, int | None]:
    async def scenario():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after=0{query}")
        communicator.scope["user"] = user
        connected, code = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected, code

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
@pytest.mark.parametrize(
    ("who", "connects"), [("alice", True), ("bob-viewer", True), ("bob-editor", True), ("charlie", False)]
)
def test_each_person_may_open_the_runs_websocket_only_if_they_may_see_it(team_run, people, who, connects):
    connected, code = ws_connects(people(who), team_run)
    assert connected is connects
    if not connects:
        assert code == 4403


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_an_anonymous_websocket_needs_a_share_link_of_this_very_run(team_run, alice):
    other = Run.objects.create(owner=alice, name="another", config=team_run.config, total_steps=6)
    assert ws_connects(AnonymousUser(), team_run) == (False, 4403)
    assert ws_connects(AnonymousUser(), team_run, "&share=" + share(other))[0] is False
    assert ws_connects(AnonymousUser(), team_run, "&share=not-a-token")[0] is False
    assert ws_connects(AnonymousUser(), team_run, "&share=" + share(team_run))[0] is True
