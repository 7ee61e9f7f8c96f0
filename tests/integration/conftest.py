"""A real redis-server, a database the server processes share, and ASGI servers using both."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.servers import (
    DEMO_PASSWORD,
    AsgiServer,
    RedisServer,
    ServerDatabase,
    manage,
    process_env,
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def server_env(redis_server: RedisServer) -> Iterator[dict[str, str]]:
    """The environment of every process of the module: a migrated database with the demo data, one Redis."""
    database = ServerDatabase()
    try:
        env = process_env(database.url, redis_server.url)
        manage("migrate", "--noinput", env=env)
        manage("load_demo", "--quiet", env=env)
        yield env
    finally:
        database.drop()


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
    with httpx.Client(base_url=asgi_servers[0].http_url, timeout=10) as http:
        tokens = {}
        for name in ("alice", "bob"):
            response = http.post("/api/auth/token/", json={"username": name, "password": DEMO_PASSWORD})
            assert response.status_code == 200, response.text
            tokens[name] = str(response.json()["token"])
        return tokens
