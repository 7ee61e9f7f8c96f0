"""Two ASGI servers, a shell process and the demo users' tokens, on one Redis and one demo database.

``redis_server`` and ``demo_databases`` come from ``tests/conftest.py``. A test
that runs servers on a Redis of its own (to stop or kill it) gets a database
of its own too (``deployment``): processes that share a database must share a
Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.servers import AsgiServer, RedisServer, Shell, demo_tokens


@pytest.fixture(scope="module")
def server_env(redis_server: RedisServer, demo_databases: Callable[[str | None], dict[str, str]]) -> dict[str, str]:
    """The environment of every process of the module: a migrated database with the demo data, one Redis."""
    return demo_databases(redis_server.url)


@pytest.fixture(scope="module")
def asgi_servers(server_env: dict[str, str]) -> Iterator[tuple[AsgiServer, AsgiServer]]:
    """Two server processes on one database and one Redis."""
    servers = (AsgiServer(server_env, "asgi-a"), AsgiServer(server_env, "asgi-b"))
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        server.assert_no_tracebacks()


@pytest.fixture(scope="module")
def tokens(asgi_servers: tuple[AsgiServer, AsgiServer]) -> dict[str, str]:
    """The demo users' API tokens, from ``POST /api/auth/token/`` (once: password hashing is slow)."""
    return demo_tokens(asgi_servers[0])


@pytest.fixture(scope="module")
def shell(server_env: dict[str, str]) -> Iterator[Shell]:
    """A ``manage.py shell`` process on the module's database and Redis: writes from another process."""
    process = Shell(server_env).start()
    try:
        yield process
    finally:
        process.close()


# A deployment of its own, for a test that stops or kills its Redis ---------------------

#: Tracebacks a server may log while its Redis is down (a subscribe or a renewal that failed).
OUTAGE_TRACEBACKS = (
    "Stream store unavailable",
    "Could not renew the registrations",
    "Could not subscribe",
    "Could not renew the socket counts",
    "Could not count a socket",
)


@dataclass
class Deployment:
    """A Redis, a database with the demo data, two server processes and a shell process, all on them."""

    redis: RedisServer
    env: dict[str, str]
    servers: tuple[AsgiServer, AsgiServer]
    shell: Shell
    tokens: dict[str, str]


@pytest.fixture
def deployment(demo_databases: Callable[[str | None], dict[str, str]]) -> Iterator[Callable[..., Deployment]]:
    """Makes a ``Deployment``; ``appendonly`` for a Redis that persists, ``settings`` for ``DRF_LIVE``.

    When the test is done, the servers must have logged no traceback but those
    an outage explains (``OUTAGE_TRACEBACKS``).
    """
    made: list[Deployment] = []

    def make(name: str, *, appendonly: bool = False, settings: dict[str, Any] | None = None) -> Deployment:
        redis = RedisServer(appendonly=appendonly).start()
        env = demo_databases(redis.url)
        if settings:
            env = {**env, "DRF_LIVE": json.dumps(settings)}
        servers = (AsgiServer(env, f"{name}-a"), AsgiServer(env, f"{name}-b"))
        shell = Shell(env, f"{name}-shell")
        made.append(Deployment(redis, env, servers, shell, {}))
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        shell.start()
        made[-1].tokens = demo_tokens(servers[0])
        return made[-1]

    try:
        yield make
    finally:
        for made_one in made:
            made_one.shell.close()
            for server in made_one.servers:
                server.stop()
            made_one.redis.close()
    for made_one in made:
        for server in made_one.servers:
            server.assert_only_expected_tracebacks(*OUTAGE_TRACEBACKS)
