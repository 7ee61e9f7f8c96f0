"""``MAX_SOCKETS_PER_USER`` across server processes: counted in Redis, and a killed process's sockets run out.

Two uvicorn servers on one Redis, with a limit of three sockets and a short
``SOCKET_LEASE``: the sockets of one user are counted together wherever they
are open, the next is closed with 4029 on either server, and when a server is
killed (SIGKILL: nothing of it is cleaned up) its sockets stop counting once
their lease runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.clients import frames_until_closed
from tests.integration.conftest import Deployment
from tests.servers import AsgiServer, recv_json, send_json

pytestmark = pytest.mark.e2e

LIMIT = 3
LEASE = 2.0


@asynccontextmanager
async def opened(server: AsgiServer, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url, additional_headers={"Authorization": f"Token {token}"}, proxy=None) as ws:
        yield ws


async def admitted(ws: ClientConnection) -> bool:
    """Whether the server kept the socket (it answers a ping) or closed it with 4029."""
    try:
        await send_json(ws, {"action": "ping", "request_id": "counted"})
        reply = await recv_json(ws)
    except ConnectionClosed:
        reply = None
    if reply is not None and reply["type"] == "PONG":
        return True
    assert ws.close_code == 4029, (reply, ws.close_code)
    return False


async def refused(server: AsgiServer, token: str) -> None:
    async with opened(server, token) as ws:
        assert await frames_until_closed(ws) == ([], 4029)


async def admitted_within(server: AsgiServer, token: str, stack: AsyncExitStack, timeout: float) -> Any:
    """A socket the server keeps, trying again while it refuses (places are freed asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ws = await stack.enter_async_context(opened(server, token))
        if await admitted(ws):
            return ws
        assert loop.time() < deadline, f"no place freed within {timeout} s"
        await asyncio.sleep(0.2)


@pytest.mark.asyncio
async def test_sockets_of_a_user_are_counted_across_servers_and_a_killed_servers_run_out(
    deployment: Any,
) -> None:
    made: Deployment = deployment("limit", settings={"MAX_SOCKETS_PER_USER": LIMIT, "SOCKET_LEASE": LEASE})
    one, two = made.servers
    token = made.tokens["bob"]
    async with AsyncExitStack() as stack:
        on_one = [await stack.enter_async_context(opened(one, token)) for _ in range(2)]
        on_two = await stack.enter_async_context(opened(two, token))
        for ws in [*on_one, on_two]:
            assert await admitted(ws)

        # Three open in all: the next one is refused on either server; another user is not concerned.
        await refused(one, token)
        await refused(two, token)
        async with opened(two, made.tokens["alice"]) as alice:
            assert await admitted(alice)

        # A socket that closes frees its place.
        await on_two.close()
        await admitted_within(one, token, stack, timeout=5)
        await refused(two, token)

        # Server one dies with three sockets counted; they stop counting once their lease runs out.
        one.kill()
        await refused(two, token)
        await asyncio.sleep(LEASE + 0.5)
        kept = [await admitted_within(two, token, stack, timeout=3) for _ in range(LIMIT)]
        await refused(two, token)
        assert len(kept) == LIMIT
