"""A pause or reset rule that trips in a run's very first batch of points, while the run row still
says "queued" (a worker holds its lease, the engine's "running" status is in the same batch), acts:
its command is queued like any other and the trainer applies it at its next step boundary. A queued
run that no worker has taken up still takes no command but a stop."""

from __future__ import annotations

import pytest
from studio_testing import tiny_config

from studio.commands import CommandRefused, send_command
from studio.models import Command, Event, Run, RunStatus
from studio.payloads import point_payload
from studio.watchdogs import RunWatchdogs, parse_rule, save_rules
from worker.sink import StudioControl
from worker.tasks import claim_run, train_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def watch(run: Run, rule: str) -> None:
    save_rules(run, [parse_rule(rule)], "", "", run.owner)


def test_a_pause_rule_tripping_before_running_queues_its_command_for_the_first_boundary(alices_run, alice):
    assert claim_run(alices_run.pk, "host:1").value == "taken"  # the engine has not said "running" yet
    watch(alices_run, "kl/ref above 0.1 -> pause")
    (fired,) = RunWatchdogs(alices_run.pk).observe([point_payload(1, {"kl/ref": 0.5})])
    assert Run.objects.get(pk=alices_run.pk).status == RunStatus.QUEUED
    command = Command.objects.get(run=alices_run)
    assert fired.data["command"] == command.pk and "not_taken" not in fired.data
    assert (command.kind, command.requested_by, command.delivered_at) == ("pause", alice, None)
    # the trainer's control hands it over at its next step boundary, once
    handed = StudioControl(alices_run).poll()
    assert [(c.kind.value, c.id, c.requested_by) for c in handed] == [("pause", str(command.pk), "alice")]
    assert StudioControl(alices_run).poll() == []


def test_a_queued_run_nobody_took_up_still_takes_only_a_stop(alices_run, alice):
    watch(alices_run, "kl/ref above 0.1 -> reset reference")
    (fired,) = RunWatchdogs(alices_run.pk).observe([point_payload(1, {"kl/ref": 0.5})])
    assert fired.data["not_taken"] == (
        f"Cannot reset the reference of run #{alices_run.pk}: it is queued; commands reach a run once a worker "
        "takes it up."
    )
    assert not Command.objects.exists()
    with pytest.raises(CommandRefused, match="it is queued"):
        send_command(alices_run, Command.Kind.PAUSE, alice)


def test_a_reset_rule_that_holds_from_the_first_step_resets_a_live_tiny_run(alice, settings, tmp_path):
    settings.RUNS_DIR = tmp_path
    config = tiny_config(steps=4, eval_every=0)
    run = Run.objects.create(owner=alice, name="reset early", config=config.to_dict(), total_steps=config.steps)
    # every step logs a positive mean length: the rule trips on the first batch the sink stores (whether
    # or not the "running" status shares it, which the flusher's timing decides; the first test pins that)
    watch(run, "length/mean above 0 -> reset reference")
    assert train_run.apply(args=[run.pk]).get() == "finished"
    (fired,) = Event.objects.filter(run=run, kind="watchdog")  # fires once: it holds at every step after
    assert fired.step == 1 and "not_taken" not in fired.data
    (applied,) = Event.objects.filter(run=run, kind="command")
    assert applied.data["kind"] == "reset_reference" and int(applied.data["id"]) == fired.data["command"]
    assert 1 <= applied.step < config.steps  # at a step boundary after the firing, before the run ended
    assert Event.objects.filter(run=run, kind="reset", step=applied.step).exists()
