"""Many viewers of one run (issue 16): the run page's series cache, live points to a websocket in
order exactly once, and the handshake while the channel layer is away."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from studio import consumers, series
from studio.consumers import CLOSE_TRY_LATER
from studio.models import MetricPoint, Run
from studio.payloads import metrics_message, point_payload, progress_payload
from studio.routing import websocket_urlpatterns
from studio.up import free_port, private_redis_command, wait_for_port


@pytest.fixture(autouse=True)
def empty_series_cache():
    """Each test starts with a cold cache (run ids repeat across rolled-back tests)."""
    series.chart_cache.clear()
    yield
    series.chart_cache.clear()


def log_points(run: Run, values_by_step: dict[int, float]) -> None:
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, step=step, values={"reward/mean": value}) for step, value in values_by_step.items()
    )


# --- the series cache ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_cached_series_is_what_the_points_say_and_follows_new_points(alices_run):
    log_points(alices_run, {1: 0.25, 2: 0.5})
    assert json.loads(series.run_chart_json(alices_run)) == {"reward/mean": {"steps": [1, 2], "values": [0.25, 0.5]}}
    log_points(alices_run, {3: 0.75})
    assert json.loads(series.run_chart_json(alices_run)) == {
        "reward/mean": {"steps": [1, 2, 3], "values": [0.25, 0.5, 0.75]}
    }


@pytest.mark.django_db
def test_a_rewound_step_logged_anew_replaces_the_cached_curve(alices_run):
    """A resumed run deletes the steps after its checkpoint and logs them again: same count, same
    last step, other values."""
    log_points(alices_run, {1: 0.25, 2: 0.5})
    series.run_chart_json(alices_run)
    MetricPoint.objects.filter(run=alices_run, step=2).delete()
    log_points(alices_run, {2: 0.125})
    assert json.loads(series.run_chart_json(alices_run))["reward/mean"]["values"] == [0.25, 0.125]


@pytest.mark.django_db
def test_the_cache_matches_the_uncached_series_of_a_long_run(alices_run, settings):
    """Downsampled (300 points to about 40), with the cumulative axes: the same as chart_data reads."""
    settings.CHART_POINTS = 40
    MetricPoint.objects.bulk_create(
        MetricPoint(run=alices_run, step=s, values={"reward/mean": (s * 7 % 13) / 13, "timing/train_s": 0.5})
        for s in range(1, 301)
    )
    rows = MetricPoint.objects.filter(run=alices_run).order_by("step").values_list("step", "values")
    uncached = series.chart_data(rows, 40, axes=True)
    assert json.loads(series.run_chart_json(alices_run)) == uncached
    assert json.loads(series.run_chart_json(alices_run)) == uncached  # the second answer, from the cache
    assert uncached["cumulative/wall_s"]["values"][-1] == 150.0  # 300 steps x 0.5 s


@pytest.mark.django_db
def test_a_second_request_reads_no_points_again(alices_run, django_assert_num_queries):
    log_points(alices_run, {1: 0.25, 2: 0.5})
    with django_assert_num_queries(2):  # the version (count, last id), then the points
        first = series.run_chart_json(alices_run)
    with django_assert_num_queries(1):  # the version only
        assert series.run_chart_json(alices_run) == first


def test_the_cache_keeps_the_runs_used_last():
    cache = series.RunSeriesCache(size=2)
    computed = []

    def value(name: str):
        return lambda: computed.append(name) or name

    cache.get(1, "v1", value("run 1"))
    cache.get(2, "v1", value("run 2"))
    cache.get(1, "v1", value("run 1 again"))  # a hit: run 1 is now the latest used
    cache.get(3, "v1", value("run 3"))  # evicts run 2
    assert cache.get(1, "v1", value("run 1, third")) == "run 1"
    assert cache.get(2, "v1", value("run 2 again")) == "run 2 again"
    assert cache.get(2, "v2", value("run 2, new points")) == "run 2, new points"
    assert computed == ["run 1", "run 2", "run 3", "run 2 again", "run 2, new points"]


def test_concurrent_requests_compute_one_version_once_and_all_get_it():
    """As 50 requests of an ASGI server, each in its own thread, opening one run page at once."""
    cache = series.RunSeriesCache(size=4)
    calls, started = [], threading.Barrier(8)

    def slow() -> str:
        calls.append(threading.get_ident())
        time.sleep(0.3)  # long enough for every other thread to ask meanwhile
        return "the series"

    def ask() -> str:
        started.wait()
        return cache.get(1, "v1", slow)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(), range(8)))
    assert answers == ["the series"] * 8
    assert len(calls) == 1


def test_when_the_computation_fails_a_waiting_request_computes_it_anew():
    cache = series.RunSeriesCache(size=4)
    first_began, outcomes = threading.Event(), []

    def failing() -> str:
        first_began.set()
        time.sleep(0.2)
        raise OSError("database went away")

    def first() -> None:
        try:
            cache.get(1, "v1", failing)
        except OSError as exc:
            outcomes.append(str(exc))

    thread = threading.Thread(target=first)
    thread.start()
    first_began.wait()
    assert cache.get(1, "v1", lambda: "computed by the waiter") == "computed by the waiter"
    thread.join()
    assert outcomes == ["database went away"]
    assert cache.get(1, "v1", lambda: "not again") == "computed by the waiter"


@pytest.mark.django_db
def test_metrics_json_carries_the_cached_series_among_its_other_fields(client, alice, alices_run):
    log_points(alices_run, {1: 0.25, 2: 0.5})
    client.force_login(alice)
    for _ in range(2):  # computed, then cached
        data = client.get(reverse("run-metrics", args=[alices_run.pk])).json()
        assert data["series"] == {"reward/mean": {"steps": [1, 2], "values": [0.25, 0.5]}}
        assert data["run"] == alices_run.pk and data["status"] == alices_run.status


# --- the websocket ---------------------------------------------------------------------------------


def viewer(run: Run, user) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after=0")
    ws.scope["user"] = user
    return ws


async def steps_received(ws: WebsocketCommunicator, until: int) -> list[int]:
    steps: list[int] = []
    while not steps or steps[-1] < until:
        message = await ws.receive_json_from(timeout=5)
        if message["kind"] == "metrics":
            steps.extend(point["step"] for point in message["points"])
    return steps


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer_settings")
def test_a_viewer_gets_every_point_once_in_order_through_duplicates_and_a_dropped_message(alice, alices_run):
    """Stored 1-2 (the backlog), then live: 2 again (a duplicate), 3, 4, then 7 whose 5 and 6 the layer
    dropped (stored, so filled from the database), then 8."""
    log_points(alices_run, {1: 0.1, 2: 0.2})
    progress = progress_payload(8, 10, "running", None, 0)
    live = [[2], [3, 4], [7], [8]]

    async def scenario() -> list[int]:
        ws = viewer(alices_run, alice)
        connected, _ = await ws.connect()
        assert connected
        assert await steps_received(ws, until=2) == [1, 2]
        await database_sync_to_async(log_points)(alices_run, {3: 0.3, 4: 0.4, 5: 0.5, 6: 0.6, 7: 0.7, 8: 0.8})
        layer = get_channel_layer()
        for steps in live:
            points = [point_payload(step, {"reward/mean": step / 10}) for step in steps]
            await layer.group_send(alices_run.group_name, metrics_message(points, progress))
        received = await steps_received(ws, until=8)
        await ws.disconnect()
        return received

    assert async_to_sync(scenario)() == [3, 4, 5, 6, 7, 8]


@pytest.mark.django_db(transaction=True)
def test_the_handshake_closes_with_try_again_later_while_the_channel_layer_is_away(settings, alice, alices_run):
    """No Redis answers on the layer's port: the socket is accepted and closed with 1013, not a 500."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }

    async def scenario() -> dict:
        ws = viewer(alices_run, alice)
        connected, _ = await ws.connect(timeout=10)
        assert connected  # accepted, so that the close code reaches the page
        closed = await ws.receive_output(timeout=10)
        await ws.wait()
        return closed

    closed = async_to_sync(scenario)()
    assert (closed["type"], closed["code"]) == ("websocket.close", CLOSE_TRY_LATER)


@pytest.mark.django_db(transaction=True)
def test_an_open_socket_closes_with_try_again_later_when_redis_goes_away(settings, tmp_path, alice, alices_run):
    """Redis killed under an open socket: 1013, so the page reconnects with backoff (not a 1011 crash)."""
    port = free_port()
    redis = subprocess.Popen(private_redis_command(port, tmp_path), stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, redis, 10, "redis-server")
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{port}/0", "socket_timeout": None}]},
            }
        }

        async def scenario() -> dict:
            ws = viewer(alices_run, alice)
            connected, _ = await ws.connect(timeout=10)
            assert connected
            assert (await ws.receive_json_from(timeout=5))["kind"] == "status"
            redis.kill()
            closed = await ws.receive_output(timeout=10)
            await ws.wait()
            return closed

        closed = async_to_sync(scenario)()
        assert (closed["type"], closed["code"]) == ("websocket.close", CLOSE_TRY_LATER)
    finally:
        redis.kill()
        redis.wait(10)


@pytest.mark.django_db(transaction=True)
def test_a_socket_rejoins_its_group_once_redis_forgot_it(channel_layer_settings, alice, alices_run, monkeypatch):
    """Redis forgets the run's group under an open socket (a restart with nothing on disk, or the group's
    expiry: here its key is deleted); the socket joins again within REJOIN_S, and the points published
    meanwhile are filled from the database."""
    import redis

    monkeypatch.setattr(consumers, "REJOIN_S", 0.3)
    progress = progress_payload(3, 10, "running", None, 0)

    async def scenario() -> list[int]:
        ws = viewer(alices_run, alice)
        connected, _ = await ws.connect()
        assert connected
        layer = get_channel_layer()
        redis.Redis.from_url(channel_layer_settings).delete(layer._group_key(alices_run.group_name))
        await database_sync_to_async(log_points)(alices_run, {1: 0.1, 2: 0.2, 3: 0.3})
        await layer.group_send(alices_run.group_name, metrics_message([point_payload(1, {})], progress))
        await asyncio.sleep(1.0)  # a rejoin has happened by now
        await layer.group_send(alices_run.group_name, metrics_message([point_payload(3, {})], progress))
        received = await steps_received(ws, until=3)
        await ws.disconnect()
        return received

    assert async_to_sync(scenario)() == [1, 2, 3]
