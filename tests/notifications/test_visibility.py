"""Every push is the committed row as the viewset shows it to that user, and nothing a user may not see.

Sockets run over the full stack with the in-memory store; the relay thread
decides each event from the committed database, user by user. The same
findings across real server processes and Redis are in tests/integration.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from api.models import Project, Task
from api.notifications import TaskRegistration
from api.serializers import TaskSerializer
from api.views import TaskViewSet
from notifications.testing import published
from tests.pages import results

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def subscribe(socket: Any, request_id: Any = 1, **frame: Any) -> dict[str, Any]:
    await socket.send_json_to({"action": "subscribe", "request_id": request_id, **frame})
    reply = await socket.receive_json_from(timeout=5)
    assert reply["type"] == "SUBSCRIBED", reply
    return reply


async def socket_of(connect: Any, token_for: Any, user: Any) -> Any:
    return await connect(token=await database_sync_to_async(token_for)(user))


@database_sync_to_async
def write(function: Any) -> Any:
    return function()


def tasks_of(project: Project) -> dict[str, Any]:
    return {"model": "api.task", "filter": {"project": str(project.pk)}}


# A. The committed row, never the writer's object ------------------------------------------


async def test_a_value_set_after_the_save_is_not_pushed(connect, domain, token_for):
    task = domain["task"]
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(bob, model="api.task", id=str(task.pk))

    def saved_then_changed() -> None:
        with transaction.atomic():
            row = Task.objects.get(pk=task.pk)
            row.title = "saved"
            row.save()
            row.title = "never-saved"

    await write(saved_then_changed)

    event = await bob.receive_json_from(timeout=5)
    assert event["type"] == "UPDATE_TASK"
    assert event["payload"]["title"] == "saved"
    assert await bob.receive_nothing(timeout=0.3)


async def test_a_value_saved_in_a_rolled_back_savepoint_is_not_pushed(connect, domain, token_for):
    task = domain["task"]
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(bob, model="api.task", id=str(task.pk))

    def savepoint_rolled_back() -> None:
        with transaction.atomic():
            row = Task.objects.get(pk=task.pk)
            row.done = True
            row.save()
            try:
                with transaction.atomic():
                    row.title = "rolled back"
                    row.save()
                    raise RuntimeError
            except RuntimeError:
                pass

    await write(savepoint_rolled_back)

    event = await bob.receive_json_from(timeout=5)
    assert event["payload"]["title"] == "Write docs"
    assert event["payload"]["done"] is True
    assert event["meta"]["changed"] == ["done"]
    assert await bob.receive_nothing(timeout=0.3)


async def test_pushes_carry_what_the_viewset_annotates(connect, domain, token_for):
    website = domain["website"]
    alice = await socket_of(connect, token_for, domain["alice"])
    snapshot = await subscribe(alice, model="api.project", id=str(website.pk))
    assert snapshot["payload"]["open_tasks"] == 1

    def rename() -> None:
        website.name = "Website, renamed"
        website.save()

    await write(rename)

    event = await alice.receive_json_from(timeout=5)
    assert event["type"] == "UPDATE_PROJECT"
    assert event["meta"]["changed"] == ["name"]
    assert event["payload"]["open_tasks"] == 1  # the annotation, not missing from the push


# E. Derived fields stay live --------------------------------------------------------------


async def test_open_tasks_follows_creates_ticks_reopens_and_deletes(connect, domain, token_for):
    website, task = domain["website"], domain["task"]
    alice = await socket_of(connect, token_for, domain["alice"])
    snapshot = await subscribe(alice, model="api.project", id=str(website.pk))
    seq = snapshot["meta"]["seq"]

    async def expect_open_tasks(count: int) -> None:
        nonlocal seq
        event = await alice.receive_json_from(timeout=5)
        assert event["type"] == "UPDATE_PROJECT", event
        assert event["meta"]["changed"] == ["open_tasks"]
        assert event["payload"]["open_tasks"] == count
        assert event["meta"]["seq"] == seq + 1
        seq = event["meta"]["seq"]

    created = await write(lambda: Task.objects.create(project=website, title="Another"))
    await expect_open_tasks(2)
    task.done = True
    await write(task.save)
    await expect_open_tasks(1)
    task.done = False
    await write(task.save)
    await expect_open_tasks(2)
    await write(created.delete)
    await expect_open_tasks(1)
    task.title = "A title changes no count"
    await write(task.save)
    assert await alice.receive_nothing(timeout=0.3)


# D. Per-user visibility of collection members ----------------------------------------------


async def test_a_private_task_never_reaches_a_member_who_may_not_see_it(connect, domain, token_for):
    website = domain["website"]
    alice = await socket_of(connect, token_for, domain["alice"])
    bob = await socket_of(connect, token_for, domain["bob"])
    bobs = await subscribe(bob, **tasks_of(website))
    await subscribe(alice, **tasks_of(website))
    last = bobs["meta"]["seq"]

    secret = await write(
        lambda: Task.objects.create(project=website, title="Salaries", private=True, assignee=domain["alice"])
    )
    created = await alice.receive_json_from(timeout=5)
    assert created["type"] == "CREATE_TASK" and created["payload"]["title"] == "Salaries"

    secret.title = "Salaries 2027"
    await write(secret.save)
    assert (await alice.receive_json_from(timeout=5))["type"] == "UPDATE_TASK"
    assert await bob.receive_nothing(timeout=0.3)

    # Subscribing to it by id is as if it did not exist.
    await bob.send_json_to({"action": "subscribe", "model": "api.task", "id": str(secret.pk), "request_id": 9})
    refused = await bob.receive_json_from(timeout=5)
    assert refused["error"] is True and refused["payload"]["code"] == "not_found"

    # Made public: it enters bob's view, as a create; the events he skipped are named by meta.prev.
    secret.private = False
    await write(secret.save)
    entered = await bob.receive_json_from(timeout=5)
    assert entered["type"] == "CREATE_TASK"
    assert entered["payload"]["title"] == "Salaries 2027"
    assert entered["meta"]["prev"] == last
    assert entered["meta"]["seq"] > last + 1
    last = entered["meta"]["seq"]

    # Private again: it leaves bob's view, as a delete of its id only.
    secret.private = True
    await write(secret.save)
    left = await bob.receive_json_from(timeout=5)
    assert left == {
        "type": "DELETE_TASK",
        "payload": {"id": str(secret.pk)},
        "meta": {"model": "api.task", "filter": {"project": str(website.pk)}, "id": str(secret.pk), "seq": last + 1},
    }

    # Deleted while hidden from bob: he hears nothing of it.
    await write(secret.delete)
    assert (await alice.receive_json_from(timeout=5))["type"] in {"UPDATE_TASK", "DELETE_TASK"}
    assert await bob.receive_nothing(timeout=0.3)


async def test_a_private_task_assigned_to_a_member_appears_for_them_only(connect, domain, token_for, make_user):
    website = domain["website"]
    carol = await write(lambda: make_user("dana"))
    await write(lambda: website.members.add(carol))
    await published()
    bob = await socket_of(connect, token_for, domain["bob"])
    dana = await socket_of(connect, token_for, carol)
    await subscribe(bob, **tasks_of(website))
    await subscribe(dana, **tasks_of(website))
    secret = await write(lambda: Task.objects.create(project=website, title="For one", private=True))
    assert await bob.receive_nothing(timeout=0.3)
    assert await dana.receive_nothing(timeout=0.1)

    secret.assignee = domain["bob"]
    await write(secret.save)

    appeared = await bob.receive_json_from(timeout=5)
    assert appeared["type"] == "CREATE_TASK"
    assert appeared["payload"]["assignee"] == str(domain["bob"].pk)
    assert await dana.receive_nothing(timeout=0.3)


class AssigneeSerializer(TaskSerializer):
    """Shows ``assignee`` only to the assignee: a payload that depends on the user."""

    def to_representation(self, instance: Task) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        if getattr(getattr(request, "user", None), "pk", None) != instance.assignee_id:
            data.pop("assignee", None)
        return data


class AssigneeViewSet(TaskViewSet):
    serializer_class = AssigneeSerializer


class AssigneeRegistration(TaskRegistration):
    viewset = AssigneeViewSet
    audiences = ("assignee", "others")

    def get_audience(self, user: Any, instance: Task) -> str:
        return "assignee" if user.pk == instance.assignee_id else "others"


async def test_a_collection_gets_each_users_own_audience(connect, domain, token_for, replace_registration):
    replace_registration(Task, AssigneeRegistration)
    website, task = domain["website"], domain["task"]
    alice = await socket_of(connect, token_for, domain["alice"])
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(alice, **tasks_of(website))
    await subscribe(bob, **tasks_of(website))

    task.assignee = domain["bob"]
    await write(task.save)

    for_bob = await bob.receive_json_from(timeout=5)
    assert for_bob["payload"]["assignee"] == str(domain["bob"].pk)
    assert for_bob["meta"]["changed"] == ["assignee"]
    # Nothing alice's payload shows changed: she is sent nothing.
    assert await alice.receive_nothing(timeout=0.5)
    task.title = "Renamed"
    await write(task.save)
    for_alice = await alice.receive_json_from(timeout=5)
    assert "assignee" not in for_alice["payload"]
    assert for_alice["meta"]["changed"] == ["title"]


async def test_changed_lists_only_the_fields_of_each_audience(connect, domain, token_for):
    alice_user = domain["alice"]
    alice = await socket_of(connect, token_for, alice_user)
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(alice, model="api.user", id=str(alice_user.pk))
    await subscribe(bob, model="api.user", id=str(alice_user.pk))

    def both() -> None:
        alice_user.email = "alice@new.example"
        alice_user.display_name = "Alice N."
        alice_user.save()

    await write(both)
    own = await alice.receive_json_from(timeout=5)
    other = await bob.receive_json_from(timeout=5)
    assert sorted(own["meta"]["changed"]) == ["display_name", "email"]
    assert other["meta"]["changed"] == ["display_name"]
    assert "email" not in other["payload"]

    def email_only() -> None:
        alice_user.email = "alice@newer.example"
        alice_user.save()

    await write(email_only)
    own = await alice.receive_json_from(timeout=5)
    assert own["meta"]["changed"] == ["email"]
    # Nothing bob can see changed: he is sent nothing, and his next event names what he last had.
    assert await bob.receive_nothing(timeout=0.3)
    alice_user.display_name = "Alice M."
    await write(alice_user.save)
    other_next = await bob.receive_json_from(timeout=5)
    assert other_next["meta"]["prev"] == other["meta"]["seq"]


# D2. Who may receive an event is decided with it ----------------------------------------------


async def test_an_edit_and_a_removal_in_one_transaction_end_as_unsubscribed_only(connect, domain, token_for):
    website, task = domain["website"], domain["task"]
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(bob, model="api.task", id=str(task.pk))
    await subscribe(bob, request_id=2, **tasks_of(website))

    def edit_then_remove() -> None:
        with transaction.atomic():
            row = Task.objects.get(pk=task.pk)
            row.title = "Not for bob"
            row.save()
            website.members.remove(domain["bob"])

    await write(edit_then_remove)

    frames = [await bob.receive_json_from(timeout=5) for _ in range(2)]
    assert {frame["type"] for frame in frames} == {"UNSUBSCRIBED"}
    assert all(frame["meta"]["reason"] == "revoked" for frame in frames)
    assert await bob.receive_nothing(timeout=0.5)


async def test_a_user_who_no_longer_shares_a_project_is_revoked_for_third_parties(connect, domain, token_for):
    website = domain["website"]
    alice = await socket_of(connect, token_for, domain["alice"])
    bob_user = domain["bob"]
    await subscribe(alice, model="api.user", id=str(bob_user.pk))

    await write(lambda: website.members.remove(bob_user))

    assert await alice.receive_json_from(timeout=5) == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"model": "api.user", "id": str(bob_user.pk), "reason": "revoked"},
    }
    assert await alice.receive_nothing(timeout=0.3)


async def test_deleting_the_only_shared_project_revokes_third_parties(connect, domain, token_for):
    bob_user = domain["bob"]
    alice = await socket_of(connect, token_for, domain["alice"])
    await subscribe(alice, model="api.user", id=str(bob_user.pk))

    await write(domain["website"].delete)

    revoked = await alice.receive_json_from(timeout=5)
    assert revoked["type"] == "UNSUBSCRIBED" and revoked["meta"]["reason"] == "revoked"
    assert await alice.receive_nothing(timeout=0.3)


async def test_replay_never_returns_events_from_before_access_began(connect, domain, token_for):
    secret, hidden = domain["secret"], domain["hidden"]
    bob_user = domain["bob"]
    carol = await socket_of(connect, token_for, domain["carol"])
    await subscribe(carol, **tasks_of(secret))  # someone is subscribed: the events are recorded

    def before_bob() -> None:
        hidden.title = "secret v2"
        hidden.save()
        Task.objects.create(project=secret, title="secret v1").delete()
        secret.members.add(bob_user)

    await write(before_bob)
    await published()
    bob = await socket_of(connect, token_for, bob_user)
    first = await subscribe(bob, **tasks_of(secret))
    assert first["meta"]["seq"] >= 3

    again = await subscribe(bob, request_id=2, since=0, epoch=first["meta"]["epoch"], **tasks_of(secret))

    assert again["meta"]["recovered"] is False
    assert [task["title"] for task in results(again["payload"])] == ["secret v2"]
    assert await bob.receive_nothing(timeout=0.3)


async def test_replay_after_a_reconnect_within_the_window_recovers_every_event(connect, domain, token_for):
    website, task = domain["website"], domain["task"]
    bob = await socket_of(connect, token_for, domain["bob"])
    first = await subscribe(bob, **tasks_of(website))
    await bob.disconnect()

    for title in ("one", "two"):
        task.title = title
        await write(task.save)
        await published()
    created = await write(lambda: Task.objects.create(project=website, title="three"))
    await published()

    again = await socket_of(connect, token_for, domain["bob"])
    reply = await subscribe(again, since=first["meta"]["seq"], epoch=first["meta"]["epoch"], **tasks_of(website))
    assert reply["meta"]["recovered"] is True
    frames = [await again.receive_json_from(timeout=5) for _ in range(3)]
    assert [(frame["type"], frame["payload"]["title"]) for frame in frames] == [
        ("UPDATE_TASK", "one"),
        ("UPDATE_TASK", "two"),
        ("CREATE_TASK", "three"),
    ]
    assert frames[2]["meta"]["id"] == str(created.pk)
    assert [frame["meta"]["seq"] for frame in frames] == [first["meta"]["seq"] + n for n in (1, 2, 3)]
    assert await again.receive_nothing(timeout=0.3)


# A declaration that disagrees with the viewset ------------------------------------------------


class WrongTaskRegistration(TaskRegistration):
    def subscribable_by(self, instance: Task) -> Any:
        project = Project.objects.get(pk=instance.project_id)
        # Forgets that a private task is hidden from the other members.
        return {project.owner_id, *project.members.values_list("pk", flat=True)}


async def test_a_wrong_declaration_never_sends_a_payload_the_viewset_refuses(
    connect, domain, token_for, replace_registration
):
    replace_registration(Task, WrongTaskRegistration)
    website = domain["website"]
    bob = await socket_of(connect, token_for, domain["bob"])
    await subscribe(bob, **tasks_of(website))

    await write(lambda: Task.objects.create(project=website, title="Hidden", private=True))

    # The payload is read for one user of each audience, here bob: his list does not show the task.
    assert await bob.receive_nothing(timeout=0.5)
