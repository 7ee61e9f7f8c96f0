"""``publish_changes()`` and ``publish_event()``: publishing by hand after bulk writes, and application events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

import notifications
from api.models import Project, Task
from notifications.publisher import publisher
from notifications.routing import websocket_application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]

TIMEOUT = 3


@pytest_asyncio.fixture
async def sockets() -> AsyncIterator[Any]:
    """``await sockets(token)`` opens an authenticated socket; all are disconnected afterwards."""
    opened: list[WebsocketCommunicator] = []

    async def open_socket(token: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            websocket_application(), "/ws/notifications/", headers=[(b"authorization", f"Token {token}".encode())]
        )
        opened.append(communicator)
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture
def keys(domain: dict[str, Any], token_for: Any) -> dict[str, str]:
    return {name: token_for(domain[name]) for name in ("alice", "bob", "carol")}


async def subscribe(communicator: WebsocketCommunicator, request_id: Any = 1, **target: Any) -> dict[str, Any]:
    await communicator.send_json_to({"action": "subscribe", "model": "api.task", "request_id": request_id, **target})
    reply = await communicator.receive_json_from(timeout=TIMEOUT)
    assert reply["type"] == "SUBSCRIBED", reply
    return reply


def project_filter(project: Project) -> dict[str, str]:
    return {"project": str(project.pk)}


def rest_shape(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.pk),
        "project": str(task.project_id),
        "title": task.title,
        "done": task.done,
        "assignee": str(task.assignee_id) if task.assignee_id else None,
    }


# publish_changes ---------------------------------------------------------------


async def test_update_of_100_rows_then_publish_changes_delivers_100_events(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    website = domain["website"]

    def make_tasks() -> list[Task]:
        # bulk_create sends no signals: nothing is published for these rows.
        Task.objects.bulk_create(Task(project=website, title=f"Bulk {i}") for i in range(99))
        return list(Task.objects.filter(project=website).order_by("id"))

    tasks = await database_sync_to_async(make_tasks)()
    assert len(tasks) == 100
    collection = await sockets(keys["bob"])
    snapshot = await subscribe(collection, filter=project_filter(website))
    assert len(snapshot["payload"]) == 100
    watched = [tasks[0], tasks[41], tasks[99]]
    object_sockets = []
    for task in watched:
        communicator = await sockets(keys["alice"])
        object_sockets.append((communicator, task, (await subscribe(communicator, id=str(task.pk)))["meta"]["seq"]))
    other = await sockets(keys["carol"])
    await subscribe(other, id=str(domain["hidden"].pk))

    def bulk_update() -> int:
        updated = Task.objects.filter(project=website).update(done=True)
        assert updated == 100
        return notifications.publish_changes(Task.objects.filter(project=website), changed=["done"])

    assert await database_sync_to_async(bulk_update)() == 100

    seq = snapshot["meta"]["seq"]
    received = [await collection.receive_json_from(timeout=TIMEOUT) for _ in tasks]
    assert [event["type"] for event in received] == ["UPDATE_TASK"] * 100
    assert [event["meta"]["seq"] for event in received] == list(range(seq + 1, seq + 101))
    assert sorted(event["meta"]["id"] for event in received) == sorted(str(task.pk) for task in tasks)
    for event in received:
        assert event["meta"]["filter"] == project_filter(website)
        assert event["meta"]["changed"] == ["done"]
        assert event["payload"]["done"] is True
    assert await collection.receive_nothing(timeout=0.3)

    for communicator, task, object_seq in object_sockets:
        event = await communicator.receive_json_from(timeout=TIMEOUT)
        assert event == {
            "type": "UPDATE_TASK",
            "payload": {**rest_shape(task), "done": True},
            "meta": {"model": "api.task", "id": str(task.pk), "changed": ["done"], "seq": object_seq + 1},
        }
        assert await communicator.receive_nothing(timeout=0.1)
    # Another project's task was not touched: its subscriber hears nothing.
    assert await other.receive_nothing(timeout=0.1)


async def test_publish_changes_in_a_rolled_back_transaction_sends_nothing(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    task, website = domain["task"], domain["website"]
    collection = await sockets(keys["bob"])
    await subscribe(collection, filter=project_filter(website))
    single = await sockets(keys["bob"])
    seq = (await subscribe(single, id=str(task.pk)))["meta"]["seq"]

    def rolled_back() -> None:
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(title="Never seen")
            notifications.publish_changes(Task.objects.filter(pk=task.pk), changed=["title"])
            transaction.set_rollback(True)

    await database_sync_to_async(rolled_back)()
    await publisher.drain()
    assert await collection.receive_nothing(timeout=0.3)
    assert await single.receive_nothing(timeout=0.1)

    # And the next committed one takes the next seq: the rolled-back one spent none.
    def committed() -> None:
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(title="Seen")
            notifications.publish_changes(Task.objects.filter(pk=task.pk), changed=["title"])

    await database_sync_to_async(committed)()
    event = await single.receive_json_from(timeout=TIMEOUT)
    assert event["payload"]["title"] == "Seen"
    assert event["meta"]["seq"] == seq + 1


async def test_bulk_create_then_publish_changes_as_create_reaches_the_collection(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    website = domain["website"]
    collection = await sockets(keys["bob"])
    seq = (await subscribe(collection, filter=project_filter(website)))["meta"]["seq"]
    outsider = await sockets(keys["carol"])
    await subscribe(outsider, filter=project_filter(domain["secret"]))

    def bulk_create() -> list[Task]:
        with transaction.atomic():
            created = Task.objects.bulk_create([Task(project=website, title=f"New {i}") for i in range(3)])
            notifications.publish_changes(created, kind="create")
        return created

    created = await database_sync_to_async(bulk_create)()
    # bulk_create fills in primary keys on SQLite and PostgreSQL alike.
    assert all(task.pk is not None for task in created)

    events = [await collection.receive_json_from(timeout=TIMEOUT) for _ in created]
    assert events == [
        {
            "type": "CREATE_TASK",
            "payload": rest_shape(task),
            "meta": {"model": "api.task", "filter": project_filter(website), "id": str(task.pk), "seq": seq + 1 + i},
        }
        for i, task in enumerate(created)
    ]
    assert await collection.receive_nothing(timeout=0.3)
    assert await outsider.receive_nothing(timeout=0.1)


async def test_publish_changes_refuses_a_bad_kind_and_an_unsaved_object(domain: dict[str, Any]) -> None:
    def bad_kind() -> None:
        notifications.publish_changes([domain["task"]], kind="delete")

    def unsaved() -> None:
        notifications.publish_changes([Task(project=domain["website"], title="Not saved")], kind="create")

    with pytest.raises(ValueError, match="kind"):
        await database_sync_to_async(bad_kind)()
    with pytest.raises(ValueError, match="no primary key"):
        await database_sync_to_async(unsaved)()


# publish_event -----------------------------------------------------------------


async def test_publish_event_reaches_the_objects_subscribers_only(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    task = domain["task"]
    bob = await sockets(keys["bob"])
    seq = (await subscribe(bob, id=str(task.pk)))["meta"]["seq"]
    alice = await sockets(keys["alice"])
    alice_seq = (await subscribe(alice, id=str(task.pk)))["meta"]["seq"]
    # Subscribed to something else: the project's collection, and another task.
    elsewhere = await sockets(keys["alice"])
    await subscribe(elsewhere, filter=project_filter(domain["website"]))
    carol = await sockets(keys["carol"])
    await subscribe(carol, id=str(domain["hidden"].pk))

    def comment() -> None:
        with transaction.atomic():
            notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Looks good", "by": "alice"})

    await database_sync_to_async(comment)()

    expected = {
        "type": "TASK_COMMENTED",
        "payload": {"text": "Looks good", "by": "alice"},
        "meta": {"model": "api.task", "id": str(task.pk), "seq": seq + 1},
    }
    assert await bob.receive_json_from(timeout=TIMEOUT) == expected
    assert await alice.receive_json_from(timeout=TIMEOUT) == {
        **expected,
        "meta": {**expected["meta"], "seq": alice_seq + 1},
    }
    assert await bob.receive_nothing(timeout=0.3)
    assert await alice.receive_nothing(timeout=0.1)
    assert await elsewhere.receive_nothing(timeout=0.1)
    assert await carol.receive_nothing(timeout=0.1)


async def test_publish_event_to_a_collection(domain: dict[str, Any], keys: dict[str, str], sockets: Any) -> None:
    website, task = domain["website"], domain["task"]
    collection = await sockets(keys["bob"])
    seq = (await subscribe(collection, filter=project_filter(website)))["meta"]["seq"]
    single = await sockets(keys["bob"])
    await subscribe(single, id=str(task.pk))
    outsider = await sockets(keys["carol"])
    await subscribe(outsider, filter=project_filter(domain["secret"]))

    def announce() -> None:
        notifications.publish_event("PROJECT_ARCHIVED", model=Task, filter={"project": website}, payload={"at": 1})

    await database_sync_to_async(announce)()

    assert await collection.receive_json_from(timeout=TIMEOUT) == {
        "type": "PROJECT_ARCHIVED",
        "payload": {"at": 1},
        "meta": {"model": "api.task", "filter": project_filter(website), "seq": seq + 1},
    }
    assert await collection.receive_nothing(timeout=0.3)
    assert await single.receive_nothing(timeout=0.1)
    assert await outsider.receive_nothing(timeout=0.1)


async def test_rolled_back_publish_event_sends_nothing(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    task = domain["task"]
    bob = await sockets(keys["bob"])
    seq = (await subscribe(bob, id=str(task.pk)))["meta"]["seq"]

    def rolled_back() -> None:
        with transaction.atomic():
            notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Never sent"})
            transaction.set_rollback(True)

    await database_sync_to_async(rolled_back)()
    await publisher.drain()
    assert await bob.receive_nothing(timeout=0.3)

    def committed() -> None:
        with transaction.atomic():
            notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Sent"})

    await database_sync_to_async(committed)()
    event = await bob.receive_json_from(timeout=TIMEOUT)
    assert event["payload"] == {"text": "Sent"}
    assert event["meta"]["seq"] == seq + 1


async def test_an_application_event_is_recovered_with_since(
    domain: dict[str, Any], keys: dict[str, str], sockets: Any
) -> None:
    task = domain["task"]
    bob = await sockets(keys["bob"])
    subscribed = await subscribe(bob, id=str(task.pk))
    seq, epoch = subscribed["meta"]["seq"], subscribed["meta"]["epoch"]
    await bob.send_json_to({"action": "unsubscribe", "model": "api.task", "id": str(task.pk), "request_id": 2})
    assert (await bob.receive_json_from(timeout=TIMEOUT))["type"] == "UNSUBSCRIBED"

    def comment() -> None:
        notifications.publish_event("TASK_COMMENTED", task, payload={"text": "While you were away"})

    await database_sync_to_async(comment)()
    await publisher.drain()
    assert await bob.receive_nothing(timeout=0.3)  # Not subscribed: nothing live.

    recovered = await subscribe(bob, request_id=3, id=str(task.pk), since=seq, epoch=epoch)
    assert recovered["payload"] is None
    assert recovered["meta"]["recovered"] is True
    assert recovered["meta"]["seq"] == seq
    assert recovered["meta"]["epoch"] == epoch
    assert await bob.receive_json_from(timeout=TIMEOUT) == {
        "type": "TASK_COMMENTED",
        "payload": {"text": "While you were away"},
        "meta": {"model": "api.task", "id": str(task.pk), "seq": seq + 1},
    }
    assert await bob.receive_nothing(timeout=0.3)


async def test_publish_event_refuses_an_unknown_filter_field_and_a_missing_target(domain: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Not a filter of api.task: title"):
        notifications.publish_event("X", model=Task, filter={"title": "Write docs"})
    with pytest.raises(TypeError):
        notifications.publish_event("X", payload={})
    with pytest.raises(TypeError):
        notifications.publish_event("X", domain["task"], model=Task, filter={"project": domain["website"]})
