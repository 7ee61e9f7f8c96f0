"""Filtered collections: {"filter": {"project": "<id>"}} on api.task.

Written with ``notifications.testing`` (``live_socket``), as a user of drf-live writes them.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from api.models import Project, Task
from tests.pages import results

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_collection_snapshot_is_the_rest_list_of_the_project(domain: Any, live_socket: Any) -> None:
    second = await database_sync_to_async(Task.objects.create)(project=domain["website"], title="Second")
    bob = await live_socket(domain["bob"])

    reply = await bob.subscribe(Task, filter={"project": domain["website"]})

    assert reply["meta"]["filter"] == {"project": str(domain["website"].pk)}
    assert reply["meta"]["model"] == "api.task"
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


async def test_collection_of_an_invisible_project_is_not_found(domain: Any, live_socket: Any) -> None:
    bob = await live_socket(domain["bob"])

    forbidden = await bob.request({"action": "subscribe", "model": "api.task", "filter": {"project": "x"}})
    del forbidden["meta"]["request_id"]
    malformed = await bob.request(
        {"action": "subscribe", "model": "api.task", "filter": {"project": str(domain["secret"].pk)}}
    )
    del malformed["meta"]["request_id"]

    assert forbidden["error"] is True
    assert forbidden["payload"]["code"] == "not_found"
    assert forbidden == malformed


async def test_filter_on_an_undeclared_field_is_invalid(domain: Any, live_socket: Any) -> None:
    bob = await live_socket(domain["bob"])

    reply = await bob.request({"action": "subscribe", "model": "api.task", "filter": {"title": "x"}})

    assert reply["payload"]["code"] == "invalid"
    assert reply["payload"]["fields"] == ["filter"]


async def test_create_update_delete_reach_the_collection_in_seq_order(domain: Any, live_socket: Any) -> None:
    website = domain["website"]
    bob = await live_socket(domain["bob"])
    seq = (await bob.subscribe(Task, filter={"project": website}))["meta"]["seq"]

    created = await database_sync_to_async(Task.objects.create)(project=website, title="New")
    created_id = str(created.pk)
    create = await bob.assert_pushed(type="CREATE_TASK")
    created.done = True
    await database_sync_to_async(created.save)()
    update = await bob.assert_pushed(type="UPDATE_TASK", payload={"done": True}, changed=["done"])
    await database_sync_to_async(created.delete)()
    delete = await bob.assert_pushed(type="DELETE_TASK")

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
    assert update["meta"] == {**meta, "changed": ["done"], "seq": seq + 2}
    assert delete == {"type": "DELETE_TASK", "payload": {"id": created_id}, "meta": {**meta, "seq": seq + 3}}
    await bob.assert_nothing_pushed(timeout=0.3)


async def test_a_task_moved_leaves_one_collection_and_enters_the_other(domain: Any, live_socket: Any) -> None:
    other = await database_sync_to_async(Project.objects.create)(name="Other", owner=domain["alice"])
    alice_website = await live_socket(domain["alice"])
    alice_other = await live_socket(domain["alice"])
    website_seq = (await alice_website.subscribe(Task, filter={"project": domain["website"]}))["meta"]["seq"]
    other_seq = (await alice_other.subscribe(Task, filter={"project": other}))["meta"]["seq"]
    task = domain["task"]

    task.project = other
    await database_sync_to_async(task.save)()

    left = await alice_website.assert_pushed(type="DELETE_TASK")
    entered = await alice_other.assert_pushed(type="CREATE_TASK", payload={"project": str(other.pk)})
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
    assert entered["meta"]["seq"] == other_seq + 1
    await alice_website.assert_nothing_pushed(timeout=0.3)
    await alice_other.assert_nothing_pushed(timeout=0.1)


async def test_subscriber_of_another_project_receives_nothing(domain: Any, live_socket: Any) -> None:
    carol = await live_socket(domain["carol"])
    await carol.subscribe(Task, filter={"project": domain["secret"]})

    await database_sync_to_async(Task.objects.create)(project=domain["website"], title="Not for carol")
    task = domain["task"]
    task.title = "Renamed"
    await database_sync_to_async(task.save)()

    await carol.assert_nothing_pushed(timeout=0.5)
