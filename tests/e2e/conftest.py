"""The real ASGI server in a subprocess, on the embedded settings (in-memory layer) and on Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.servers import AsgiServer, demo_tokens


@dataclass
class Live:
    """A running server, the environment its processes share, and the demo users' tokens."""

    server: AsgiServer
    env: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture(scope="module", params=["memory", "redis"])
def live(request: pytest.FixtureRequest, demo_databases: Callable[[str | None], dict[str, str]]) -> Iterator[Live]:
    """The server with the in-memory store (the default), then with ``REDIS_URL``; each on its own demo database."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    env = demo_databases(redis_url)
    server = AsgiServer(env, f"e2e-{request.param}")
    try:
        server.start()
        yield Live(server, env, demo_tokens(server))
    finally:
        server.stop()
    server.assert_no_tracebacks()
