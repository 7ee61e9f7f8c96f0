"""``NotificationConsumer`` over the full stack (auth middleware, router) with the in-memory layer.

Writes run through ``database_sync_to_async``, which publishes on the test's
event loop, so their events arrive on the sockets under test.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from notifications.testing import published

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

NOT_FOUND = {"code": "not_found", "detail": "No such object."}


# Helpers ----------------------------------------------------------------------


async def request(communicator: WebsocketCommunicator, frame: Any) -> dict[str, Any]:
    """Send one JSON frame and return the one reply."""
    await communicator.send_json_to(frame)
    return await communicator.receive_json_from()


async def assert_open(communicator: WebsocketCommunicator) -> None:
    """The socket still answers: a ``ping`` gets its ``PONG``."""
    reply = await request(communicator, {"action": "ping", "request_id": "still-open"})
    assert reply == {"type": "PONG", "payload": None, "meta": {"request_id": "still-open"}}


def assert_error(frame: dict[str, Any], code: str, *, request_id: Any = None, fields: list[str] | None = None) -> None:
    """``frame`` is exactly an FSA error reply with ``code`` (and ``fields`` for ``invalid``)."""
    assert set(frame) == {"type", "error", "payload", "meta"}, frame
    assert frame["type"] == "ERROR"
    assert frame["error"] is True
    assert frame["meta"] == ({} if request_id is None else {"request_id": request_id})
    payload = frame["payload"]
    assert payload["code"] == code, frame
    assert isinstance(payload["detail"], str) and payload["detail"]
    if fields is None:
        assert set(payload) == {"code", "detail"}, frame
    else:
        assert set(payload) == {"code", "detail", "fields"}, frame
        assert payload["fields"] == fields


def assert_subscribed(
    frame: dict[str, Any], payload: Any, *, model: str, id: str, request_id: Any = None, **meta: Any
) -> dict[str, Any]:
    """``frame`` is exactly a ``SUBSCRIBED`` reply; returns its ``meta``."""
    assert set(frame) == {"type", "payload", "meta"}, frame
    assert frame["type"] == "SUBSCRIBED"
    assert frame["payload"] == payload
    got = frame["meta"]
    assert isinstance(got.get("seq"), int) and got["seq"] >= 0
    assert isinstance(got.get("epoch"), str) and got["epoch"]
    expected = {"model": model, "id": id, "seq": got["seq"], "epoch": got["epoch"], **meta}
    if request_id is not None:
        expected["request_id"] = request_id
    assert got == expected
    return got


@database_sync_to_async
def rest_get(user: Any, url: str) -> Any:
    """What the REST API returns to ``user`` for ``GET url``."""
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


@database_sync_to_async
def save_title(task: Any, title: str) -> None:
    task.title = title
    task.save()


@database_sync_to_async
def save_unchanged(task: Any) -> None:
    task.save()


@database_sync_to_async
def save_rolled_back(task: Any, title: str) -> None:
    class Rollback(Exception):
        pass

    try:
        with transaction.atomic():
            task.title = title
            task.save()
            raise Rollback
    except Rollback:
        pass
    task.refresh_from_db()


@database_sync_to_async
def delete(instance: Any) -> None:
    instance.delete()


@database_sync_to_async
def set_display_name(user: Any, name: str) -> None:
    user.display_name = name
    user.save()


@database_sync_to_async
def deactivate(user: Any) -> None:
    user.is_active = False
    user.save()


@database_sync_to_async
def delete_tokens(user: Any) -> None:
    Token.objects.filter(user=user).delete()


def task_url(task: Any) -> str:
    return f"/api/tasks/{task.pk}/"


def subscribe_task(task: Any, request_id: Any = None, **extra: Any) -> dict[str, Any]:
    frame = {"action": "subscribe", "model": "api.task", "id": str(task.pk), **extra}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


@pytest.fixture
def alice_key(domain: dict[str, Any], token_for: Any) -> str:
    return token_for(domain["alice"])


@pytest.fixture
def bob_key(domain: dict[str, Any], token_for: Any) -> str:
    return token_for(domain["bob"])


@pytest.fixture
def subscribe_reads(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``subscribe_reads(Model)``: the ids the subscribe's equalised lookup reads of that model, in order."""
    from notifications.registry import site

    def watch(model: Any) -> list[Any]:
        registration = site.get_for(model)
        reads: list[Any] = []
        original = registration.get_visible

        def counted(user: Any, pk: Any, **kwargs: Any) -> Any:
            if kwargs.get("equalised", True):  # the subscribe's lookup, not the relay's
                reads.append(pk)
            return original(user, pk, **kwargs)

        monkeypatch.setattr(registration, "get_visible", counted)
        return reads

    return watch


@pytest.fixture
def missing_task_id(domain: dict[str, Any]) -> str:
    """The hashid of a task that existed in a project alice sees, and was deleted."""
    from api.models import Task

    task = Task.objects.create(project=domain["website"], title="Gone")
    wire_id = str(task.pk)
    task.delete()
    return wire_id


# Subscribe and unsubscribe ------------------------------------------------------


async def test_subscribe_replies_with_rest_payload_and_stream_position(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)

    reply = await request(socket, subscribe_task(task, request_id=1))

    expected = await rest_get(domain["alice"], task_url(task))
    assert expected["title"] == "Write docs"
    assert_subscribed(reply, expected, model="api.task", id=str(task.pk), request_id=1)
    assert await socket.receive_nothing()


@pytest.mark.parametrize("label", ["api.Task", "api.task"])
async def test_frame_without_action_subscribes_oddbird_style(connect, domain, alice_key, label):
    task = domain["task"]
    socket = await connect(token=alice_key)

    reply = await request(socket, {"model": label, "id": str(task.pk), "request_id": "first"})

    expected = await rest_get(domain["alice"], task_url(task))
    assert_subscribed(reply, expected, model="api.task", id=str(task.pk), request_id="first")
    await save_title(task, "Seen by an OddBird client")
    event = await socket.receive_json_from()
    assert event["type"] == "UPDATE_TASK"
    assert event["payload"]["title"] == "Seen by an OddBird client"


@pytest.mark.parametrize("request_id", ["abc", 7, 0, 2.5, ""])
async def test_replies_echo_string_and_number_request_ids(connect, domain, alice_key, request_id):
    task = domain["task"]
    socket = await connect(token=alice_key)

    subscribed = await request(socket, subscribe_task(task, request_id=request_id))
    assert subscribed["meta"]["request_id"] == request_id
    assert type(subscribed["meta"]["request_id"]) is type(request_id)

    unsubscribed = await request(
        socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk), "request_id": request_id}
    )
    assert unsubscribed["meta"]["request_id"] == request_id

    pong = await request(socket, {"action": "ping", "request_id": request_id})
    assert pong == {"type": "PONG", "payload": None, "meta": {"request_id": request_id}}


async def test_replies_to_requests_without_request_id_have_none(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)

    subscribed = await request(socket, subscribe_task(task))
    assert "request_id" not in subscribed["meta"]
    assert_subscribed(subscribed, await rest_get(domain["alice"], task_url(task)), model="api.task", id=str(task.pk))

    assert await request(socket, {"action": "ping"}) == {"type": "PONG", "payload": None, "meta": {}}
    error = await request(socket, {"action": "explode"})
    assert_error(error, "unknown_action")


async def test_subscribing_twice_keeps_one_subscription(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)

    first = await request(socket, subscribe_task(task, request_id=1))
    second = await request(socket, subscribe_task(task, request_id=2))

    assert second["type"] == "SUBSCRIBED"
    assert second["meta"]["request_id"] == 2
    assert (second["meta"]["seq"], second["meta"]["epoch"]) == (first["meta"]["seq"], first["meta"]["epoch"])
    await save_title(task, "Once")
    event = await socket.receive_json_from()
    assert event["type"] == "UPDATE_TASK"
    assert event["meta"]["seq"] == first["meta"]["seq"] + 1
    assert await socket.receive_nothing(timeout=0.2)


async def test_unsubscribe_replies_and_stops_events(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    await request(socket, subscribe_task(task, request_id=1))

    reply = await request(socket, {"action": "unsubscribe", "model": "api.Task", "id": str(task.pk), "request_id": 2})

    assert reply == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"request_id": 2, "model": "api.task", "id": str(task.pk)},
    }
    await save_title(task, "Nobody listens")
    assert await socket.receive_nothing(timeout=0.2)


async def test_unsubscribe_from_target_never_subscribed_replies_unsubscribed(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)

    reply = await request(socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk), "request_id": 3})

    assert reply == {
        "type": "UNSUBSCRIBED",
        "payload": None,
        "meta": {"request_id": 3, "model": "api.task", "id": str(task.pk)},
    }
    assert await socket.receive_nothing()


# Events -------------------------------------------------------------------------


async def test_write_sends_update_with_changed_fields_and_next_seqs(connect, domain, alice_key):
    task, website = domain["task"], domain["website"]
    socket = await connect(token=alice_key)
    subscribed = await request(socket, subscribe_task(task, request_id=1))
    seq = subscribed["meta"]["seq"]

    await save_title(task, "Write the docs")
    first = await socket.receive_json_from()
    await save_title(task, "Write all the docs")
    second = await socket.receive_json_from()

    payload = {
        "id": str(task.pk),
        "project": str(website.pk),
        "title": "Write the docs",
        "done": False,
        "assignee": None,
        "private": False,
    }
    assert first == {
        "type": "UPDATE_TASK",
        "payload": payload,
        "meta": {"model": "api.task", "id": str(task.pk), "changed": ["title"], "seq": seq + 1},
    }
    assert second == {
        "type": "UPDATE_TASK",
        "payload": {**payload, "title": "Write all the docs"},
        "meta": {"model": "api.task", "id": str(task.pk), "changed": ["title"], "seq": seq + 2},
    }
    assert second["payload"] == await rest_get(domain["alice"], task_url(task))
    assert await socket.receive_nothing()


async def test_write_that_changes_no_tracked_field_sends_nothing(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    subscribed = await request(socket, subscribe_task(task))

    await save_unchanged(task)

    assert await socket.receive_nothing(timeout=0.2)
    await save_title(task, "Changed")
    event = await socket.receive_json_from()
    assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1


async def test_delete_sends_delete_event(connect, domain, alice_key):
    task = domain["task"]
    wire_id = str(task.pk)
    socket = await connect(token=alice_key)
    subscribed = await request(socket, subscribe_task(task))

    await delete(task)

    assert await socket.receive_json_from() == {
        "type": "DELETE_TASK",
        "payload": {"id": wire_id},
        "meta": {"model": "api.task", "id": wire_id, "seq": subscribed["meta"]["seq"] + 1},
    }
    assert await socket.receive_nothing()


async def test_rolled_back_write_sends_nothing(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    subscribed = await request(socket, subscribe_task(task))

    await save_rolled_back(task, "Never happened")

    assert await socket.receive_nothing(timeout=0.2)
    assert (await rest_get(domain["alice"], task_url(task)))["title"] == "Write docs"
    await save_title(task, "Happened")
    event = await socket.receive_json_from()
    assert event["payload"]["title"] == "Happened"
    assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1


async def test_user_payloads_show_email_only_to_that_user(connect, domain, alice_key, bob_key):
    alice, bob = domain["alice"], domain["bob"]
    url = f"/api/users/{alice.pk}/"
    as_alice = await connect(token=alice_key)
    as_bob = await connect(token=bob_key)
    frame = {"action": "subscribe", "model": "api.user", "id": str(alice.pk), "request_id": 1}

    own = await request(as_alice, frame)
    other = await request(as_bob, frame)

    assert own["payload"]["email"] == "alice@example.com"
    assert "email" not in other["payload"]
    assert own["payload"] == await rest_get(alice, url)
    assert other["payload"] == await rest_get(bob, url)

    await set_display_name(alice, "Alice A.")
    own_event = await as_alice.receive_json_from()
    other_event = await as_bob.receive_json_from()

    assert own_event["type"] == other_event["type"] == "UPDATE_USER"
    assert (
        own_event["meta"]
        == other_event["meta"]
        == {
            "model": "api.user",
            "id": str(alice.pk),
            "changed": ["display_name"],
            "seq": own["meta"]["seq"] + 1,
        }
    )
    assert own_event["payload"] == await rest_get(alice, url)
    assert own_event["payload"]["email"] == "alice@example.com"
    assert other_event["payload"] == await rest_get(bob, url)
    assert "email" not in other_event["payload"]
    assert other_event["payload"]["display_name"] == "Alice A."


# Errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["not json", "{", '{"action": "ping"', "[1, 2]", "[]", "5", "-1.5", '"subscribe"', "null", "true"]
)
async def test_text_that_is_not_a_json_object_is_a_parse_error(connect, domain, alice_key, text):
    socket = await connect(token=alice_key)

    await socket.send_to(text_data=text)

    assert_error(await socket.receive_json_from(), "parse_error")
    await assert_open(socket)


async def test_binary_frame_is_a_parse_error(connect, domain, alice_key):
    socket = await connect(token=alice_key)

    await socket.send_to(bytes_data=b'{"action": "ping", "request_id": 1}')

    assert_error(await socket.receive_json_from(), "parse_error")
    await assert_open(socket)


@pytest.mark.parametrize(
    ("frame", "fields"),
    [
        ({"action": "subscribe", "id": "x"}, ["model"]),
        ({"action": "subscribe", "model": 5, "id": "x"}, ["model"]),
        ({"action": "subscribe", "model": None, "id": "x"}, ["model"]),
        ({"action": "subscribe", "model": "api.task", "id": 5}, ["id"]),
        ({"action": "subscribe", "model": "api.task", "id": ["a"]}, ["id"]),
        ({"action": "subscribe", "model": "api.task", "id": "x", "filter": {"project": "y"}}, ["filter", "id"]),
        ({"action": "subscribe", "model": "api.task", "filter": "project"}, ["filter"]),
        ({"action": "subscribe", "model": "api.task", "filter": {"title": "x"}}, ["filter"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "since": 1}, ["epoch", "since"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "since": "1", "epoch": "e"}, ["since"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "since": -1, "epoch": "e"}, ["since"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "since": True, "epoch": "e"}, ["since"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "since": 1, "epoch": 1}, ["epoch"]),
        ({"action": "unsubscribe", "id": "x"}, ["model"]),
        ({"action": "unsubscribe", "model": "api.task", "id": 5}, ["id"]),
        ({"action": "authenticate"}, ["token"]),
        ({"action": "authenticate", "token": 5}, ["token"]),
        ({"action": "authenticate", "token": ""}, ["token"]),
        ({"action": "subscribe", "model": "api.task", "id": "TASK", "request_id": "r" * 101}, ["request_id"]),
    ],
)
async def test_missing_or_wrong_typed_fields_are_invalid_and_named(connect, domain, alice_key, frame, fields):
    socket = await connect(token=alice_key)
    frame = {key: (str(domain["task"].pk) if value == "TASK" else value) for key, value in frame.items()}
    frame.setdefault("request_id", 9)

    reply = await request(socket, frame)

    assert_error(reply, "invalid", request_id=None if fields == ["request_id"] else 9, fields=fields)
    await assert_open(socket)


async def test_unknown_action_is_an_error(connect, domain, alice_key):
    socket = await connect(token=alice_key)

    reply = await request(socket, {"action": "publish", "model": "api.task", "request_id": "u"})

    assert_error(reply, "unknown_action", request_id="u")
    await assert_open(socket)


@pytest.mark.parametrize("action", [5, None, True, ["subscribe"], {"name": "subscribe"}])
async def test_action_that_is_not_a_string_is_invalid(connect, domain, alice_key, action):
    socket = await connect(token=alice_key)

    reply = await request(
        socket, {"action": action, "model": "api.task", "id": str(domain["task"].pk), "request_id": 4}
    )

    assert_error(reply, "invalid", request_id=4, fields=["action"])
    await assert_open(socket)


async def test_frame_without_action_or_model_is_invalid(connect, domain, alice_key):
    socket = await connect(token=alice_key)

    reply = await request(socket, {"request_id": 4})

    assert_error(reply, "invalid", request_id=4, fields=["action"])
    await assert_open(socket)


async def test_every_way_of_naming_nothing_visible_answers_the_same_not_found(
    connect, domain, alice_key, missing_task_id
):
    socket = await connect(token=alice_key)
    targets = {
        "unknown model": {"model": "api.nothing", "id": str(domain["task"].pk)},
        "unknown app": {"model": "nope.task", "id": str(domain["task"].pk)},
        "not a label": {"model": "task", "id": str(domain["task"].pk)},
        "bad hashid": {"model": "api.task", "id": "not-a-hashid!"},
        "raw integer key": {"model": "api.task", "id": "1"},
        "missing object": {"model": "api.task", "id": missing_task_id},
        "another user's object": {"model": "api.task", "id": str(domain["hidden"].pk)},
        "another user's project": {"model": "api.project", "id": str(domain["secret"].pk)},
    }

    payloads = {}
    for request_id, (name, target) in enumerate(targets.items()):
        reply = await request(socket, {"action": "subscribe", **target, "request_id": request_id})
        assert_error(reply, "not_found", request_id=request_id)
        payloads[name] = reply["payload"]
        await assert_open(socket)

    assert all(payload == NOT_FOUND for payload in payloads.values()), payloads
    await save_title(domain["hidden"], "Still hidden")
    assert await socket.receive_nothing(timeout=0.2)


async def test_one_read_decides_access_and_the_snapshot_of_an_object(connect, domain, alice_key, subscribe_reads):
    from api.models import Task

    reads = subscribe_reads(Task)
    task = domain["task"]
    await save_title(task, "As committed")
    socket = await connect(token=alice_key)

    reply = await request(socket, subscribe_task(task, request_id=1))

    # The snapshot is the object the access check read, not a second read of it.
    assert reads == [task.pk]
    assert reply["type"] == "SUBSCRIBED"
    assert reply["payload"]["title"] == "As committed"


async def test_one_read_of_the_project_decides_access_to_its_tasks_and_their_list(
    connect, domain, alice_key, subscribe_reads
):
    from api.models import Project

    reads = subscribe_reads(Project)
    project = domain["website"]
    titles = sorted(await database_sync_to_async(lambda: list(project.tasks.values_list("title", flat=True)))())
    socket = await connect(token=alice_key)

    reply = await request(
        socket, {"action": "subscribe", "model": "api.task", "filter": {"project": str(project.pk)}, "request_id": 1}
    )

    assert reads == [project.pk]
    assert reply["type"] == "SUBSCRIBED"
    assert sorted(row["title"] for row in reply["payload"]["results"]) == titles


async def test_a_hidden_object_is_not_found_and_not_subscribed(connect, domain, alice_key, monkeypatch):
    from api.models import Task
    from notifications.registry import site

    registration = site.get_for(Task)
    monkeypatch.setattr(registration, "get_visible", lambda user, pk, **kwargs: None)
    task = domain["task"]
    socket = await connect(token=alice_key)

    reply = await request(socket, subscribe_task(task, request_id=1))

    assert_error(reply, "not_found", request_id=1)
    assert reply["payload"] == NOT_FOUND
    monkeypatch.undo()
    await save_title(task, "Not for alice")
    assert await socket.receive_nothing(timeout=0.2)
    await assert_open(socket)


@pytest.mark.parametrize("request_id", [{"a": 1}, [1], True, False])
async def test_request_id_that_is_not_a_string_or_number_is_invalid(connect, domain, alice_key, request_id):
    socket = await connect(token=alice_key)

    reply = await request(socket, {"action": "ping", "request_id": request_id})

    assert_error(reply, "invalid", fields=["request_id"])
    await assert_open(socket)


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
async def test_unauthenticated_socket_may_not_subscribe(connect, domain, action):
    socket = await connect()
    task = domain["task"]

    reply = await request(socket, {"action": action, "model": "api.task", "id": str(task.pk), "request_id": "s"})

    assert_error(reply, "not_authenticated", request_id="s")
    await assert_open(socket)
    await save_title(task, "Unseen")
    assert await socket.receive_nothing(timeout=0.2)


async def test_unauthenticated_oddbird_subscribe_is_not_authenticated(connect, domain):
    socket = await connect()

    reply = await request(socket, {"model": "api.Task", "id": str(domain["task"].pk)})

    assert_error(reply, "not_authenticated")
    await assert_open(socket)


async def test_ping_works_unauthenticated(connect, db):
    socket = await connect()

    assert await request(socket, {"action": "ping", "request_id": 5}) == {
        "type": "PONG",
        "payload": None,
        "meta": {"request_id": 5},
    }
    assert await socket.receive_nothing()


# The authenticate frame -------------------------------------------------------------


async def test_authenticate_frame_with_good_token_authenticates(connect, domain, alice_key):
    socket = await connect()

    reply = await request(socket, {"action": "authenticate", "token": alice_key, "request_id": "auth"})

    assert reply == {
        "type": "AUTHENTICATED",
        "payload": {"user": str(domain["alice"].pk)},
        "meta": {"request_id": "auth"},
    }
    subscribed = await request(socket, subscribe_task(domain["task"], request_id=2))
    assert subscribed["type"] == "SUBSCRIBED"
    assert subscribed["payload"] == await rest_get(domain["alice"], task_url(domain["task"]))


async def test_authenticate_frame_with_bad_token_is_not_authenticated(connect, domain, alice_key):
    socket = await connect()

    reply = await request(socket, {"action": "authenticate", "token": alice_key[:-1] + "x", "request_id": 1})

    assert_error(reply, "not_authenticated", request_id=1)
    await assert_open(socket)
    assert_error(await request(socket, subscribe_task(domain["task"], request_id=2)), "not_authenticated", request_id=2)


async def test_authenticate_frame_with_token_of_inactive_user_is_not_authenticated(connect, domain, alice_key):
    await deactivate(domain["alice"])
    socket = await connect()

    reply = await request(socket, {"action": "authenticate", "token": alice_key, "request_id": 1})

    assert_error(reply, "not_authenticated", request_id=1)
    await assert_open(socket)


async def test_unauthenticated_socket_is_closed_with_4001_after_auth_timeout(connect, db):
    with override_settings(DRF_LIVE={"AUTH_TIMEOUT": 0.2}):
        socket = await connect()
        await assert_open(socket)

        assert await socket.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
        # Closed by the server: nothing more is sent, not even a reply.
        await socket.send_json_to({"action": "ping", "request_id": "late"})
        assert await socket.receive_nothing()


@pytest.mark.parametrize("how", ["header", "frame"])
async def test_authenticated_socket_is_not_closed_after_auth_timeout(connect, domain, alice_key, how):
    with override_settings(DRF_LIVE={"AUTH_TIMEOUT": 0.2}):
        if how == "header":
            socket = await connect(token=alice_key)
        else:
            socket = await connect()
            reply = await request(socket, {"action": "authenticate", "token": alice_key})
            assert reply["type"] == "AUTHENTICATED"

        assert await socket.receive_nothing(timeout=0.4)
        await assert_open(socket)


async def test_allow_anonymous_lets_the_rest_apis_rules_for_anonymous_decide(connect, domain, replace_registration):
    from rest_framework import permissions

    from api.models import Task
    from api.notifications import TaskRegistration
    from api.views import TaskViewSet

    class PublicTaskViewSet(TaskViewSet):
        permission_classes = [permissions.AllowAny]

        def get_queryset(self):
            return Task.objects.filter(project=domain["website"])

    task, hidden = domain["task"], domain["hidden"]
    with override_settings(DRF_LIVE={"ALLOW_ANONYMOUS": True, "AUTH_TIMEOUT": 0.2}):
        socket = await connect()
        # The example API requires authentication: anonymous sees nothing, and is told not_found.
        assert_error(await request(socket, subscribe_task(task, request_id=1)), "not_found", request_id=1)

        replace_registration(Task, type("PublicTaskRegistration", (TaskRegistration,), {"viewset": PublicTaskViewSet}))
        reply = await request(socket, subscribe_task(task, request_id=2))
        assert reply["type"] == "SUBSCRIBED" and reply["payload"]["id"] == str(task.pk)
        assert_error(await request(socket, subscribe_task(hidden, request_id=3)), "not_found", request_id=3)
        # An anonymous socket that is allowed is not closed for not authenticating.
        assert await socket.receive_nothing(timeout=0.4)
        await assert_open(socket)


# Recovery (PROTOCOL.md section 5) with the in-memory store ------------------------------------


async def write_three(task: Any) -> None:
    # Each write's event is published before the next write: each carries its own title.
    for title in ("one", "two", "three"):
        await save_title(task, title)
        await published()


def assert_missed_updates(frames: list[dict[str, Any]], task: Any, since: int) -> None:
    assert [frame["type"] for frame in frames] == ["UPDATE_TASK"] * 3
    assert [frame["meta"]["seq"] for frame in frames] == [since + 1, since + 2, since + 3]
    assert [frame["payload"]["title"] for frame in frames] == ["one", "two", "three"]
    assert all(frame["meta"]["changed"] == ["title"] for frame in frames)
    assert all(frame["meta"]["id"] == str(task.pk) for frame in frames)


async def test_resubscribe_with_since_recovers_missed_events_in_order(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    first = await request(socket, subscribe_task(task, request_id=1))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await request(socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)})
    await write_three(task)
    assert await socket.receive_nothing()

    reply = await request(socket, subscribe_task(task, request_id=2, since=since, epoch=epoch))

    assert_subscribed(
        reply, None, model="api.task", id=str(task.pk), request_id=2, seq=since, epoch=epoch, recovered=True
    )
    missed = [await socket.receive_json_from() for _ in range(3)]
    assert_missed_updates(missed, task, since)
    assert await socket.receive_nothing()
    await save_title(task, "four")
    live = await socket.receive_json_from()
    assert (live["payload"]["title"], live["meta"]["seq"]) == ("four", since + 4)
    assert await socket.receive_nothing()


async def test_a_resubscribe_of_an_object_the_socket_holds_is_recovered_without_a_second_check(
    connect, domain, bob_key, monkeypatch
):
    # A client whose resubscribe timed out sends it again; the socket holds the subscription by then.
    from notifications.consumers import NotificationConsumer

    checks = []
    original = NotificationConsumer.admit

    async def counted(self: Any, subscription: Any, *args: Any) -> Any:
        checks.append(subscription.target.id)
        return await original(self, subscription, *args)

    monkeypatch.setattr(NotificationConsumer, "admit", counted)
    task = domain["task"]
    socket = await connect(token=bob_key)
    first = await request(socket, subscribe_task(task, request_id=1))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await write_three(task)
    assert_missed_updates([await socket.receive_json_from() for _ in range(3)], task, since)

    reply = await request(socket, subscribe_task(task, request_id=2, since=since, epoch=epoch))

    assert_subscribed(
        reply, None, model="api.task", id=str(task.pk), request_id=2, seq=since, epoch=epoch, recovered=True
    )
    assert_missed_updates([await socket.receive_json_from() for _ in range(3)], task, since)
    assert checks == [str(task.pk)]
    assert await socket.receive_nothing()
    # A different `since` is another request: its events are replayed, with no second check either.
    reply = await request(socket, subscribe_task(task, request_id=3, since=since + 1, epoch=epoch))
    assert reply["meta"]["recovered"] is True
    frames = [await socket.receive_json_from() for _ in range(2)]
    assert [(f["meta"]["seq"], f["payload"]["title"]) for f in frames] == [(since + 2, "two"), (since + 3, "three")]
    assert checks == [str(task.pk)]
    assert await socket.receive_nothing()

    # Once bob's access is gone, the subscription is gone with it, and so is the shortcut.
    await database_sync_to_async(domain["website"].members.remove)(domain["bob"])
    revoked = await socket.receive_json_from()
    assert (revoked["type"], revoked["meta"]["reason"]) == ("UNSUBSCRIBED", "revoked")
    assert await socket.receive_nothing(timeout=0.5)  # every path of the revocation has run
    reply = await request(socket, subscribe_task(task, request_id=4, since=since, epoch=epoch))
    assert_error(reply, "not_found", request_id=4)
    assert checks == [str(task.pk), str(task.pk)]


async def test_the_same_subscribe_sent_again_does_not_repeat_the_events_that_followed_its_first_answer(
    connect, domain, bob_key
):
    # A client that timed out sends the same request again. It holds what followed the first answer
    # (client.js buffers events while a subscribe of the target is unanswered); the second answer
    # continues from there, so the client is sent each event once.
    task = domain["task"]
    socket = await connect(token=bob_key)
    first = await request(socket, subscribe_task(task, request_id=1))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await request(socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)})
    await write_three(task)
    again = subscribe_task(task, request_id=2, since=since, epoch=epoch)
    reply = await request(socket, again)
    assert reply["meta"]["recovered"] is True
    assert_missed_updates([await socket.receive_json_from() for _ in range(3)], task, since)

    reply = await request(socket, {**again, "request_id": 3})

    assert_subscribed(
        reply, None, model="api.task", id=str(task.pk), request_id=3, seq=since, epoch=epoch, recovered=True
    )
    assert await socket.receive_nothing()
    await save_title(task, "four")
    live = await socket.receive_json_from()
    assert (live["payload"]["title"], live["meta"]["seq"]) == ("four", since + 4)
    assert live["meta"].get("prev", since + 3) == since + 3


async def test_reconnect_with_since_recovers_missed_events(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    first = await request(socket, subscribe_task(task))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await socket.disconnect()
    await write_three(task)

    again = await connect(token=alice_key)
    reply = await request(again, subscribe_task(task, request_id="back", since=since, epoch=epoch))

    assert_subscribed(
        reply, None, model="api.task", id=str(task.pk), request_id="back", seq=since, epoch=epoch, recovered=True
    )
    assert_missed_updates([await again.receive_json_from() for _ in range(3)], task, since)
    await save_title(task, "four")
    assert (await again.receive_json_from())["meta"]["seq"] == since + 4
    assert await again.receive_nothing()


async def test_resubscribe_with_wrong_epoch_gets_fresh_snapshot(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    first = await request(socket, subscribe_task(task))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await request(socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)})
    await write_three(task)

    reply = await request(socket, subscribe_task(task, request_id=3, since=since, epoch="not-" + epoch))

    current = await rest_get(domain["alice"], task_url(task))
    assert current["title"] == "three"
    assert_subscribed(
        reply, current, model="api.task", id=str(task.pk), request_id=3, seq=since + 3, epoch=epoch, recovered=False
    )
    assert await socket.receive_nothing()
    await save_title(task, "four")
    assert (await socket.receive_json_from())["meta"]["seq"] == since + 4


async def test_resubscribe_since_a_future_seq_gets_fresh_snapshot(connect, domain, alice_key):
    task = domain["task"]
    socket = await connect(token=alice_key)
    first = await request(socket, subscribe_task(task))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]

    reply = await request(socket, subscribe_task(task, since=since + 5, epoch=epoch))

    current = await rest_get(domain["alice"], task_url(task))
    assert_subscribed(reply, current, model="api.task", id=str(task.pk), seq=since, epoch=epoch, recovered=False)
    assert await socket.receive_nothing()


# Revoked credentials ----------------------------------------------------------------------


async def test_deleting_the_token_closes_its_sockets_with_4001(connect, domain, alice_key, bob_key):
    as_alice = await connect(token=alice_key)
    as_bob = await connect(token=bob_key)

    await delete_tokens(domain["alice"])

    assert await as_alice.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
    assert await as_bob.receive_nothing(timeout=0.2)
    await assert_open(as_bob)


async def test_deleting_the_token_closes_sockets_authenticated_by_frame(connect, domain, alice_key):
    socket = await connect()
    assert (await request(socket, {"action": "authenticate", "token": alice_key}))["type"] == "AUTHENTICATED"

    await delete_tokens(domain["alice"])

    assert await socket.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}


async def test_deactivating_the_user_closes_their_sockets_with_4001(connect, domain, alice_key, bob_key):
    as_alice = await connect(token=alice_key)
    as_bob = await connect(token=bob_key)

    await deactivate(domain["alice"])

    assert await as_alice.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
    assert await as_bob.receive_nothing(timeout=0.2)
    await assert_open(as_bob)


async def test_socket_closed_for_revoked_credentials_sends_nothing_more(connect, domain, alice_key, bob_key):
    # Sending after websocket.close is an ASGI protocol error (the server raises),
    # and the user may no longer see what they subscribed to.
    task = domain["task"]
    as_alice = await connect(token=alice_key)
    as_bob = await connect(token=bob_key)
    await request(as_alice, subscribe_task(task))
    await request(as_bob, subscribe_task(task))

    await deactivate(domain["alice"])
    assert await as_alice.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
    await save_title(task, "After alice left")

    assert (await as_bob.receive_json_from())["payload"]["title"] == "After alice left"
    assert await as_alice.receive_nothing(timeout=0.2)


# Robustness -----------------------------------------------------------------------------


async def test_flood_of_bad_frames_gets_one_error_each_and_socket_stays_open(
    connect, domain, alice_key, missing_task_id, settings
):
    # Room for 200 bad requests of each action and wrong tokens: those limits are tested on their own.
    settings.DRF_LIVE = {
        "SUBSCRIBE_BURST": 1000,
        "ACTION_BUDGETS": {action: [1, 1000] for action in ("ping", "unsubscribe", "authenticate")},
        "MAX_AUTH_FAILURES": 1000,
        "AUTH_FAILURE_BURST": 1000,
    }
    socket = await connect(token=alice_key)
    task_id, hidden_id = str(domain["task"].pk), str(domain["hidden"].pk)
    rng = random.Random(20240611)
    texts = ["not json", "{", "[1, 2]", "5", '"x"', "null", '{"action": ', " ", "{'a': 1}"]
    objects: list[Any] = [
        {"action": "subscribe"},
        {"action": "subscribe", "model": 5, "id": task_id},
        {"action": "subscribe", "model": "api.task", "id": 5},
        {"action": "subscribe", "model": "api.task", "id": task_id, "since": "x", "epoch": "e"},
        {"action": "subscribe", "model": "api.task", "filter": {"nope": "x"}},
        {"action": "unsubscribe", "model": "api.task", "id": {"x": 1}},
        {"action": "authenticate", "token": 1},
        {"action": "authenticate", "token": "wrong"},
        {"action": "explode"},
        {"action": 5},
        {"action": None, "model": "api.task"},
        {"model": "api.nope", "id": task_id},
        {"model": "api.task", "id": "!!"},
        {"model": "api.task", "id": missing_task_id},
        {"model": "api.task", "id": hidden_id},
        {"action": "ping", "request_id": {"a": 1}},
        {"action": "ping", "request_id": [1]},
        {},
    ]

    sent = 0
    for _ in range(200):
        kind = rng.random()
        if kind < 0.25:
            await socket.send_to(text_data=rng.choice(texts))
        elif kind < 0.35:
            await socket.send_to(bytes_data=rng.randbytes(rng.randint(1, 20)))
        else:
            await socket.send_to(text_data=json.dumps(rng.choice(objects)))
        sent += 1
    await socket.send_json_to({"action": "ping", "request_id": "end"})

    replies = [await socket.receive_json_from() for _ in range(sent)]
    assert all(reply["type"] == "ERROR" and reply["error"] is True for reply in replies)
    assert {reply["payload"]["code"] for reply in replies} == {
        "parse_error",
        "invalid",
        "unknown_action",
        "not_found",
        "not_authenticated",
    }
    assert await socket.receive_json_from() == {"type": "PONG", "payload": None, "meta": {"request_id": "end"}}
    assert await socket.receive_nothing()


async def test_the_same_subscribe_of_a_collection_sent_again_does_not_repeat_its_events(connect, domain, bob_key):
    task, project = domain["task"], domain["website"]
    frame = {"action": "subscribe", "model": "api.task", "filter": {"project": str(project.pk)}}
    socket = await connect(token=bob_key)
    first = await request(socket, {**frame, "request_id": 1})
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await request(socket, {"action": "unsubscribe", "model": "api.task", "filter": {"project": str(project.pk)}})
    await write_three(task)
    again = {**frame, "since": since, "epoch": epoch}
    assert (await request(socket, {**again, "request_id": 2}))["meta"]["recovered"] is True
    replayed = [await socket.receive_json_from() for _ in range(3)]
    assert [(f["type"], f["payload"]["title"]) for f in replayed] == [
        ("UPDATE_TASK", t) for t in ("one", "two", "three")
    ]

    reply = await request(socket, {**again, "request_id": 3})

    assert (reply["type"], reply["meta"]["recovered"], reply["meta"]["seq"]) == ("SUBSCRIBED", True, since)
    assert await socket.receive_nothing()
    await save_title(task, "four")
    live = await socket.receive_json_from()
    assert (live["payload"]["title"], live["meta"]["seq"]) == ("four", since + 4)
