"""Fixtures shared by the whole suite: a clean event store, demo-domain factories, real processes.

Each fixture is defined once, here, or in the conftest of the one directory
that uses it; ``tests/servers.py`` holds the process helpers they build on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from notifications import limits
from notifications.relay import relay
from notifications.streams import reset_store
from tests.servers import RedisServer, ServerDatabase, manage, process_env

# drf-live's test kit, as its users load it (docs/testing.md): the live_socket, captured_events
# and api_client fixtures.
pytest_plugins = ["notifications.testing"]


@pytest.fixture(autouse=True)
def fresh_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with empty seq counters and history (the in-memory store).

    The relay finishes what the test handed it, and sweeps no more, before the
    test's database goes away: the database fixture is set up first, so that it
    is torn down after this one.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transactional = marker.kwargs.get("transaction", False) or (marker.args and marker.args[0])
        request.getfixturevalue("transactional_db" if transactional else "db")
    reset_store()
    yield
    relay.stop_sweeping()
    relay.flush(timeout=10)
    reset_store()


@pytest.fixture(autouse=True)
def fresh_limits() -> Iterator[None]:
    """Every test starts with no unauthenticated socket counted and every address's budgets full."""
    limits.reset()
    yield
    limits.reset()


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """Hash the fixtures' passwords cheaply: no test here is about hashing (the token and session tests
    still check passwords; they just check them fast)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db: Any) -> Any:
    from api.models import User

    def make(username: str, **extra: Any) -> User:
        user = User.objects.create_user(username=username, password="pw", email=f"{username}@example.com", **extra)
        return user

    return make


@pytest.fixture
def token_for(db: Any) -> Any:
    def key(user: Any) -> str:
        return Token.objects.get_or_create(user=user)[0].key

    return key


@pytest.fixture
def domain(make_user: Any) -> dict[str, Any]:
    """alice owns "Website" (bob is a member) with one task; carol owns "Secret"."""
    from api.models import Project, Task

    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    website = Project.objects.create(name="Website", owner=alice)
    website.members.add(bob)
    secret = Project.objects.create(name="Secret", owner=carol)
    task = Task.objects.create(project=website, title="Write docs")
    hidden = Task.objects.create(project=secret, title="Hidden")
    # Publish these writes now, not while the test under way subscribes.
    relay.flush(timeout=10)
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "website": website,
        "secret": secret,
        "task": task,
        "hidden": hidden,
    }


# Real processes (tests/e2e, tests/integration, the Redis store's contract tests) -----------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the module (missing: a failure in CI, a skip elsewhere)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def demo_databases() -> Iterator[Callable[[str | None], dict[str, str]]]:
    """Makes a migrated database with the demo data; returns the environment of processes on it and that Redis.

    Every process that sweeps drf-live's outbox publishes what it finds to its
    own Redis: processes that share a database must share a Redis, so each
    Redis (or the in-memory store, ``None``) gets a database of its own.
    """
    made: list[ServerDatabase] = []

    def make(redis_url: str | None) -> dict[str, str]:
        database = ServerDatabase()
        made.append(database)
        env = process_env(database.url, redis_url)
        manage("migrate", "--noinput", env=env)
        manage("load_demo", "--quiet", env=env)
        return env

    try:
        yield make
    finally:
        for database in made:
            database.drop()
