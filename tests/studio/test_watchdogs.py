"""Watchdogs: the rule language, when a rule fires (once, then re-armed), its actions through the
command path, its notifications (a webhook receiver on loopback, Django's outbox), the stale-run
check, and who may edit the rules of a run."""

from __future__ import annotations

import time

import pytest
from access_testing import team_of
from django.core import mail
from django.db import transaction
from django.urls import reverse
from studio_testing import Receiver, form_data, rule_on

from studio import watchdogs
from studio.models import Command, Event, Run, RunStatus, Watchdog
from studio.payloads import point_payload
from studio.watchdogs import DEFAULT_RULES, RunWatchdogs, check_stale, deliver, parse_rule, parse_rules, save_rules

pytestmark = pytest.mark.django_db


def points(metric: str, values: list[float | None], first: int = 1) -> list:
    return [point_payload(first + i, {metric: v}) for i, v in enumerate(values)]


# --- the rule language ----------------------------------------------------------------------------


def test_a_rule_reads_as_it_is_written_and_round_trips():
    rule = parse_rule("policy/entropy  below 0.05 for 20 steps -> pause")
    assert (rule.kind, rule.metric, rule.direction, rule.threshold, rule.for_steps, rule.action) == (
        "metric",
        "policy/entropy",
        "below",
        0.05,
        20,
        "pause",
    )
    assert rule.text == "policy/entropy below 0.05 for 20 steps -> pause"
    assert parse_rule("kl/ref > 0.1").text == "kl/ref above 0.1 -> notify"  # notify unless told
    assert parse_rule("no new step for 10 minutes -> reset reference").text == (
        "no new step for 10 minutes -> reset reference"
    )
    assert [r.text for r in parse_rules(DEFAULT_RULES)] == DEFAULT_RULES.splitlines()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("entropy is low", "is not a rule"),
        ("kl/ref above 0.1 -> explode", "the action is one of notify, pause, reset reference"),
        ("kl/ref above 0.1 for 0 steps", '"for N steps" takes N from 1'),
        ("no new step for 0 minutes", "minutes between 0.1 and"),
        ("kl/ref above 1e999", "finite number"),
    ],
)
def test_a_bad_rule_says_what_is_wrong(line, message):
    with pytest.raises(ValueError, match=message):
        parse_rule(line)


def test_comments_blank_lines_and_duplicates_are_dropped_and_rules_are_bounded():
    assert len(parse_rules("# mine\n\nkl/ref above 0.1\nkl/ref above 0.1\n")) == 1
    with pytest.raises(ValueError, match="at most 20 rules"):
        parse_rules("\n".join(f"kl/ref above {i}" for i in range(21)))


# --- firing on ingested points --------------------------------------------------------------------


def test_a_rule_fires_once_after_n_consecutive_steps_and_re_arms_when_the_condition_clears(alices_run):
    rule = rule_on(alices_run, "policy/entropy below 0.05 for 3 steps")
    dogs = RunWatchdogs(alices_run.pk)
    assert dogs.observe(points("policy/entropy", [0.01, 0.02])) == []
    assert Watchdog.objects.get(pk=rule.pk).streak == 2  # kept across batches
    # a step that did not log the metric neither counts nor breaks the streak
    fired = dogs.observe(points("policy/entropy", [None, 0.03, 0.04, 0.01], first=3))
    assert [(e.step, e.kind, e.data["value"]) for e in fired] == [(4, "watchdog", 0.03)]
    assert fired[0].data["condition"] == "policy/entropy below 0.05 for 3 steps"
    assert dogs.observe(points("policy/entropy", [0.5, 0.01, 0.01, 0.01], first=7)) != []  # re-armed by 0.5
    rule.refresh_from_db()
    assert (rule.fired_count, rule.last_fired_step, rule.tripped) == (2, 10, True)
    assert list(Event.objects.filter(run=alices_run, kind="watchdog").values_list("step", flat=True)) == [4, 10]


def test_an_above_rule_fires_at_the_first_step_over_its_threshold(alices_run):
    rule_on(alices_run, "length/truncated_frac above 0.5")
    fired = RunWatchdogs(alices_run.pk).observe(points("length/truncated_frac", [0.5, 0.2, 0.75]))
    assert [e.step for e in fired] == [3]  # 0.5 is not above 0.5


def test_a_pause_rule_sends_a_pause_command_on_behalf_of_its_author(alices_run, alice):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING)
    rule_on(alices_run, "kl/ref above 0.1 for 2 steps -> pause")
    (event,) = RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2, 0.3]))
    command = Command.objects.get(run=alices_run)
    assert (command.kind, command.requested_by, command.delivered_at) == ("pause", alice, None)
    assert event.data["command"] == command.pk and "not_taken" not in event.data


def test_a_reset_rule_sends_a_reset_reference_command(alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING)
    rule_on(alices_run, "kl/ref above 0.1 -> reset reference")
    RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2]))
    assert list(Command.objects.filter(run=alices_run).values_list("kind", flat=True)) == ["reset_reference"]


def test_an_action_the_run_cannot_take_is_recorded_not_raised(alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.PAUSED)
    rule_on(alices_run, "kl/ref above 0.1 -> pause")
    (event,) = RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2]))
    assert "already paused" in event.data["not_taken"] and not Command.objects.exists()


def test_a_rule_whose_author_may_no_longer_steer_the_run_takes_no_action(alice, bob, alices_run):
    team = team_of(alice, (bob, "editor"))
    Run.objects.filter(pk=alices_run.pk).update(team=team, status=RunStatus.RUNNING)
    save_rules(alices_run, [parse_rule("kl/ref above 0.1 -> pause")], "", "", bob)
    team.memberships.filter(user=bob).update(role="viewer")
    (event,) = RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2]))
    assert event.data["not_taken"] == "bob may no longer steer this run" and not Command.objects.exists()


def test_a_failing_rule_costs_the_run_nothing(alices_run, monkeypatch):
    rule_on(alices_run, "kl/ref above 0.1")
    monkeypatch.setattr(watchdogs, "fire", lambda *args: 1 / 0)
    assert RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2])) == []


def test_saving_unchanged_rules_keeps_their_state(alices_run, alice):
    rule = rule_on(alices_run, "kl/ref above 0.1 for 5 steps")
    Watchdog.objects.filter(pk=rule.pk).update(streak=3)
    save_rules(alices_run, parse_rules("kl/ref above 0.1 for 5 steps\nno new step for 5 minutes"), "", "", alice)
    assert Watchdog.objects.get(pk=rule.pk).streak == 3 and alices_run.watchdogs.count() == 2
    save_rules(alices_run, [], "", "", alice)
    assert not alices_run.watchdogs.exists()


# --- no new step ----------------------------------------------------------------------------------


def test_no_new_step_fires_once_for_a_silent_running_run_and_a_step_re_arms_it(alices_run):
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.RUNNING, last_step=7)
    rule = rule_on(alices_run, "no new step for 10 minutes")
    start = rule.last_step_at
    assert check_stale(now=start + 599) == []
    (event,) = check_stale(now=start + 601)
    assert (event.step, event.data["condition"], event.data["value"]) == (7, "no new step for 10 minutes", None)
    assert check_stale(now=start + 1200) == []  # fired once
    RunWatchdogs(alices_run.pk).observe(points("reward/mean", [0.1], first=8))
    rule.refresh_from_db()
    assert not rule.tripped and rule.last_step_at > start


def test_no_new_step_ignores_runs_that_are_not_running(alices_run):
    rule = rule_on(alices_run, "no new step for 1 minutes")
    Run.objects.filter(pk=alices_run.pk).update(status=RunStatus.PAUSED)
    assert check_stale(now=rule.last_step_at + 3600) == []


# --- notifications --------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def test_a_notify_rule_posts_slack_json_and_mails(alices_run, receiver, settings):
    settings.WATCHDOG_PRIVATE_WEBHOOKS = True
    settings.STUDIO_URL = "https://studio.example.org"
    rule = rule_on(alices_run, "kl/ref above 0.1", webhook_url=receiver.url, email="alice@example.org")
    text = watchdogs.notification_text(alices_run, rule, 4, 0.25)
    assert deliver(rule.pk, text) == "webhook answered 200; e-mailed 1 address"
    assert receiver.bodies == [
        {
            "text": f"Watchdog on run #{alices_run.pk} (alice's tiny run): kl/ref above 0.1 at step 4 (value 0.25); "
            f"action: notify. https://studio.example.org/runs/{alices_run.pk}/"
        }
    ]
    assert [(m.subject, m.to) for m in mail.outbox] == [("[ProRL Studio] kl/ref above 0.1", ["alice@example.org"])]
    assert Watchdog.objects.get(pk=rule.pk).last_delivery == "webhook answered 200; e-mailed 1 address"


@pytest.mark.django_db(transaction=True)  # the notifying thread reads the committed rule on its own connection
def test_a_firing_notifies_from_another_thread_once_its_event_is_committed(alices_run, receiver, settings, wait_for):
    settings.WATCHDOG_PRIVATE_WEBHOOKS = True
    rule = rule_on(alices_run, "kl/ref above 0.1", webhook_url=receiver.url)
    with transaction.atomic():  # as the sink's batch
        RunWatchdogs(alices_run.pk).observe(points("kl/ref", [0.2]))
        time.sleep(0.2)
        assert receiver.bodies == []  # nothing leaves before the commit
    wait_for(lambda: receiver.bodies, 10, "the webhook to be called")
    assert "kl/ref above 0.1 at step 1 (value 0.2)" in receiver.bodies[0]["text"]
    wait_for(lambda: Watchdog.objects.get(pk=rule.pk).last_delivery, 10, "the delivery to be recorded")
    assert Watchdog.objects.get(pk=rule.pk).last_delivery == "webhook answered 200"


def test_webhooks_to_private_addresses_are_refused_by_default(receiver, settings):
    settings.WATCHDOG_PRIVATE_WEBHOOKS = False
    assert watchdogs.post_webhook(receiver.url, "hi").startswith("webhook refused: 127.0.0.1 is a non-public address")
    assert receiver.bodies == []


# --- the forms and the page -----------------------------------------------------------------------


def test_the_run_form_offers_the_prorl_defaults_and_stores_the_rules_with_the_run(client, alice, queued, settings):
    client.force_login(alice)
    page = client.get(reverse("run-new")).content.decode()
    assert "policy/entropy below 0.05 for 20 steps -&gt; notify" in page
    data = form_data(
        watchdogs="kl/ref above 0.1 for 5 steps -> pause\nno new step for 10 minutes",
        watchdog_webhook="https://hooks.slack.com/services/T0/B0/x",
    )
    response = client.post(reverse("run-new"), data)
    run = Run.objects.get(name="a run")
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert [(w.text, w.webhook_url) for w in run.watchdogs.all()] == [
        ("kl/ref above 0.1 for 5 steps -> pause", "https://hooks.slack.com/services/T0/B0/x"),
        ("no new step for 10 minutes -> notify", "https://hooks.slack.com/services/T0/B0/x"),
    ]


def test_the_run_form_refuses_a_bad_rule_and_a_bad_webhook(client, alice, queued):
    client.force_login(alice)
    data = form_data(watchdogs="entropy is low", watchdog_webhook="ftp://example.org/x", watchdog_email="nobody")
    page = client.post(reverse("run-new"), data).content.decode()
    assert "&quot;entropy is low&quot; is not a rule" in page
    assert "an http:// or https:// URL" in page or "Enter a valid URL" in page
    assert "not an e-mail address" in page and queued == []


def test_alice_edits_the_rules_of_her_live_run_and_bob_as_viewer_only_reads_them(client, alice, bob, alices_run):
    team_of(alice, (bob, "viewer"))
    Run.objects.filter(pk=alices_run.pk).update(team=alice.memberships.get().team)
    url = reverse("run-watchdogs", args=[alices_run.pk])
    client.force_login(alice)
    response = client.post(url, {"rules": "kl/ref above 0.2 -> reset reference", "webhook_url": "", "email": ""})
    assert response.status_code == 302
    assert [w.text for w in alices_run.watchdogs.all()] == ["kl/ref above 0.2 -> reset reference"]
    client.force_login(bob)
    page = client.get(url).content.decode()
    assert "kl/ref above 0.2 -&gt; reset reference" in page and 'id="watchdog-form"' not in page
    assert client.post(url, {"rules": ""}).status_code == 403
    assert alices_run.watchdogs.count() == 1


def test_charlie_learns_nothing_of_alices_watchdogs(client, charlie, alices_run):
    client.force_login(charlie)
    assert client.get(reverse("run-watchdogs", args=[alices_run.pk])).status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_the_worker_sink_fires_a_rule_and_publishes_its_event_after_the_points(alices_run):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from worker.sink import StudioSink

    rule_on(alices_run, "kl/ref above 0.1 for 2 steps")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(alices_run.group_name, channel)
    sink = StudioSink(alices_run)
    for step, kl in enumerate([0.2, 0.3, 0.4], start=1):
        sink.metrics(step, {"kl/ref": kl})
    sink.close()
    (event,) = Event.objects.filter(run=alices_run, kind="watchdog")
    assert (event.step, event.data["value"]) == (2, 0.3)
    received = []
    while not any(m["type"] == "run.event" for m in received):
        received.append(async_to_sync(layer.receive)(channel))
    steps_before = [p["step"] for m in received if m["type"] == "run.metrics" for p in m["points"]]
    assert received[-1]["event"]["kind"] == "watchdog" and 2 in steps_before
