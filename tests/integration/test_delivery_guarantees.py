"""Delivery guarantees over real processes: race-free snapshots, recovery, Redis faults, sharding.

Every test runs real ``redis-server`` and uvicorn processes, real ``websockets``
clients, and writes from other processes (the REST API of another server, a
``manage.py shell`` writer). Cross-process delivery of a single write (REST on
one server, a socket on another; a management command) is in
``test_redis_delivery.py``; this module builds on it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis
from channels_redis.utils import _consistent_hash
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from notifications.targets import Target, group_name
from tests.servers import (
    MANAGE,
    OUTPUT,
    PYTHON,
    ROOT,
    AsgiServer,
    RedisServer,
    manage,
    receive_nothing,
    recv_json,
    send_json,
    subscribe,
)

pytestmark = pytest.mark.e2e

PUBLISH_FAILED = "Could not publish"

# Helpers -----------------------------------------------------------------------


@asynccontextmanager
async def socket(server: AsgiServer, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(server.ws_url, additional_headers={"Authorization": f"Token {token}"}, open_timeout=10) as ws:
        yield ws


@asynccontextmanager
async def rest(server: AsgiServer, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=10) as http:
        yield http


async def website_id(http: httpx.AsyncClient) -> str:
    projects = (await http.get("/api/projects/")).json()
    return str(next(project for project in projects if project["name"] == "Website")["id"])


async def new_task(http: httpx.AsyncClient, title: str) -> dict[str, Any]:
    """A task in alice's "Website" project (bob is a member), created through the REST API."""
    response = await http.post("/api/tasks/", json={"project": await website_id(http), "title": title})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def patch(http: httpx.AsyncClient, task_id: str, **fields: Any) -> dict[str, Any]:
    response = await http.patch(f"/api/tasks/{task_id}/", json=fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def database_row(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The task as the database holds it now, through the REST API."""
    response = await http.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200, response.text
    return dict(response.json())


@asynccontextmanager
async def reconnected(server: AsgiServer, token: str, closes: list[int]) -> AsyncIterator[ClientConnection]:
    """A socket that has answered a ping, reconnecting (a few times, with backoff) when closed with 4031.

    As a client does: right after Redis comes back, a channels_redis connection pooled before the
    outage can fail once more, and the socket that hits it is closed with 4031 again. ``closes``
    gets the number of such closes.
    """
    for attempt in range(5):
        async with socket(server, token) as ws:
            await send_json(ws, {"action": "ping", "request_id": "alive"})
            try:
                pong = await recv_json(ws)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4031, closed
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            assert pong["type"] == "PONG"
            closes.append(attempt)
            yield ws
            return
    pytest.fail("Still closed with 4031 after 5 reconnects, with Redis back")


async def frames_until_closed(ws: ClientConnection, timeout: float = 15.0) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the socket, and the close code; fails after ``timeout``."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            text = await asyncio.wait_for(ws.recv(), max(deadline - loop.time(), 0.01))
        except ConnectionClosed as closed:
            return frames, closed.rcvd.code if closed.rcvd is not None else None
        except TimeoutError:
            pytest.fail(f"The socket was not closed within {timeout} s; received {frames}", pytrace=False)
        frames.append(json.loads(text))


async def wait_for_log(server: AsgiServer, text: str, count: int, timeout: float = 20.0) -> None:
    """Wait until ``text`` occurs ``count`` times in the server's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := server.log_path.read_text(errors="replace").count(text)) < count:
        if loop.time() > deadline:
            pytest.fail(f"{found} of {count} {text!r} in {server.log_path} after {timeout} s", pytrace=False)
        await asyncio.sleep(0.05)


def redis_keys(port: int) -> list[str]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        return sorted(key.decode() for key in client.scan_iter(count=1000))
    finally:
        client.close()


# Fixtures (the module's Redis, database and two servers come from conftest.py) --


@pytest_asyncio.fixture
async def alice(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """alice's REST client on server B (the sockets in these tests are on server A)."""
    async with rest(asgi_servers[1], tokens["alice"]) as http:
        yield http


class Writer:
    """A ``manage.py shell`` process that saves a task ``count`` times per command, on request."""

    CODE = (
        "import sys\n"
        "from api.models import Task\n"
        "from notifications.publisher import publisher\n"
        "for line in sys.stdin:\n"
        "    task_id, count = line.split()\n"
        "    task = Task.objects.get(pk=task_id)\n"
        "    print('writer: started', flush=True)\n"
        "    for i in range(int(count)):\n"
        "        task.title = f'w{i}'\n"
        "        task.save()\n"
        "    print('writer: written', flush=True)\n"
        "    assert publisher.flush(30), 'the publisher did not drain'\n"
        "    print('writer: published', flush=True)\n"
    )

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float = 30.0) -> str:
        """The writer's next report (what the shell itself prints is skipped)."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            assert line, f"The writer exited with {await self.process.wait()}; see test-output/race-writer.log"
            if line.startswith(b"writer: "):
                return line.decode().removeprefix("writer: ").strip()

    async def start(self, task_id: str, count: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{task_id} {count}\n".encode())
        await self.process.stdin.drain()
        assert await self.line() == "started"


@pytest_asyncio.fixture
async def writer(server_env: dict[str, str]) -> AsyncIterator[Writer]:
    OUTPUT.mkdir(exist_ok=True)
    with (OUTPUT / "race-writer.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            MANAGE,
            "shell",
            "-c",
            Writer.CODE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=server_env,
            cwd=ROOT,
        )
        try:
            yield Writer(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


# Race-free snapshots -------------------------------------------------------------

ROUNDS = 20
WRITES = 200


@pytest.mark.asyncio
async def test_subscribing_during_200_writes_from_another_process_converges_without_gap_or_repeat(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], alice: httpx.AsyncClient, writer: Writer
) -> None:
    server = asgi_servers[0]
    observed = []
    for round_ in range(ROUNDS):
        # A fresh task per round: its own stream starts at seq 0, so event seq n carries title w{n-1}.
        task = await new_task(alice, f"race {round_}")
        async with socket(server, tokens["bob"]) as ws:
            await writer.start(task["id"], WRITES)
            # Subscribe at a different point of the write series each round.
            await asyncio.sleep((round_ % 10) * 0.03)
            subscribed = await subscribe(ws, "api.task", id=task["id"])
            state, seq = subscribed["payload"], subscribed["meta"]["seq"]
            snapshot_seq, snapshot_title = seq, state["title"]
            # The snapshot is read after the position: it holds at least the writes up to that seq.
            assert snapshot_title == task["title"] or int(snapshot_title[1:]) >= seq - 1, subscribed
            applied = 0
            # The stream of this task ends at seq WRITES. (The snapshot may be ahead of its
            # seq: the events up to it then re-apply older states before the final one.)
            while seq < WRITES:
                event = await recv_json(ws)
                assert event["type"] == "UPDATE_TASK", event
                assert event["meta"]["seq"] == seq + 1, f"round {round_}: seq {event['meta']['seq']} after {seq}"
                assert event["payload"]["title"] == f"w{event['meta']['seq'] - 1}", event
                seq = event["meta"]["seq"]
                state = event["payload"]
                applied += 1
            assert await writer.line() == "written"
            assert await writer.line() == "published"
            await receive_nothing(ws, 0.3)

            assert state == await database_row(alice, task["id"])
            # Nothing is missing at the end either: a new subscriber is told the seq we stopped at.
            again = await subscribe(ws, "api.task", request_id=2, id=task["id"])
            assert again["meta"]["seq"] == seq == WRITES
            assert again["meta"]["epoch"] == subscribed["meta"]["epoch"]
            assert again["payload"] == state
            observed.append({"snapshot_seq": snapshot_seq, "snapshot_title": snapshot_title, "events": applied})

    print(f"\nrace rounds (snapshot seq, snapshot title, events after the snapshot): {observed}")
    (OUTPUT / "race-observed.json").write_text(json.dumps(observed, indent=1))
    # The subscribe landed in the middle of the writes in some rounds, or this proves little.
    assert any(0 < round_["events"] < WRITES for round_ in observed), observed


# Recovery ------------------------------------------------------------------------

AWAY_WRITES = 50


@pytest.mark.asyncio
async def test_reconnect_with_since_on_another_server_replays_exactly_the_missed_events_then_live_ones(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], alice: httpx.AsyncClient
) -> None:
    server_a, server_b = asgi_servers
    task = await new_task(alice, "Recover me")
    async with socket(server_a, tokens["bob"]) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])
    since, epoch = subscribed["meta"]["seq"], subscribed["meta"]["epoch"]

    # While bob is away, 50 writes through server B; a watcher (alice on server A) sees them live.
    async with socket(server_a, tokens["alice"]) as watcher:
        await subscribe(watcher, "api.task", id=task["id"])
        for i in range(AWAY_WRITES):
            await patch(alice, task["id"], title=f"away {i}", done=i % 2 == 0)
        live = [await recv_json(watcher) for _ in range(AWAY_WRITES)]
        await receive_nothing(watcher, 0.2)
    assert [event["meta"]["seq"] for event in live] == list(range(since + 1, since + AWAY_WRITES + 1))

    # bob comes back on the other server: the history is in Redis, shared by both.
    async with socket(server_b, tokens["bob"]) as ws:
        recovered = await subscribe(ws, "api.task", request_id=2, id=task["id"], since=since, epoch=epoch)
        assert recovered["payload"] is None
        assert recovered["meta"] == {
            "request_id": 2,
            "model": "api.task",
            "id": task["id"],
            "seq": since,
            "epoch": epoch,
            "recovered": True,
        }
        missed = [await recv_json(ws) for _ in range(AWAY_WRITES)]
        assert missed == live  # The very frames the watcher got live, in seq order.
        assert [event["payload"]["title"] for event in missed] == [f"away {i}" for i in range(AWAY_WRITES)]
        await receive_nothing(ws, 0.3)

        row = await patch(alice, task["id"], title="Back again")
        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == row
        assert event["meta"]["seq"] == since + AWAY_WRITES + 1
        assert event["meta"]["changed"] == ["title"]
        await receive_nothing(ws, 0.3)
    print(f"\nrecovery: since={since}, {len(missed)} events replayed (seq {since + 1}..{since + AWAY_WRITES}), live")


@pytest.fixture(scope="module")
def capped_server(server_env: dict[str, str]) -> Iterator[AsgiServer]:
    """A server that keeps only 10 events per target (on the module's Redis and database)."""
    server = AsgiServer({**server_env, "DRF_LIVE": json.dumps({"HISTORY_LENGTH": 10})}, "asgi-capped")
    try:
        yield server.start()
    finally:
        server.stop()
    server.assert_no_tracebacks()


@pytest.mark.asyncio
async def test_reconnect_with_since_past_the_history_cap_gets_a_fresh_snapshot(
    capped_server: AsgiServer, redis_server: RedisServer, tokens: dict[str, str]
) -> None:
    async with rest(capped_server, tokens["alice"]) as alice_http:
        task = await new_task(alice_http, "Too long away")
        async with socket(capped_server, tokens["bob"]) as ws:
            subscribed = await subscribe(ws, "api.task", id=task["id"])
        since, epoch = subscribed["meta"]["seq"], subscribed["meta"]["epoch"]

        async with socket(capped_server, tokens["alice"]) as watcher:
            await subscribe(watcher, "api.task", id=task["id"])
            for i in range(AWAY_WRITES):
                await patch(alice_http, task["id"], title=f"away {i}")
            for _ in range(AWAY_WRITES):  # Every event is recorded before bob comes back.
                await recv_json(watcher)
        # Redis trims the history approximately (whole stream nodes), but well below 50 here.
        history = redis.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            held = history.xlen(f"drf-live:history:drf-live.api.task.o.{task['id']}")
        finally:
            history.close()
        assert 10 <= held < AWAY_WRITES

        async with socket(capped_server, tokens["bob"]) as ws:
            reply = await subscribe(ws, "api.task", request_id=2, id=task["id"], since=since, epoch=epoch)
            assert reply["meta"]["recovered"] is False
            assert reply["payload"] == await database_row(alice_http, task["id"])
            assert reply["payload"]["title"] == f"away {AWAY_WRITES - 1}"
            assert reply["meta"]["seq"] == since + AWAY_WRITES
            assert reply["meta"]["epoch"] == epoch  # Nothing was lost: the history is only shorter.
            await receive_nothing(ws, 0.3)

            row = await patch(alice_http, task["id"], title="Live again")
            event = await recv_json(ws)
            assert event["payload"] == row
            assert event["meta"]["seq"] == since + AWAY_WRITES + 1
    print(f"\ncapped recovery: since={since}, {held} of {AWAY_WRITES} events held -> recovered false, snapshot")


# Redis faults --------------------------------------------------------------------


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_server(server_env: dict[str, str], fault_redis: RedisServer) -> Iterator[AsgiServer]:
    server = AsgiServer({**server_env, "REDIS_URL": fault_redis.url}, "asgi-fault")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_killing_redis_keeps_writes_closes_sockets_with_4031_and_recovers_after_restart(
    fault_redis: RedisServer, fault_server: AsgiServer, tokens: dict[str, str]
) -> None:
    writes, kill_after = 12, 4
    async with rest(fault_server, tokens["alice"]) as alice_http:
        task = await new_task(alice_http, "Survives Redis")
        project = await website_id(alice_http)
        async with socket(fault_server, tokens["bob"]) as ws, socket(fault_server, tokens["bob"]) as listing:
            subscribed = await subscribe(ws, "api.task", id=task["id"])
            since = last = subscribed["meta"]["seq"]
            epoch = subscribed["meta"]["epoch"]
            collection_seq = (await subscribe(listing, "api.task", filter={"project": project}))["meta"]["seq"]
            for i in range(writes):
                if i == kill_after:
                    fault_redis.kill()
                # Each write changes the task and creates a row; every one must commit.
                response = await alice_http.patch(f"/api/tasks/{task['id']}/", json={"title": f"fault {i}"})
                assert response.status_code == 200, response.text
                created = await alice_http.post("/api/tasks/", json={"project": project, "title": f"fault row {i}"})
                assert created.status_code == 201, created.text
                if i < kill_after:
                    # Every event of the writes before the kill is delivered before it.
                    event = await recv_json(ws)
                    assert event["meta"]["seq"] == since + i + 1
                    assert event["payload"]["title"] == f"fault {i}"
                    last = event["meta"]["seq"]
                    changed, added = await recv_json(listing), await recv_json(listing)
                    assert (changed["type"], changed["meta"]["seq"]) == ("UPDATE_TASK", collection_seq + 1)
                    assert (added["type"], added["meta"]["seq"]) == ("CREATE_TASK", collection_seq + 2)
                    assert added["payload"]["title"] == f"fault row {i}"
                    collection_seq += 2

            # The sockets' layer is gone: they are closed with 4031, and nothing else arrives first.
            assert await frames_until_closed(ws) == ([], 4031)
            assert await frames_until_closed(listing) == ([], 4031)

        # A client that reconnects while Redis is still down is told the same.
        async with socket(fault_server, tokens["bob"]) as early:
            assert (await frames_until_closed(early))[1] == 4031

        # Every write is in the database.
        assert (await database_row(alice_http, task["id"]))["title"] == f"fault {writes - 1}"
        titles = {row["title"] for row in (await alice_http.get("/api/tasks/")).json()}
        assert {f"fault row {i}" for i in range(writes)} <= titles

        # Each write after the kill failed to publish (a PATCH to the task and its collection, a POST to the
        # collection), each failure logged. Wait for the last: events still queued when Redis comes back would
        # be published then, in order, and arrive after the snapshot below (and a failure still in progress
        # could rotate the epoch once more, after the one the new subscriber is given).
        failed = (writes - kill_after) * 3
        await wait_for_log(fault_server, PUBLISH_FAILED, failed)

        fault_redis.start()  # The same port, no data: a new epoch.

        reconnects: list[int] = []
        async with reconnected(fault_server, tokens["bob"], reconnects) as ws:
            reply = await subscribe(ws, "api.task", request_id=2, id=task["id"], since=last, epoch=epoch)
            assert reply["meta"]["recovered"] is False
            assert reply["meta"]["epoch"] != epoch
            assert reply["payload"] == await database_row(alice_http, task["id"])
            new_seq = reply["meta"]["seq"]

            row = await patch(alice_http, task["id"], title="After the restart")
            event = await recv_json(ws)
            assert event["type"] == "UPDATE_TASK"
            assert event["payload"] == row
            assert event["meta"]["seq"] == new_seq + 1
            await receive_nothing(ws, 0.3)

        # The new epoch holds from now on: a client that drops again recovers by since.
        async with reconnected(fault_server, tokens["bob"], reconnects) as ws:
            new_epoch = reply["meta"]["epoch"]
            again = await subscribe(ws, "api.task", request_id=3, id=task["id"], since=new_seq, epoch=new_epoch)
            assert again["meta"]["recovered"] is True, f"{reply['meta']} {event['meta']} {again['meta']}"
            assert (await recv_json(ws)) == event
            await receive_nothing(ws, 0.3)

    fault_server.stop()
    failures = fault_server.assert_only_expected_tracebacks(PUBLISH_FAILED)
    assert len(failures) == failed, failures
    print(f"\nredis fault: {failed} publish failures logged; extra 4031 closes after the restart: {sum(reconnects)}")


# Sharding over two Redis servers ---------------------------------------------------


@pytest.fixture(scope="module")
def shards() -> Iterator[tuple[RedisServer, RedisServer]]:
    servers = (RedisServer().start(), RedisServer().start())
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="module")
def sharded_env(server_env: dict[str, str], shards: tuple[RedisServer, RedisServer]) -> dict[str, str]:
    return {**server_env, "REDIS_URL": ",".join(shard.url for shard in shards)}


@pytest.fixture(scope="module")
def sharded_servers(sharded_env: dict[str, str]) -> Iterator[tuple[AsgiServer, AsgiServer]]:
    servers = (AsgiServer(sharded_env, "asgi-shard-a"), AsgiServer(sharded_env, "asgi-shard-b"))
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        server.assert_no_tracebacks()


def task_group(task_id: str) -> str:
    """The channel-layer group of a task's subscribers."""
    return group_name(Target("api.task", id=task_id), "all")


def shard_of(task_id: str) -> int:
    """The shard (0 or 1) channels_redis keeps the group of this task's subscribers on."""
    return int(_consistent_hash(task_group(task_id), 2))


@pytest.mark.asyncio
async def test_two_redis_shards_deliver_rest_and_command_writes_to_every_socket(
    sharded_servers: tuple[AsgiServer, AsgiServer],
    sharded_env: dict[str, str],
    shards: tuple[RedisServer, RedisServer],
    tokens: dict[str, str],
) -> None:
    listening, writing = sharded_servers
    async with rest(writing, tokens["alice"]) as alice_http, AsyncExitStack() as stack:
        # Tasks until each shard holds the groups of at least two of them.
        tasks: list[dict[str, Any]] = []
        while min(sum(shard_of(task["id"]) == shard for task in tasks) for shard in (0, 1)) < 2:
            tasks.append(await new_task(alice_http, f"shard {len(tasks)}"))
            assert len(tasks) < 40, "the group names never hash to both shards"
        project = await website_id(alice_http)

        # One socket per task and one on the project's collection, on server A.
        sockets = [await stack.enter_async_context(socket(listening, tokens["bob"])) for _ in tasks]
        seqs = [
            (await subscribe(ws, "api.task", id=task["id"]))["meta"]["seq"]
            for ws, task in zip(sockets, tasks, strict=True)
        ]
        collection = await stack.enter_async_context(socket(listening, tokens["alice"]))
        collection_seq = (await subscribe(collection, "api.task", filter={"project": project}))["meta"]["seq"]

        # The groups really are spread over both Redis servers; the event store is on the first only.
        keys = [set(redis_keys(shard.port)) for shard in shards]
        for shard, held in enumerate(keys):
            expected = {f"asgi:group:{task_group(task['id'])}" for task in tasks if shard_of(task["id"]) == shard}
            assert expected <= held, (shard, sorted(held))
            elsewhere = {f"asgi:group:{task_group(task['id'])}" for task in tasks} - expected
            assert not elsewhere & held, (shard, sorted(held))
        assert any(key.startswith("drf-live:seq:") for key in keys[0])
        assert not any(key.startswith("drf-live:") for key in keys[1]), sorted(keys[1])

        # Writes through server B's REST API ...
        rows = [await patch(alice_http, task["id"], done=True) for task in tasks]
        # ... and from a management command (its own process, on the same two shards).
        code = (
            "from api.models import Task\n"
            f"for pk in {[task['id'] for task in tasks]!r}:\n"
            "    task = Task.objects.get(pk=pk); task.title = task.title + ' (script)'; task.save()\n"
        )
        await asyncio.to_thread(manage, "shell", "-c", code, env=sharded_env)

        for ws, task, row, seq in zip(sockets, tasks, rows, seqs, strict=True):
            first, second = await recv_json(ws), await recv_json(ws)
            assert first == {
                "type": "UPDATE_TASK",
                "payload": row,
                "meta": {"model": "api.task", "id": task["id"], "changed": ["done"], "seq": seq + 1},
            }
            assert second == {
                "type": "UPDATE_TASK",
                "payload": {**row, "title": f"{task['title']} (script)"},
                "meta": {"model": "api.task", "id": task["id"], "changed": ["title"], "seq": seq + 2},
            }
        events = [await recv_json(collection) for _ in range(2 * len(tasks))]
        assert [event["meta"]["seq"] for event in events] == list(
            range(collection_seq + 1, collection_seq + 2 * len(tasks) + 1)
        )
        assert [event["meta"]["id"] for event in events] == [task["id"] for task in tasks] * 2
        await receive_nothing(collection, 0.3)
        for ws in sockets:
            await receive_nothing(ws, 0.05)
    print(f"\nshards: {[sum(shard_of(task['id']) == shard for task in tasks) for shard in (0, 1)]} task groups each")
