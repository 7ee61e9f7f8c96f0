"""Per-audience payloads: each subscriber gets what the REST API shows it, serialized once per audience.

In the example domain ``api.user`` has two audiences: ``self`` (the user, who
sees ``email``) and ``others`` (everyone sharing a project, who do not).
Sockets run over the full stack with the in-memory store; the relay thread
decides each event for the users subscribed, from the committed rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from api.serializers import UserSerializer
from notifications.testing import published

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PER_AUDIENCE = 50


class Counter:
    """Counts calls made while ``active`` (in any thread)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.active = False

    def record(self, item: Any) -> None:
        if self.active:
            self.calls.append(item)

    def start(self) -> None:
        self.calls.clear()
        self.active = True

    def stop(self) -> list[Any]:
        self.active = False
        return list(self.calls)


@pytest.fixture
def serializer_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Every ``UserSerializer.to_representation`` call, with the requesting user's pk (None if anonymous)."""
    counter = Counter()
    original = UserSerializer.to_representation

    def counting(self: UserSerializer, instance: Any) -> Any:
        request = self.context.get("request")
        counter.record(getattr(getattr(request, "user", None), "pk", None))
        return original(self, instance)

    monkeypatch.setattr(UserSerializer, "to_representation", counting)
    yield counter


async def request(socket: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await socket.send_json_to(frame)
    return await socket.receive_json_from(timeout=5)


async def receive_each(sockets: list[Any]) -> list[dict[str, Any]]:
    """The next frame of each socket, read one socket after the other.

    Not with ``asyncio.gather``: the communicator patches ``close_old_connections``
    around each receive, and overlapping patches leave it patched for good.
    """
    return [await socket.receive_json_from(timeout=5) for socket in sockets]


@database_sync_to_async
def rest_get(user: Any, url: str) -> Any:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


@database_sync_to_async
def set_display_name(user: Any, name: str) -> None:
    user.display_name = name
    user.save()


@database_sync_to_async
def colleagues_of(owner: Any, count: int, make_user: Any, token_for: Any) -> list[tuple[Any, str]]:
    """``count`` users who share a project with ``owner`` (so they see ``owner``), with their tokens."""
    from api.models import Project

    project = Project.objects.create(name="Crowd", owner=owner)
    users = [make_user(f"colleague{n}") for n in range(count)]
    project.members.add(*users)
    return [(user, token_for(user)) for user in users]


def subscribe_user(user: Any, request_id: Any = None) -> dict[str, Any]:
    return {"action": "subscribe", "model": "api.user", "id": str(user.pk), "request_id": request_id}


async def test_only_the_owner_gets_email_on_subscribed_and_on_update(connect, domain, token_for):
    alice, bob = domain["alice"], domain["bob"]
    url = f"/api/users/{alice.pk}/"
    as_alice = await connect(token=await database_sync_to_async(token_for)(alice))
    as_bob = await connect(token=await database_sync_to_async(token_for)(bob))

    own = await request(as_alice, subscribe_user(alice, 1))
    other = await request(as_bob, subscribe_user(alice, 1))

    assert own["type"] == other["type"] == "SUBSCRIBED"
    assert own["payload"] == await rest_get(alice, url)
    assert own["payload"]["email"] == "alice@example.com"
    assert other["payload"] == await rest_get(bob, url)
    assert "email" not in other["payload"]

    await set_display_name(alice, "Alice A.")

    own_event = await as_alice.receive_json_from(timeout=5)
    other_event = await as_bob.receive_json_from(timeout=5)
    assert own_event["type"] == other_event["type"] == "UPDATE_USER"
    assert own_event["meta"] == other_event["meta"]
    assert own_event["payload"] == await rest_get(alice, url)
    assert own_event["payload"]["email"] == "alice@example.com"
    assert other_event["payload"] == await rest_get(bob, url)
    assert other_event["payload"]["display_name"] == "Alice A."
    assert "email" not in other_event["payload"]
    assert await as_alice.receive_nothing(timeout=0.2)
    assert await as_bob.receive_nothing(timeout=0.2)


async def test_one_write_serializes_once_per_audience_for_fifty_subscribers_in_each(
    connect, domain, make_user, token_for, settings, serializer_runs, statements
):
    # alice's own sockets are her audience ("self"); the others' are "others".
    settings.DRF_LIVE = {"MAX_SOCKETS_PER_USER": PER_AUDIENCE, "SUBSCRIBE_BURST": 1000}
    alice = domain["alice"]
    alice_key = await database_sync_to_async(token_for)(alice)
    colleagues = await colleagues_of(alice, PER_AUDIENCE, make_user, token_for)
    own_sockets = [await connect(token=alice_key) for _ in range(PER_AUDIENCE)]
    other_sockets = [await connect(token=key) for _user, key in colleagues]
    sockets = own_sockets + other_sockets
    for socket in sockets:
        await socket.send_json_to(subscribe_user(alice))
    snapshots = await receive_each(sockets)
    assert all(reply["type"] == "SUBSCRIBED" for reply in snapshots), snapshots
    assert all(reply["payload"]["email"] == "alice@example.com" for reply in snapshots[:PER_AUDIENCE])
    assert all("email" not in reply["payload"] for reply in snapshots[PER_AUDIENCE:])
    seq = snapshots[0]["meta"]["seq"]
    await published()  # the colleagues' project and memberships are not part of what is measured

    serializer_runs.start()
    statements.clear()
    await set_display_name(alice, "Alice, widely watched")
    own_events = await receive_each(own_sockets)
    other_events = await receive_each(other_sockets)
    runs = serializer_runs.stop()
    measured = list(statements)

    # One run per audience, each as one of its users: alice ("self") and a colleague ("others").
    assert len(runs) == 2, runs
    assert alice.pk in runs
    assert set(runs) - {alice.pk} <= {user.pk for user, _key in colleagues}
    # With UserRegistration.subscribable_by, who may see alice is one query, not one per user:
    # the whole write and its event stay a handful of statements for 100 sockets of 51 users.
    assert len(measured) < 20, measured
    own_payload = await rest_get(alice, f"/api/users/{alice.pk}/")
    other_payload = await rest_get(colleagues[0][0], f"/api/users/{alice.pk}/")
    assert "email" in own_payload and "email" not in other_payload
    expected_meta = {"model": "api.user", "id": str(alice.pk), "changed": ["display_name"], "seq": seq + 1}
    for event in own_events:
        assert event == {"type": "UPDATE_USER", "payload": own_payload, "meta": expected_meta}
    for event in other_events:
        assert event == {"type": "UPDATE_USER", "payload": other_payload, "meta": expected_meta}
    for socket in (own_sockets[0], other_sockets[0]):
        assert await socket.receive_nothing(timeout=0.2)
