"""One 404 for missing and forbidden objects, with DEBUG on or off.

Charlie has no access to anything of Alice's. For every page, JSON endpoint and API endpoint that
takes an object's id or token, what he gets for Alice's object is byte for byte what he gets for an
id that does not exist: same status, same body; and the body is the same with DEBUG on (what
`make up` runs, where Django's debug page would print each exception's own message) and off.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from access_testing import api_token, bearer, fast_passwords, share, team_of  # noqa: F401 (a fixture)
from django.test import Client
from django.urls import reverse

from studio.models import Checkpoint, Comparison, Run, ShareLink, Team

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

MISSING = 10**9  # no object has this id


@pytest.fixture
def alices_things(alice, alices_run) -> dict:
    """Alice's run (with a checkpoint, in her team, forked from nothing), her team, her comparison."""
    team = team_of(alice)
    Run.objects.filter(pk=alices_run.pk).update(team=team)
    path = str(alices_run.run_dir / "checkpoints/step-000002")
    checkpoint = Checkpoint.objects.create(run=alices_run, step=2, path=path)
    comparison = Comparison.objects.create(
        owner=alice,
        entries=[{"label": "a", "path": checkpoint.path, "run": alices_run.pk, "checkpoint": checkpoint.pk, "step": 2}],
        settings={"n": 1, "ks": [1], "prompts": 1},
    )
    comparison.runs.set([alices_run])
    link = ShareLink.objects.create(run=alices_run, token_hash="0" * 64, created_by=alice)
    return {"run": alices_run.pk, "team": team.pk, "comparison": comparison.pk, "link": link.pk}


# (method, url name, the kinds of the ids in its arguments)
SESSION_URLS = [
    ("get", "run-detail", ("run",)),
    ("get", "run-metrics", ("run",)),
    ("get", "run-config-yaml", ("run",)),
    ("get", "run-clone", ("run",)),
    ("get", "run-fork", ("run",)),
    ("get", "run-parent-curves", ("run",)),
    ("get", "run-commands", ("run",)),
    ("get", "run-sharing", ("run",)),
    ("post", "run-pause", ("run",)),
    ("post", "run-set-team", ("run",)),
    ("post", "share-link-create", ("run",)),
    ("post", "share-link-revoke", ("run", "link")),
    ("get", "compare-detail", ("comparison",)),
    ("get", "compare-data", ("comparison",)),
    ("get", "team-detail", ("team",)),
    ("post", "team-member-add", ("team",)),
    ("post", "team-member-remove", ("team", "user")),
]
QUERY_URLS = [  # the id is in the query string
    ("run-new", "clone_of"),
    ("overlay", "run"),
    ("overlay-data", "run"),
]
API_URLS = ["api-run", "api-run-metrics", "api-run-events", "api-run-commands"]


def url_of(name: str, kinds: tuple[str, ...], ids: dict) -> str:
    return reverse(name, args=[ids[kind] for kind in kinds])


def answers(client: Client, method: str, url: str, **extra) -> tuple[int, bytes]:
    response = getattr(client, method)(url, **extra)
    return response.status_code, response.content


def both_ways(client: Client, settings, method: str, forbidden: str, missing: str, **extra) -> dict[bool, tuple]:
    """{debug: (status, body) of the forbidden object}, asserting the missing one answers the same."""
    seen = {}
    for debug in (False, True):
        settings.DEBUG = debug
        got = answers(client, method, forbidden, **extra)
        assert got == answers(client, method, missing, **extra), f"{forbidden} vs {missing} with DEBUG={debug}"
        seen[debug] = got
    return seen


@pytest.mark.parametrize("method,name,kinds", SESSION_URLS, ids=[name for _, name, _ in SESSION_URLS])
def test_charlie_gets_the_same_404_for_alices_object_and_a_missing_one(
    client, settings, charlie, alices_things, method, name, kinds
):
    client.force_login(charlie)
    ids = {**alices_things, "user": charlie.pk}
    forbidden = url_of(name, kinds, ids)
    missing = url_of(name, kinds, {kind: MISSING if kind != "user" else charlie.pk for kind in ids})
    seen = both_ways(client, settings, method, forbidden, missing)
    assert seen[False] == seen[True]
    status, body = seen[True]
    assert status == 404
    assert b"matches the given query" not in body and b"No such" not in body


@pytest.mark.parametrize("name,parameter", QUERY_URLS)
def test_an_id_in_the_query_string_gets_the_same_404(client, settings, charlie, alices_things, name, parameter):
    client.force_login(charlie)
    url = f"{reverse(name)}?{parameter}="
    seen = both_ways(client, settings, "get", f"{url}{alices_things['run']}", f"{url}{MISSING}")
    assert seen[False] == seen[True] and seen[True][0] == 404


@pytest.mark.parametrize("name", API_URLS)
def test_the_api_answers_the_same_json_404(client, settings, charlie, alices_things, name):
    headers = bearer(api_token(charlie))
    seen = both_ways(
        client, settings, "get", reverse(name, args=[alices_things["run"]]), reverse(name, args=[MISSING]), **headers
    )
    assert seen[False] == seen[True] == (404, b'{"error": "Not found."}')


def test_a_revoked_an_expired_and_an_unknown_share_link_look_the_same(client, settings, alices_run):
    revoked, expired = share(alices_run, revoked=True), share(alices_run, expires_in=timedelta(seconds=-1))
    for suffix in ("", "metrics.json"):
        urls = [reverse("share-detail", args=[token]) + suffix for token in (revoked, expired, "no-such-token")]
        for debug in (False, True):
            settings.DEBUG = debug
            bodies = {answers(client, "get", url) for url in urls}
            assert len(bodies) == 1 and next(iter(bodies))[0] == 404


def test_alice_still_gets_her_objects(client, alice, alices_things):
    """The forbidden URLs above exist: their owner is answered (so a 404 there is not a typo)."""
    client.force_login(alice)
    for method, name, kinds in SESSION_URLS:
        if method == "get" and name != "run-parent-curves":  # her run is no fork
            assert client.get(url_of(name, kinds, alices_things)).status_code == 200, name
    assert client.get(reverse("api-run", args=[alices_things["run"]]), **bearer(api_token(alice))).status_code == 200
    assert Team.objects.filter(pk=alices_things["team"]).exists()


def test_json_endpoints_answer_json_and_pages_the_studio_page(client, settings, charlie, alices_things):
    client.force_login(charlie)
    settings.DEBUG = True
    metrics = client.get(reverse("run-metrics", args=[alices_things["run"]]))
    assert metrics["Content-Type"] == "application/json" and metrics.json() == {"error": "Not found."}
    page = client.get(reverse("run-detail", args=[alices_things["run"]]))
    assert page["Content-Type"].startswith("text/html") and b"<h1>Not found</h1>" in page.content
    assert b"charlie" not in page.content  # rendered without the request: the same bytes for everyone


def test_a_url_that_matches_no_route_gets_the_studio_page_with_debug_off(client, settings):
    settings.DEBUG = False
    response = client.get("/no/such/page/")
    assert response.status_code == 404 and b"<h1>Not found</h1>" in response.content
