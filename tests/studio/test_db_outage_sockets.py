"""While the database is away, a run page's websocket is closed with 1013 "Try Again Later", as it
is while Redis is away (the page reconnects with backoff and asks for what it missed), and never
answered with HTTP 500: whether the handshake fails in Channels' auth middleware (reading Alice's
session), in the consumer (reading the run), or a query of an open socket fails. Through the
whole websocket stack daphne serves (studio.asgi), origin check and auth middleware included."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from fault_testing import DatabaseOutage

from studio.asgi import application
from studio.consumers import CLOSE_TRY_LATER
from studio.models import MetricPoint, Run
from studio.payloads import metrics_message, point_payload, progress_payload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


@pytest.fixture
def outage(monkeypatch) -> DatabaseOutage:
    return DatabaseOutage(monkeypatch)


def session_cookie(client, user) -> tuple[bytes, bytes]:
    client.force_login(user)
    return b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()


def socket_to(run: Run, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    origin = (b"origin", b"http://testserver")
    return WebsocketCommunicator(application, f"/ws/runs/{run.pk}/?after=0", headers=[origin, *headers])


async def closing_code(ws: WebsocketCommunicator) -> int:
    """The code the socket is closed with, once its handshake was accepted."""
    connected, _ = await ws.connect(timeout=10)
    assert connected  # accepted, so that the close code reaches the page
    while (message := await ws.receive_output(timeout=10))["type"] != "websocket.close":
        pass
    await ws.wait()
    return message["code"]


def test_alices_socket_opens_through_the_whole_stack_while_the_database_answers(client, alice, alices_run):
    cookie = session_cookie(client, alice)

    async def scenario() -> dict:
        ws = socket_to(alices_run, cookie)
        connected, _ = await ws.connect(timeout=10)
        assert connected
        first = await ws.receive_json_from(timeout=10)
        await ws.disconnect()
        return first

    assert async_to_sync(scenario)()["kind"] == "status"


def test_a_handshake_whose_session_cannot_be_read_is_closed_try_again_later(client, alice, alices_run, outage):
    cookie = session_cookie(client, alice)
    with outage.down():
        code = async_to_sync(closing_code)(socket_to(alices_run, cookie))
        refused = outage.refused
    assert code == CLOSE_TRY_LATER
    assert refused >= 1  # the session was asked for


def test_a_handshake_whose_run_cannot_be_read_is_closed_try_again_later(alices_run, outage):
    with outage.down():  # no session cookie: the consumer's own query is the first to fail
        code = async_to_sync(closing_code)(socket_to(alices_run))
        refused = outage.refused
    assert (code, refused) == (CLOSE_TRY_LATER, 1)


def test_an_open_socket_whose_query_fails_is_closed_try_again_later(client, alice, alices_run, outage):
    MetricPoint.objects.bulk_create([MetricPoint(run=alices_run, step=s, values={"reward/mean": 0.1}) for s in (1, 2)])
    progress = progress_payload(4, alices_run.total_steps, "running", None, 0)
    cookie = session_cookie(client, alice)

    async def scenario() -> int:
        ws = socket_to(alices_run, cookie)
        connected, _ = await ws.connect(timeout=10)
        assert connected
        while (await ws.receive_json_from(timeout=10))["kind"] != "status":  # the backlog: steps 1 and 2
            pass
        outage.begin()
        # Step 4 comes, step 3 was lost on the way: the socket asks the database for it, which fails.
        await get_channel_layer().group_send(
            alices_run.group_name, metrics_message([point_payload(4, {"reward/mean": 0.4})], progress)
        )
        closed = await ws.receive_output(timeout=10)
        await ws.wait()
        return closed["code"]

    assert async_to_sync(scenario)() == CLOSE_TRY_LATER
    assert outage.refused == 1
