"""The edges, tried as an attacker would: a real uvicorn (started as ``make run`` starts it), Redis, real sockets.

Each test is one of the attacks that worked against an earlier server: a
session cookie used from an origin Django's CSRF check refuses, a session that
Django ended but whose socket lived on, floods of cheap and of database-backed
actions, strangers' sockets and token guessing, handshakes that never finish,
and frames that made the server log a traceback each.

The module's main server has small caps on unauthenticated sockets and failed
authentications, so that each is reached in a few sockets, and re-validates
session sockets every second; everything else is as shipped. It trusts
``X-Forwarded-For`` from 127.0.0.1 (uvicorn's ``--forwarded-allow-ips``), which
is how these tests come from several client addresses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.servers import DEMO_PASSWORD, AsgiServer, demo_tokens, manage, receive_nothing, recv_json, send_json

pytestmark = pytest.mark.e2e

EDGE_SETTINGS = {
    "MAX_UNAUTHENTICATED_SOCKETS": 6,
    "MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": 3,
    "AUTH_FAILURE_BURST": 4,
    "AUTH_FAILURE_RATE": 0.001,
    "SESSION_RECHECK_INTERVAL": 1,
}
CLOSE_WAIT = 10.0


@dataclass
class Server:
    asgi: AsgiServer
    env: dict[str, str]
    tokens: dict[str, str]

    @property
    def origin(self) -> str:
        """The origin of a page served by this server, as a browser sends it."""
        return f"http://127.0.0.1:{self.asgi.port}"


@pytest.fixture(scope="module")
def servers(server_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """The main server, and one with ``ALLOWED_HOSTS=*`` and a trusted ``http://localhost:3000``."""
    env = {**server_env, "DRF_LIVE": json.dumps(EDGE_SETTINGS)}
    open_env = {**server_env, "ALLOWED_HOSTS": "*", "CSRF_TRUSTED_ORIGINS": "http://localhost:3000"}
    main = AsgiServer(env, "asgi-edges", extra_args=["--forwarded-allow-ips", "127.0.0.1"])
    wildcard = AsgiServer(open_env, "asgi-edges-wildcard")
    try:
        main.spawn()
        wildcard.spawn()
        main.wait_ready()
        wildcard.wait_ready()
        yield Server(main, env, demo_tokens(main)), Server(wildcard, open_env, demo_tokens(wildcard))
    finally:
        main.stop()
        wildcard.stop()
    # Not one traceback, whatever the tests threw at them (invalid UTF-8 included).
    main.assert_no_tracebacks()
    wildcard.assert_no_tracebacks()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@asynccontextmanager
async def ws(
    server: Server,
    token: str | None = None,
    address: str | None = None,
    cookie: str | None = None,
    origin: str | None = None,
    **options: Any,
) -> AsyncIterator[ClientConnection]:
    """A WebSocket to ``server``: by token header or session cookie, from ``address`` (X-Forwarded-For)."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    if address is not None:
        headers["X-Forwarded-For"] = address
    if cookie is not None:
        headers["Cookie"] = f"sessionid={cookie}"
    async with connect(
        server.asgi.ws_url,
        additional_headers=headers,
        origin=Origin(origin) if origin is not None else None,
        open_timeout=10,
        proxy=None,
        **options,
    ) as socket:
        yield socket


async def refused_status(server: Server, **kwargs: Any) -> int:
    """The HTTP status of a handshake that must be refused."""
    with pytest.raises(InvalidStatus) as refused:
        async with ws(server, **kwargs):
            pass
    return refused.value.response.status_code


async def assert_open(socket: ClientConnection) -> None:
    await send_json(socket, {"action": "ping", "request_id": "open?"})
    assert await recv_json(socket) == {"type": "PONG", "payload": None, "meta": {"request_id": "open?"}}


async def close_code(socket: ClientConnection, timeout: float = CLOSE_WAIT) -> int | None:
    """Read until the server closes; the code of its close frame (frames before it are dropped)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await socket.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


@dataclass
class Browser:
    """A browser's cookies after logging in through Django's login form."""

    session: str
    csrf: str


async def log_in(server: Server, username: str, password: str = DEMO_PASSWORD) -> Browser:
    async with httpx.AsyncClient(base_url=server.asgi.http_url, timeout=10) as http:
        form = await http.get("/api-auth/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert match is not None, "no CSRF token in the login form"
        response = await http.post(
            "/api-auth/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": match.group(1), "next": "/api/"},
        )
        assert response.status_code == 302, response.text
        return Browser(str(http.cookies["sessionid"]), str(http.cookies["csrftoken"]))


async def rest_write(server: Server, browser: Browser, origin: str | None = None) -> httpx.Response:
    """A write through the REST API with the browser's cookies (and ``Origin``), which Django CSRF-checks."""
    headers = {"X-CSRFToken": browser.csrf, "Cookie": f"sessionid={browser.session}; csrftoken={browser.csrf}"}
    if origin is not None:
        headers["Origin"] = origin
    async with httpx.AsyncClient(base_url=server.asgi.http_url, timeout=10, headers=headers) as http:
        me = await http.get("/api/users/me/")
        if me.status_code != 200:
            return me
        return await http.patch(f"/api/users/{me.json()['id']}/", json={"display_name": "Written"})


# 1. The Origin check is Django's ---------------------------------------------------------------


async def socket_sees_alice(server: Server, browser: Browser, origin: str) -> bool:
    """Whether a session-cookie handshake from ``origin`` is accepted and reads alice's own data."""
    try:
        async with ws(server, cookie=browser.session, origin=origin) as socket:
            me = (await rest_get(server, "alice", "/api/users/me/"))["id"]
            await send_json(socket, {"action": "subscribe", "model": "api.user", "id": me, "request_id": 1})
            reply = await recv_json(socket)
            assert reply["type"] == "SUBSCRIBED" and reply["payload"]["email"] == "alice@example.com", reply
            return True
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False


async def rest_get(server: Server, user: str, url: str) -> Any:
    headers = {"Authorization": f"Token {server.tokens[user]}"}
    async with httpx.AsyncClient(base_url=server.asgi.http_url, headers=headers, timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize("which", ["default-allowed-hosts", "allowed-hosts-wildcard"])
async def test_session_cookie_handshake_is_accepted_from_exactly_the_origins_djangos_csrf_check_accepts(
    servers: tuple[Server, Server], which: str
) -> None:
    server = servers[0] if which == "default-allowed-hosts" else servers[1]
    port = server.asgi.port
    if which == "default-allowed-hosts":  # ALLOWED_HOSTS=127.0.0.1,localhost,testserver
        expected = {server.origin: True}
    else:  # ALLOWED_HOSTS=*, CSRF_TRUSTED_ORIGINS=http://localhost:3000
        expected = {server.origin: True, "http://localhost:3000": True}
    for origin in [
        "http://127.0.0.1:9999",
        f"https://127.0.0.1:{port}",
        "http://localhost:3000",
        "https://evil.example",
    ]:
        expected.setdefault(origin, False)
    browser = await log_in(server, "alice")

    for origin, accepted in expected.items():
        response = await rest_write(server, browser, origin)
        rest_accepted = response.status_code == 200
        if not rest_accepted:
            assert response.status_code == 403 and "Origin checking failed" in response.text, response.text

        assert rest_accepted is accepted, (origin, response.text)
        assert await socket_sees_alice(server, browser, origin) is accepted, origin


# 2. Sessions end when Django ends them ------------------------------------------------------------

SESSION_ENDINGS = {
    # Django's password change (the session hash of every other session no longer matches).
    "password-changed": "u = User.objects.get(username={name!r}); u.set_password('another-pw'); u.save()",
    # An admin's "log out everywhere", or a session store flush.
    "session-deleted": "Session.objects.filter(session_key={session!r}).delete()",
    # No signal at all: found by the periodic re-validation (SESSION_RECHECK_INTERVAL, 1 s here).
    "expired-by-update": "Session.objects.filter(session_key={session!r}).update(expire_date=now())",
}


def new_user(server: Server, password: str) -> tuple[str, str]:
    """A fresh user with ``password`` and an API token, made by another process: (username, token)."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    code = (
        "from api.models import User; from rest_framework.authtoken.models import Token; "
        f"print(Token.objects.create(user=User.objects.create_user({name!r}, password={password!r})).key)"
    )
    return name, manage("shell", "-c", code, env=server.env).strip().splitlines()[-1]


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", SESSION_ENDINGS)
async def test_session_socket_is_closed_with_4001_when_django_ends_its_session(server: Server, ending: str) -> None:
    name, token = await asyncio.to_thread(new_user, server, "a-password")
    browser = await log_in(server, name, "a-password")
    bob = await log_in(server, "bob")
    code = (
        "from api.models import User; from django.contrib.sessions.models import Session; "
        "from django.utils.timezone import now; " + SESSION_ENDINGS[ending].format(name=name, session=browser.session)
    )
    async with (
        ws(server, cookie=browser.session, origin=server.origin) as session_socket,
        ws(server, token=token) as token_socket,
        ws(server, cookie=bob.session, origin=server.origin) as other,
    ):
        await assert_open(session_socket)
        assert (await rest_write(server, browser)).status_code == 200

        # Committed by another process; the close travels through Redis (or comes from the re-check).
        await asyncio.to_thread(manage, "shell", "-c", code, env=server.env)

        assert await close_code(session_socket) == 4001
        # REST refuses the same cookie now.
        assert (await rest_write(server, browser)).status_code == 403
        # The user's token (DRF tokens outlive sessions and passwords) and other users' sessions stay.
        await assert_open(token_socket)
        await assert_open(other)
        await receive_nothing(other)


# 3. Every action has a budget ------------------------------------------------------------------------


@dataclass
class Flood:
    replies: list[dict[str, Any]]
    close_code: int | None


async def flood(socket: ClientConnection, frames: list[dict[str, Any]]) -> Flood:
    """Send every frame as fast as the socket takes them, reading every reply, until the server closes."""
    replies: list[dict[str, Any]] = []

    async def read() -> int | None:
        try:
            while True:
                replies.append(json.loads(await socket.recv()))
                if len(replies) == len(frames):
                    return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None

    reader = asyncio.create_task(read())
    try:
        for frame in frames:
            await socket.send(json.dumps(frame))
    except ConnectionClosed:
        pass
    async with asyncio.timeout(30):
        code = await reader
    return Flood(replies, code)


def assert_every_frame_answered_in_order(result: Flood) -> None:
    """Nothing dropped silently: reply n answers frame n, up to the close."""
    assert [reply["meta"].get("request_id") for reply in result.replies] == list(range(len(result.replies)))


@pytest.mark.asyncio
async def test_ping_flood_is_throttled_then_closed_with_4008_every_frame_answered_until_then(server: Server) -> None:
    frames = [{"action": "ping", "request_id": n} for n in range(5000)]
    async with (
        ws(server, token=server.tokens["alice"], max_queue=None) as socket,
        ws(server, token=server.tokens["bob"]) as other,
    ):
        result = await flood(socket, frames)

        assert result.close_code == 4008
        assert_every_frame_answered_in_order(result)
        kinds = [reply["type"] if reply["type"] != "ERROR" else reply["payload"]["code"] for reply in result.replies]
        # Default budgets: 20 pings, then 2 a second; 500 errors, then 20 a second.
        assert 20 <= kinds.count("PONG") <= 100
        assert set(kinds) == {"PONG", "throttled"}
        assert len(result.replies) < 1000
        await assert_open(other)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("action", "answer", "burst", "at_most"),
    # Default budgets: 3 then one per 5 s; 50 then 20 per second (generous: the flood lasts seconds at most).
    [("authenticate", "AUTHENTICATED", 3, 6), ("unsubscribe", "UNSUBSCRIBED", 50, 150)],
)
async def test_flood_of_an_action_is_answered_throttled_past_its_budget(
    server: Server, action: str, answer: str, burst: int, at_most: int
) -> None:
    # authenticate with a valid token is a database query each: its budget is 3, then one every 5 s.
    body = {"token": server.tokens["alice"]} if action == "authenticate" else {"model": "api.task", "id": "x"}
    frames = [{"action": action, **body, "request_id": n} for n in range(200)]
    async with ws(server, token=server.tokens["alice"], max_queue=None) as socket:
        result = await flood(socket, frames)

        assert result.close_code is None, "the socket stays open: 200 errors are within ERROR_BURST"
        assert_every_frame_answered_in_order(result)
        answered = [reply for reply in result.replies if reply["type"] == answer]
        throttled = [
            reply for reply in result.replies if reply.get("error") and reply["payload"]["code"] == "throttled"
        ]
        assert burst <= len(answered) <= at_most
        assert len(answered) + len(throttled) == 200
        await assert_open(socket)


# 4. Strangers pay ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unauthenticated_sockets_are_capped_per_address_and_per_process(server: Server) -> None:
    # Here: 3 per address, 6 in all. Authenticated sockets do not count.
    async with (
        ws(server, address="203.0.113.1") as a1,
        ws(server, address="203.0.113.1") as a2,
        ws(server, address="203.0.113.1") as a3,
    ):
        assert await refused_status(server, address="203.0.113.1") == 429
        async with (
            ws(server, address="203.0.113.2"),
            ws(server, address="203.0.113.2"),
            ws(server, address="203.0.113.3"),
        ):
            assert await refused_status(server, address="203.0.113.4") == 429
            async with ws(server, address="203.0.113.1", token=server.tokens["bob"]) as by_token:
                await assert_open(by_token)
            # Authenticating by frame gives the place back.
            await send_json(a1, {"action": "authenticate", "token": server.tokens["alice"], "request_id": 1})
            assert (await recv_json(a1))["type"] == "AUTHENTICATED"
            async with ws(server, address="203.0.113.4") as late:
                await assert_open(late)
            for socket in (a1, a2, a3):
                await assert_open(socket)


@pytest.mark.asyncio
async def test_wrong_tokens_cost_the_socket_then_the_address_not_the_database(server: Server) -> None:
    # Here: 3 failures per socket (the default), 4 per address.
    async with ws(server, address="203.0.113.9") as guesser:
        for n in range(2):
            await send_json(guesser, {"action": "authenticate", "token": f"guess-{n}", "request_id": n})
            reply = await recv_json(guesser)
            assert reply["payload"]["code"] == "not_authenticated" and reply["meta"]["request_id"] == n
        await send_json(guesser, {"action": "authenticate", "token": "guess-2", "request_id": 2})
        assert await close_code(guesser) == 4008

    async with ws(server, address="203.0.113.9") as guesser:
        await send_json(guesser, {"action": "authenticate", "token": "guess-3", "request_id": 3})
        assert (await recv_json(guesser))["payload"]["code"] == "not_authenticated"
        # The address's budget is spent: not even a good token is looked up now.
        await send_json(guesser, {"action": "authenticate", "token": server.tokens["alice"], "request_id": 4})
        assert await close_code(guesser) == 4008
    assert await refused_status(server, address="203.0.113.9", token=server.tokens["alice"]) == 429

    async with ws(server, address="203.0.113.10", token=server.tokens["alice"]) as elsewhere:
        await assert_open(elsewhere)


@pytest.mark.asyncio
async def test_two_hundred_refused_handshakes_log_a_bounded_number_of_lines(server: Server) -> None:
    # A reconnect storm past the cap on unauthenticated sockets: each refusal is an HTTP 429.
    log = server.asgi.log_path
    start = log.stat().st_size
    async with (
        ws(server, address="203.0.113.20") as a1,
        ws(server, address="203.0.113.20") as a2,
        ws(server, address="203.0.113.20") as a3,
    ):
        statuses = [await refused_status(server, address="203.0.113.20") for _ in range(200)]
        for socket in (a1, a2, a3):
            await assert_open(socket)
    assert statuses == [429] * 200
    lines = log.read_bytes()[start:].decode(errors="replace").splitlines()
    about_refusals = [line for line in lines if "without completing handshake" in line]
    # LOG_ABUSE_BURST (10) per LOG_ABUSE_INTERVAL (60 s), and perhaps one more that says how many were not.
    assert 1 <= len(about_refusals) <= 12, about_refusals


# 5. Handshakes that never finish ---------------------------------------------------------------------

# Generous: what the shipped command (5 s) must beat by far.
STALLED_DROP_LIMIT = 60.0


async def dropped_after(port: int, sent: bytes, trickle: bytes = b"") -> float:
    """Open a TCP connection, send ``sent`` (then ``trickle`` a byte a second); seconds until the server drops it."""
    opened = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        await writer.drain()

        async def drip() -> None:
            try:
                for byte in trickle:
                    await asyncio.sleep(1)
                    writer.write(bytes([byte]))
                    await writer.drain()
            except ConnectionError:
                pass  # dropped

        dripping = asyncio.create_task(drip())
        try:
            async with asyncio.timeout(STALLED_DROP_LIMIT + 5):
                data = await reader.read(65536)
        except ConnectionError:
            data = b""
        except TimeoutError:
            return float("inf")  # still held
        finally:
            dripping.cancel()
        assert data == b"", f"the server answered a request it never got whole: {data[:200]!r}"
        return time.monotonic() - opened
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_stalled_handshakes_are_dropped_and_established_sockets_are_not(server: Server) -> None:
    port = server.asgi.port
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    key = base64.b64encode(os.urandom(16))
    request = b"GET /ws/notifications/ HTTP/1.1\r\n" + host + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    async with ws(server, token=server.tokens["alice"]) as established:
        stalled = await asyncio.gather(
            dropped_after(port, b""),  # connects, sends nothing
            dropped_after(port, b"GET /ws/notif"),  # half a request line
            dropped_after(port, request),  # headers without their end
            dropped_after(port, request, trickle=b"Sec-WebSocket-Key: " + key + b"\r\n"),  # a header byte a second
        )

        assert all(seconds < STALLED_DROP_LIMIT for seconds in stalled), stalled
        # A socket past its handshake is not timed by it, however quiet.
        await assert_open(established)
        await receive_nothing(established)


# 6. What clients cause is logged at a bounded rate ---------------------------------------------------


def invalid_utf8_frame() -> bytes:
    """A masked text frame holding bytes that are not UTF-8."""
    payload, mask = b"\xff\xfe\xfd", os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def send_invalid_utf8(port: int, token: str) -> int:
    """Handshake, one invalid text frame; the close code the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws/notifications/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Token {token}\r\n\r\n"
            ).encode()
        )
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        writer.write(invalid_utf8_frame())
        frame = await asyncio.wait_for(reader.readexactly(4), 10)
        assert frame[0] == 0x88, frame  # a close frame
        return int.from_bytes(frame[2:4], "big")
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_two_hundred_invalid_utf8_frames_log_a_bounded_number_of_lines_and_no_traceback(server: Server) -> None:
    log = server.asgi.log_path
    start = log.stat().st_size

    codes = [await send_invalid_utf8(server.asgi.port, server.tokens["bob"]) for _ in range(200)]
    async with ws(server, token=server.tokens["bob"]) as after:
        await assert_open(after)  # the server is still serving
    # A handshake to any other path is refused, not answered with a 500 and a traceback.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{server.asgi.port}/ws/nope/", open_timeout=10, proxy=None):
            pass

    assert codes == [1007] * 200
    assert refused.value.response.status_code == 404
    lines = log.read_bytes()[start:].decode(errors="replace").splitlines()
    about_utf8 = [line for line in lines if "Invalid UTF-8" in line]
    # LOG_ABUSE_BURST (10) per LOG_ABUSE_INTERVAL (60 s), and perhaps one more that says how many were not.
    assert 1 <= len(about_utf8) <= 12, about_utf8
    assert not any("Traceback" in line for line in lines)
