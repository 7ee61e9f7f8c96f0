"""Revocation: a write that changes who sees an object ends the subscriptions of those who lost it."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from api.models import Project, Task
from api.notifications import TaskRegistration
from notifications.registration import Registration
from notifications.relay import relay
from notifications.testing import published

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


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
    domain: Any, live_socket: Any, is_visible_calls: list[Any]
) -> None:
    website, task, bob = domain["website"], domain["task"], domain["bob"]
    bob_socket = await live_socket(bob)
    alice_socket = await live_socket(domain["alice"])
    await bob_socket.subscribe(Project, id=website)
    await bob_socket.subscribe(Task, id=task)
    await bob_socket.subscribe(Task, filter={"project": website})
    alice_seq = (await alice_socket.subscribe(Task, id=task))["meta"]["seq"]

    await database_sync_to_async(website.members.remove)(bob)

    revoked = [await bob_socket.receive() for _ in range(3)]
    assert {frame["type"] for frame in revoked} == {"UNSUBSCRIBED"}
    assert all(frame["meta"]["reason"] == "revoked" and frame["payload"] is None for frame in revoked)
    assert sorted(str(frame["meta"].get("id") or frame["meta"].get("filter")) for frame in revoked) == sorted(
        [str(website.pk), str(task.pk), str({"project": str(website.pk)})]
    )
    # The UPDATE_PROJECT of the removal itself is not sent to the member who lost access.
    await bob_socket.assert_nothing_pushed(timeout=0.3)

    task.title = "After bob left"
    await database_sync_to_async(task.save)()

    update = await alice_socket.receive()
    assert update["type"] == "UPDATE_TASK"
    assert update["payload"]["title"] == "After bob left"
    assert update["meta"]["seq"] == alice_seq + 1
    await bob_socket.assert_nothing_pushed(timeout=0.3)


async def test_task_moved_to_a_project_the_subscriber_cannot_see_is_revoked(domain: Any, live_socket: Any) -> None:
    task, alice = domain["task"], domain["alice"]
    private = await database_sync_to_async(Project.objects.create)(name="Alice only", owner=alice)
    bob_socket = await live_socket(domain["bob"])
    alice_socket = await live_socket(alice)
    await bob_socket.subscribe(Task, id=task)
    await alice_socket.subscribe(Task, id=task)

    task.project = private
    await database_sync_to_async(task.save)()

    assert await bob_socket.receive() == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"model": "api.task", "id": str(task.pk), "reason": "revoked"},
    }
    moved = await alice_socket.receive()
    assert moved["type"] == "UPDATE_TASK"
    assert moved["meta"]["changed"] == ["project"]
    await bob_socket.assert_nothing_pushed(timeout=0.3)


async def test_writes_that_cannot_change_access_trigger_no_recheck(
    domain: Any, live_socket: Any, is_visible_calls: list[Any]
) -> None:
    task, website = domain["task"], domain["website"]
    bob_socket = await live_socket(domain["bob"])
    await bob_socket.subscribe(Task, id=task)
    await bob_socket.subscribe(Project, id=website)

    task.title = "Renamed"
    await database_sync_to_async(task.save)()
    website.name = "Website 2"
    await database_sync_to_async(website.save)()

    first = await bob_socket.receive()
    second = await bob_socket.receive()
    assert [first["type"], second["type"]] == ["UPDATE_TASK", "UPDATE_PROJECT"]
    # The relay decided both events; no socket had to re-check its subscriptions.
    assert is_visible_calls == []


async def test_adding_a_member_revokes_nobody(domain: Any, live_socket: Any, is_visible_calls: list[Any]) -> None:
    website = domain["website"]
    bob_socket = await live_socket(domain["bob"])
    await bob_socket.subscribe(Project, id=website)

    await database_sync_to_async(website.members.add)(domain["carol"])

    update = await bob_socket.receive()
    assert update["type"] == "UPDATE_PROJECT"
    assert update["meta"]["changed"] == ["members"]
    assert is_visible_calls == []


async def test_the_writer_only_updates_its_row_and_records_one_outbox_row(
    domain: Any, live_socket: Any, statements: Any
) -> None:
    task = domain["task"]
    bob_socket = await live_socket(domain["bob"])
    await bob_socket.subscribe(Task, id=task)
    await bob_socket.subscribe(Task, filter={"project": task.project_id})

    statements.clear()
    task.title = "Renamed"
    await database_sync_to_async(task.save)()
    updates = [await bob_socket.receive() for _ in range(2)]

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
    domain: Any, live_socket: Any, statements: Any, replace_registration: Any
) -> None:
    replace_registration(Task, UndeclaredTaskRegistration)
    task = domain["task"]
    bob, alice = domain["bob"], domain["alice"]

    async def queries(users: list[Any], title: str) -> int:
        return await relay_queries_for_one_write(live_socket, statements, task, users, title, id=task)

    await queries([bob], "warm-up")  # the relay's connection opens here
    one_socket = await queries([bob], "one")
    ten_sockets = await queries([bob] * 10, "ten")
    two_users = await queries([bob, alice], "two users")

    assert ten_sockets == one_socket
    assert two_users > one_socket
    # One more user is one more query: the relay answers no client about an id, so it reads through
    # the viewset in one query, not in the two of the equalised lookup a subscribe makes.
    assert two_users - one_socket == 1


async def test_a_declaration_answers_for_every_user_with_a_fixed_number_of_queries(
    domain: Any, live_socket: Any, statements: Any, make_user: Any
) -> None:
    task, members = domain["task"], members_of(domain["website"], make_user)

    async def relay_queries_with(users: list[Any], title: str) -> int:
        return await relay_queries_for_one_write(live_socket, statements, task, users, title, id=task)

    await relay_queries_with(await members(1), "warm-up")  # the relay's connection opens here
    few = await relay_queries_with(await members(2), "few")
    many = await relay_queries_with(await members(12), "many")

    # TaskRegistration.subscribable_by answers for everyone at once.
    assert many == few


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
async def test_a_collections_queries_per_event_follow_the_declarations_not_the_users(
    domain: Any, live_socket: Any, statements: Any, make_user: Any, replace_registration: Any, declared: bool
) -> None:
    if not declared:
        replace_registration(Task, UndeclaredTaskRegistration)
    task, website = domain["task"], domain["website"]
    members = members_of(website, make_user)

    async def relay_queries_with(users: list[Any], title: str) -> int:
        return await relay_queries_for_one_write(
            live_socket, statements, task, users, title, filter={"project": website}
        )

    await relay_queries_with(await members(1), "warm-up")  # the relay's connection opens here
    few = await relay_queries_with(await members(2), "few")
    many = await relay_queries_with(await members(12), "many")

    if declared:
        # TaskRegistration's and ProjectRegistration's declarations answer for every subscriber.
        assert many == few
    else:
        assert many > few


async def relay_queries_for_one_write(
    live_socket: Any, statements: Any, task: Task, users: list[Any], title: str, **target: Any
) -> int:
    """The relay's SQL statements for one write of ``task``'s title, seen by ``users``' sockets on ``target``."""
    sockets = [await live_socket(user) for user in users]
    for socket in sockets:
        await socket.subscribe(Task, **target)
    relay.stop_sweeping()  # count the event's queries only, not a sweep's
    await published()
    statements.clear()
    task.title = title
    await database_sync_to_async(task.save)()
    for socket in sockets:
        frame = await socket.receive()
        assert (frame["type"], frame["payload"]["title"]) == ("UPDATE_TASK", title)
    await published()  # the relay deletes the rows after the event went out
    for socket in sockets:
        await socket.assert_nothing_pushed(timeout=0.05)
        await socket.close()
    return len(statements.of_relay())


def members_of(project: Project, make_user: Any) -> Any:
    """``await members(n)``: ``n`` new members of ``project``."""

    @database_sync_to_async
    def members(count: int) -> list[Any]:
        users = [make_user(f"{project.pk}-member{count}-{n}") for n in range(count)]
        project.members.add(*users)
        return users

    return members


class UndeclaredTaskRegistration(TaskRegistration):
    def subscribable_by(self, instance: Any) -> None:
        return None  # ask the viewset, user by user
