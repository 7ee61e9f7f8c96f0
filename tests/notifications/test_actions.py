"""Requests over the socket, answered by the registered viewset exactly as the REST API answers them.

Each reply is compared with the same user's REST response (after JSON
parsing). The example domain enables only the reads; the tests of writes and
custom actions swap in registrations that enable them.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from rest_framework import pagination, throttling
from rest_framework.test import APIClient

from api.models import Project, Task
from api.notifications import TaskRegistration
from api.views import TaskViewSet
from notifications.actions import Reply, SocketRequest
from notifications.exceptions import RequestError
from notifications.testing import published
from tests.pages import results

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

NOT_FOUND = {"code": "not_found", "detail": "No such object."}


async def ask(socket: Any, request_id: Any = 1, **frame: Any) -> dict[str, Any]:
    await socket.send_json_to({"request_id": request_id, **frame})
    return await socket.receive_json_from(timeout=5)


async def socket_of(connect: Any, token_for: Any, user: Any) -> Any:
    return await connect(token=await database_sync_to_async(token_for)(user))


@database_sync_to_async
def rest(user: Any, method: str, url: str, data: Any = None) -> tuple[int, Any]:
    client = APIClient()
    client.force_authenticate(user)
    response = getattr(client, method)(url, data, format="json") if data is not None else getattr(client, method)(url)
    return response.status_code, (response.json() if response.content else None)


# retrieve --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewer", "model", "url", "key"),
    [
        ("alice", "api.user", "/api/users/{}/", "alice"),
        ("bob", "api.user", "/api/users/{}/", "alice"),  # without email: another user's view
        ("bob", "api.project", "/api/projects/{}/", "website"),
        ("bob", "api.task", "/api/tasks/{}/", "task"),
    ],
)
async def test_retrieve_answers_what_get_answers(connect, domain, token_for, viewer, model, url, key):
    user, obj = domain[viewer], domain[key]
    socket = await socket_of(connect, token_for, user)

    reply = await ask(socket, action="retrieve", model=model, id=str(obj.pk))

    status, expected = await rest(user, "get", url.format(obj.pk))
    assert status == 200
    assert reply == {
        "type": "RETRIEVED",
        "payload": expected,
        "meta": {"request_id": 1, "model": model, "id": str(obj.pk)},
    }


async def test_retrieve_of_the_invisible_and_the_absent_is_the_same_not_found(connect, domain, token_for):
    bob = await socket_of(connect, token_for, domain["bob"])
    secret = await database_sync_to_async(
        lambda: Task.objects.create(project=domain["website"], title="Private", private=True)
    )()

    replies = [
        await ask(bob, action="retrieve", model="api.task", id=str(domain["hidden"].pk)),  # another's project
        await ask(bob, action="retrieve", model="api.task", id=str(secret.pk)),  # a private task
        await ask(bob, action="retrieve", model="api.task", id="zzzzzzz"),  # no such hashid
        await ask(bob, action="retrieve", model="api.nothing", id="a8OBM2B"),  # no such model
    ]

    for reply in replies:
        assert reply == {"type": "ERROR", "error": True, "payload": NOT_FOUND, "meta": {"request_id": 1}}


async def test_retrieve_without_an_id_is_invalid(connect, domain, token_for):
    bob = await socket_of(connect, token_for, domain["bob"])

    reply = await ask(bob, action="retrieve", model="api.task")

    assert reply["error"] is True
    assert reply["payload"]["code"] == "invalid"
    assert reply["payload"]["fields"] == ["id"]


# list --------------------------------------------------------------------------------


@pytest.mark.parametrize("viewer", ["alice", "bob", "carol"])
async def test_list_answers_what_the_rest_list_answers(connect, domain, token_for, viewer):
    user = domain[viewer]
    socket = await socket_of(connect, token_for, user)
    for model, url in (("api.user", "/api/users/"), ("api.project", "/api/projects/"), ("api.task", "/api/tasks/")):
        reply = await ask(socket, action="list", model=model)

        status, expected = await rest(user, "get", url)
        assert status == 200
        assert reply["type"] == "LISTED"
        assert reply["payload"] == expected
        assert reply["meta"] == {"request_id": 1, "model": model, "filter": {}}


async def test_list_of_a_collection_and_with_query_parameters(connect, domain, token_for):
    alice_user, website = domain["alice"], domain["website"]
    await database_sync_to_async(lambda: Task.objects.create(project=website, title="Second"))()
    alice = await socket_of(connect, token_for, alice_user)

    collection = await ask(alice, action="list", model="api.task", filter={"project": str(website.pk)})
    # TaskViewSet reads ?project= itself: query parameters reach the viewset as over HTTP.
    queried = await ask(alice, action="list", model="api.task", query={"project": str(website.pk)})

    status, expected = await rest(alice_user, "get", f"/api/tasks/?project={website.pk}")
    assert status == 200
    assert collection["payload"] == queried["payload"] == expected
    assert [task["title"] for task in results(expected)] == ["Write docs", "Second"]
    assert collection["meta"]["filter"] == {"project": str(website.pk)}


async def test_list_of_a_collection_the_user_may_not_see_is_not_found(connect, domain, token_for):
    bob = await socket_of(connect, token_for, domain["bob"])

    reply = await ask(bob, action="list", model="api.task", filter={"project": str(domain["secret"].pk)})

    assert reply == {"type": "ERROR", "error": True, "payload": NOT_FOUND, "meta": {"request_id": 1}}


class TwoPerPage(pagination.PageNumberPagination):
    page_size = 2


class PagedTaskViewSet(TaskViewSet):
    pagination_class = TwoPerPage


class PagedTaskRegistration(TaskRegistration):
    viewset = PagedTaskViewSet


@pytest.fixture
def paged(replace_registration: Any, settings: Any) -> None:
    replace_registration(Task, PagedTaskRegistration)


async def test_a_paginated_list_has_the_rest_shape_and_its_links(connect, domain, token_for, paged, settings):
    settings.ROOT_URLCONF = "tests.notifications.urls_paged"
    alice_user, website = domain["alice"], domain["website"]
    await database_sync_to_async(lambda: [Task.objects.create(project=website, title=f"T{n}") for n in range(4)])()
    key = await database_sync_to_async(token_for)(alice_user)
    # The links are absolute, with the host the client reached, as the REST API builds them.
    alice = await connect(token=key, headers=[(b"host", b"testserver")])

    first = await ask(alice, action="list", model="api.task", filter={"project": str(website.pk)})
    second = await ask(alice, action="list", model="api.task", filter={"project": str(website.pk)}, page=2)
    third = await ask(alice, action="list", model="api.task", filter={"project": str(website.pk)}, page=3)

    for page, reply in ((1, first), (2, second), (3, third)):
        status, expected = await rest(alice_user, "get", f"/paged/tasks/?project={website.pk}&page={page}")
        assert status == 200
        # The whole page, links included: the filter is the REST list's ?project=.
        assert reply["payload"] == expected
        assert expected["count"] == 5
    assert first["payload"]["previous"] is None
    assert first["payload"]["next"] == f"http://testserver/paged/tasks/?page=2&project={website.pk}"
    assert second["meta"]["page"] == 2
    assert third["payload"]["next"] is None
    titles = [task["title"] for reply in (first, second, third) for task in reply["payload"]["results"]]
    assert titles == ["Write docs", "T0", "T1", "T2", "T3"]
    beyond = await ask(alice, action="list", model="api.task", filter={"project": str(website.pk)}, page=9)
    assert beyond["payload"]["code"] == "not_found"


async def test_a_collection_snapshot_is_the_first_page_and_pages_follow_at_its_seq(connect, domain, token_for, paged):
    alice_user, website = domain["alice"], domain["website"]
    await database_sync_to_async(lambda: [Task.objects.create(project=website, title=f"T{n}") for n in range(4)])()
    await published()
    alice = await socket_of(connect, token_for, alice_user)

    snapshot = await ask(alice, action="subscribe", model="api.task", filter={"project": str(website.pk)})
    assert snapshot["type"] == "SUBSCRIBED"
    assert snapshot["payload"]["count"] == 5
    assert [task["title"] for task in snapshot["payload"]["results"]] == ["Write docs", "T0"]

    page = await ask(alice, 2, action="list", model="api.task", filter={"project": str(website.pk)}, page=2)
    assert [task["title"] for task in page["payload"]["results"]] == ["T1", "T2"]
    # A page of a collection the socket holds tells where in its stream it stands.
    assert page["meta"]["seq"] == snapshot["meta"]["seq"]
    assert page["meta"]["epoch"] == snapshot["meta"]["epoch"]

    # A member beyond the first page still counts: its changes arrive as updates.
    last = await database_sync_to_async(lambda: Task.objects.get(title="T3"))()
    last.done = True
    await database_sync_to_async(last.save)()
    event = await alice.receive_json_from(timeout=5)
    assert event["type"] == "UPDATE_TASK" and event["meta"]["id"] == str(last.pk)
    assert event["meta"]["seq"] == snapshot["meta"]["seq"] + 1


# Unfiltered collections ------------------------------------------------------------------


async def test_a_subscription_without_id_or_filter_is_every_object_the_user_may_see(connect, domain, token_for):
    bob_user, website = domain["bob"], domain["website"]
    bob = await socket_of(connect, token_for, bob_user)

    snapshot = await ask(bob, action="subscribe", model="api.task")

    status, expected = await rest(bob_user, "get", "/api/tasks/")
    assert snapshot["payload"] == expected
    assert snapshot["meta"]["filter"] == {}
    created = await database_sync_to_async(lambda: Task.objects.create(project=website, title="New"))()
    event = await bob.receive_json_from(timeout=5)
    assert event["type"] == "CREATE_TASK"
    assert event["meta"] == {
        "model": "api.task",
        "filter": {},
        "id": str(created.pk),
        "seq": snapshot["meta"]["seq"] + 1,
    }
    # Neither a task of a project bob cannot see, nor a private one, reaches him.
    await database_sync_to_async(lambda: Task.objects.create(project=domain["secret"], title="Elsewhere"))()
    await database_sync_to_async(lambda: Task.objects.create(project=website, title="Mine", private=True))()
    assert await bob.receive_nothing(timeout=0.5)


async def test_a_registration_can_switch_the_unfiltered_collection_off(
    connect, domain, token_for, replace_registration
):
    replace_registration(Task, TaskRegistration, allow_unfiltered=False)
    bob = await socket_of(connect, token_for, domain["bob"])

    reply = await ask(bob, action="subscribe", model="api.task")

    assert reply == {"type": "ERROR", "error": True, "payload": NOT_FOUND, "meta": {"request_id": 1}}


# Writes: opt-in, through the viewset's own code ------------------------------------------------


class WritableTaskRegistration(TaskRegistration):
    socket_actions = ("retrieve", "list", "create", "update", "partial_update", "destroy")


@pytest.mark.parametrize("action", ["create", "update", "partial_update", "destroy"])
async def test_a_write_the_registration_has_not_enabled_is_not_allowed_whatever_its_body(
    connect, domain, token_for, action
):
    bob = await socket_of(connect, token_for, domain["bob"])

    for body in ({"id": str(domain["task"].pk), "data": {"title": "x"}}, {}, {"data": "nonsense", "id": 5}):
        reply = await ask(bob, action=action, model="api.task", **body)
        assert reply["error"] is True
        assert reply["payload"]["code"] == "not_allowed", reply
    assert (await database_sync_to_async(Task.objects.get)(pk=domain["task"].pk)).title == "Write docs"


async def test_writes_run_the_viewset_and_publish_like_rest_writes(connect, domain, token_for, replace_registration):
    replace_registration(Task, WritableTaskRegistration)
    website = domain["website"]
    bob = await socket_of(connect, token_for, domain["bob"])
    alice = await socket_of(connect, token_for, domain["alice"])
    await ask(alice, action="subscribe", model="api.task", filter={"project": str(website.pk)})

    created = await ask(
        bob, 2, action="create", model="api.task", data={"project": str(website.pk), "title": "By socket"}
    )
    assert created["type"] == "CREATED"
    task_id = created["payload"]["id"]
    status, stored = await rest(domain["bob"], "get", f"/api/tasks/{task_id}/")
    assert status == 200 and stored == created["payload"]
    event = await alice.receive_json_from(timeout=5)
    assert (event["type"], event["payload"]) == ("CREATE_TASK", stored)

    patched = await ask(bob, 3, action="partial_update", model="api.task", id=task_id, data={"done": True})
    assert patched["type"] == "UPDATED" and patched["payload"]["done"] is True
    event = await alice.receive_json_from(timeout=5)
    assert event["type"] == "UPDATE_TASK" and event["meta"]["changed"] == ["done"]

    replaced = await ask(
        bob, 4, action="update", model="api.task", id=task_id, data={"project": str(website.pk), "title": "Renamed"}
    )
    assert replaced["type"] == "UPDATED" and replaced["payload"]["title"] == "Renamed"
    assert (await alice.receive_json_from(timeout=5))["meta"]["changed"] == ["title"]

    destroyed = await ask(bob, 5, action="destroy", model="api.task", id=task_id)
    assert destroyed == {
        "type": "DESTROYED",
        "payload": None,
        "meta": {"request_id": 5, "model": "api.task", "id": task_id},
    }
    assert (await alice.receive_json_from(timeout=5))["type"] == "DELETE_TASK"
    assert (await rest(domain["bob"], "get", f"/api/tasks/{task_id}/"))[0] == 404


async def test_a_refused_write_is_invalid_with_its_fields_or_not_found(
    connect, domain, token_for, replace_registration
):
    replace_registration(Task, WritableTaskRegistration)
    bob = await socket_of(connect, token_for, domain["bob"])

    missing = await ask(bob, action="create", model="api.task", data={"project": str(domain["website"].pk)})
    elsewhere = await ask(
        bob, action="create", model="api.task", data={"project": str(domain["secret"].pk), "title": "x"}
    )
    hidden = await ask(bob, action="partial_update", model="api.task", id=str(domain["hidden"].pk), data={"title": "x"})

    assert missing["payload"]["code"] == "invalid"
    assert missing["payload"]["fields"] == ["title"]
    assert missing["payload"]["errors"] == {"title": ["This field is required."]}
    assert elsewhere["payload"]["code"] == "invalid" and elsewhere["payload"]["fields"] == ["project"]
    assert hidden == {"type": "ERROR", "error": True, "payload": NOT_FOUND, "meta": {"request_id": 1}}


async def test_a_write_the_viewset_permissions_refuse_is_not_allowed(connect, domain, token_for, replace_registration):
    from api.notifications import ProjectRegistration

    replace_registration(Project, ProjectRegistration, socket_actions=("retrieve", "list", "partial_update"))
    bob = await socket_of(connect, token_for, domain["bob"])  # a member, not the owner

    reply = await ask(
        bob, action="partial_update", model="api.project", id=str(domain["website"].pk), data={"name": "x"}
    )

    assert reply["payload"]["code"] == "not_allowed"
    assert reply["payload"]["detail"] == "You do not have permission to perform this action."
    assert (await database_sync_to_async(Project.objects.get)(pk=domain["website"].pk)).name == "Website"


# Throttles of the viewset --------------------------------------------------------------------


class OnePerMinute(throttling.UserRateThrottle):
    rate = "1/min"


class ThrottledTaskViewSet(TaskViewSet):
    throttle_classes = [OnePerMinute]


async def test_the_viewsets_throttles_apply_and_answer_throttled(connect, domain, token_for, replace_registration):
    from django.core.cache import cache

    cache.clear()
    replace_registration(Task, TaskRegistration, viewset=ThrottledTaskViewSet)
    bob = await socket_of(connect, token_for, domain["bob"])

    first = await ask(bob, action="retrieve", model="api.task", id=str(domain["task"].pk))
    second = await ask(bob, 2, action="retrieve", model="api.task", id=str(domain["task"].pk))

    assert first["type"] == "RETRIEVED"
    assert second["error"] is True and second["payload"]["code"] == "throttled"
    assert second["meta"] == {"request_id": 2}
    cache.clear()


# Custom actions --------------------------------------------------------------------------------


class CompletingTaskRegistration(TaskRegistration):
    custom_actions = {"complete": "complete_task"}

    def complete_task(self, request: SocketRequest) -> Reply:
        task = request.instance
        if task is None:
            raise RequestError("invalid", "Name the task to complete.", fields=["id"])
        if task.done:
            raise RequestError("invalid", "It is done already.", fields=["id"])
        task.done = True
        task.save()
        return Reply("COMPLETED", {"id": str(task.pk), "by": str(request.user.pk), "note": request.data})


async def test_a_custom_action_runs_the_registrations_method(connect, domain, token_for, replace_registration):
    replace_registration(Task, CompletingTaskRegistration)
    task = domain["task"]
    bob = await socket_of(connect, token_for, domain["bob"])
    alice = await socket_of(connect, token_for, domain["alice"])
    await ask(alice, action="subscribe", model="api.task", id=str(task.pk))

    done = await ask(bob, 2, action="complete", model="api.task", id=str(task.pk), data="well done")
    again = await ask(bob, 3, action="complete", model="api.task", id=str(task.pk))
    hidden = await ask(bob, 4, action="complete", model="api.task", id=str(domain["hidden"].pk))
    elsewhere = await ask(bob, 5, action="complete", model="api.project", id=str(domain["website"].pk))

    assert done == {
        "type": "COMPLETED",
        "payload": {"id": str(task.pk), "by": str(domain["bob"].pk), "note": "well done"},
        "meta": {"request_id": 2, "model": "api.task", "id": str(task.pk)},
    }
    assert (await alice.receive_json_from(timeout=5))["meta"]["changed"] == ["done"]
    assert again["payload"] == {"code": "invalid", "detail": "It is done already.", "fields": ["id"]}
    assert hidden["payload"] == NOT_FOUND
    assert elsewhere["payload"]["code"] == "not_allowed"  # api.project has no such action
    unknown = await ask(bob, 6, action="obliterate", model="api.task", id=str(task.pk))
    assert unknown["payload"]["code"] == "unknown_action"


async def test_a_page_names_the_last_event_its_client_was_sent_not_one_it_skipped(connect, domain, token_for):
    website, bob_user = domain["website"], domain["bob"]
    bob = await socket_of(connect, token_for, bob_user)
    snapshot = await ask(bob, action="subscribe", model="api.task", filter={"project": str(website.pk)})
    # An event bob may not see moves the stream on, without being sent to him.
    await database_sync_to_async(lambda: Task.objects.create(project=website, title="Hidden", private=True))()
    await published()

    page = await ask(bob, 2, action="list", model="api.task", filter={"project": str(website.pk)})
    retrieved = await ask(bob, 3, action="retrieve", model="api.task", id=str(domain["task"].pk))

    assert page["meta"]["seq"] == snapshot["meta"]["seq"]
    assert [task["title"] for task in results(page["payload"])] == ["Write docs"]
    # An object this socket does not hold is answered without a seq.
    assert "seq" not in retrieved["meta"]
    await ask(bob, 4, action="subscribe", model="api.task", id=str(domain["task"].pk))
    held = await ask(bob, 5, action="retrieve", model="api.task", id=str(domain["task"].pk))
    assert held["meta"]["seq"] == 0 and held["meta"]["epoch"]


async def test_a_listed_search_echoes_its_query(connect, domain, token_for):
    bob = await socket_of(connect, token_for, domain["bob"])

    reply = await ask(bob, action="list", model="api.task", query={"project": str(domain["website"].pk)})

    assert reply["meta"]["query"] == {"project": str(domain["website"].pk)}
