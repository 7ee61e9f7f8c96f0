"""``publish_changes()`` and ``publish_event()``: publishing by hand after bulk writes, and application events.

The first part reads what they record in the outbox (``relay.kick`` replaced
by a recorder, so the rows stay); the second runs them through the relay to
sockets on the full stack (in-memory store and channel layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction

import notifications
from api.models import Project, Task
from notifications.exceptions import NotRegistered
from notifications.models import OutboxEntry
from notifications.plan import plan
from notifications.relay import relay
from notifications.targets import Target

pytestmark = [pytest.mark.django_db(transaction=True)]

DB = "default"
TIMEOUT = 5


class Kicks:
    """Stands in for ``relay.kick``: keeps each call, with how many rows its transaction had written by then."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, using: str, token: str) -> None:
        self.calls.append((token, OutboxEntry.objects.using(using).filter(txn=token).count()))


@pytest.fixture
def kicks(domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Kicks]:
    """Replaces ``relay.kick`` once the example domain is committed and published."""
    assert not OutboxEntry.objects.exists()
    recorder = Kicks()
    monkeypatch.setattr(relay, "kick", recorder)
    yield recorder


def recorded() -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(row.kind, row.model, row.object_id, row.data) for row in OutboxEntry.objects.order_by("id")]


def planned() -> list[Any]:
    [token] = set(OutboxEntry.objects.values_list("txn", flat=True))
    units = plan(list(OutboxEntry.objects.filter(txn=token).order_by("id")), DB)
    # Not the unfiltered collection's (filter ``()``, where a registration has one): these
    # tests are about objects and filtered collections.
    return [unit for unit in units if unit.target.filter != ()]


def wire(instance: Any) -> str:
    return str(instance.pk)


def tasks_of(project: Project) -> Target:
    return Target.collection("api.task", {"project": wire(project)})


def bulk_tasks(project: Project, count: int) -> list[Task]:
    # bulk_create sends no signals: nothing is recorded for these rows.
    Task.objects.bulk_create(Task(project=project, title=f"Bulk {i}") for i in range(count))
    OutboxEntry.objects.all().delete()
    return list(Task.objects.filter(project=project).order_by("id"))


# publish_changes: what it records ----------------------------------------------------


def test_publish_changes_after_a_bulk_update_records_one_row_per_object(kicks: Kicks, domain: dict[str, Any]) -> None:
    website = domain["website"]
    tasks = bulk_tasks(website, 9)
    assert len(tasks) == 10 and recorded() == []

    with transaction.atomic():
        Task.objects.filter(project=website).update(done=True)
        count = notifications.publish_changes(Task.objects.filter(project=website), changed=["done"])

    assert count == 10
    assert recorded() == [
        (
            "update",
            "api.task",
            wire(task),
            {
                "changed": ["done"],
                "current": {"project": wire(website)},
                "touched": [["api.project", wire(website), ["open_tasks"]]],
            },
        )
        for task in tasks
    ]
    # One transaction: one event per task and per task in the collection, and one for the project's count.
    units = planned()
    assert [(unit.target, unit.kind) for unit in units if unit.target.is_collection] == [
        (tasks_of(website), "update")
    ] * 10
    assert sorted(unit.object_id for unit in units if unit.target.id is not None and unit.kind == "update") == sorted(
        wire(task) for task in tasks
    )
    assert [(unit.target, unit.changed) for unit in units if unit.kind == "touch"] == [
        (Target("api.project", id=wire(website)), ["open_tasks"])
    ]
    assert {token for token, _rows in kicks.calls} == set(OutboxEntry.objects.values_list("txn", flat=True))


def test_publish_changes_without_changed_names_every_tracked_field(kicks: Kicks, domain: dict[str, Any]) -> None:
    notifications.publish_changes([domain["task"]])

    [(_kind, _model, _id, data)] = recorded()
    assert sorted(data["changed"]) == ["assignee", "done", "private", "project", "title"]


def test_publish_changes_as_create_reaches_only_the_collections(kicks: Kicks, domain: dict[str, Any]) -> None:
    website = domain["website"]

    with transaction.atomic():
        created = Task.objects.bulk_create([Task(project=website, title=f"New {i}") for i in range(3)])
        assert notifications.publish_changes(created, kind="create") == 3

    # bulk_create fills in primary keys on SQLite and PostgreSQL alike.
    assert [(kind, object_id) for kind, _model, object_id, _data in recorded()] == [
        ("create", wire(task)) for task in created
    ]
    units = planned()
    assert [(unit.target, unit.object_id, unit.before) for unit in units if unit.kind == "create"] == [
        (tasks_of(website), wire(task), False) for task in created
    ]
    assert all(unit.target.is_collection or unit.kind == "touch" for unit in units)


def test_publish_changes_in_a_rolled_back_transaction_records_nothing(kicks: Kicks, domain: dict[str, Any]) -> None:
    task = domain["task"]

    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(title="Never seen")
        notifications.publish_changes(Task.objects.filter(pk=task.pk), changed=["title"])
        transaction.set_rollback(True)

    assert recorded() == []
    assert kicks.calls == []


def test_publish_changes_refuses_a_bad_kind_and_an_unsaved_object(kicks: Kicks, domain: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="kind"):
        notifications.publish_changes([domain["task"]], kind="delete")
    with pytest.raises(ValueError, match="no primary key"):
        notifications.publish_changes([Task(project=domain["website"], title="Not saved")], kind="create")

    assert recorded() == []


def test_publish_changes_of_an_unregistered_model_raises_not_registered(kicks: Kicks, domain: dict[str, Any]) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=domain["alice"])

    with pytest.raises(NotRegistered):
        notifications.publish_changes([token])


def test_publish_changes_outside_a_transaction_kicks_the_relay_after_the_row_is_written(
    kicks: Kicks, domain: dict[str, Any]
) -> None:
    task = domain["task"]
    Task.objects.filter(pk=task.pk).update(done=True)

    notifications.publish_changes([task], changed=["done"])

    # Told before its row existed, the relay would find nothing and leave it to a sweep.
    assert len(recorded()) == 1
    assert kicks.calls and all(rows == 1 for _token, rows in kicks.calls)


# publish_event: what it records ------------------------------------------------------


def test_publish_event_to_an_object_records_its_payload(kicks: Kicks, domain: dict[str, Any]) -> None:
    task = domain["task"]

    notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Looks good"})

    assert recorded() == [
        ("event", "api.task", wire(task), {"type": "TASK_COMMENTED", "payloads": {"all": {"text": "Looks good"}}})
    ]
    # Its own transaction: the relay is told once the row is there.
    assert kicks.calls and all(rows == 1 for _token, rows in kicks.calls)
    [unit] = planned()
    assert (unit.target, unit.kind, unit.event_type, unit.payloads) == (
        Target("api.task", id=wire(task)),
        "event",
        "TASK_COMMENTED",
        {"all": {"text": "Looks good"}},
    )


def test_publish_event_to_a_collection_records_its_filter_as_on_the_wire(kicks: Kicks, domain: dict[str, Any]) -> None:
    website = domain["website"]

    notifications.publish_event("PROJECT_ARCHIVED", model=Task, filter={"project": website}, payload={"at": 1})

    assert recorded() == [
        (
            "event",
            "api.task",
            "",
            {"type": "PROJECT_ARCHIVED", "payloads": {"all": {"at": 1}}, "filter": {"project": wire(website)}},
        )
    ]
    [unit] = planned()
    assert (unit.target, unit.kind, unit.event_type) == (tasks_of(website), "event", "PROJECT_ARCHIVED")


def test_publish_event_calls_a_payload_callable_once_per_audience(kicks: Kicks, domain: dict[str, Any]) -> None:
    # api.user has two audiences: the user themself ("self") and everyone else ("others").
    calls: list[str] = []

    def payload(audience: str) -> dict[str, Any]:
        calls.append(audience)
        return {"secret": "only yours"} if audience == "self" else {}

    notifications.publish_event("PASSWORD_CHANGED", domain["alice"], payload=payload)

    assert sorted(calls) == ["others", "self"]
    [(_kind, _model, _id, data)] = recorded()
    assert data["payloads"] == {"self": {"secret": "only yours"}, "others": {}}


def test_publish_event_in_a_rolled_back_transaction_records_nothing(kicks: Kicks, domain: dict[str, Any]) -> None:
    with transaction.atomic():
        notifications.publish_event("TASK_COMMENTED", domain["task"], payload={"text": "Never sent"})
        transaction.set_rollback(True)

    assert recorded() == []
    assert kicks.calls == []


def test_publish_event_refuses_an_unknown_filter_field_and_a_missing_target(
    kicks: Kicks, domain: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="Not a filter of api.task: title"):
        notifications.publish_event("X", model=Task, filter={"title": "Write docs"})
    with pytest.raises(TypeError):
        notifications.publish_event("X", payload={})
    with pytest.raises(TypeError):
        notifications.publish_event("X", model=Task, payload={})
    with pytest.raises(TypeError):
        notifications.publish_event("X", domain["task"], model=Task, filter={"project": domain["website"]})

    assert recorded() == []


# Through the relay to sockets --------------------------------------------------------


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
        "private": task.private,
    }


@pytest.mark.asyncio
async def test_update_of_100_rows_then_publish_changes_delivers_100_events(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    website = domain["website"]

    def make_tasks() -> list[Task]:
        Task.objects.bulk_create(Task(project=website, title=f"Bulk {i}") for i in range(99))
        return list(Task.objects.filter(project=website).order_by("id"))

    tasks = await database_sync_to_async(make_tasks)()
    assert len(tasks) == 100
    collection = await connect(token=keys["bob"])
    snapshot = await subscribe(collection, filter=project_filter(website))
    # The first page of the collection; the members beyond it count too (their events arrive below).
    first_page = snapshot["payload"]
    assert (first_page["count"], first_page["previous"]) == (100, None)
    assert first_page["results"] == [rest_shape(task) for task in tasks[:50]]
    assert first_page["next"] is not None
    watched = [tasks[0], tasks[41], tasks[99]]
    object_sockets = []
    for task in watched:
        communicator = await connect(token=keys["alice"])
        object_sockets.append((communicator, task, (await subscribe(communicator, id=str(task.pk)))["meta"]["seq"]))
    other = await connect(token=keys["carol"])
    await subscribe(other, id=str(domain["hidden"].pk))

    def bulk_update() -> int:
        with transaction.atomic():
            assert Task.objects.filter(project=website).update(done=True) == 100
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


@pytest.mark.asyncio
async def test_a_rolled_back_publish_changes_sends_nothing_and_spends_no_seq(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    task, website = domain["task"], domain["website"]
    collection = await connect(token=keys["bob"])
    await subscribe(collection, filter=project_filter(website))
    single = await connect(token=keys["bob"])
    seq = (await subscribe(single, id=str(task.pk)))["meta"]["seq"]

    def rolled_back() -> None:
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(title="Never seen")
            notifications.publish_changes(Task.objects.filter(pk=task.pk), changed=["title"])
            transaction.set_rollback(True)

    await database_sync_to_async(rolled_back)()
    assert relay.flush(timeout=TIMEOUT)
    assert await collection.receive_nothing(timeout=0.3)
    assert await single.receive_nothing(timeout=0.1)

    def committed() -> None:
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(title="Seen")
            notifications.publish_changes(Task.objects.filter(pk=task.pk), changed=["title"])

    await database_sync_to_async(committed)()
    event = await single.receive_json_from(timeout=TIMEOUT)
    assert event["payload"]["title"] == "Seen"
    assert event["meta"]["seq"] == seq + 1


@pytest.mark.asyncio
async def test_bulk_create_then_publish_changes_as_create_reaches_the_collection(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    website = domain["website"]
    collection = await connect(token=keys["bob"])
    seq = (await subscribe(collection, filter=project_filter(website)))["meta"]["seq"]
    outsider = await connect(token=keys["carol"])
    await subscribe(outsider, filter=project_filter(domain["secret"]))

    def bulk_create() -> list[Task]:
        with transaction.atomic():
            created = Task.objects.bulk_create([Task(project=website, title=f"New {i}") for i in range(3)])
            notifications.publish_changes(created, kind="create")
        return created

    created = await database_sync_to_async(bulk_create)()

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


@pytest.mark.asyncio
async def test_publish_event_reaches_the_objects_subscribers_only(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    task = domain["task"]
    bob = await connect(token=keys["bob"])
    seq = (await subscribe(bob, id=str(task.pk)))["meta"]["seq"]
    alice = await connect(token=keys["alice"])
    alice_seq = (await subscribe(alice, id=str(task.pk)))["meta"]["seq"]
    # Subscribed to something else: the project's collection, and another task.
    elsewhere = await connect(token=keys["alice"])
    await subscribe(elsewhere, filter=project_filter(domain["website"]))
    carol = await connect(token=keys["carol"])
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


@pytest.mark.asyncio
async def test_publish_event_to_a_collection(domain: dict[str, Any], keys: dict[str, str], connect: Any) -> None:
    website, task = domain["website"], domain["task"]
    collection = await connect(token=keys["bob"])
    seq = (await subscribe(collection, filter=project_filter(website)))["meta"]["seq"]
    single = await connect(token=keys["bob"])
    await subscribe(single, id=str(task.pk))
    outsider = await connect(token=keys["carol"])
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


@pytest.mark.asyncio
async def test_each_audience_gets_its_own_payload_of_an_application_event(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    alice = domain["alice"]
    own = await connect(token=keys["alice"])
    other = await connect(token=keys["bob"])
    for socket in (own, other):
        await socket.send_json_to({"action": "subscribe", "model": "api.user", "id": str(alice.pk)})
        assert (await socket.receive_json_from(timeout=TIMEOUT))["type"] == "SUBSCRIBED"

    def notify() -> None:
        notifications.publish_event(
            "PASSWORD_CHANGED", alice, payload=lambda audience: {"you": True} if audience == "self" else {}
        )

    await database_sync_to_async(notify)()

    assert (await own.receive_json_from(timeout=TIMEOUT))["payload"] == {"you": True}
    assert (await other.receive_json_from(timeout=TIMEOUT))["payload"] == {}


@pytest.mark.asyncio
async def test_rolled_back_publish_event_sends_nothing(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    task = domain["task"]
    bob = await connect(token=keys["bob"])
    seq = (await subscribe(bob, id=str(task.pk)))["meta"]["seq"]

    def rolled_back() -> None:
        with transaction.atomic():
            notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Never sent"})
            transaction.set_rollback(True)

    await database_sync_to_async(rolled_back)()
    assert relay.flush(timeout=TIMEOUT)
    assert await bob.receive_nothing(timeout=0.3)

    def committed() -> None:
        with transaction.atomic():
            notifications.publish_event("TASK_COMMENTED", task, payload={"text": "Sent"})

    await database_sync_to_async(committed)()
    event = await bob.receive_json_from(timeout=TIMEOUT)
    assert event["payload"] == {"text": "Sent"}
    assert event["meta"]["seq"] == seq + 1


@pytest.mark.asyncio
async def test_an_application_event_is_recovered_with_since(
    domain: dict[str, Any], keys: dict[str, str], connect: Any
) -> None:
    task = domain["task"]
    bob = await connect(token=keys["bob"])
    subscribed = await subscribe(bob, id=str(task.pk))
    seq, epoch = subscribed["meta"]["seq"], subscribed["meta"]["epoch"]
    await bob.send_json_to({"action": "unsubscribe", "model": "api.task", "id": str(task.pk), "request_id": 2})
    assert (await bob.receive_json_from(timeout=TIMEOUT))["type"] == "UNSUBSCRIBED"

    def comment() -> None:
        notifications.publish_event("TASK_COMMENTED", task, payload={"text": "While you were away"})

    await database_sync_to_async(comment)()
    assert relay.flush(timeout=TIMEOUT)
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
