"""Delivery guarantees over real processes: race-free snapshots, recovery, Redis faults, a sharded layer.

Every test runs real ``redis-server`` and uvicorn processes, real ``websockets``
clients, and writes from other processes (the REST API of another server, a
``manage.py shell`` writer). Cross-process delivery of a single write is in
``test_redis_delivery.py``; what the outbox adds (a killed writer, an outage
with a persistent Redis, an overflow) is in ``test_outbox_recovery.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import pytest
import redis

from notifications.shards import shard_index
from tests.integration.clients import (
    Replica,
    client,
    create_task,
    frames_until_closed,
    get,
    get_list,
    outbox,
    patch_task,
    project_tasks,
    recovering,
    rest,
    socket,
    unique,
    wait_for_empty_outbox,
    website,
)
from tests.integration.conftest import Deployment
from tests.servers import OUTPUT, AsgiServer, RedisServer, Shell, demo_tokens, receive_nothing, recv_json, send_json

pytestmark = pytest.mark.e2e


def redis_keys(server: RedisServer) -> list[str]:
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
    try:
        return sorted(key.decode() for key in client.scan_iter(count=1000))
    finally:
        client.close()


def task_stream(task_id: str) -> str:
    """The name of a task's stream (its Redis keys start with it)."""
    return f"drf-live.api.task.o.{task_id}"


# Race-free snapshots -------------------------------------------------------------

WRITES = 200
# How many of the writes alice has seen when bob subscribes, round by round.
SUBSCRIBE_AFTER = [0, 3, 60, 140, 195]
WRITER = """
from api.models import Task
from notifications.relay import relay
task = Task.objects.get(pk={task!r})
for i in range({count}):
    task.title = f"w{{i}}"
    task.save()
assert relay.flush(30), "the relay did not finish"
"""


def index(event_or_row: dict) -> int:
    """The number of the write a payload shows (-1: none yet)."""
    title = event_or_row["title"]
    return int(title[1:]) if title.startswith("w") else -1


@pytest.mark.asyncio
async def test_subscribing_during_200_writes_from_another_process_converges_without_gap_or_repeat(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    observed = []
    async with rest(server_b, tokens["alice"]) as alice:
        project = await website(alice)
        for round_, after in enumerate(SUBSCRIBE_AFTER):
            task = await create_task(alice, project, f"race {round_}")
            await wait_for_empty_outbox(shell)
            watching, racing = Replica("api.task", id=task["id"]), Replica("api.task", id=task["id"])
            async with client(server_b, tokens["alice"]) as watcher, client(server_a, tokens["bob"]) as bob:
                # alice watches from the start, so that every write is an event (seq n: the n-th write).
                await watcher.subscribe(watching)
                assert watching.seq == 0
                writing = asyncio.create_task(shell.arun(WRITER.format(task=task["id"], count=WRITES)))
                while watching.seq < after:
                    await watcher.receive()
                await bob.subscribe(racing)
                snapshot_seq, snapshot = racing.seq, racing.state
                # The snapshot is read after the position: it holds at least the writes up to its seq.
                assert index(snapshot) >= snapshot_seq - 1, (snapshot_seq, snapshot)
                while racing.seq < WRITES:
                    await bob.receive()
                while watching.seq < WRITES:
                    await watcher.receive()
                await writing
                await receive_nothing(bob.ws, 0.3)
                await receive_nothing(watcher.ws, 0.05)

                # bob got exactly the frames alice got after his snapshot: no gap, no repeat.
                assert racing.events == [event for event in watching.events if event["meta"]["seq"] > snapshot_seq]
                # Each event read the row after the write it publishes, and never an older one than the last.
                shown = [index(event["payload"]) for event in watching.events]
                assert shown == sorted(shown)
                assert all(shown[n - 1] >= n - 1 for n in range(1, WRITES + 1)), shown
                assert racing.state == watching.state == await get(alice, f"/api/tasks/{task['id']}/")
                # Nothing is missing at the end either: a new subscriber is told the seq we stopped at.
                again = Replica("api.task", id=task["id"])
                await bob.subscribe(again)
                assert (again.seq, again.epoch, again.state) == (WRITES, racing.epoch, racing.state)
                observed.append(
                    {"snapshot_seq": snapshot_seq, "snapshot_title": snapshot["title"], "events": len(racing.events)}
                )

    print(f"\nrace rounds (snapshot seq, snapshot title, events after the snapshot): {observed}")
    (OUTPUT / "race-observed.json").write_text(json.dumps(observed, indent=1))
    # The subscribe landed in the middle of the writes in some rounds, or this proves little.
    assert any(0 < round_["events"] < WRITES for round_ in observed), observed


# Recovery ------------------------------------------------------------------------

AWAY_WRITES = 50


@pytest.mark.asyncio
async def test_reconnect_with_since_on_another_server_replays_exactly_the_missed_events_then_live_ones(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), unique("recover me"))
        await wait_for_empty_outbox(shell)
        bobs = Replica("api.task", id=task["id"])
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(bobs)
        since, epoch = bobs.seq, bobs.epoch

        # While bob is away, 50 writes through server B; a watcher (alice on server A) sees them live.
        watching = Replica("api.task", id=task["id"])
        async with client(server_a, tokens["alice"]) as watcher:
            await watcher.subscribe(watching)
            for i in range(AWAY_WRITES):
                await patch_task(alice, task["id"], title=f"away {i}", done=i % 2 == 0)
            while watching.seq < since + AWAY_WRITES:
                await watcher.receive()
            await receive_nothing(watcher.ws, 0.2)

        # bob comes back on the other server: the history is in Redis, shared by both.
        async with client(server_b, tokens["bob"]) as bob:
            recovered = await bob.subscribe(bobs, recover=True)
            assert recovered["meta"] == {
                "request_id": 1,
                "model": "api.task",
                "id": task["id"],
                "seq": since,
                "epoch": epoch,
                "recovered": True,
            }
            for _ in range(AWAY_WRITES):
                await bob.receive()
            assert bobs.events == watching.events  # The very frames the watcher got live, in seq order.
            assert bobs.state == await get(alice, f"/api/tasks/{task['id']}/")
            await receive_nothing(bob.ws, 0.3)

            row = await patch_task(alice, task["id"], title="Back again")
            event = await bob.receive()
            assert event["type"] == "UPDATE_TASK"
            assert event["payload"] == row
            assert event["meta"]["seq"] == since + AWAY_WRITES + 1
            assert event["meta"]["changed"] == ["title"]
            await receive_nothing(bob.ws, 0.3)
    print(f"\nrecovery: since={since}, {AWAY_WRITES} events replayed (seq {since + 1}..{since + AWAY_WRITES}), live")


# In this writer, the relay publishes each transaction a while after claiming its rows (a busy
# process): a subscriber's snapshot, read meanwhile, already shows the commit its event is about.
SLOW_RELAY = """
import time
from api.models import Task
from notifications.relay import Relay

_publish_rows = Relay.publish_rows

def publish_rows(self, using, rows):
    time.sleep(1.5)
    return _publish_rows(self, using, rows)

Relay.publish_rows = publish_rows
"""


@pytest.fixture(scope="module")
def slow_writer(server_env: dict[str, str]) -> Iterator[Shell]:
    writer = Shell(server_env, "slow-relay").start()
    try:
        writer.run(SLOW_RELAY)
        yield writer
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_a_recovery_after_a_snapshot_ahead_of_its_seq_ends_on_the_rows(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, slow_writer: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["bob"]) as bob_http:
        project = await website(bob_http)
        listed = Replica("api.task", filter={"project": project})
        title = unique("in flight")
        # Committed now, published 1.5 s later.
        await slow_writer.arun(f"Task.objects.create(project_id={project!r}, title={title!r})")
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(listed)
        assert title in {row["title"] for row in listed.state.values()}  # The snapshot shows it already.
        await wait_for_empty_outbox(shell)  # Its event is committed, after the snapshot's seq.

        async with client(server_b, tokens["bob"]) as bob:
            reply = await bob.subscribe(listed, recover=True)
            # A snapshot is read after its position, so it may already show a commit whose event
            # follows it. A live socket knows what its client holds and sends UPDATE_*; a recovery
            # cannot know, and sends CREATE_*, which replaces the member (docs/protocol.md).
            await bob.settle({listed: await project_tasks(bob_http, project)})
        assert reply["meta"]["recovered"] is True
        assert [event["type"] for event in listed.events][-1] == "CREATE_TASK"
    print(f"\nsnapshot ahead of its seq, then recovery: {reply['meta']}, events {listed.events}")


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
    capped_server: AsgiServer, redis_server: RedisServer, tokens: dict[str, str], shell: Shell
) -> None:
    async with rest(capped_server, tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), unique("too long away"))
        await wait_for_empty_outbox(shell)
        bobs = Replica("api.task", id=task["id"])
        async with client(capped_server, tokens["bob"]) as bob:
            await bob.subscribe(bobs)
        since, epoch = bobs.seq, bobs.epoch

        watching = Replica("api.task", id=task["id"])
        async with client(capped_server, tokens["alice"]) as watcher:
            await watcher.subscribe(watching)
            for i in range(AWAY_WRITES):
                await patch_task(alice, task["id"], title=f"away {i}")
            while watching.seq < since + AWAY_WRITES:  # Every event is recorded before bob comes back.
                await watcher.receive()
        # Redis trims the history approximately (whole stream nodes), but well below 50 here.
        history = redis.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            held = history.xlen(f"{task_stream(task['id'])}:hist")
        finally:
            history.close()
        assert 10 <= held < AWAY_WRITES

        async with client(capped_server, tokens["bob"]) as bob:
            reply = await bob.subscribe(bobs, recover=True)
            assert reply["meta"]["recovered"] is False
            assert reply["payload"] == await get(alice, f"/api/tasks/{task['id']}/")
            assert reply["payload"]["title"] == f"away {AWAY_WRITES - 1}"
            assert reply["meta"]["seq"] == since + AWAY_WRITES
            assert reply["meta"]["epoch"] == epoch  # Nothing was lost: the history is only shorter.
            await receive_nothing(bob.ws, 0.3)

            row = await patch_task(alice, task["id"], title="Live again")
            event = await bob.receive()
            assert event["payload"] == row
            assert event["meta"]["seq"] == since + AWAY_WRITES + 1
    print(f"\ncapped recovery: since={since}, {held} of {AWAY_WRITES} events held -> recovered false, snapshot")


# Redis faults --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_killing_redis_keeps_writes_closes_sockets_with_4031_and_recovers_after_restart(
    deployment: Callable[..., Deployment],
) -> None:
    setup = deployment("fault")
    server_a, server_b = setup.servers
    writes, kill_after = 12, 4
    async with rest(server_b, setup.tokens["alice"]) as alice:
        project = await website(alice)
        task = await create_task(alice, project, "survives Redis")
        await wait_for_empty_outbox(setup.shell)
        row, listed = Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})
        async with client(server_a, setup.tokens["bob"]) as one, client(server_a, setup.tokens["bob"]) as two:
            await one.subscribe(row)
            await two.subscribe(listed)
            for i in range(writes):
                if i == kill_after:
                    setup.redis.kill()
                # Each write changes the task and creates a row; every one must commit.
                await patch_task(alice, task["id"], title=f"fault {i}")
                created = await create_task(alice, project, f"fault row {i}")
                if i < kill_after:
                    # Every event of the writes before the kill is delivered before it.
                    changed = await one.receive()
                    assert changed["payload"]["title"] == f"fault {i}"
                    assert (await two.receive())["meta"]["id"] == task["id"]
                    assert (await two.receive())["payload"] == created

            # The sockets' store is gone: they are closed with 4031, and nothing else arrives first.
            assert await frames_until_closed(one.ws) == ([], 4031)
            assert await frames_until_closed(two.ws) == ([], 4031)
        # A client that reconnects while Redis is still down is told the same.
        async with socket(server_a, setup.tokens["bob"]) as early:
            assert (await frames_until_closed(early))[1] == 4031

        # Every write is in the database, and its events wait in the outbox.
        assert (await get(alice, f"/api/tasks/{task['id']}/"))["title"] == f"fault {writes - 1}"
        titles = {task["title"] for task in await get_list(alice, "/api/tasks/")}
        assert {f"fault row {i}" for i in range(writes)} <= titles
        waiting = await asyncio.to_thread(outbox, setup.shell)
        assert len(waiting) >= 2 * (writes - kill_after), waiting
        before = {replica: replica.epoch for replica in (row, listed)}

        setup.redis.start()  # The same port, no data: a new epoch.
        await wait_for_empty_outbox(setup.shell)  # Published (to nobody: the subscribers were in Redis too).

        async with recovering(server_a, setup.tokens["bob"], [row, listed]) as back:
            for replica in (row, listed):
                assert replica.replies[-1]["meta"]["recovered"] is False
                assert replica.epoch != before[replica]
            assert row.state == await get(alice, f"/api/tasks/{task['id']}/")
            assert listed.state == await project_tasks(alice, project)
            await receive_nothing(back.ws, 0.3)

            live = await patch_task(alice, task["id"], title="After the restart")
            await back.settle({row: live, listed: await project_tasks(alice, project)})
        # The new epoch holds from now on: a client that drops again recovers by since.
        async with recovering(server_b, setup.tokens["bob"], [row, listed]) as again:
            assert [replica.replies[-1]["meta"]["recovered"] for replica in (row, listed)] == [True, True]
            await receive_nothing(again.ws, 0.3)
    print(f"\nredis fault: {len(waiting)} outbox rows waited for Redis; bob ended on seqs {row.seq}, {listed.seq}")


# A sharded channel layer -------------------------------------------------------------


@pytest.fixture(scope="module")
def shards() -> Iterator[tuple[RedisServer, RedisServer]]:
    servers = (RedisServer().start(), RedisServer().start())
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.mark.asyncio
async def test_with_a_channel_layer_on_two_redis_hosts_the_store_spreads_over_both_and_delivers(
    shards: tuple[RedisServer, RedisServer], demo_databases: Callable[[str], dict[str, str]]
) -> None:
    """channels_redis shards groups over its hosts, and drf-live's store follows: each stream (seq,
    history, subscribers, pub/sub) lives on the host its name hashes to. Writes from another process
    reach the socket through it. ``test_shards.py`` stops one of the shards."""
    env = {**demo_databases(shards[0].url), "REDIS_URL": ",".join(shard.url for shard in shards)}
    server, writer = AsgiServer(env, "asgi-sharded").start(), Shell(env, "sharded-writer").start()
    try:
        tokens = demo_tokens(server)
        async with rest(server, tokens["alice"]) as alice:
            project = await website(alice)
            task = await create_task(alice, project, "sharded")
            await wait_for_empty_outbox(writer)
            row, listed = Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})
            async with client(server, tokens["bob"]) as bob:
                await bob.subscribe(row)
                await bob.subscribe(listed)
                await writer.arun(
                    "from api.models import Task\n"
                    f"task = Task.objects.get(pk={task['id']!r}); task.title = 'from a script'; task.save()\n"
                )
                await bob.settle(
                    {row: await get(alice, f"/api/tasks/{task['id']}/"), listed: await project_tasks(alice, project)}
                )
                assert row.state["title"] == "from a script"
                await send_json(bob.ws, {"action": "ping", "request_id": "alive"})
                assert (await recv_json(bob.ws))["type"] == "PONG"
        held = [redis_keys(shard) for shard in shards]
        own = shard_index(task_stream(task["id"]), 2)
        assert f"{task_stream(task['id'])}:hist" in held[own]
        assert not [key for key in held[1 - own] if key.startswith(task_stream(task["id"]))], held[1 - own]
    finally:
        writer.close()
        server.stop()
    server.assert_no_tracebacks()
