"""Abuse over real sockets: a real uvicorn, a real Redis, real ``websockets`` clients.

One server process for the module, started as ``make run`` starts it
(``--ws-max-size 65536``) with ``DRF_LIVE`` set so that each defence shows in
a short test: ``SEND_TIMEOUT`` of 1 s (slow consumers), a ``MAX_FRAME_BYTES``
above the ASGI server's limit (so a 1009 can only come from uvicorn), and an
``ERROR_BURST`` (with action budgets and failed-authentication limits) high
enough that a 3,000-frame flood is handled frame by frame rather than cut short
with ``throttled`` and 4008 (which tests/notifications/test_limits.py and
tests/integration/test_edges.py prove on their own).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.clients import get_list
from tests.servers import (
    AsgiServer,
    demo_tokens,
    manage,
    receive_nothing,
    recv_json,
    send_json,
    subscribe,
)

pytestmark = pytest.mark.e2e

ASGI_MAX_SIZE = 65536
SERVER_SETTINGS = {
    "SEND_TIMEOUT": 1,
    "MAX_FRAME_BYTES": 1048576,
    "ERROR_BURST": 100000,
    # The flood's pings, unsubscribes and wrong tokens are answered one by one too
    # (these budgets have tests of their own, in test_edges.py).
    "ACTION_BUDGETS": {action: [1, 100000] for action in ("ping", "unsubscribe", "authenticate", "*")},
    "MAX_AUTH_FAILURES": 100000,
    "AUTH_FAILURE_BURST": 100000,
}
FLOOD_FRAMES = 3000
# `not_allowed`: the socket writes (`create`, `update`, ...) the example domain does not enable.
FLOOD_ERRORS = {
    "parse_error",
    "invalid",
    "unknown_action",
    "not_allowed",
    "not_found",
    "not_authenticated",
    "throttled",
}
BIG_EVENTS = 200
BIG_BLOB = 50000
# Generous: the server's own growth while 10 MB of events pass through it.
RSS_GROWTH_LIMIT = 200 * 1024 * 1024


@dataclass
class Server:
    """The module's server process, the environment of its processes, and the demo users' tokens."""

    asgi: AsgiServer
    env: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def server(server_env: dict[str, str]) -> Iterator[Server]:
    env = {**server_env, "DRF_LIVE": json.dumps(SERVER_SETTINGS)}
    asgi = AsgiServer(env, "asgi-abuse", extra_args=["--ws-max-size", str(ASGI_MAX_SIZE)])
    try:
        asgi.start()
        tokens = demo_tokens(asgi)
        yield Server(asgi, env, tokens)
    finally:
        asgi.stop()
    asgi.assert_no_tracebacks()


@asynccontextmanager
async def ws_as(server: Server, token: str, **options: Any) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Token {token}"}
    async with connect(server.asgi.ws_url, additional_headers=headers, open_timeout=10, proxy=None, **options) as ws:
        yield ws


async def assert_open(ws: ClientConnection) -> None:
    await send_json(ws, {"action": "ping", "request_id": "open?"})
    assert await recv_json(ws) == {"type": "PONG", "payload": None, "meta": {"request_id": "open?"}}


async def close_code(ws: ClientConnection, timeout: float) -> int | None:
    """Read (and drop) frames until the server closes; the code of its close frame."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def wait_for_log(server: Server, line: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while line not in server.asgi.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"The server did not log {line!r} within {timeout} s; see {server.asgi.log_path}")
        await asyncio.sleep(0.1)


def rss_bytes(server: Server) -> int:
    assert server.asgi.process is not None
    status = open(f"/proc/{server.asgi.process.pid}/status").read()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


async def a_website_task(server: Server, title: str) -> dict[str, Any]:
    """The demo task called ``title`` in alice's "Website" (bob is a member), over REST."""
    headers = {"Authorization": f"Token {server.tokens['bob']}"}
    async with httpx.AsyncClient(base_url=server.asgi.http_url, headers=headers, timeout=10) as http:
        tasks = await get_list(http, "/api/tasks/")
    return next(task for task in tasks if task["title"] == title)


def new_user_token(server: Server) -> str:
    """A fresh user (no password, nothing shared) and its API token, made by another process."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    code = (
        "from api.models import User; from rest_framework.authtoken.models import Token; "
        f"print(Token.objects.create(user=User.objects.create_user({name!r}, password=None)).key)"
    )
    return manage("shell", "-c", code, env=server.env).strip().splitlines()[-1]


def dump(server: Server) -> list[dict[str, Any]]:
    """Every row of the database, as ``dumpdata`` shows them, sorted.

    Without drf-live's outbox, whose rows come and go as writes are published.
    """
    rows = json.loads(manage("dumpdata", "--exclude", "drf_live.outboxentry", env=server.env, timeout=120))
    return sorted(rows, key=lambda row: (row["model"], str(row["pk"])))


# Frame size --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_frame_over_ws_max_size_is_refused_by_the_asgi_server_with_1009(server: Server) -> None:
    async with ws_as(server, server.tokens["alice"]) as other:
        async with ws_as(server, server.tokens["alice"]) as ws:
            # Were it read, the consumer (MAX_FRAME_BYTES is 1 MiB here) would answer
            # it with an error reply and stay open: only uvicorn closes with 1009.
            await ws.send(json.dumps({"action": "ping", "request_id": "x" * ASGI_MAX_SIZE}))

            assert await close_code(ws, timeout=5) == 1009

        await assert_open(other)


@pytest.mark.asyncio
async def test_frame_just_under_ws_max_size_reaches_the_consumer(server: Server) -> None:
    async with ws_as(server, server.tokens["alice"]) as ws:
        frame = json.dumps({"action": "ping", "request_id": "x" * (ASGI_MAX_SIZE - 100)})
        assert len(frame) < ASGI_MAX_SIZE

        await ws.send(frame)

        # Read and answered by the consumer: a request_id is at most 100 characters.
        reply = await recv_json(ws)
        assert reply["type"] == "ERROR" and reply["payload"]["code"] == "invalid"
        assert reply["payload"]["fields"] == ["request_id"]
        await assert_open(ws)


# Floods ---------------------------------------------------------------------------------


@dataclass
class Flood:
    sent: int = 0
    replies: int = 0
    codes: set[str] = field(default_factory=set)
    close_code: int | None = None
    open_at_end: bool = False


def bad_frames(count: int, task_id: str) -> list[str | bytes]:
    """Junk, invalid requests, probes of what is not visible, and writes the protocol does not have."""
    rng = random.Random(3000)
    texts: list[str | bytes] = ["not json", "{", "[]", "null", "5", '"subscribe"', " ", "{'a': 1}"]
    objects = [
        {"action": "subscribe"},
        {"action": "subscribe", "model": "api.task", "id": 5},
        {"action": "subscribe", "model": "api.task", "id": "zzzzzzz"},
        {"action": "subscribe", "model": "api.nope", "id": task_id},
        {"action": "subscribe", "model": "auth.permission", "id": "1"},
        {"action": "subscribe", "model": "api.task", "filter": {"title": "x"}},
        {"action": "update", "model": "api.task", "id": task_id, "title": "pwned"},
        {"action": "delete", "model": "api.task", "id": task_id},
        {"action": "create", "model": "api.task", "project": task_id, "title": "spam"},
        {"action": "authenticate", "token": "wrong"},
        {"action": "ping", "request_id": {"nested": True}},
        {"action": 7},
        {},
    ]
    frames: list[str | bytes] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.2:
            frames.append(rng.choice(texts))
        elif roll < 0.3:
            frames.append(rng.randbytes(rng.randint(1, 30)))
        else:
            frames.append(json.dumps(rng.choice(objects)))
    return frames


async def flood(ws: ClientConnection, frames: list[str | bytes], result: Flood, started: asyncio.Event) -> None:
    """Send every frame as fast as the socket takes them, reading the replies alongside."""

    async def read() -> None:
        try:
            while True:
                reply = json.loads(await ws.recv())
                assert reply["type"] == "ERROR" and reply["error"] is True, reply
                result.replies += 1
                result.codes.add(reply["payload"]["code"])
                if result.replies >= 100:
                    started.set()
        except ConnectionClosed as closed:
            result.close_code = closed.rcvd.code if closed.rcvd is not None else None

    reader = asyncio.create_task(read())
    try:
        for frame in frames:
            await ws.send(frame)
            result.sent += 1
    except ConnectionClosed:
        pass
    else:
        # Every frame gets its error reply, unless the server closed the socket.
        async with asyncio.timeout(30):
            while result.replies < len(frames) and not reader.done():
                await asyncio.sleep(0.01)
        result.open_at_end = not reader.done()
    finally:
        started.set()
        reader.cancel()


@pytest.mark.asyncio
async def test_flood_of_bad_frames_neither_delays_another_users_push_nor_writes(server: Server) -> None:
    task = await a_website_task(server, "Write the landing page")
    before = await asyncio.to_thread(dump, server)
    headers = {"Authorization": f"Token {server.tokens['alice']}"}

    async with (
        ws_as(server, server.tokens["bob"]) as listener,
        ws_as(server, server.tokens["alice"], max_queue=None) as flooder,
    ):
        subscribed = await subscribe(listener, "api.task", id=task["id"])
        result, started = Flood(), asyncio.Event()
        flooding = asyncio.create_task(flood(flooder, bad_frames(FLOOD_FRAMES, task["id"]), result, started))
        await started.wait()
        assert not flooding.done(), "the flood ended before the write: nothing was measured"

        async with httpx.AsyncClient(base_url=server.asgi.http_url, headers=headers, timeout=10) as http:
            written = time.monotonic()
            response = await http.patch(f"/api/tasks/{task['id']}/", json={"title": "Written during a flood"})
            assert response.status_code == 200, response.text
            event = await recv_json(listener, timeout=5)
            delay = time.monotonic() - written
        replies_when_received = result.replies
        await flooding

        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == response.json()
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        # The one time-based assertion: the write reached bob's socket within a second.
        assert delay < 1.0, f"the push took {delay:.3f} s during the flood"
        assert replies_when_received < FLOOD_FRAMES, "the flood was over before the push arrived"
        assert result.sent == FLOOD_FRAMES
        # The flooding socket is still open (every frame answered) or closed for flooding.
        assert result.open_at_end or result.close_code == 4008, result
        if result.open_at_end:
            assert result.replies == FLOOD_FRAMES
            await assert_open(flooder)
        assert result.codes <= FLOOD_ERRORS
        await receive_nothing(listener)

    after = await asyncio.to_thread(dump, server)
    # The only change is the write made through the REST API.
    expected = [
        {**row, "fields": {**row["fields"], "title": "Written during a flood"}}
        if row["model"] == "api.task" and str(row["pk"]) == task["id"]
        else row
        for row in before
    ]
    assert after == expected


# Slow consumers -----------------------------------------------------------------------


def small_buffer_socket(port: int) -> socket.socket:
    """A TCP socket to ``port`` with a 4 KiB receive buffer (set before connecting, to bound the window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def publish_big_events(server: Server, task_id: str) -> None:
    code = (
        "import notifications; from api.models import Task; "
        f"task = Task.objects.get(pk={task_id!r}); "
        f"payloads = [{{'n': n, 'blob': 'x' * {BIG_BLOB}}} for n in range({BIG_EVENTS})]; "
        "[notifications.publish_event('BIG', task, payload=payload) for payload in payloads]"
    )
    manage("shell", "-c", code, env=server.env, timeout=120)


@pytest.mark.asyncio
async def test_client_that_stops_reading_is_closed_with_4030_while_a_reader_gets_every_event(server: Server) -> None:
    task = await a_website_task(server, "Choose a colour scheme")
    sock = small_buffer_socket(server.asgi.port)
    async with (
        ws_as(server, server.tokens["bob"]) as reader,
        ws_as(server, server.tokens["alice"], sock=sock, max_queue=1, ping_interval=None) as slow,
    ):
        await subscribe(slow, "api.task", id=task["id"])
        subscribed = await subscribe(reader, "api.task", id=task["id"])
        rss_before = rss_bytes(server)
        # From here on, `slow` is not read until the end.

        async def read_all() -> list[dict[str, Any]]:
            return [await recv_json(reader, timeout=30) for _ in range(BIG_EVENTS)]

        reading = asyncio.create_task(read_all())
        await asyncio.to_thread(publish_big_events, server, task["id"])
        events = await reading
        rss_after = rss_bytes(server)

        first = subscribed["meta"]["seq"] + 1
        assert [event["meta"]["seq"] for event in events] == list(range(first, first + BIG_EVENTS))
        assert [event["payload"]["n"] for event in events] == list(range(BIG_EVENTS))
        assert all(event["type"] == "BIG" and len(event["payload"]["blob"]) == BIG_BLOB for event in events)
        assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)
        await assert_open(reader)

        # The server gives up on `slow` SEND_TIMEOUT (1 s) after its buffers filled; it says so in its log.
        await wait_for_log(server, "Slow consumer: closing the socket with 4030", timeout=10)
        # Reading again: what was buffered, then the server's close frame.
        assert await close_code(slow, timeout=30) == 4030


# Credentials ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wrong_token_is_refused_with_403(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_as(server, "0" * 40):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "revoke",
    [
        "from rest_framework.authtoken.models import Token; Token.objects.get(key={key!r}).delete()",
        "from rest_framework.authtoken.models import Token; "
        "user = Token.objects.get(key={key!r}).user; user.is_active = False; user.save()",
    ],
    ids=["token-deleted", "user-deactivated"],
)
async def test_revoked_credentials_close_the_socket_with_4001_within_a_second(server: Server, revoke: str) -> None:
    key = await asyncio.to_thread(new_user_token, server)
    # The second socket of the token is authenticated from the process's memory of the first.
    async with ws_as(server, key) as ws, ws_as(server, key) as again, ws_as(server, server.tokens["bob"]) as other:
        await assert_open(ws)
        await assert_open(again)

        # Another process commits; the close travels through Redis to this server.
        await asyncio.to_thread(manage, "shell", "-c", revoke.format(key=key), env=server.env)
        revoked = time.monotonic()
        code = await close_code(ws, timeout=5)

        assert code == 4001
        assert time.monotonic() - revoked < 1.0
        assert await close_code(again, timeout=5) == 4001
        await assert_open(other)
        await receive_nothing(other)
    with pytest.raises(InvalidStatus) as refused:
        async with ws_as(server, key):
            pass
    assert refused.value.response.status_code == 403
