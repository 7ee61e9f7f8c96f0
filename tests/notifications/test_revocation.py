"""Revocation: a write that changes who sees an object ends the subscriptions of those who lost it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.backends.utils import CursorWrapper

from api.models import Project
from notifications.registration import Registration
from notifications.relay import relay
from notifications.routing import websocket_application
from notifications.testing import published

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture
async def connect() -> AsyncIterator[Any]:
    opened: list[WebsocketCommunicator] = []

    async def open_as(token: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            websocket_application(), "/ws/notifications/", headers=[(b"authorization", f"Token {token}".encode())]
        )
        connected, _ = await communicator.connect()
        assert connected
        opened.append(communicator)
        return communicator

    yield open_as
    for communicator in opened:
        await communicator.disconnect()


async def subscribe(communicator: WebsocketCommunicator, model: str, **target: Any) -> dict[str, Any]:
    await communicator.send_json_to({"action": "subscribe", "model": model, **target})
    reply = await communicator.receive_json_from(timeout=3)
    assert reply["type"] == "SUBSCRIBED", reply
    return reply


@pytest.fixture
def is_visible_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = Registration.is_visible

    def counting(self: Registration, user: Any, target: Any, **kwargs: Any) -> bool:
        calls.append(target)
        return original(self, user, target, **kwargs)

    monkeypatch.setattr(Registration, "is_visible", counting)
    return calls


async def test_removed_member_loses_project_task_and_collection(
    domain: Any, token_for: Any, connect: Any, is_visible_calls: list[Any]
) -> None:
    website, task, bob = domain["website"], domain["task"], domain["bob"]
    bob_socket = await connect(await database_sync_to_async(token_for)(bob))
    alice_socket = await connect(await database_sync_to_async(token_for)(domain["alice"]))
    await subscribe(bob_socket, "api.project", id=str(website.pk))
    await subscribe(bob_socket, "api.task", id=str(task.pk))
    await subscribe(bob_socket, "api.task", filter={"project": str(website.pk)})
    alice_seq = (await subscribe(alice_socket, "api.task", id=str(task.pk)))["meta"]["seq"]

    await database_sync_to_async(website.members.remove)(bob)

    revoked = [await bob_socket.receive_json_from(timeout=3) for _ in range(3)]
    assert {frame["type"] for frame in revoked} == {"UNSUBSCRIBED"}
    assert all(frame["meta"]["reason"] == "revoked" and frame["payload"] is None for frame in revoked)
    assert sorted(str(frame["meta"].get("id") or frame["meta"].get("filter")) for frame in revoked) == sorted(
        [str(website.pk), str(task.pk), str({"project": str(website.pk)})]
    )
    # The UPDATE_PROJECT of the removal itself is not sent to the member who lost access.
    assert await bob_socket.receive_nothing(timeout=0.3)

    task.title = "After bob left"
    await database_sync_to_async(task.save)()

    update = await alice_socket.receive_json_from(timeout=3)
    assert update["type"] == "UPDATE_TASK"
    assert update["payload"]["title"] == "After bob left"
    assert update["meta"]["seq"] == alice_seq + 1
    assert await bob_socket.receive_nothing(timeout=0.3)


async def test_task_moved_to_a_project_the_subscriber_cannot_see_is_revoked(
    domain: Any, token_for: Any, connect: Any
) -> None:
    task, alice = domain["task"], domain["alice"]
    private = await database_sync_to_async(Project.objects.create)(name="Alice only", owner=alice)
    bob_socket = await connect(await database_sync_to_async(token_for)(domain["bob"]))
    alice_socket = await connect(await database_sync_to_async(token_for)(alice))
    await subscribe(bob_socket, "api.task", id=str(task.pk))
    await subscribe(alice_socket, "api.task", id=str(task.pk))

    task.project = private
    await database_sync_to_async(task.save)()

    assert await bob_socket.receive_json_from(timeout=3) == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"model": "api.task", "id": str(task.pk), "reason": "revoked"},
    }
    moved = await alice_socket.receive_json_from(timeout=3)
    assert moved["type"] == "UPDATE_TASK"
    assert moved["meta"]["changed"] == ["project"]
    assert await bob_socket.receive_nothing(timeout=0.3)


async def test_writes_that_cannot_change_access_trigger_no_recheck(
    domain: Any, token_for: Any, connect: Any, is_visible_calls: list[Any]
) -> None:
    task, website = domain["task"], domain["website"]
    bob_socket = await connect(await database_sync_to_async(token_for)(domain["bob"]))
    await subscribe(bob_socket, "api.task", id=str(task.pk))
    await subscribe(bob_socket, "api.project", id=str(website.pk))

    task.title = "Renamed"
    await database_sync_to_async(task.save)()
    website.name = "Website 2"
    await database_sync_to_async(website.save)()

    first = await bob_socket.receive_json_from(timeout=3)
    second = await bob_socket.receive_json_from(timeout=3)
    assert [first["type"], second["type"]] == ["UPDATE_TASK", "UPDATE_PROJECT"]
    # The relay decided both events; no socket had to re-check its subscriptions.
    assert is_visible_calls == []


async def test_adding_a_member_revokes_nobody(
    domain: Any, token_for: Any, connect: Any, is_visible_calls: list[Any]
) -> None:
    website = domain["website"]
    bob_socket = await connect(await database_sync_to_async(token_for)(domain["bob"]))
    await subscribe(bob_socket, "api.project", id=str(website.pk))

    await database_sync_to_async(website.members.add)(domain["carol"])

    update = await bob_socket.receive_json_from(timeout=3)
    assert update["type"] == "UPDATE_PROJECT"
    assert update["meta"]["changed"] == ["members"]
    assert is_visible_calls == []


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every SQL statement any thread runs from now on, with the thread's name."""
    executed: list[tuple[str, str]] = []
    original = CursorWrapper._execute_with_wrappers

    def counting(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        executed.append((threading.current_thread().name, sql))
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counting)
    return executed


async def test_the_writer_only_updates_its_row_and_records_one_outbox_row(
    domain: Any, token_for: Any, connect: Any, statements: list[tuple[str, str]]
) -> None:
    task = domain["task"]
    bob_socket = await connect(await database_sync_to_async(token_for)(domain["bob"]))
    await subscribe(bob_socket, "api.task", id=str(task.pk))
    await subscribe(bob_socket, "api.task", filter={"project": str(task.project_id)})

    statements.clear()
    task.title = "Renamed"
    await database_sync_to_async(task.save)()
    updates = [await bob_socket.receive_json_from(timeout=3) for _ in range(2)]

    assert {frame["type"] for frame in updates} == {"UPDATE_TASK"}
    writer = [
        sql
        for thread, sql in statements
        if thread != "drf-live-relay" and not sql.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ]
    # The UPDATE and its outbox row, in one transaction: no read, no query per subscriber, no Redis.
    assert [sql.split()[0].upper() for sql in writer] == ["UPDATE", "INSERT"], writer
    assert 'INTO "drf_live_outbox"' in writer[1]


async def test_the_relay_asks_once_per_distinct_user_never_per_socket(
    domain: Any, token_for: Any, connect: Any, statements: list[tuple[str, str]], replace_registration: Any
) -> None:
    from api.models import Task
    from api.notifications import TaskRegistration

    class Undeclared(TaskRegistration):
        def subscribable_by(self, instance: Any) -> None:
            return None  # ask the viewset, user by user

    replace_registration(Task, Undeclared)
    task = domain["task"]
    bob_key = await database_sync_to_async(token_for)(domain["bob"])
    alice_key = await database_sync_to_async(token_for)(domain["alice"])

    async def relay_queries_for_one_write(keys: list[str], title: str) -> int:
        sockets = [await connect(key) for key in keys]
        for socket in sockets:
            await subscribe(socket, "api.task", id=str(task.pk))
        relay.stop_sweeping()  # count the event's queries only, not a sweep's
        await published()
        statements.clear()
        task.title = title
        await database_sync_to_async(task.save)()
        for socket in sockets:
            assert (await socket.receive_json_from(timeout=3))["payload"]["title"] == title
        await published()  # the relay deletes the rows after the event went out
        for socket in sockets:
            await socket.disconnect()
        return sum(1 for thread, _sql in statements if thread == "drf-live-relay")

    await relay_queries_for_one_write([bob_key], "warm-up")  # the relay's connection opens here
    one_socket = await relay_queries_for_one_write([bob_key], "one")
    ten_sockets = await relay_queries_for_one_write([bob_key] * 10, "ten")
    two_users = await relay_queries_for_one_write([bob_key, alice_key], "two users")

    assert ten_sockets == one_socket
    assert two_users > one_socket


async def test_a_declaration_answers_for_every_user_with_a_fixed_number_of_queries(
    domain: Any, token_for: Any, connect: Any, statements: list[tuple[str, str]], make_user: Any
) -> None:
    task, website = domain["task"], domain["website"]

    @database_sync_to_async
    def members(count: int) -> list[str]:
        users = [make_user(f"member{count}-{n}") for n in range(count)]
        website.members.add(*users)
        return [token_for(user) for user in users]

    async def relay_queries_with(keys: list[str], title: str) -> int:
        sockets = [await connect(key) for key in keys]
        for socket in sockets:
            await subscribe(socket, "api.task", id=str(task.pk))
        relay.stop_sweeping()  # count the event's queries only, not a sweep's
        await published()
        statements.clear()
        task.title = title
        await database_sync_to_async(task.save)()
        for socket in sockets:
            assert (await socket.receive_json_from(timeout=3))["payload"]["title"] == title
        await published()  # the relay deletes the rows after the event went out
        for socket in sockets:
            await socket.disconnect()
        return sum(1 for thread, _sql in statements if thread == "drf-live-relay")

    await relay_queries_with(await members(1), "warm-up")  # the relay's connection opens here
    few = await relay_queries_with(await members(2), "few")
    many = await relay_queries_with(await members(12), "many")

    # TaskRegistration.subscribable_by answers for everyone at once.
    assert many == few
