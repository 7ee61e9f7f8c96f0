"""Fixtures shared by the whole suite: demo-domain factories and a clean event store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from notifications import limits
from notifications.relay import relay
from notifications.streams import reset_store


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
