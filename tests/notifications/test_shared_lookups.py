"""Subscribes of one user that share a trip to the database thread read their objects together.

``Registration.get_visible_many`` answers what ``get_visible`` answers, key by
key, in a fixed number of queries, and runs the viewset's rules on as many
existing rows whatever the keys name; the consumer uses it for the subscribes
one user has waiting together (``notifications/trips.py``, ``key`` and ``prepare``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications.registry import site
from notifications.subscriptions import look_up_together, user_state
from notifications.targets import Target
from notifications.trips import database_trip
from tests.notifications.test_consumers import rest_get, subscribe_task, task_url

pytestmark = [pytest.mark.django_db(transaction=True)]

NOT_FOUND = {"code": "not_found", "detail": "No such object."}


def gone_task_ids(project: Any, count: int) -> list[str]:
    """Hashids of tasks that existed and were deleted."""
    from api.models import Task

    ids = []
    for index in range(count):
        task = Task.objects.create(project=project, title=f"Gone {index}")
        ids.append(str(task.pk))
        task.delete()
    return ids


@contextlib.asynccontextmanager
async def database_held() -> AsyncIterator[Any]:
    """The database thread held until the block ends, so that trips queue meanwhile; yields their queue."""
    from notifications import trips

    release = threading.Event()

    @database_trip
    def hold() -> None:
        release.wait(timeout=10)

    held = asyncio.ensure_future(hold())
    await asyncio.sleep(0.05)
    try:
        yield trips._queues[asyncio.get_running_loop()]
    finally:
        release.set()
        await held


async def together(sends: list[tuple[Any, dict[str, Any]]], queued: int | None = None) -> None:
    """Send each frame on its socket while the database thread is held, so that they wait for it together.

    ``queued``: how many of them reach the database (all, unless said).
    """
    async with database_held() as queue:
        for socket, frame in sends:
            await socket.send_json_to(frame)
        await until_queued(queue, len(sends) if queued is None else queued)


async def until_queued(queue: Any, count: int) -> None:
    """Wait until ``count`` calls wait for the held database thread (at most 2 s)."""
    for _ in range(100):
        if len(queue.calls) == count:
            break
        await asyncio.sleep(0.02)
    assert len(queue.calls) == count


def test_many_keys_are_answered_as_get_visible_answers_each(domain: dict[str, Any]) -> None:
    from api.models import Task

    registration = site.get_for(Task)
    [missing] = gone_task_ids(domain["website"], 1)
    asked = [str(domain["task"].pk), str(domain["hidden"].pk), missing, str(domain["task"].pk)]
    keys = [registration.decode_id(value) for value in asked]

    for name in ("alice", "bob", "carol"):
        user = domain[name]
        found = registration.get_visible_many(user, keys)
        one_by_one = {key: registration.get_visible(user, key) for key in keys}
        assert set(found) == set(one_by_one)
        assert {key: obj and obj.pk for key, obj in found.items()} == {
            key: obj and obj.pk for key, obj in one_by_one.items()
        }, name
    # bob sees the website's task only; carol the secret one only.
    assert [bool(obj) for obj in registration.get_visible_many(domain["bob"], keys[:3]).values()] == [
        True,
        False,
        False,
    ]
    assert [bool(obj) for obj in registration.get_visible_many(domain["carol"], keys[:3]).values()] == [
        False,
        True,
        False,
    ]


def test_the_same_queries_run_for_keys_that_are_missing_and_keys_that_are_hidden(domain: dict[str, Any]) -> None:
    from api.models import Task

    registration = site.get_for(Task)
    secret = domain["secret"]
    hidden = [str(Task.objects.create(project=secret, title=f"Hidden {index}").pk) for index in range(3)]
    missing = gone_task_ids(secret, 3)

    def statements(ids: list[str]) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            found = registration.get_visible_many(domain["bob"], [registration.decode_id(value) for value in ids])
        assert set(found.values()) == {None}
        # The statements with every value taken out: what is left is what the database is asked to do.
        return [re.sub(r"'[^']*'|\b\d+\b", "?", query["sql"]) for query in queries.captured_queries]

    as_hidden, as_missing = statements(hidden), statements(missing)

    assert as_hidden == as_missing
    # One read of which keys exist, one of the stand-ins, one of the viewset's rules on three rows.
    assert len(as_hidden) == 3
    assert as_hidden[2].count("?, ?, ?)") == 1, as_hidden[2]


def test_objects_read_for_the_access_only_skip_the_querysets_prefetch(domain: dict[str, Any]) -> None:
    from api.models import Project

    registration = site.get_for(Project)
    keys = [registration.decode_id(str(domain[name].pk)) for name in ("website", "secret")]

    with CaptureQueriesContext(connection) as as_get:
        whole = registration.get_visible_many(domain["bob"], keys)
    with CaptureQueriesContext(connection) as for_access:
        bare = registration.get_visible_many(domain["bob"], keys, whole=False)

    assert [obj and obj.pk for obj in bare.values()] == [obj and obj.pk for obj in whole.values()]
    assert [obj and obj.pk for obj in bare.values()] == [domain["website"].pk, None]
    # The same rows, without the viewset's prefetch of the members (one query less).
    assert len(for_access) == len(as_get) - 1
    assert "members" in whole[keys[0]]._prefetched_objects_cache
    assert not getattr(bare[keys[0]], "_prefetched_objects_cache", None)


@pytest.mark.asyncio
async def test_the_subscribes_of_one_user_waiting_together_read_their_objects_together(
    connect: Any, domain: dict[str, Any], token_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.db import database_sync_to_async

    from api.models import Project, Task

    asked: dict[str, list[list[str]]] = {"api.task": [], "api.project": []}
    one_by_one: list[str] = []
    for model in (Task, Project):
        registration = site.get_for(model)
        many, single = registration.get_visible_many, registration.get_visible

        def counted_many(user: Any, pks: Any, *, _many: Any = many, _label: str = registration.label, **kw: Any) -> Any:
            pks = list(pks)
            asked[_label].append(sorted(map(str, pks)))
            return _many(user, pks, **kw)

        def counted_single(user: Any, pk: Any, *, _single: Any = single, **kw: Any) -> Any:
            if kw.get("equalised", True):  # the subscribe's lookup, not the relay's
                one_by_one.append(str(pk))
            return _single(user, pk, **kw)

        monkeypatch.setattr(registration, "get_visible_many", counted_many)
        monkeypatch.setattr(registration, "get_visible", counted_single)

    [missing] = await database_sync_to_async(gone_task_ids)(domain["website"], 1)
    task, hidden, website, secret = domain["task"], domain["hidden"], domain["website"], domain["secret"]
    key = await database_sync_to_async(token_for)(domain["bob"])
    frames = {
        "task": subscribe_task(task, request_id="task"),
        "hidden": subscribe_task(hidden, request_id="hidden"),
        "missing": {"action": "subscribe", "model": "api.task", "id": missing, "request_id": "missing"},
        "website": {"action": "subscribe", "model": "api.task", "filter": {"project": str(website.pk)}},
        "secret": {"action": "subscribe", "model": "api.task", "filter": {"project": str(secret.pk)}},
    }
    # A socket answers its frames one after another: a socket per subscribe, all of them bob's.
    sockets = {name: await connect(token=key) for name in frames}

    await together([(sockets[name], {**frame, "request_id": name}) for name, frame in frames.items()])
    replies = {name: await socket.receive_json_from() for name, socket in sockets.items()}

    assert replies["task"]["type"] == "SUBSCRIBED"
    assert replies["task"]["payload"] == await rest_get(domain["bob"], task_url(task))
    for name in ("hidden", "missing", "secret"):
        assert (replies[name]["type"], replies[name]["payload"]) == ("ERROR", NOT_FOUND)
    assert replies["website"]["type"] == "SUBSCRIBED"
    assert [row["title"] for row in replies["website"]["payload"]["results"]] == ["Write docs"]
    assert all(reply["meta"]["request_id"] == name for name, reply in replies.items())
    # One read per model for the five subscribes of two sockets of bob, none one by one.
    assert asked == {
        "api.task": [sorted([str(task.pk), str(hidden.pk), missing])],
        "api.project": [sorted([str(website.pk), str(secret.pk)])],
    }
    assert one_by_one == []
    for socket in sockets.values():
        assert await socket.receive_nothing(timeout=0.1)


def test_users_in_different_states_do_not_share_a_read(domain: dict[str, Any]) -> None:
    """Two sockets of one user whose copies of the user differ (one loaded before a change) read apart."""
    from api.models import Task

    registration = site.get_for(Task)
    bob = domain["bob"]
    changed = type(bob).objects.get(pk=bob.pk)
    changed.is_staff = True
    asks = [
        (user, None, {"registration": registration, "id": str(task.pk), "target": Target("api.task", id=str(task.pk))})
        for user, task in [(bob, domain["task"]), (changed, domain["hidden"]), (bob, domain["hidden"])]
    ]

    seen = look_up_together(asks)

    assert user_state(bob) != user_state(changed)
    # bob's two asks are read together; the changed copy's one ask is left to `get_visible`.
    assert set(seen) == {(user_state(bob), None)}
    assert {key for _label, key in seen[(user_state(bob), None)]} == {str(domain["task"].pk), str(domain["hidden"].pk)}


@pytest.mark.asyncio
async def test_sockets_of_one_user_asking_for_one_target_together_share_its_check_and_read_not_its_state(
    connect: Any, domain: dict[str, Any], token_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.db import database_sync_to_async

    from api.models import Project, Task
    from notifications import actions

    lists: list[Any] = []
    serialized: list[Any] = []
    original_run = actions.run
    registration = site.get_for(Task)
    original_serialize = registration.serialize

    def counted_run(registration: Any, action: str, *args: Any, **kwargs: Any) -> Any:
        lists.append(action)
        return original_run(registration, action, *args, **kwargs)

    def counted_serialize(instance: Any, *args: Any, **kwargs: Any) -> Any:
        serialized.append(instance.pk)
        return original_serialize(instance, *args, **kwargs)

    monkeypatch.setattr(actions, "run", counted_run)
    monkeypatch.setattr(registration, "serialize", counted_serialize)
    checked: list[str] = []
    for model in (Task, Project):
        each = site.get_for(model)

        def counted_check(user: Any, pk: Any, *, _original: Any = each.get_visible, **kwargs: Any) -> Any:
            if kwargs.get("equalised", True):  # the subscribe's lookup, not the relay's
                checked.append(str(pk))
            return _original(user, pk, **kwargs)

        monkeypatch.setattr(each, "get_visible", counted_check)
    task, website = domain["task"], domain["website"]
    key = await database_sync_to_async(token_for)(domain["bob"])
    listing = {"action": "subscribe", "model": "api.task", "filter": {"project": str(website.pk)}}
    lists_sockets = [await connect(token=key) for _ in range(2)]
    task_sockets = [await connect(token=key) for _ in range(2)]

    await together(
        [(socket, {**listing, "request_id": "list"}) for socket in lists_sockets]
        + [(socket, subscribe_task(task, request_id="task")) for socket in task_sockets]
    )

    list_replies = [await socket.receive_json_from() for socket in lists_sockets]
    task_replies = [await socket.receive_json_from() for socket in task_sockets]
    expected_list = await rest_get(domain["bob"], f"/api/tasks/?project={website.pk}")
    assert [reply["payload"] for reply in list_replies] == [expected_list, expected_list]
    expected_task = await rest_get(domain["bob"], task_url(task))
    assert [reply["payload"] for reply in task_replies] == [expected_task, expected_task]
    # One check and one read of the list and of the task, for two sockets each.
    assert sorted(checked) == sorted([str(task.pk), str(website.pk)])
    assert (lists, serialized) == (["list"], [task.pk])

    # Each socket holds its own members: a new task is new to both lists.
    created = await database_sync_to_async(Task.objects.create)(project=website, title="Shared read")
    for socket in lists_sockets:
        event = await socket.receive_json_from()
        assert (event["type"], event["payload"]["title"]) == ("CREATE_TASK", "Shared read")
    created_id = str(created.pk)
    await database_sync_to_async(created.delete)()
    for socket in lists_sockets:
        event = await socket.receive_json_from()
        assert (event["type"], event["payload"]) == ("DELETE_TASK", {"id": created_id})
    for socket in [*lists_sockets, *task_sockets]:
        assert await socket.receive_nothing(timeout=0.1)


@pytest.mark.asyncio
async def test_what_one_user_was_let_in_to_in_a_trip_is_not_shared_with_another(
    connect: Any, domain: dict[str, Any], token_for: Any
) -> None:
    from channels.db import database_sync_to_async

    hidden = domain["hidden"]
    sockets = {}
    for name in ("carol", "bob", "carol-again", "bob-again"):
        key = await database_sync_to_async(token_for)(domain[name.removesuffix("-again")])
        sockets[name] = await connect(token=key)

    await together([(socket, subscribe_task(hidden, request_id=name)) for name, socket in sockets.items()])

    replies = {name: await socket.receive_json_from() for name, socket in sockets.items()}
    expected = await rest_get(domain["carol"], task_url(hidden))
    for name in ("carol", "carol-again"):
        assert (replies[name]["type"], replies[name]["payload"]) == ("SUBSCRIBED", expected)
    for name in ("bob", "bob-again"):
        assert (replies[name]["type"], replies[name]["payload"]) == ("ERROR", NOT_FOUND)
    for socket in sockets.values():
        assert await socket.receive_nothing(timeout=0.1)


def test_a_single_lookup_for_the_access_only_skips_the_querysets_prefetch(domain: dict[str, Any]) -> None:
    from api.models import Project

    registration = site.get_for(Project)
    key = registration.decode_id(str(domain["website"].pk))

    for equalised in (True, False):
        with CaptureQueriesContext(connection) as as_get:
            whole = registration.get_visible(domain["bob"], key, equalised=equalised)
        with CaptureQueriesContext(connection) as for_access:
            bare = registration.get_visible(domain["bob"], key, equalised=equalised, whole=False)

        assert whole is not None and bare is not None and bare.pk == whole.pk == domain["website"].pk
        assert len(for_access) == len(as_get) - 1
        assert "members" in whole._prefetched_objects_cache
        assert not getattr(bare, "_prefetched_objects_cache", None)
        assert (
            registration.get_visible(domain["bob"], registration.decode_id(str(domain["secret"].pk)), whole=False)
            is None
        )


# One socket's subscribes, answered together -------------------------------------------------


@pytest.mark.asyncio
async def test_the_subscribes_one_socket_sends_at_once_are_checked_together(
    connect: Any, domain: dict[str, Any], token_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What client.js does on a reconnect: a subscribe for every target it holds, at once.
    from channels.db import database_sync_to_async

    from api.models import Task

    registration = site.get_for(Task)
    asked: list[list[str]] = []
    many = registration.get_visible_many

    def counted_many(user: Any, pks: Any, **kwargs: Any) -> Any:
        pks = list(pks)
        asked.append(sorted(map(str, pks)))
        return many(user, pks, **kwargs)

    monkeypatch.setattr(registration, "get_visible_many", counted_many)
    [missing] = await database_sync_to_async(gone_task_ids)(domain["website"], 1)
    task, hidden = domain["task"], domain["hidden"]
    socket = await connect(token=await database_sync_to_async(token_for)(domain["bob"]))
    frames = {
        "task": subscribe_task(task),
        "hidden": subscribe_task(hidden),
        "missing": {"action": "subscribe", "model": "api.task", "id": missing},
        "website": {"action": "subscribe", "model": "api.task", "filter": {"project": str(domain["website"].pk)}},
    }

    await together([(socket, {**frame, "request_id": name}) for name, frame in frames.items()])

    replies = {}
    for _ in frames:
        reply = await socket.receive_json_from()
        replies[reply["meta"]["request_id"]] = reply
    assert replies["task"]["type"] == "SUBSCRIBED"
    assert replies["task"]["payload"] == await rest_get(domain["bob"], task_url(task))
    assert replies["website"]["type"] == "SUBSCRIBED"
    for name in ("hidden", "missing"):
        assert (replies[name]["type"], replies[name]["payload"]) == ("ERROR", NOT_FOUND)
    assert asked == [sorted([str(task.pk), str(hidden.pk), missing])]
    assert await socket.receive_nothing(timeout=0.1)


@pytest.mark.asyncio
async def test_a_frame_after_subscribes_is_answered_after_them_and_acts_on_what_they_did(
    connect: Any, domain: dict[str, Any], token_for: Any
) -> None:
    from channels.db import database_sync_to_async

    from api.models import Task

    task, website = domain["task"], domain["website"]
    socket = await connect(token=await database_sync_to_async(token_for)(domain["bob"]))
    listing = {"action": "subscribe", "model": "api.task", "filter": {"project": str(website.pk)}}
    unsubscribe = {"action": "unsubscribe", "model": "api.task", "id": str(task.pk), "request_id": "unsubscribe"}

    await together(
        [
            (socket, subscribe_task(task, request_id="task")),
            (socket, {**listing, "request_id": "list"}),
        ]
    )
    await socket.send_json_to(unsubscribe)
    await socket.send_json_to({"action": "ping", "request_id": "ping"})

    first_two = [await socket.receive_json_from() for _ in range(2)]
    assert sorted(reply["meta"]["request_id"] for reply in first_two) == ["list", "task"]
    assert all(reply["type"] == "SUBSCRIBED" for reply in first_two)
    later = [await socket.receive_json_from() for _ in range(2)]
    assert [(reply["type"], reply["meta"]["request_id"]) for reply in later] == [
        ("UNSUBSCRIBED", "unsubscribe"),
        ("PONG", "ping"),
    ]
    # The unsubscribe ended the task's subscription, the list's stands.
    await database_sync_to_async(Task.objects.filter(pk=task.pk).update)(title="ignored")
    created = await database_sync_to_async(Task.objects.create)(project=website, title="Listed")
    event = await socket.receive_json_from()
    assert (event["type"], event["payload"]["id"]) == ("CREATE_TASK", str(created.pk))
    assert await socket.receive_nothing(timeout=0.2)


@pytest.mark.asyncio
async def test_a_subscribe_of_a_target_under_way_waits_for_it(
    connect: Any, domain: dict[str, Any], token_for: Any
) -> None:
    from channels.db import database_sync_to_async

    task = domain["task"]
    socket = await connect(token=await database_sync_to_async(token_for)(domain["bob"]))

    async with database_held() as queue:
        await socket.send_json_to(subscribe_task(task, request_id=1))
        await socket.send_json_to(subscribe_task(task, request_id=2))
        await asyncio.sleep(0.2)
        # Only the first is under way; the second waits for it, so the two never race.
        assert len(queue.calls) == 1

    replies = [await socket.receive_json_from() for _ in range(2)]
    assert [(reply["type"], reply["meta"]["request_id"]) for reply in replies] == [
        ("SUBSCRIBED", 1),
        ("SUBSCRIBED", 2),
    ]
    assert await socket.receive_nothing(timeout=0.1)


@pytest.mark.asyncio
async def test_subscribes_under_way_together_still_keep_to_max_subscriptions(
    connect: Any, domain: dict[str, Any], token_for: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.db import database_sync_to_async

    from notifications.consumers import NotificationConsumer

    settings.DRF_LIVE = {"MAX_SUBSCRIPTIONS": 2}
    leave = NotificationConsumer._leave

    async def slow_leave(self: Any, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.05)  # as leaving a Redis group takes a round trip
        await leave(self, *args, **kwargs)

    monkeypatch.setattr(NotificationConsumer, "_leave", slow_leave)
    socket = await connect(token=await database_sync_to_async(token_for)(domain["alice"]))
    names = {"task": ("api.task", domain["task"]), "project": ("api.project", domain["website"])}
    names["user"] = ("api.user", domain["alice"])

    # Subscribe to the task first, then replace it while two new targets come beside it.
    await socket.send_json_to(subscribe_task(domain["task"], request_id="first"))
    assert (await socket.receive_json_from())["type"] == "SUBSCRIBED"
    await together(
        [
            (socket, {"action": "subscribe", "model": model, "id": str(obj.pk), "request_id": name})
            for name, (model, obj) in names.items()
        ],
        queued=2,  # the one past the limit is answered at once
    )

    replies = {}
    for _ in names:
        reply = await socket.receive_json_from()
        replies[reply["meta"]["request_id"]] = reply["type"] if reply["type"] != "ERROR" else reply["payload"]["code"]
    # The task is held already (replaced, not added); one of the two new ones fits.
    assert replies["task"] == "SUBSCRIBED"
    assert sorted([replies["project"], replies["user"]]) == ["SUBSCRIBED", "limit_exceeded"]
    assert await socket.receive_nothing(timeout=0.1)


@pytest.mark.asyncio
@pytest.mark.parametrize("release_first", [False, True])
async def test_a_socket_that_goes_with_subscribes_under_way_leaves_nothing_behind(
    connect: Any, domain: dict[str, Any], token_for: Any, release_first: bool
) -> None:
    from channels.db import database_sync_to_async

    from api.models import Task
    from notifications.hub import get_hub

    tasks = [
        await database_sync_to_async(Task.objects.create)(project=domain["website"], title=f"Page {index}")
        for index in range(4)
    ]
    streams = [Target("api.task", id=str(task.pk)).stream for task in tasks]
    socket = await connect(token=await database_sync_to_async(token_for)(domain["bob"]))
    hub = get_hub()

    async with database_held() as queue:
        for task in tasks:
            await socket.send_json_to(subscribe_task(task))
        await until_queued(queue, len(tasks))
        # Under way: listening, registered, waiting for their checks.
        assert all(hub.members(stream) for stream in streams)
        if not release_first:
            # The client goes while the checks wait for the database (whose thread the socket's
            # end needs too: it finishes once the thread is free).
            await socket.send_input({"type": "websocket.disconnect", "code": 1001})
            await asyncio.sleep(0.1)
    if release_first:
        # The client goes as the checks are answered.
        await socket.send_input({"type": "websocket.disconnect", "code": 1001})
    await socket.wait(timeout=5)
    await asyncio.sleep(0.2)

    for stream in streams:
        assert hub.members(stream) == set()
        assert not [key for key, count in hub.registered.items() if key[0] == stream and count > 0]
