"""The run page's socket forwards the queue's `run.queue` payloads to Alice's page; a share link's
socket does not (its page shows no queue: it would name other runs and the workers)."""

from __future__ import annotations

import pytest
from access_testing import share
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from studio.models import Run
from studio.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer_settings")]


def socket(user, run: Run, query: str = "") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/?after=0{query}")
    communicator.scope["user"] = user
    return communicator


async def until(communicator: WebsocketCommunicator, kind: str, timeout: float = 5.0) -> list[dict]:
    """Every message up to and including the first of `kind`."""
    messages = []
    while not messages or messages[-1]["kind"] != kind:
        messages.append(await communicator.receive_json_from(timeout=timeout))
    return messages


def test_the_run_pages_socket_forwards_the_queue_but_a_share_links_does_not(alice, alices_run):
    token = share(alices_run)

    async def scenario():
        alices = socket(alice, alices_run)
        shared = socket(AnonymousUser(), alices_run, "&share=" + token)
        assert (await alices.connect())[0] and (await shared.connect())[0]
        for communicator in (alices, shared):
            await until(communicator, "status")  # the backlog's end
        await get_channel_layer().group_send(alices_run.group_name, {"type": "run.queue", "queue": {"position": 7}})
        await get_channel_layer().group_send(alices_run.group_name, {"type": "run.rewind", "step": 0})
        assert (await until(alices, "queue"))[-1] == {"kind": "queue", "queue": {"position": 7}}
        assert [m["kind"] for m in await until(shared, "rewind")] == ["rewind"]  # no queue before it
        for communicator in (alices, shared):
            await communicator.disconnect()

    async_to_sync(scenario)()
