"""What became of Alice's commands, read back from the events the engine logged for them, on the
database the tests run on (PostgreSQL where one answers, else SQLite: run this file with
DATABASE_URL=sqlite:///... to test the other one). The engine logs a command's id as text (its
Command.id is a str) and other writers as a number: both are found, and nothing else is."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from studio.commands import Outcome, outcomes
from studio.models import Command, Event, Run, RunStatus

pytestmark = pytest.mark.django_db


def command_event(run: Run, step: int, command_id, kind: str = "pause") -> Event:
    return Event.objects.create(
        run=run, step=step, kind="command", data={"kind": kind, "requested_by": "alice", "id": command_id}, time=0.0
    )


@pytest.fixture
def commands(alice, alices_run) -> list[Command]:
    """Four commands of Alice's: applied (id logged as a number), applied (id logged as text),
    handed to the trainer, and still waiting."""
    from django.utils import timezone

    made = [Command.objects.create(run=alices_run, kind=Command.Kind.PAUSE, requested_by=alice) for _ in range(4)]
    Command.objects.filter(pk__in=[c.pk for c in made[:3]]).update(delivered_at=timezone.now())
    command_event(alices_run, 7, made[0].pk)
    command_event(alices_run, 9, str(made[1].pk))
    return [Command.objects.get(pk=c.pk) for c in made]


def test_outcomes_read_ids_logged_as_numbers_and_as_text(alices_run, commands):
    found = outcomes(alices_run, commands)
    assert [found[c.pk] for c in commands] == [
        Outcome("applied", 7),
        Outcome("applied", 9),
        Outcome("delivered"),
        Outcome("pending"),
    ], connection.vendor


def test_an_event_of_another_run_or_kind_applies_nothing(alice, alices_run, commands):
    other = Run.objects.create(owner=alice, name="other", config=alices_run.config, total_steps=5)
    command_event(other, 3, commands[2].pk)  # same id, other run
    Event.objects.create(run=alices_run, step=4, kind="reset", data={"id": commands[3].pk}, time=0.0)
    found = outcomes(alices_run, commands)
    assert (found[commands[2].pk], found[commands[3].pk]) == (Outcome("delivered"), Outcome("pending"))


def test_the_first_application_counts_when_an_id_is_logged_twice(alices_run, commands):
    command_event(alices_run, 12, commands[0].pk)
    assert outcomes(alices_run, commands)[commands[0].pk] == Outcome("applied", 7)


def test_the_reloaded_run_page_says_where_each_command_was_applied(client, alice, alices_run, commands):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING)
    client.force_login(alice)
    page = client.get(reverse("run-detail", args=[alices_run.pk])).content.decode()
    assert page.count("applied at step 7") == 1 and page.count("applied at step 9") == 1
    assert page.count("handed to the trainer") == 1 and page.count("waiting for the trainer") == 1
    listed = client.get(reverse("run-commands", args=[alices_run.pk])).json()["commands"]
    assert sorted((c["id"], c["state"], c["step"]) for c in listed) == [
        (commands[0].pk, "applied", 7),
        (commands[1].pk, "applied", 9),
        (commands[2].pk, "delivered", None),
        (commands[3].pk, "pending", None),
    ]
