"""A clone or a fork starts with its source's watchdog rules, editable in its form: Alice's clone and
fork copy her rules and where they notify; Bob, a viewer in her team, clones the rules but not her
webhook or address (a webhook URL is a secret); a run without rules gives a clone none (not the
defaults). The copies are rows of their own: editing them leaves the source's alone."""

from __future__ import annotations

import pytest
from access_testing import team_of
from django.urls import reverse
from studio_testing import form_data

from studio.models import Checkpoint, Run, RunStatus, Watchdog
from studio.watchdogs import parse_rules, save_rules

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.example.org/services/T000/B000/secret"
RULES = "kl/ref above 0.1 for 5 steps -> pause\nno new step for 10 minutes -> notify"


@pytest.fixture
def watched(alice, alices_run) -> Run:
    save_rules(alices_run, parse_rules(RULES), HOOK, "alice@example.org", alice)
    return alices_run


def watchdog_fields(response) -> tuple[str, str, str]:
    form = response.context["form"]
    return form["watchdogs"].value(), form["watchdog_webhook"].value(), form["watchdog_email"].value()


def rules_of(run: Run) -> list[tuple[str, str, str]]:
    return [(w.text, w.webhook_url, w.email) for w in Watchdog.objects.filter(run=run)]


def test_alices_clone_starts_with_her_rules_and_launches_with_what_she_edited(
    client, alice, watched, queued, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    page = client.get(reverse("run-clone", args=[watched.pk]))
    assert watchdog_fields(page) == (RULES, HOOK, "alice@example.org")
    assert "kl/ref above 0.1 for 5 steps -&gt; pause" in page.content.decode()  # in the form's textarea
    edited = RULES.replace("0.1 for 5", "0.2 for 5")
    fields = form_data(name="clone", watchdogs=edited, watchdog_webhook=HOOK, watchdog_email="alice@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("run-new") + f"?clone_of={watched.pk}", fields)
    clone = Run.objects.get(name="clone")
    assert queued == [clone.pk] and clone.cloned_from == watched
    assert rules_of(clone) == [(line, HOOK, "alice@example.org") for line in edited.splitlines()]
    assert rules_of(watched) == [(line, HOOK, "alice@example.org") for line in RULES.splitlines()]


def test_bob_clones_the_rules_but_not_the_webhook_or_the_address(client, alice, bob, watched):
    Run.objects.filter(pk=watched.pk).update(team=team_of(alice, (bob, "viewer")))
    client.force_login(bob)
    page = client.get(reverse("run-clone", args=[watched.pk]))
    assert watchdog_fields(page) == (RULES, "", "")
    assert HOOK not in page.content.decode() and "alice@example.org" not in page.content.decode()


def test_a_run_without_rules_gives_its_clone_none(client, alice, alices_run):
    client.force_login(alice)
    assert watchdog_fields(client.get(reverse("run-clone", args=[alices_run.pk]))) == ("", "", "")
    assert "policy/entropy below 0.05" in watchdog_fields(client.get(reverse("run-new")))[0]  # a new run: defaults


def test_alices_fork_starts_with_her_rules_and_keeps_them_as_its_own(
    client, alice, watched, queued, django_capture_on_commit_callbacks
):
    Run.objects.filter(pk=watched.pk).update(status=RunStatus.FINISHED, last_step=8)
    checkpoint = Checkpoint.objects.create(run=watched, step=8, path="/runs/1/checkpoints/step-000008")
    client.force_login(alice)
    page = client.get(reverse("run-fork", args=[watched.pk]))
    assert watchdog_fields(page) == (RULES, HOOK, "alice@example.org")
    assert 'id="group-watchdogs"' in page.content.decode()
    fields = form_data(name="fork", steps=20, checkpoint=checkpoint.pk, watchdogs=RULES, watchdog_webhook=HOOK)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("run-fork", args=[watched.pk]), fields)
    fork = Run.objects.get(name="fork")
    assert queued == [fork.pk] and fork.parent_checkpoint == checkpoint
    assert rules_of(fork) == [(line, HOOK, "") for line in RULES.splitlines()]  # she cleared the address
    parents = set(Watchdog.objects.filter(run=watched).values_list("pk", flat=True))
    assert parents.isdisjoint(Watchdog.objects.filter(run=fork).values_list("pk", flat=True))
    assert rules_of(watched) == [(line, HOOK, "alice@example.org") for line in RULES.splitlines()]
