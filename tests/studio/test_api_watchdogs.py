"""A run's watchdogs in the JSON API: Alice (owner) reads them with where they notify and replaces
them; Bob, a viewer in her team, reads the rules but not their webhook, and may not change them;
Charlie, outside the team, gets the 404 of a missing run. Bad bodies are refused with one error per
problem, each naming its field."""

from __future__ import annotations

import json

import pytest
from access_testing import api_token, bearer, fast_passwords, team_of  # noqa: F401 (a fixture)
from django.urls import reverse

from studio.models import Run, Watchdog
from studio.watchdogs import parse_rules, save_rules

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

HOOK = "https://hooks.example.org/services/T000/B000/secret"
RULES = "kl/ref above 0.1 for 5 steps -> pause\nno new step for 10 minutes -> notify"


@pytest.fixture
def watched(alice, bob, alices_run) -> Run:
    """Alice's run in her team (Bob a viewer), with two rules that notify a webhook and an address."""
    Run.objects.filter(pk=alices_run.pk).update(team=team_of(alice, (bob, "viewer")))
    save_rules(alices_run, parse_rules(RULES), HOOK, "alice@example.org", alice)
    Watchdog.objects.filter(run=alices_run, kind="metric").update(fired_count=1, last_fired_step=7, tripped=True)
    return alices_run


def url(run: Run) -> str:
    return reverse("api-run-watchdogs", args=[run.pk])


def put(client, run: Run, user, body) -> tuple[int, dict]:
    text = body if isinstance(body, str) else json.dumps(body)
    response = client.put(url(run), text, content_type="application/json", **bearer(api_token(user)))
    return response.status_code, response.json()


def test_alice_reads_her_runs_rules_their_state_and_where_they_notify(client, alice, watched):
    data = client.get(url(watched), **bearer(api_token(alice))).json()
    assert (data["run"], data["can_edit"], data["webhook_url"], data["email"]) == (
        watched.pk,
        True,
        HOOK,
        "alice@example.org",
    )
    pause, stale = data["rules"]
    assert {k: pause[k] for k in ("text", "kind", "metric", "direction", "threshold", "for_steps", "action")} == {
        "text": "kl/ref above 0.1 for 5 steps -> pause",
        "kind": "metric",
        "metric": "kl/ref",
        "direction": "above",
        "threshold": 0.1,
        "for_steps": 5,
        "action": "pause",
    }
    assert (pause["fired_count"], pause["last_fired_step"], pause["tripped"], pause["webhook_url"]) == (
        1,
        7,
        True,
        HOOK,
    )
    assert (stale["kind"], stale["stale_minutes"], stale["condition"]) == ("stale", 10.0, "no new step for 10 minutes")


def test_bob_reads_the_rules_but_not_their_secret_webhook_and_may_not_change_them(client, bob, watched):
    data = client.get(url(watched), **bearer(api_token(bob))).json()
    assert data["can_edit"] is False and [r["text"] for r in data["rules"]] == RULES.splitlines()
    assert HOOK not in json.dumps(data) and "alice@example.org" not in json.dumps(data)
    assert "last_delivery" not in data["rules"][0]
    status, body = put(client, watched, bob, {"rules": []})
    assert status == 403 and body["error"].startswith(f"bob may see run {watched.pk} but not change its watchdogs")
    assert Watchdog.objects.filter(run=watched).count() == 2


def test_charlie_gets_the_404_of_a_missing_run(client, charlie, watched):
    assert client.get(url(watched), **bearer(api_token(charlie))).status_code == 404
    assert put(client, watched, charlie, {"rules": []})[0] == 404


def test_alice_replaces_the_rules_and_keeps_the_destinations_she_leaves_out(client, alice, watched):
    kept = Watchdog.objects.get(run=watched, kind="stale").pk
    status, data = put(
        client, watched, alice, {"rules": ["policy/entropy below 0.05 for 20 steps", RULES.split("\n")[1]]}
    )
    assert status == 200
    assert [r["text"] for r in data["rules"]] == [
        "no new step for 10 minutes -> notify",  # unchanged: the same row, its state kept
        "policy/entropy below 0.05 for 20 steps -> notify",
    ]
    assert data["rules"][0]["id"] == kept and (data["webhook_url"], data["email"]) == (HOOK, "alice@example.org")
    status, data = put(client, watched, alice, {"rules": "", "webhook_url": "", "email": ""})
    assert status == 200 and data["rules"] == [] and not Watchdog.objects.filter(run=watched).exists()


def test_bad_rules_and_a_bad_webhook_are_refused_each_with_its_field(client, alice, watched):
    status, data = put(
        client, watched, alice, {"rules": ["kl/ref above 0.1 -> explode", "entropy is low"], "webhook_url": "ftp://x"}
    )
    assert status == 400
    assert [(e["field"], e["message"].split(":")[0]) for e in data["errors"]] == [
        ("rules", '"kl/ref above 0.1 -> explode"'),
        ("rules", '"entropy is low" is not a rule. One rule a line'),
        ("webhook_url", "Enter a valid URL."),
    ]
    assert "the action is one of notify, pause, reset reference" in data["errors"][0]["message"]
    assert [w.text for w in Watchdog.objects.filter(run=watched)] == RULES.splitlines()  # nothing changed


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"rules": 5}, [{"field": "rules", "message": "must be text or a list of lines"}]),
        ({"rules": ["kl/ref above 0.1", 3]}, [{"field": "rules", "message": "must be text or a list of lines"}]),
        ({"email": ["a@example.org"]}, [{"field": "email", "message": "must be text"}]),
        (
            {"webhook": HOOK},
            [{"field": "webhook", "message": "is not a watchdog field (use rules, webhook_url, email)"}],
        ),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_with_what_is_wrong(client, alice, watched, body, errors):
    assert put(client, watched, alice, body) == (400, {"errors": errors})


def test_a_body_that_is_not_a_json_object_is_a_400(client, alice, watched):
    status, data = put(client, watched, alice, "[1, 2]")
    assert status == 400 and "must be a JSON object" in json.dumps(data)
    assert client.post(url(watched), {}, **bearer(api_token(alice))).status_code == 405
