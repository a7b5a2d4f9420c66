"""The worker's sink under faults: Redis killed and started again, the database refusing every
query for a while, a worker that lost its lease. Storing is what must never fail; publishing waits
for the layer; a sink that cannot go on says why and stops its thread. A watchdog that fires in a
batch the database refused notifies once, when the batch is finally stored."""

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from fault_testing import DatabaseOutage, RestartableRedis
from studio_testing import Receiver, rule_on

from studio.models import Command, Event, MetricPoint, Run
from worker.sink import LeaseLost, SinkError, StudioControl, StudioSink
from worker.tasks import claim_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> RestartableRedis:
    server = RestartableRedis(tmp_path_factory.mktemp("restartable-redis"))
    yield server
    server.kill()


@pytest.fixture
def layer(settings, redis: RestartableRedis):
    """The Channels layer on the Redis this module kills."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis.url, "socket_timeout": None}], "prefix": "sink-faults"},
        },
    }
    return get_channel_layer()


@pytest.fixture
def outage(monkeypatch) -> DatabaseOutage:
    return DatabaseOutage(monkeypatch)


def values(step: int) -> dict[str, float]:
    return {"reward/mean": step / 10}


def stored_steps(run: Run) -> list[int]:
    return list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def sink_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("studio-sink-")]


def listen(layer, run: Run) -> str:
    """A channel in the run's group, as a viewer's socket is (joined again after a restart: a
    fresh Redis knows no group)."""
    channel = async_to_sync(layer.new_channel)()
    for _ in range(50):
        try:
            async_to_sync(layer.group_add)(run.group_name, channel)
            return channel
        except Exception:  # the layer's pooled connection to the killed server fails once
            time.sleep(0.1)
    raise AssertionError("could not join the run's group")


def received_steps(layer, channel: str, until: int, timeout: float = 20.0) -> list[int]:
    """The metric steps the channel receives, in order, up to step `until`."""

    async def receive() -> list[int]:
        steps: list[int] = []
        while not steps or steps[-1] < until:
            message = await layer.receive(channel)
            steps += [p["step"] for p in message.get("points", [])]
        return steps

    async def within_timeout() -> list[int]:
        return await asyncio.wait_for(receive(), timeout)

    return async_to_sync(within_timeout)()


def test_a_redis_outage_loses_no_point_and_the_payloads_go_out_once_it_is_back(alices_run, layer, redis):
    channel = listen(layer, alices_run)
    sink = StudioSink(alices_run)
    for step in (1, 2, 3):
        sink.metrics(step, values(step))
    sink.flush()
    assert received_steps(layer, channel, until=3) == [1, 2, 3]

    redis.kill()
    for step in (4, 5, 6):
        sink.metrics(step, values(step))
        sink.flush()  # stored: nothing raises while the layer is away
    assert stored_steps(alices_run) == [1, 2, 3, 4, 5, 6]

    redis.start()
    channel = listen(layer, alices_run)
    sink.metrics(7, values(7))
    assert received_steps(layer, channel, until=7) == [4, 5, 6, 7]  # the held payloads first, in order
    sink.close()
    assert stored_steps(alices_run) == list(range(1, 8)) and sink_threads() == []


def test_a_database_outage_holds_the_points_until_the_database_is_back(alices_run, layer, outage):
    sink = StudioSink(alices_run, heartbeat_s=0.1)
    sink.metrics(1, values(1))
    sink.flush()
    with outage.down():
        for step in range(2, 7):
            sink.metrics(step, values(step))  # the trainer goes on: the points wait in memory
        deadline = time.monotonic() + 10
        while outage.refused < 3:  # the flusher tried, failed, and tried again after a backoff
            assert time.monotonic() < deadline, "the sink did not retry"
            time.sleep(0.05)
    sink.close()
    assert stored_steps(alices_run) == [1, 2, 3, 4, 5, 6]
    assert Run.objects.get(pk=alices_run.pk).last_step == 6


def test_an_outage_longer_than_the_sink_waits_fails_with_a_message_and_stops_the_thread(alices_run, layer, outage):
    sink = StudioSink(alices_run, heartbeat_s=0.1, outage_s=0.5)
    outage.begin()
    sink.metrics(1, values(1))
    with pytest.raises(SinkError) as failure:
        for step in range(2, 1000):
            time.sleep(0.05)
            sink.metrics(step, values(step))
    message = str(failure.value)
    assert "the database has been unreachable for" in message and "the limit is 0.5 s" in message
    assert "resume it to continue from its last checkpoint" in message
    sink.close()  # the trainer saw the error: closing does not raise it again
    assert sink_threads() == []


def test_the_points_held_in_memory_are_bounded(alices_run, layer, outage):
    sink = StudioSink(alices_run, heartbeat_s=0.1, max_held=20)
    outage.begin()
    with pytest.raises(SinkError, match="items are held in memory, the bound is 20"):
        for step in range(1, 1000):
            time.sleep(0.01)
            sink.metrics(step, values(step))
    sink.close()
    assert sink_threads() == []


def test_commands_wait_in_the_database_while_it_is_away(alice, alices_run, outage):
    Command.objects.create(run=alices_run, kind="pause", requested_by=alice)
    control = StudioControl(alices_run)
    with outage.down():
        assert control.poll() == []  # the trainer goes on; the command is not lost
    assert [c.kind.value for c in control.poll()] == ["pause"]


def test_a_sink_whose_lease_another_worker_took_stores_nothing_more(alices_run, layer):
    claim_run(alices_run.pk, "host:1")
    sink = StudioSink(Run.objects.get(pk=alices_run.pk))
    sink.metrics(1, values(1))
    sink.flush()
    Run.objects.filter(pk=alices_run.pk).update(worker="host:2", heartbeat=1234.0)  # host:2 took it up
    sink.metrics(2, values(2))
    with pytest.raises(LeaseLost, match="no longer held by host:1"):
        sink.flush()
    sink.close()
    run = Run.objects.get(pk=alices_run.pk)
    assert stored_steps(run) == [1] and (run.worker, run.heartbeat) == ("host:2", 1234.0)
    assert sink_threads() == []


def test_payloads_waiting_for_the_layer_are_bounded_the_oldest_dropped(alices_run, monkeypatch):
    from worker import sink as sink_module

    layer_up = threading.Event()
    sent: list[int] = []

    def publish(sink, payloads):
        if not layer_up.is_set():
            raise ConnectionError("Redis is away")
        sent.extend(p["step"] for payload in payloads for p in payload.get("points", []))

    monkeypatch.setattr(sink_module, "MAX_UNPUBLISHED", 3)
    monkeypatch.setattr(StudioSink, "_publish", publish)
    sink = StudioSink(alices_run)
    for step in range(1, 6):
        sink.metrics(step, values(step))
        sink.flush()  # a batch, and a payload, per step
    layer_up.set()
    sink.close()
    assert stored_steps(alices_run) == [1, 2, 3, 4, 5]
    assert sent == [3, 4, 5]  # the newest; a viewer reads 1 and 2 from the database


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


# Where the database goes away in the batch that stores step 2, after its watchdog fired: while
# recording the firing, the connection dropped (the statement and the rollback to the watchdogs'
# savepoint fail), or at the batch's last write, the run's row.
FIRING_RECORDED = 'UPDATE "studio_watchdog" SET "fired_count"'
RUN_ROW_WRITTEN = 'UPDATE "studio_run" SET "last_step"'


@pytest.mark.parametrize(
    ("statement", "refused"),
    [(FIRING_RECORDED, 1), (FIRING_RECORDED, 2), (RUN_ROW_WRITTEN, 1)],
    ids=["firing recorded", "firing recorded, connection dropped", "run row written"],
)
def test_a_watchdog_that_fired_in_a_batch_the_database_refused_notifies_once(
    alices_run, outage, receiver, settings, wait_for, statement, refused
):
    settings.WATCHDOG_PRIVATE_WEBHOOKS = True  # the receiver listens on loopback
    rule_on(alices_run, "kl/ref above 0.1", webhook_url=receiver.url)
    sink = StudioSink(alices_run)
    sink.metrics(1, {"kl/ref": 0.05})
    sink.flush()
    outage.refuse_from(statement, refused)
    sink.metrics(2, {"kl/ref": 0.2})  # the rule trips at step 2
    sink.metrics(3, {"kl/ref": 0.3})  # still holds: no second firing
    sink.close()

    assert outage.refused == refused  # the fault struck the batch, which was stored when retried
    assert stored_steps(alices_run) == [1, 2, 3]
    firings = Event.objects.filter(run=alices_run, kind="watchdog")
    assert [(e.step, e.data["value"]) for e in firings] == [(2, 0.2)]
    wait_for(lambda: receiver.bodies, 10, "the notification")
    time.sleep(1.0)  # time for a second notification, were one on its way
    assert [body["text"] for body in receiver.bodies] == [
        f"Watchdog on run #{alices_run.pk} (alice's tiny run): kl/ref above 0.1 at step 2 (value 0.2); action: notify."
    ]
