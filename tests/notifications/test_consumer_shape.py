"""One way out to the socket (``Outgoing``) and one way to end it (``shutdown``), whatever API a consumer uses."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from channels.consumer import AsyncConsumer
from channels.testing import WebsocketCommunicator

from notifications.consumers import NotificationConsumer
from notifications.routing import websocket_application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PATH = "/ws/notifications/"


class Inherited(NotificationConsumer):
    """Answers ``ping`` with two frames sent through channels' own ``send()``, then its ``PONG``."""

    opened: list[NotificationConsumer] = []

    async def connect(self) -> None:
        await super().connect()
        Inherited.opened.append(self)

    async def ping(self, content: dict[str, Any], request_id: Any) -> None:
        for n in range(2):
            await self.send(text_data=orjson.dumps({"type": "ECHO", "payload": n, "meta": {}}).decode())
        await super().ping(content, request_id)


def stalling(app: Any, stuck: asyncio.Event) -> Any:
    """``app`` behind a client that takes no frame once ``stuck`` is set; a close still goes through."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def stalled_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send" and stuck.is_set():
                await asyncio.Event().wait()
            await send(message)

        await app(scope, receive, stalled_send)

    return wrapped


@pytest.fixture
def token(domain: dict[str, Any], token_for: Any) -> str:
    Inherited.opened.clear()
    return str(token_for(domain["alice"]))


def socket(token: str, app: Any = None) -> WebsocketCommunicator:
    app = app or websocket_application(Inherited)
    return WebsocketCommunicator(app, PATH, headers=[(b"authorization", f"Token {token}".encode())])


async def test_frames_sent_with_channels_send_go_out_in_order_with_the_others(token):
    client = socket(token)
    assert (await client.connect())[0]
    try:
        await client.send_json_to({"action": "ping", "request_id": 1})
        assert [(await client.receive_json_from(timeout=3))["type"] for _ in range(3)] == ["ECHO", "ECHO", "PONG"]
    finally:
        await client.disconnect()


async def test_a_frame_sent_with_channels_send_waits_in_the_socket_queue_and_counts_against_its_limit(token, settings):
    # Straight to the ASGI server, the first ECHO would hang the socket in the stalled send;
    # through Outgoing, it stalls there, the second ECHO and the PONG wait behind it, and the
    # queue's bound of 1 closes the socket as a slow consumer.
    settings.DRF_LIVE = {"SEND_QUEUE_LIMIT": 1}
    stuck = asyncio.Event()
    client = socket(token, stalling(websocket_application(Inherited), stuck))
    assert (await client.connect())[0]
    try:
        stuck.set()
        await client.send_json_to({"action": "ping", "request_id": 1})
        assert await client.receive_output(timeout=3) == {"type": "websocket.close", "code": 4030}
        assert await client.receive_nothing(timeout=0.2)
    finally:
        await client.disconnect()


async def test_a_frame_handed_straight_to_the_asgi_server_is_refused(token):
    client = socket(token)
    assert (await client.connect())[0]
    try:
        (consumer,) = Inherited.opened
        frame = {"type": "websocket.send", "text": '{"type": "BYPASS"}'}
        with pytest.raises(RuntimeError, match="queue"):
            await AsyncConsumer.send(consumer, frame)
        with pytest.raises(RuntimeError, match="queue"):
            await consumer.base_send(frame)
        with pytest.raises(ValueError, match="text"):
            await consumer.send(bytes_data=b"binary")
        assert await client.receive_nothing(timeout=0.1)
        await client.send_json_to({"action": "ping", "request_id": 2})
        assert (await client.receive_json_from(timeout=3))["type"] == "ECHO"
    finally:
        await client.disconnect()


async def test_every_way_to_close_shuts_down_once(token):
    client = socket(token)
    assert (await client.connect())[0]
    try:
        (consumer,) = Inherited.opened
        assert consumer.hub.sockets.get(consumer) is not None  # counted against alice's sockets

        await consumer.close(4031)
        await consumer.send(text_data='{"type": "LATE"}', close=4008)
        await consumer.shutdown(4001)

        assert await client.receive_output(timeout=3) == {"type": "websocket.close", "code": 4031}
        assert await client.receive_nothing(timeout=0.2)
        assert consumer.closed
        assert consumer not in consumer.hub.sockets  # the lease is given back with the close
        assert consumer.credential_keys == []
    finally:
        await client.disconnect()


def gone_at_close(app: Any) -> Any:
    """``app`` behind a client that left: sending the close raises, as uvicorn's ``ClientDisconnected`` does."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_until_gone(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.close":
                raise OSError("the client disconnected")
            await send(message)

        await app(scope, receive, send_until_gone)

    return wrapped


async def test_a_close_to_a_client_that_already_left_ends_the_socket_quietly(token: str) -> None:
    communicator = socket(token, gone_at_close(websocket_application(Inherited)))
    connected, _ = await communicator.connect()
    assert connected
    [consumer] = Inherited.opened
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        consumer.resync("a test")  # in the background, as when the store's connection is lost
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert consumer.closed
        assert not consumer.tasks  # the shutdown task ended without an exception
    finally:
        loop.set_exception_handler(None)
        await communicator.disconnect()
    assert unretrieved == []
