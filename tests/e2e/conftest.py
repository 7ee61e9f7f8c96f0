"""The real ASGI server in a subprocess, on the embedded settings (in-memory layer) and on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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


@dataclass
class Live:
    """A running server, the environment its processes share, and the demo users' tokens."""

    server: AsgiServer
    env: dict[str, str]
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def database() -> Iterator[ServerDatabase]:
    """A migrated database with the demo data, shared by the module's server processes."""
    database = ServerDatabase()
    try:
        env = process_env(database.url)
        manage("migrate", "--noinput", env=env)
        manage("load_demo", "--quiet", env=env)
        yield database
    finally:
        database.drop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", params=["memory", "redis"])
def live(request: pytest.FixtureRequest, database: ServerDatabase) -> Iterator[Live]:
    """The server with the in-memory channel layer (the default), then with ``REDIS_URL``."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    env = process_env(database.url, redis_url)
    server = AsgiServer(env, f"e2e-{request.param}")
    try:
        server.start()
        with httpx.Client(base_url=server.http_url, timeout=10) as http:
            tokens = {}
            for name in ("alice", "bob"):
                response = http.post("/api/auth/token/", json={"username": name, "password": DEMO_PASSWORD})
                assert response.status_code == 200, response.text
                tokens[name] = str(response.json()["token"])
        yield Live(server, env, tokens)
    finally:
        server.stop()
    server.assert_no_tracebacks()
