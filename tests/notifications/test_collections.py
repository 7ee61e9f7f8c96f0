"""Filtered collections: {"filter": {"project": "<id>"}} on api.task."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from api.models import Project, Task
from notifications.routing import websocket_application
from tests.pages import results

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def connect(token: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        websocket_application(), "/ws/notifications/", headers=[(b"authorization", f"Token {token}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest_asyncio.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()


async def subscribe(communicator: WebsocketCommunicator, project: Project, request_id: Any = 1) -> dict[str, Any]:
    await communicator.send_json_to(
        {"action": "subscribe", "model": "api.task", "filter": {"project": str(project.pk)}, "request_id": request_id}
    )
    return await communicator.receive_json_from(timeout=3)


def tokens(domain: dict[str, Any], token_for: Any) -> dict[str, str]:
    return {name: token_for(domain[name]) for name in ("alice", "bob", "carol")}


async def test_collection_snapshot_is_the_rest_list_of_the_project(domain: Any, token_for: Any, sockets: list) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    second = await database_sync_to_async(Task.objects.create)(project=domain["website"], title="Second")
    bob = await connect(keys["bob"])
    sockets.append(bob)

    reply = await subscribe(bob, domain["website"])

    assert reply["type"] == "SUBSCRIBED"
    assert reply["meta"]["filter"] == {"project": str(domain["website"].pk)}
    assert reply["meta"]["model"] == "api.task"
    assert reply["meta"]["request_id"] == 1
    tasks = results(reply["payload"])
    assert [task["id"] for task in tasks] == [str(domain["task"].pk), str(second.pk)]
    assert tasks[0] == {
        "id": str(domain["task"].pk),
        "project": str(domain["website"].pk),
        "title": "Write docs",
        "done": False,
        "assignee": None,
        "private": False,
    }


async def test_collection_of_an_invisible_project_is_not_found(domain: Any, token_for: Any, sockets: list) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    bob = await connect(keys["bob"])
    sockets.append(bob)

    forbidden = await subscribe(bob, domain["secret"])
    await bob.send_json_to({"action": "subscribe", "model": "api.task", "filter": {"project": "nope"}, "request_id": 1})
    malformed = await bob.receive_json_from(timeout=3)

    assert forbidden["error"] is True
    assert forbidden["payload"]["code"] == "not_found"
    assert forbidden == malformed


async def test_filter_on_an_undeclared_field_is_invalid(domain: Any, token_for: Any, sockets: list) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    bob = await connect(keys["bob"])
    sockets.append(bob)

    await bob.send_json_to({"action": "subscribe", "model": "api.task", "filter": {"title": "x"}, "request_id": 2})
    reply = await bob.receive_json_from(timeout=3)

    assert reply["payload"]["code"] == "invalid"
    assert reply["payload"]["fields"] == ["filter"]


async def test_create_update_delete_reach_the_collection_in_seq_order(
    domain: Any, token_for: Any, sockets: list
) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    bob = await connect(keys["bob"])
    sockets.append(bob)
    seq = (await subscribe(bob, domain["website"]))["meta"]["seq"]
    website = domain["website"]

    created = await database_sync_to_async(Task.objects.create)(project=website, title="New")
    created_id = str(created.pk)
    create = await bob.receive_json_from(timeout=3)
    created.done = True
    await database_sync_to_async(created.save)()
    update = await bob.receive_json_from(timeout=3)
    await database_sync_to_async(created.delete)()
    delete = await bob.receive_json_from(timeout=3)

    meta = {"model": "api.task", "filter": {"project": str(website.pk)}, "id": created_id}
    assert create == {
        "type": "CREATE_TASK",
        "payload": {
            "id": created_id,
            "project": str(website.pk),
            "title": "New",
            "done": False,
            "assignee": None,
            "private": False,
        },
        "meta": {**meta, "seq": seq + 1},
    }
    assert update["type"] == "UPDATE_TASK"
    assert update["payload"]["done"] is True
    assert update["meta"] == {**meta, "changed": ["done"], "seq": seq + 2}
    assert delete == {"type": "DELETE_TASK", "payload": {"id": created_id}, "meta": {**meta, "seq": seq + 3}}
    assert await bob.receive_nothing(timeout=0.3)


async def test_a_task_moved_leaves_one_collection_and_enters_the_other(
    domain: Any, token_for: Any, sockets: list
) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    other = await database_sync_to_async(Project.objects.create)(name="Other", owner=domain["alice"])
    alice_website = await connect(keys["alice"])
    alice_other = await connect(keys["alice"])
    sockets.extend([alice_website, alice_other])
    website_seq = (await subscribe(alice_website, domain["website"]))["meta"]["seq"]
    other_seq = (await subscribe(alice_other, other))["meta"]["seq"]
    task = domain["task"]

    task.project = other
    await database_sync_to_async(task.save)()

    left = await alice_website.receive_json_from(timeout=3)
    entered = await alice_other.receive_json_from(timeout=3)
    assert left == {
        "type": "DELETE_TASK",
        "payload": {"id": str(task.pk)},
        "meta": {
            "model": "api.task",
            "filter": {"project": str(domain["website"].pk)},
            "id": str(task.pk),
            "seq": website_seq + 1,
        },
    }
    assert entered["type"] == "CREATE_TASK"
    assert entered["payload"]["project"] == str(other.pk)
    assert entered["meta"]["seq"] == other_seq + 1
    assert await alice_website.receive_nothing(timeout=0.3)
    assert await alice_other.receive_nothing(timeout=0.1)


async def test_subscriber_of_another_project_receives_nothing(domain: Any, token_for: Any, sockets: list) -> None:
    keys = await database_sync_to_async(tokens)(domain, token_for)
    carol = await connect(keys["carol"])
    sockets.append(carol)
    await subscribe(carol, domain["secret"])

    await database_sync_to_async(Task.objects.create)(project=domain["website"], title="Not for carol")
    task = domain["task"]
    task.title = "Renamed"
    await database_sync_to_async(task.save)()

    assert await carol.receive_nothing(timeout=0.5)
