"""Delivery through a real Redis: the shared event store, and events that cross processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from django.test import override_settings
from websockets.asyncio.client import connect

from notifications.redis_store import RedisStreamStore
from notifications.streams import Position
from tests.servers import (
    MANAGE,
    PYTHON,
    ROOT,
    AsgiServer,
    RedisServer,
    free_port,
    manage,
    receive_nothing,
    recv_json,
    subscribe,
)

pytestmark = pytest.mark.e2e

# The store ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Callable[[], RedisStreamStore]]:
    """Makes independent store instances on the module's Redis (as separate processes would have)."""
    made: list[RedisStreamStore] = []

    def make() -> RedisStreamStore:
        store = RedisStreamStore(redis_server.url)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def stream() -> str:
    return f"drf-live.api.task.o.{uuid.uuid4().hex[:10]}"


async def flushall(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_two_stores_share_seq_and_epoch(stores: Callable[[], RedisStreamStore], stream: str) -> None:
    one, two = stores(), stores()

    first = await one.next(stream)
    second = await two.next(stream)
    third = await one.next(stream)

    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.epoch == second.epoch == third.epoch
    assert await two.position(stream) == Position(3, first.epoch)
    # A store that starts later (a new process) finds the same history.
    assert await stores().position(stream) == Position(3, first.epoch)


@pytest.mark.asyncio
async def test_events_recorded_by_one_store_replay_from_another(
    stores: Callable[[], RedisStreamStore], stream: str
) -> None:
    writer, reader = stores(), stores()
    for _ in range(3):
        position = await writer.next(stream)
        await writer.record(stream, position.seq, {"all": f"event {position.seq}", "self": f"mine {position.seq}"})

    replay = await reader.replay(stream, 1, position.epoch, "all")

    assert replay.position == Position(3, position.epoch)
    assert replay.frames == [(2, "event 2"), (3, "event 3")]
    assert (await reader.replay(stream, 0, position.epoch, "self")).frames == [
        (1, "mine 1"),
        (2, "mine 2"),
        (3, "mine 3"),
    ]
    assert (await reader.replay(stream, 3, position.epoch, "all")).frames == []
    # Another history, a future seq, an audience that was never recorded: nothing is promised.
    assert (await reader.replay(stream, 1, "someother.epoch", "all")).frames is None
    assert (await reader.replay(stream, 4, position.epoch, "all")).frames is None
    assert (await reader.replay(stream, 1, position.epoch, "others")).frames is None


@pytest.mark.asyncio
async def test_a_reserved_but_unrecorded_event_is_not_replayed(
    stores: Callable[[], RedisStreamStore], stream: str
) -> None:
    store = stores()
    recorded = await store.next(stream)
    await store.record(stream, recorded.seq, {"all": "one"})
    await store.next(stream)  # A publisher reserved seq 2 and died before recording it.

    assert (await store.replay(stream, 0, recorded.epoch, "all")).frames is None


@pytest.mark.asyncio
async def test_flushall_changes_the_epoch(
    stores: Callable[[], RedisStreamStore], redis_server: RedisServer, stream: str
) -> None:
    store = stores()
    before = await store.next(stream)
    await store.record(stream, before.seq, {"all": "one"})

    await flushall(redis_server.url)

    after = await store.position(stream)
    assert after.epoch != before.epoch
    assert after.seq == 0
    assert (await store.replay(stream, 0, before.epoch, "all")).frames is None
    # And the new history is the same for everyone.
    assert await stores().position(stream) == after


@pytest.mark.asyncio
async def test_mark_lost_rotates_the_epoch_for_every_store(stores: Callable[[], RedisStreamStore], stream: str) -> None:
    failed, other = stores(), stores()
    before = await failed.next(stream)
    await failed.record(stream, before.seq, {"all": "one"})

    failed.mark_lost()

    after = await failed.position(stream)
    assert after.epoch != before.epoch
    assert await other.position(stream) == after
    assert (await other.replay(stream, 0, before.epoch, "all")).frames is None
    # Rotated once, not on every contact.
    assert (await failed.next(stream)).epoch == after.epoch


def _exit_code(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in ``manage.py shell`` and let the process exit (atexit handlers run)."""
    return subprocess.run(
        [PYTHON, MANAGE, "shell", "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.asyncio
async def test_a_process_that_lost_an_event_rotates_the_epoch_before_it_exits(
    stores: Callable[[], RedisStreamStore], stream: str, server_env: dict[str, str]
) -> None:
    before = await stores().next(stream)

    # A short-lived process (a management command) whose publish failed, and
    # which exits before any later contact with the store would rotate the epoch.
    done = _exit_code("from notifications.streams import get_store; get_store().mark_lost()", server_env)

    assert done.returncode == 0, done.stderr
    after = await stores().position(stream)
    assert after.epoch != before.epoch
    assert (await stores().replay(stream, before.seq, before.epoch, "all")).frames is None


@pytest.mark.asyncio
async def test_a_command_whose_store_stays_unreachable_says_so_on_exit_and_its_write_commits(
    stores: Callable[[], RedisStreamStore], server_env: dict[str, str]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**server_env, "DRF_LIVE": json.dumps({"STORE_URL": dead})}
    title = f"saved while the store was down {uuid.uuid4().hex[:6]}"
    code = (
        "from api.models import Task; task = Task.objects.order_by('pk').first(); "
        f"task.title = {title!r}; task.save(); print(task.pk)"
    )

    done = _exit_code(code, env)

    assert done.returncode == 0, done.stderr
    assert "Could not publish UPDATE_TASK" in done.stderr
    assert "the epoch could not be rotated" in done.stderr
    check = _exit_code(f"from api.models import Task; print(Task.objects.filter(title={title!r}).count())", server_env)
    assert check.stdout.strip().splitlines()[-1] == "1"


@pytest.mark.asyncio
async def test_history_is_capped_by_length(stores: Callable[[], RedisStreamStore], stream: str) -> None:
    limit, events = 20, 250
    with override_settings(DRF_LIVE={"HISTORY_LENGTH": limit}):
        store = stores()
        for _ in range(events):
            position = await store.next(stream)
            await store.record(stream, position.seq, {"all": f"event {position.seq}"})

        # Redis trims approximately (whole stream nodes, 100 entries by default):
        # at least `limit` events stay, and far fewer than were published.
        held = await store._client().xlen(f"drf-live:history:{stream}")
        assert limit <= held <= limit + 100
        assert (await store.replay(stream, 0, position.epoch, "all")).frames is None
        recent = await store.replay(stream, events - limit, position.epoch, "all")
        assert recent.frames == [(seq, f"event {seq}") for seq in range(events - limit + 1, events + 1)]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.asyncio
async def test_redis_restart_changes_the_epoch(private_redis: RedisServer, stream: str) -> None:
    store = RedisStreamStore(private_redis.url)
    try:
        before = await store.next(stream)
        await store.record(stream, before.seq, {"all": "one"})

        private_redis.stop()
        private_redis.start()

        after = await store.next(stream)
        assert after.epoch != before.epoch
        assert after.seq == 1
        assert (await store.replay(stream, 0, before.epoch, "all")).frames is None
    finally:
        await store.close()


# Across processes --------------------------------------------------------------


async def new_task(server: AsgiServer, token: str, title: str) -> dict[str, Any]:
    """A task in alice's "Website" project (bob is a member), created through the REST API."""
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=10) as http:
        projects = (await http.get("/api/projects/")).json()
        website = next(project for project in projects if project["name"] == "Website")
        response = await http.post("/api/tasks/", json={"project": website["id"], "title": title})
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.mark.asyncio
async def test_write_in_a_management_process_reaches_a_socket_on_the_server(
    asgi_servers: tuple[AsgiServer, AsgiServer], server_env: dict[str, str], tokens: dict[str, str]
) -> None:
    server = asgi_servers[0]
    task = await new_task(server, tokens["alice"], "Written elsewhere")

    async with connect(server.ws_url, additional_headers={"Authorization": f"Token {tokens['bob']}"}) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])
        assert subscribed["payload"] == task

        code = (
            "from api.models import Task; "
            f"task = Task.objects.get(pk={task['id']!r}); "
            "task.title = 'Renamed by a script'; task.save()"
        )
        await asyncio.to_thread(manage, "shell", "-c", code, env=server_env)

        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == {**task, "title": "Renamed by a script"}
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        assert event["meta"]["changed"] == ["title"]
        assert event["meta"]["id"] == task["id"]
        await receive_nothing(ws)

        # The seq the socket saw is the one a new subscriber is told, with the same epoch.
        again = await subscribe(ws, "api.task", request_id=2, id=task["id"])
        assert again["meta"]["seq"] == event["meta"]["seq"]
        assert again["meta"]["epoch"] == subscribed["meta"]["epoch"]


@pytest.mark.asyncio
async def test_write_through_one_server_reaches_a_socket_on_another(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str]
) -> None:
    listening, writing = asgi_servers
    task = await new_task(writing, tokens["alice"], "Across servers")

    async with connect(listening.ws_url, additional_headers={"Authorization": f"Token {tokens['bob']}"}) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])

        headers = {"Authorization": f"Token {tokens['alice']}"}
        async with httpx.AsyncClient(base_url=writing.http_url, headers=headers, timeout=10) as http:
            response = await http.patch(f"/api/tasks/{task['id']}/", json={"done": True})
        assert response.status_code == 200, response.text

        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == response.json()
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        assert event["meta"]["changed"] == ["done"]
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_rolled_back_write_in_another_process_sends_nothing(
    asgi_servers: tuple[AsgiServer, AsgiServer], server_env: dict[str, str], tokens: dict[str, str]
) -> None:
    server = asgi_servers[0]
    task = await new_task(server, tokens["alice"], "Rolled back elsewhere")

    async with connect(server.ws_url, additional_headers={"Authorization": f"Token {tokens['bob']}"}) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])

        code = (
            "from django.db import transaction; from api.models import Task\n"
            "with transaction.atomic():\n"
            f"    task = Task.objects.get(pk={task['id']!r}); task.title = 'Never seen'; task.save()\n"
            "    transaction.set_rollback(True)\n"
            f"task = Task.objects.get(pk={task['id']!r}); task.done = True; task.save()\n"
        )
        await asyncio.to_thread(manage, "shell", "-c", code, env=server_env)

        # Only the committed write arrives, with the next seq: the rolled-back one spent none.
        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == {**task, "done": True}
        assert event["meta"]["changed"] == ["done"]
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        await receive_nothing(ws)


# The hub on channels_redis ---------------------------------------------------------


@pytest.mark.asyncio
async def test_the_hub_keeps_a_group_past_channels_redis_group_expiry(redis_server: RedisServer) -> None:
    from channels_redis.core import RedisChannelLayer

    from notifications.hub import Hub

    layer = RedisChannelLayer(hosts=[redis_server.url], group_expiry=1, prefix=f"expiry-{uuid.uuid4().hex[:6]}")
    hub = Hub(layer)
    received: list[dict[str, Any]] = []

    class Member:
        def hub_message(self, group: str, message: dict[str, Any]) -> None:
            received.append(message)

        def hub_lost(self, group: str, error: BaseException) -> None:
            raise AssertionError(f"lost {group}: {error!r}")

    member = Member()
    await hub.join("drf-live.expiry", member)
    try:
        await asyncio.sleep(3.0)  # channels_redis drops members added more than 1 s ago on group_send
        await layer.group_send("drf-live.expiry", {"type": "drf_live.event", "n": 1})
        for _ in range(50):
            if received:
                break
            await asyncio.sleep(0.05)
        assert received == [{"type": "drf_live.event", "n": 1}]
    finally:
        await hub.leave("drf-live.expiry", member)
        await layer.flush()
        await layer.close_pools()
