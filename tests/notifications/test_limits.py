"""Abuse limits, each reached and answered as docs/protocol.md documents it.

Hard limits close the socket with their close code; soft limits answer an
error and keep it open. Each test sets small limits through ``DRF_LIVE``
before it connects (a consumer reads them when it is created). The
unauthenticated-socket time limit (4001) is tested in test_consumers.py; the
ASGI server's own frame limit and a real slow client, in
tests/integration/test_abuse.py; each limit again over real sockets, in
tests/integration/test_edges.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from notifications import limits
from notifications.consumers import NotificationConsumer
from notifications.routing import websocket_application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PATH = "/ws/notifications/"


async def request(socket: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_json_to(frame)
    return await socket.receive_json_from(timeout=3)


async def assert_open(socket: WebsocketCommunicator) -> None:
    assert await request(socket, {"action": "ping", "request_id": "open?"}) == {
        "type": "PONG",
        "payload": None,
        "meta": {"request_id": "open?"},
    }


async def assert_closed_with(socket: WebsocketCommunicator, code: int) -> None:
    """The next output is ``websocket.close`` with ``code``, and nothing follows it."""
    assert await socket.receive_output(timeout=3) == {"type": "websocket.close", "code": code}
    assert await socket.receive_nothing(timeout=0.2)


def assert_error(frame: dict[str, Any], code: str, request_id: Any) -> None:
    assert frame["type"] == "ERROR" and frame["error"] is True, frame
    assert frame["payload"]["code"] == code, frame
    assert frame["meta"] == {"request_id": request_id}


def target(model: str, obj: Any, request_id: Any = None, **extra: Any) -> dict[str, Any]:
    return {"action": "subscribe", "model": model, "id": str(obj.pk), "request_id": request_id, **extra}


@pytest.fixture
def keys(domain: dict[str, Any], token_for: Any) -> dict[str, str]:
    return {name: token_for(domain[name]) for name in ("alice", "bob")}


# Frame size (hard: 1009) -----------------------------------------------------------


async def test_frame_at_the_size_limit_is_read(connect, domain, keys, settings):
    settings.DRF_LIVE = {"MAX_FRAME_BYTES": 100}
    socket = await connect(token=keys["alice"])
    frame = '{"action": "ping", "request_id": "%s"}' % ("x" * (100 - 36))
    assert len(frame) == 100

    await socket.send_to(text_data=frame)

    reply = await socket.receive_json_from()
    assert reply["type"] == "PONG"


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_frame_over_the_size_limit_closes_with_1009(connect, domain, keys, settings, kind):
    settings.DRF_LIVE = {"MAX_FRAME_BYTES": 100}
    socket = await connect(token=keys["alice"])
    other = await connect(token=keys["alice"])
    frame = '{"action": "ping", "request_id": "%s"}' % ("x" * (101 - 36))
    assert len(frame) == 101

    if kind == "text":
        await socket.send_to(text_data=frame)
    else:
        await socket.send_to(bytes_data=frame.encode())

    await assert_closed_with(socket, 1009)
    await assert_open(other)


# Subscriptions per socket (soft: limit_exceeded) --------------------------------------


async def test_subscription_past_max_subscriptions_is_limit_exceeded_and_socket_stays_open(
    connect, domain, keys, settings
):
    settings.DRF_LIVE = {"MAX_SUBSCRIPTIONS": 2}
    alice, task, website = domain["alice"], domain["task"], domain["website"]
    socket = await connect(token=keys["alice"])
    assert (await request(socket, target("api.task", task, 1)))["type"] == "SUBSCRIBED"
    assert (await request(socket, target("api.project", website, 2)))["type"] == "SUBSCRIBED"

    assert_error(await request(socket, target("api.user", alice, 3)), "limit_exceeded", 3)

    await assert_open(socket)
    # Re-subscribing to a target it holds is not a new subscription.
    again = await request(socket, target("api.task", task, 4))
    assert again["type"] == "SUBSCRIBED" and again["meta"]["request_id"] == 4
    # Making room makes the next one possible.
    assert (await request(socket, {"action": "unsubscribe", "model": "api.project", "id": str(website.pk)}))[
        "type"
    ] == "UNSUBSCRIBED"
    assert (await request(socket, target("api.user", alice, 5)))["type"] == "SUBSCRIBED"
    assert await socket.receive_nothing(timeout=0.2)


async def test_refused_subscription_receives_no_events(connect, domain, keys, settings):
    settings.DRF_LIVE = {"MAX_SUBSCRIPTIONS": 1}
    task, website = domain["task"], domain["website"]
    socket = await connect(token=keys["alice"])
    assert (await request(socket, target("api.task", task, 1)))["type"] == "SUBSCRIBED"
    assert_error(await request(socket, target("api.project", website, 2)), "limit_exceeded", 2)

    website.name = "Renamed"
    await database_sync_to_async(website.save)()

    assert await socket.receive_nothing(timeout=0.3)


# Subscribe rate (soft: throttled) -------------------------------------------------------


async def test_subscribe_burst_past_the_bucket_is_throttled_then_refills(connect, domain, keys, settings):
    # One token a second: the next request finds the bucket empty unless a second passes in between.
    rate = 1.0
    settings.DRF_LIVE = {"SUBSCRIBE_RATE": rate, "SUBSCRIBE_BURST": 3}
    task = domain["task"]
    socket = await connect(token=keys["alice"])

    replies = []
    for n in range(3):
        replies.append(await request(socket, target("api.task", task, n)))
    throttled = await request(socket, target("api.task", task, "4th"))

    assert [reply["type"] for reply in replies] == ["SUBSCRIBED"] * 3
    assert_error(throttled, "throttled", "4th")
    await assert_open(socket)  # ping has a budget of its own
    await asyncio.sleep(1 / rate + 0.05)
    again = await request(socket, target("api.task", task, "after"))
    assert again["type"] == "SUBSCRIBED" and again["meta"]["request_id"] == "after"
    assert_error(await request(socket, target("api.task", task, "next")), "throttled", "next")


async def test_throttled_subscribes_count_against_the_socket_not_the_user(connect, domain, keys, settings):
    settings.DRF_LIVE = {"SUBSCRIBE_RATE": 0.01, "SUBSCRIBE_BURST": 1}
    task = domain["task"]
    first = await connect(token=keys["alice"])
    second = await connect(token=keys["alice"])
    assert (await request(first, target("api.task", task, 1)))["type"] == "SUBSCRIBED"
    assert_error(await request(first, target("api.task", task, 2)), "throttled", 2)

    assert (await request(second, target("api.task", task, 3)))["type"] == "SUBSCRIBED"


# Errors (hard: 4008) -----------------------------------------------------------------


async def test_error_burst_exceeded_closes_with_4008(connect, domain, keys, settings):
    settings.DRF_LIVE = {"ERROR_RATE": 0.01, "ERROR_BURST": 5}
    socket = await connect(token=keys["alice"])
    other = await connect(token=keys["alice"])

    for _ in range(5):
        await socket.send_to(text_data="not json")
        reply = await socket.receive_json_from()
        assert reply["type"] == "ERROR" and reply["payload"]["code"] == "parse_error"
    await socket.send_to(text_data="not json")

    await assert_closed_with(socket, 4008)
    await assert_open(other)


async def test_errors_within_the_rate_keep_the_socket_open(connect, domain, keys, settings):
    rate = 20.0
    settings.DRF_LIVE = {"ERROR_RATE": rate, "ERROR_BURST": 2}
    socket = await connect(token=keys["alice"])

    for _ in range(4):
        for _ in range(2):
            await socket.send_to(text_data="[]")
            assert (await socket.receive_json_from())["payload"]["code"] == "parse_error"
        await asyncio.sleep(2 / rate + 0.05)

    await assert_open(socket)


# Sockets per user (hard: 4029) ---------------------------------------------------------


async def test_socket_past_max_sockets_per_user_closes_with_4029_and_others_stay_open(connect, domain, keys, settings):
    settings.DRF_LIVE = {"MAX_SOCKETS_PER_USER": 2}
    first = await connect(token=keys["alice"])
    second = await connect(token=keys["alice"])

    third = await connect(token=keys["alice"])

    await assert_closed_with(third, 4029)
    await assert_open(first)
    await assert_open(second)
    bob = await connect(token=keys["bob"])  # a per-user limit: bob has room
    await assert_open(bob)

    await first.disconnect()
    fourth = await connect(token=keys["alice"])
    await assert_open(fourth)
    assert await fourth.receive_nothing(timeout=0.2)


async def test_authenticate_frame_past_max_sockets_per_user_closes_with_4029_and_no_reply(
    connect, domain, keys, settings
):
    settings.DRF_LIVE = {"MAX_SOCKETS_PER_USER": 1}
    first = await connect(token=keys["alice"])
    second = await connect()

    await second.send_json_to({"action": "authenticate", "token": keys["alice"], "request_id": 1})

    # Nothing after websocket.close: a real ASGI server refuses a send after it.
    await assert_closed_with(second, 4029)
    await assert_open(first)


# Slow consumers (hard: 4030) -----------------------------------------------------------


def stalling(app: Any, stuck: asyncio.Event) -> Any:
    """``app`` behind a client that stops taking frames when ``stuck`` is set (its TCP buffers are full).

    Only ``websocket.send`` stalls; a close still goes through, as the ASGI
    server would send it after its close timeout.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def stalled_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send" and stuck.is_set():
                await asyncio.Event().wait()  # never returns: the client does not read
            await send(message)

        await app(scope, receive, stalled_send)

    return wrapped


async def test_client_that_stops_reading_is_closed_with_4030_when_its_queue_overflows_others_continue(
    connect, domain, keys, settings
):
    settings.DRF_LIVE = {"SEND_QUEUE_LIMIT": 2}
    task = domain["task"]
    stuck = asyncio.Event()
    slow = WebsocketCommunicator(
        stalling(websocket_application(), stuck), PATH, headers=[(b"authorization", f"Token {keys['alice']}".encode())]
    )
    assert (await slow.connect())[0]
    try:
        reader = await connect(token=keys["bob"])
        assert (await request(slow, target("api.task", task, 1)))["type"] == "SUBSCRIBED"
        subscribed = await request(reader, target("api.task", task, 1))
        stuck.set()

        # One frame stalls in the send, two wait behind it, the fourth overflows.
        for n in range(4):
            task.title = f"Title {n}"
            await database_sync_to_async(task.save)()

        seqs = []
        for _n in range(4):
            event = await reader.receive_json_from(timeout=3)
            seqs.append(event["meta"]["seq"])
        # Each event reads the row after its commit: the last carries the last title.
        assert event["payload"]["title"] == "Title 3"
        assert seqs == [subscribed["meta"]["seq"] + 1 + n for n in range(4)]
        await assert_closed_with(slow, 4030)
        assert await reader.receive_nothing(timeout=0.2)
    finally:
        await slow.disconnect()


# Every action's budget (soft: throttled; a flood of them: 4008) -------------------------


async def test_ping_past_its_burst_is_throttled_echoing_request_id_then_refills(connect, domain, keys, settings):
    rate = 5.0
    settings.DRF_LIVE = {"ACTION_BUDGETS": {"ping": [rate, 3]}}
    socket = await connect(token=keys["alice"])

    pongs = [await request(socket, {"action": "ping", "request_id": n}) for n in range(3)]
    throttled = await request(socket, {"action": "ping", "request_id": "4th"})

    assert [pong["type"] for pong in pongs] == ["PONG"] * 3
    assert_error(throttled, "throttled", "4th")
    await asyncio.sleep(1 / rate + 0.05)
    assert (await request(socket, {"action": "ping", "request_id": "after"}))["type"] == "PONG"
    assert await socket.receive_nothing(timeout=0.1)


async def test_unsubscribe_past_its_burst_is_throttled(connect, domain, keys, settings):
    settings.DRF_LIVE = {"ACTION_BUDGETS": {"unsubscribe": [0.01, 2]}}
    task = domain["task"]
    socket = await connect(token=keys["alice"])
    frame = {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)}

    replies = [await request(socket, {**frame, "request_id": n}) for n in range(3)]

    assert [reply["type"] for reply in replies[:2]] == ["UNSUBSCRIBED"] * 2
    assert_error(replies[2], "throttled", 2)
    await assert_open(socket)


async def test_budgets_are_per_action(connect, domain, keys, settings):
    settings.DRF_LIVE = {"ACTION_BUDGETS": {"ping": [0.01, 1]}}
    task = domain["task"]
    socket = await connect(token=keys["alice"])
    assert (await request(socket, {"action": "ping", "request_id": 1}))["type"] == "PONG"
    assert_error(await request(socket, {"action": "ping", "request_id": 2}), "throttled", 2)

    assert (await request(socket, target("api.task", task, 3)))["type"] == "SUBSCRIBED"


async def test_authenticate_with_a_valid_token_has_a_small_budget_and_throttled_ones_query_nothing(
    connect, domain, keys, statements
):
    # The default budget: 3, then one every 5 s. Each answered one reads the token and its user.
    socket = await connect(token=keys["alice"])
    frame = {"action": "authenticate", "token": keys["alice"]}
    for n in range(3):
        assert (await request(socket, {**frame, "request_id": n}))["type"] == "AUTHENTICATED"
    statements.clear()

    for n in range(3, 20):
        assert_error(await request(socket, {**frame, "request_id": n}), "throttled", n)

    assert statements.outside_relay() == []
    await assert_open(socket)


class ConsumerWithMoreActions(NotificationConsumer):
    """A consumer with actions the budget table does not name, as the protocol will add."""

    actions = {**NotificationConsumer.actions, "retrieve": "echo", "list": "echo"}

    async def echo(self, content: dict[str, Any], request_id: Any) -> None:
        await self.send_frame({"type": "ECHO", "payload": None, "meta": {"request_id": request_id}})


@pytest.mark.parametrize("budgets", [{}, {"*": [0.01, 2]}, {"retrieve": [0.01, 2]}])
async def test_an_action_the_table_does_not_name_gets_the_default_budget(domain, keys, settings, budgets):
    settings.DRF_LIVE = {"ACTION_BUDGETS": budgets}
    burst = 2 if budgets else int(limits.DEFAULT_ACTION_BUDGETS["*"][1])
    headers = [(b"authorization", f"Token {keys['alice']}".encode())]
    socket = WebsocketCommunicator(websocket_application(ConsumerWithMoreActions), PATH, headers=headers)
    assert (await socket.connect())[0]
    try:
        replies = [await request(socket, {"action": "retrieve", "request_id": n}) for n in range(burst + 1)]

        assert [reply["type"] for reply in replies[:burst]] == ["ECHO"] * burst
        assert_error(replies[burst], "throttled", burst)
        # Its own bucket: another action still has room.
        assert (await request(socket, {"action": "list", "request_id": "l"}))["type"] == "ECHO"
    finally:
        await socket.disconnect()


async def test_flood_far_over_budget_is_answered_until_the_error_budget_runs_dry_then_closed_with_4008(
    connect, domain, keys, settings
):
    settings.DRF_LIVE = {"ACTION_BUDGETS": {"ping": [0.01, 3]}, "ERROR_RATE": 0.01, "ERROR_BURST": 10}
    socket = await connect(token=keys["alice"])
    other = await connect(token=keys["alice"])

    for n in range(3 + 10):
        await socket.send_json_to({"action": "ping", "request_id": n})
    replies = [await socket.receive_json_from(timeout=3) for _ in range(13)]
    await socket.send_json_to({"action": "ping", "request_id": 13})

    # Never silently dropped: every frame is answered, in order, until the close.
    assert [reply["meta"]["request_id"] for reply in replies] == list(range(13))
    assert [reply["type"] for reply in replies] == ["PONG"] * 3 + ["ERROR"] * 10
    assert all(reply["payload"]["code"] == "throttled" for reply in replies[3:])
    await assert_closed_with(socket, 4008)
    await assert_open(other)


# Unauthenticated sockets (refused at the handshake) --------------------------------------

ADDRESS_A = ("198.51.100.1", 40000)
ADDRESS_B = ("198.51.100.2", 40000)


async def test_unauthenticated_sockets_past_the_per_address_cap_are_refused(connect, domain, keys, settings):
    settings.DRF_LIVE = {"MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": 2}
    first = await connect(client=ADDRESS_A)
    second = await connect(client=ADDRESS_A)

    await connect(client=ADDRESS_A, accepted=False)

    await connect(client=ADDRESS_B)  # another address has room
    await connect(client=ADDRESS_A, token=keys["alice"])  # an authenticated socket is not counted
    await assert_open(first)
    # Closing one, or authenticating one, makes room.
    await first.disconnect()
    third = await connect(client=ADDRESS_A)
    assert (await request(second, {"action": "authenticate", "token": keys["bob"]}))["type"] == "AUTHENTICATED"
    fourth = await connect(client=ADDRESS_A)
    await assert_open(third)
    await assert_open(fourth)
    await connect(client=ADDRESS_A, accepted=False)


async def test_unauthenticated_sockets_past_the_per_process_cap_are_refused(connect, domain, settings):
    settings.DRF_LIVE = {"MAX_UNAUTHENTICATED_SOCKETS": 3}
    for n in range(3):
        await connect(client=(f"198.51.100.{n + 1}", 40000))

    await connect(client=("198.51.100.9", 40000), accepted=False)

    assert limits.strangers.total == 3


async def test_unauthenticated_socket_closed_for_auth_timeout_gives_its_place_back(connect, domain, settings):
    settings.DRF_LIVE = {"MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": 1, "AUTH_TIMEOUT": 0.2}
    first = await connect(client=ADDRESS_A)
    await assert_closed_with(first, 4001)
    await first.disconnect()  # what the ASGI server sends once the close handshake is over

    second = await connect(client=ADDRESS_A)

    await assert_open(second)


# Failed authentication (hard: 4008, and no lookup for the address) ------------------------


async def test_wrong_tokens_close_the_socket_with_4008_at_max_auth_failures(connect, domain, keys, settings):
    settings.DRF_LIVE = {"MAX_AUTH_FAILURES": 3}
    socket = await connect(client=ADDRESS_A)

    for n in range(2):
        reply = await request(socket, {"action": "authenticate", "token": f"wrong-{n}", "request_id": n})
        assert_error(reply, "not_authenticated", n)
    await socket.send_json_to({"action": "authenticate", "token": "wrong-2", "request_id": 2})

    await assert_closed_with(socket, 4008)
    # The address still has budget: a new socket may authenticate.
    again = await connect(client=ADDRESS_A)
    assert (await request(again, {"action": "authenticate", "token": keys["alice"]}))["type"] == "AUTHENTICATED"


async def test_address_out_of_failure_budget_has_no_token_looked_up(connect, domain, keys, settings, statements):
    settings.DRF_LIVE = {"AUTH_FAILURE_BURST": 4, "AUTH_FAILURE_RATE": 0.001, "MAX_AUTH_FAILURES": 2}
    for _ in range(2):
        socket = await connect(client=ADDRESS_A)
        reply = await request(socket, {"action": "authenticate", "token": "wrong", "request_id": 1})
        assert_error(reply, "not_authenticated", 1)
        await socket.send_json_to({"action": "authenticate", "token": "wrong"})
        await assert_closed_with(socket, 4008)
    statements.clear()

    # Four failures spent the address's budget: even a good token is not looked up.
    socket = await connect(client=ADDRESS_A)
    await socket.send_json_to({"action": "authenticate", "token": keys["alice"], "request_id": 1})
    await assert_closed_with(socket, 4008)
    await connect(client=ADDRESS_A, token=keys["alice"], accepted=False)
    assert statements.outside_relay() == []

    # Another address is not concerned.
    other = await connect(client=ADDRESS_B, token=keys["alice"])
    await assert_open(other)


async def test_wrong_token_headers_spend_the_address_budget(connect, domain, keys, settings):
    settings.DRF_LIVE = {"AUTH_FAILURE_BURST": 2, "AUTH_FAILURE_RATE": 0.001}
    await connect(client=ADDRESS_A, token="wrong", accepted=False)
    await connect(client=ADDRESS_A, token="wrong", accepted=False)

    socket = await connect(client=ADDRESS_A)
    await socket.send_json_to({"action": "authenticate", "token": keys["alice"]})

    await assert_closed_with(socket, 4008)
