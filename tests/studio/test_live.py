"""The live path on a real Redis channel layer: the worker's sink writes and publishes, the
websocket consumer forwards, and a reconnecting client gets exactly what it missed."""

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connection

from prorl_engine.events import Event, Sample
from studio.models import Checkpoint, Command, MetricPoint, Run, RunStatus
from studio.models import Event as EventRow
from studio.routing import websocket_urlpatterns
from worker.sink import StudioControl, StudioSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def values(step: int) -> dict[str, float]:
    return {"reward/mean": step / 10, "kl/ref": 0.001 * step}


def connect(user, run: Run, after: int = 0) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after={after}")
    communicator.scope["user"] = user
    return communicator


async def receive_until(communicator, kind: str, timeout: float = 5.0) -> list[dict]:
    """Every message up to and including the first of `kind`."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        message = await communicator.receive_json_from(timeout=max(0.01, deadline - time.monotonic()))
        messages.append(message)
        if message["kind"] == kind:
            return messages


def steps_in(messages: list[dict]) -> list[int]:
    return [p["step"] for m in messages if m["kind"] == "metrics" for p in m["points"]]


async def in_thread(function, *args) -> None:
    """Run `function` in another thread, as the worker would, closing its database connection after."""

    def call():
        try:
            function(*args)
        finally:
            connection.close()

    await asyncio.get_running_loop().run_in_executor(None, call)


def log_steps(run: Run, steps) -> None:
    sink = StudioSink(run)
    for step in steps:
        sink.metrics(step, values(step))
    sink.close()


def test_bob_is_refused_at_the_websocket(bob, alices_run):
    async def scenario():
        communicator = connect(bob, alices_run)
        connected, code = await communicator.connect()
        assert not connected and code == 4403

    async_to_sync(scenario)()


def test_alice_gets_the_stored_points_then_the_live_ones(alice, alices_run):
    log_steps(alices_run, range(1, 4))

    async def scenario():
        communicator = connect(alice, alices_run)
        assert (await communicator.connect())[0]
        backlog = await receive_until(communicator, "status")
        assert steps_in(backlog) == [1, 2, 3]
        await in_thread(log_steps, alices_run, range(4, 6))
        live = await receive_until(communicator, "metrics")
        assert steps_in(live) == [4, 5]
        assert live[-1]["progress"]["step"] == 5
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_reconnecting_client_gets_exactly_the_steps_it_missed(alice, alices_run):
    log_steps(alices_run, range(1, 11))

    async def scenario():
        communicator = connect(alice, alices_run, after=6)
        assert (await communicator.connect())[0]
        assert steps_in(await receive_until(communicator, "status")) == [7, 8, 9, 10]
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_the_consumer_drops_points_it_sent_and_fills_holes_from_the_database(alice, alices_run):
    log_steps(alices_run, range(1, 9))
    layer = get_channel_layer()
    progress = {"step": 8, "total": 12, "eta_s": None, "status": "running"}

    async def scenario():
        communicator = connect(alice, alices_run, after=2)
        assert (await communicator.connect())[0]
        assert steps_in(await receive_until(communicator, "status")) == [3, 4, 5, 6, 7, 8]
        # A late duplicate of steps 7-8, then a message that skips 9 (as if the layer dropped it).
        await layer.group_send(
            alices_run.group_name,
            {
                "type": "run.metrics",
                "progress": progress,
                "points": [{"step": 7, "values": values(7)}, {"step": 8, "values": values(8)}],
            },
        )
        await in_thread(lambda: MetricPoint.objects.create(run=alices_run, step=9, values=values(9)))
        await layer.group_send(
            alices_run.group_name,
            {"type": "run.metrics", "progress": progress, "points": [{"step": 10, "values": values(10)}]},
        )
        assert steps_in(await receive_until(communicator, "metrics")) == [9, 10]
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_rewind_drops_what_a_crashed_attempt_logged_after_its_checkpoint(alice, alices_run):
    log_steps(alices_run, range(1, 8))

    async def scenario():
        communicator = connect(alice, alices_run, after=0)
        assert (await communicator.connect())[0]
        assert steps_in(await receive_until(communicator, "status")) == list(range(1, 8))

        def resume():  # the new attempt resumes from the checkpoint at step 4
            sink = StudioSink(Run.objects.get(pk=alices_run.pk))
            sink.rewind(4)
            for step in (5, 6):
                sink.metrics(step, values(step))
            sink.close()

        await in_thread(resume)
        messages = await receive_until(communicator, "metrics")
        assert {"kind": "rewind", "step": 4} in messages
        assert steps_in(messages) == [5, 6]
        await communicator.disconnect()

    async_to_sync(scenario)()
    assert list(MetricPoint.objects.filter(run=alices_run).values_list("step", flat=True)) == [1, 2, 3, 4, 5, 6]
    assert Run.objects.get(pk=alices_run.pk).last_step == 6


def test_the_sink_stores_events_samples_checkpoints_and_status(alices_run):
    sink = StudioSink(alices_run)
    sink.metrics(1, values(1))
    sink.samples(
        1,
        [
            Sample(
                step=1,
                prompt="2+2?",
                response="<answer>4</answer>\x00",
                reward=1.0,
                verifier_reward=1.0,
                task="chain_sum",
                domain="logic",
                length=5,
                truncated=False,
            )
        ],
    )
    sink.event(Event("reset", 1, {"reason": "manual", "requested_by": "alice"}))
    sink.event(Event("checkpoint", 1, {"path": "/tmp/ckpt-1"}))
    sink.event(Event("status", 1, {"status": "finished"}))
    sink.close()
    run = Run.objects.get(pk=alices_run.pk)
    assert (run.status, run.last_step, run.latest_reward) == (RunStatus.FINISHED, 1, 0.1)
    assert run.samples.get().response == "<answer>4</answer>\ufffd"  # PostgreSQL refuses NUL characters
    assert Checkpoint.objects.get(run=run).path == "/tmp/ckpt-1"
    assert EventRow.objects.get(run=run, kind="reset").data == {"reason": "manual", "requested_by": "alice"}


def test_a_pruned_checkpoint_is_no_longer_offered(alices_run):
    sink = StudioSink(alices_run)
    for step in (1, 2):
        sink.metrics(step, values(step))
        sink.event(Event("checkpoint", step, {"path": f"/tmp/ckpt-{step}"}))
    sink.event(Event("checkpoint_removed", 2, {"checkpoint_step": 1, "path": "/tmp/ckpt-1"}))
    sink.close()
    assert list(Checkpoint.objects.filter(run=alices_run).values_list("step", flat=True)) == [2]


def test_the_control_source_hands_each_command_to_the_engine_once(alice, alices_run):
    Command.objects.create(run=alices_run, kind="reset_reference", requested_by=alice)
    control = StudioControl(alices_run)
    commands = control.poll()
    assert [(c.kind.value, c.requested_by) for c in commands] == [("reset_reference", "alice")]
    assert control.poll() == []
