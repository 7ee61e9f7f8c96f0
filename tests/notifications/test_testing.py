"""``notifications.testing``: the kit for testing your own pushes and declarations.

The first tests are docs/testing.md's examples, as written there; the others
pin down what the kit promises when a test goes wrong (what the failure says).
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

import notifications
from api.models import Project, Task, User
from api.notifications import TaskRegistration
from notifications.testing import capture_events, check_subscribable_by, live_socket, published


@pytest.fixture
def alice(domain: dict[str, Any]) -> User:
    return domain["alice"]


@pytest.fixture
def bob(domain: dict[str, Any]) -> User:
    return domain["bob"]


@pytest.fixture
def carol(domain: dict[str, Any]) -> User:
    return domain["carol"]


@pytest.fixture
def website(domain: dict[str, Any]) -> Project:
    """alice's project; bob is a member, carol is not."""
    return domain["website"]


# docs/testing.md: a socket signed in as a user ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_member_sees_a_rename_and_a_stranger_cannot_subscribe(
    live_socket: Any, website: Project, bob: User, carol: User
) -> None:
    task = await database_sync_to_async(Task.objects.create)(project=website, title="Write docs")
    bob_socket = await live_socket(bob)
    carol_socket = await live_socket(carol)

    snapshot = await bob_socket.subscribe(Task, id=task.pk)
    assert snapshot["payload"]["title"] == "Write docs"
    with pytest.raises(AssertionError, match="not_found"):
        await carol_socket.subscribe(Task, id=task.pk)

    task.title = "Write better docs"
    await database_sync_to_async(task.save)()

    await bob_socket.assert_pushed(type="UPDATE_TASK", payload={"title": "Write better docs"}, changed=["title"])
    await bob_socket.assert_nothing_pushed()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_patch_through_the_rest_api_is_pushed(
    live_socket: Any, api_client: Any, website: Project, alice: User, bob: User
) -> None:
    task = await database_sync_to_async(Task.objects.create)(project=website, title="Write docs")
    socket = await live_socket(bob)
    await socket.subscribe(Task, id=task.pk)

    response = await database_sync_to_async(api_client(alice).patch)(
        f"/api/tasks/{task.pk}/", {"done": True}, format="json"
    )

    assert response.status_code == 200
    await socket.assert_pushed(type="UPDATE_TASK", payload={"done": True})


# docs/testing.md: what a block of code publishes ----------------------------------------------


def test_ticking_a_task_updates_it_its_collections_and_its_projects_count(
    db: Any, website: Project, bob: User, carol: User
) -> None:
    task = Task.objects.create(project=website, title="Write docs")

    with capture_events() as events:
        task.done = True
        task.save()

    event = events.assert_published("UPDATE_TASK", id=task)
    assert event.changed == ["done"]
    events.assert_published("UPDATE_TASK", filter={"project": website})
    events.assert_published("UPDATE_PROJECT", id=website, changed=["open_tasks"])  # a Touch

    # Who gets what is decided as the relay decides it, from the committed rows:
    assert event.payload_for(bob)["done"] is True
    assert event.payload_for(carol) is None  # carol may not see the task: she is sent none of it


def test_a_comment_event_reaches_the_task(captured_events: Any, website: Project) -> None:
    task = Task.objects.create(project=website, title="Write docs")
    notifications.publish_event("TASK_COMMENTED", task, payload={"text": "LGTM"})

    assert captured_events.assert_published("TASK_COMMENTED", id=task).payload == {"text": "LGTM"}


def test_the_task_declaration_agrees_with_the_viewset(db: Any, website: Project, bob: User) -> None:
    Task.objects.create(project=website, title="Private, unassigned", private=True)
    Task.objects.create(project=website, title="Private, for bob", private=True, assignee=bob)

    check_subscribable_by(Task)


# live_socket: what its failures say --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_assert_pushed_fails_with_the_frame_that_came_instead(
    live_socket: Any, domain: dict[str, Any], bob: User
) -> None:
    task = domain["task"]
    socket = await live_socket(bob)
    await socket.subscribe(Task, id=task.pk)
    task.title = "Renamed"
    await database_sync_to_async(task.save)()

    with pytest.raises(AssertionError) as failure:
        await socket.assert_pushed(type="DELETE_TASK", payload={"title": "Other"}, model=Task, id=task)

    message = str(failure.value)
    assert "got {'type': 'UPDATE_TASK'" in message
    assert "type is 'UPDATE_TASK', not 'DELETE_TASK'" in message
    assert "payload is {" in message and "'title': 'Renamed'" in message


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_assert_pushed_says_when_nothing_came_and_assert_nothing_pushed_what_did(
    live_socket: Any, domain: dict[str, Any], bob: User
) -> None:
    task = domain["task"]
    socket = await live_socket(bob)
    await socket.subscribe(Task, filter={"project": domain["website"]})

    with pytest.raises(AssertionError, match="Expected a frame with type='CREATE_TASK': nothing arrived within 0.3 s"):
        await socket.assert_pushed(type="CREATE_TASK", timeout=0.3)

    task.done = True
    await database_sync_to_async(task.save)()
    await published()
    with pytest.raises(AssertionError, match="Expected nothing within 1.0 s, got .*UPDATE_TASK"):
        await socket.assert_nothing_pushed(timeout=1.0)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_socket_may_sign_in_by_token_or_not_at_all_and_closes_at_the_end_of_its_block(
    domain: dict[str, Any], token_for: Any, bob: User, settings: Any
) -> None:
    settings.DRF_LIVE = {"AUTH_TIMEOUT": 0.2}
    key = await database_sync_to_async(token_for)(bob)

    async with live_socket(token=key) as by_token:
        reply = await by_token.subscribe("api.task", id=str(domain["task"].pk))
        assert reply["meta"]["model"] == "api.task"
    assert by_token.closed

    async with live_socket() as anonymous:  # ALLOW_ANONYMOUS is off: closed unless it authenticates
        await anonymous.assert_closed(code=4001)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_removed_member_is_told_the_collection_is_gone(
    live_socket: Any, domain: dict[str, Any], bob: User
) -> None:
    website = domain["website"]
    socket = await live_socket(bob)
    await socket.subscribe(Task, filter={"project": website})

    await database_sync_to_async(website.members.remove)(bob)

    await socket.assert_pushed(type="UNSUBSCRIBED", model=Task, filter={"project": website}, reason="revoked")


@pytest.mark.asyncio
async def test_the_live_socket_fixture_makes_the_database_transactional_itself(
    live_socket: Any, make_user: Any
) -> None:
    # make_user asks for `db`; without a transactional database the socket's thread would not see dana.
    dana = await database_sync_to_async(make_user)("dana")
    project = await database_sync_to_async(Project.objects.create)(name="Dana's", owner=dana)

    socket = await live_socket(dana)
    reply = await socket.subscribe(Project, id=project)

    assert reply["payload"]["name"] == "Dana's"


# capture_events: committed transactions, rollbacks, collections ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_committed_transactions_are_captured_one_by_one_and_rolled_back_ones_not_at_all(
    domain: dict[str, Any], bob: User
) -> None:
    website, secret = domain["website"], domain["secret"]

    with capture_events() as events:
        with transaction.atomic():
            task = Task.objects.create(project=website, title="New")
            task.title = "Renamed in the same transaction"
            task.save()
        with transaction.atomic():
            task.project = secret
            task.save()
        try:
            with transaction.atomic():
                Task.objects.filter(pk=task.pk).update(done=True)
                notifications.publish_changes([task], changed=["done"])
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass

    # Created then renamed in one transaction is one create; the move leaves one collection for another.
    created = events.assert_published("CREATE_TASK", filter={"project": website}, member=task)
    assert created.kind == "create"
    events.assert_published("DELETE_TASK", filter={"project": website}, member=task)
    events.assert_published("CREATE_TASK", filter={"project": secret}, member=task)
    events.assert_published("UPDATE_TASK", id=task, changed=["project"])
    events.assert_nothing_published(changed=["done"])
    # Events of one target are numbered in the order they were published: website's count of
    # open tasks changed with the create, then with the move.
    assert [event.seq for event in events.matching("UPDATE_PROJECT", id=website)] == [1, 2]

    moved = events.assert_published("UPDATE_TASK", id=task)
    assert moved.frame_for(bob) == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"model": "api.task", "id": str(task.pk), "reason": "revoked"},
    }
    assert moved.frame_for(domain["carol"])["payload"]["project"] == str(secret.pk)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_what_a_capture_records_still_reaches_the_sockets(
    live_socket: Any, domain: dict[str, Any], bob: User
) -> None:
    task = domain["task"]
    socket = await live_socket(bob)
    await socket.subscribe(Task, id=task.pk)

    async with capture_events() as events:
        task.title = "Seen by both"
        await database_sync_to_async(task.save)()

    events.assert_published("UPDATE_TASK", id=task, changed=["title"])
    await socket.assert_pushed(type="UPDATE_TASK", payload={"title": "Seen by both"})


def test_assert_published_lists_what_was_published_when_it_finds_none_or_several(
    db: Any, domain: dict[str, Any]
) -> None:
    with capture_events() as events:
        Task.objects.create(project=domain["website"], title="New")

    with pytest.raises(AssertionError) as none:
        events.assert_published("DELETE_TASK")
    with pytest.raises(AssertionError) as several:
        events.assert_published("CREATE_TASK")

    assert "found 0 among" in str(none.value) and "CREATE_TASK api.task filter={'project':" in str(none.value)
    assert "found 2 among" in str(several.value)  # the project's tasks, and every task bob may see


def test_nothing_is_captured_after_the_block(db: Any, domain: dict[str, Any]) -> None:
    with capture_events() as events:
        pass
    Task.objects.create(project=domain["website"], title="After")

    assert events == []
    events.assert_nothing_published()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_capture_events_works_from_async_code(domain: dict[str, Any]) -> None:
    async with capture_events() as events:
        await database_sync_to_async(Task.objects.create)(project=domain["website"], title="From async code")

    event = events.assert_published("CREATE_TASK", filter={"project": domain["website"]})
    frame = await database_sync_to_async(event.frame_for)(domain["bob"])
    assert frame is not None and frame["payload"]["title"] == "From async code"


# check_subscribable_by ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_example_declarations_agree_with_their_viewsets(domain: dict[str, Any], make_user: Any) -> None:
    website = domain["website"]
    dana = make_user("dana")
    website.members.add(dana)
    Task.objects.create(project=website, title="Private, unassigned", private=True)
    Task.objects.create(project=website, title="Private, for dana", private=True, assignee=dana)
    Project.objects.create(name="Empty", owner=domain["carol"])

    for model in (Task, Project, User):
        assert check_subscribable_by(model) > 0


class WrongTaskRegistration(TaskRegistration):
    def subscribable_by(self, instance: Task) -> Any:
        project = Project.objects.get(pk=instance.project_id)
        # Forgets that a private task is hidden from the other members.
        return {project.owner_id, *project.members.values_list("pk", flat=True)}


@pytest.mark.django_db(transaction=True)
def test_the_checker_names_every_user_a_wrong_declaration_gets_wrong(
    domain: dict[str, Any], replace_registration: Any
) -> None:
    registration = replace_registration(Task, WrongTaskRegistration)
    secret = Task.objects.create(project=domain["website"], title="Private", private=True)

    with pytest.raises(AssertionError) as failure:
        check_subscribable_by(registration)

    message = str(failure.value)
    assert "in 1 of" in message
    assert f"bob may not see api.task {secret.pk} through the viewset, but subscribable_by() names them" in message


@pytest.mark.django_db(transaction=True)
def test_the_checker_refuses_a_registration_without_a_declaration(replace_registration: Any) -> None:
    class Undeclared(TaskRegistration):
        def subscribable_by(self, instance: Any) -> None:
            return None

    registration = replace_registration(Task, Undeclared)
    Task.objects.create(project=Project.objects.create(name="P", owner=User.objects.create(username="o")), title="t")

    with pytest.raises(AssertionError, match="declares no subscribable_by"):
        check_subscribable_by(registration)
