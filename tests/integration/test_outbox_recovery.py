"""The outbox: a committed change reaches its subscribers whatever happens after the commit, or they are told.

A writer killed between its commit and its publish, Redis stopped while the
REST API keeps writing, an outbox that overflows while Redis is down, an
event whose payload cannot be produced: each test checks that the event is
delivered (by a server's sweep, once Redis is back) or that no client is told
``recovered: true`` across it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.clients import (
    Replica,
    client,
    create_task,
    frames_until_closed,
    get,
    new_users,
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
from tests.servers import MANAGE, PYTHON, ROOT, AsgiServer, Shell, receive_nothing, recv_json, send_json

pytestmark = pytest.mark.e2e

# The writer dies ---------------------------------------------------------------------

# Saves in one transaction, then dies from an on_commit callback registered after drf-live's
# own: that one only hands the transaction to the relay thread, so the process dies first.
KILLED_WRITER = """
import os, signal
from django.db import transaction
{imports}
with transaction.atomic():
{write}
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
print("still alive")
"""


async def killed_writer(env: dict[str, str], imports: str, write: str) -> int:
    """Run ``write`` (indented code) in a ``manage.py shell`` killed right after its commit; the dead pid."""
    code = KILLED_WRITER.format(imports=imports, write=write)
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        MANAGE,
        "shell",
        "-c",
        code,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == -signal.SIGKILL, (process.returncode, out, err)
    assert b"still alive" not in out
    return process.pid


def waiting_rows(shell: Shell, dead_pid: int) -> list[dict[str, Any]]:
    """The outbox rows now: leased to the dead writer's relay as they were written, for OUTBOX_GRACE (1 s).

    Nobody else may publish them before that lease runs out; then a server's sweep takes them.
    """
    rows = outbox(shell)
    assert rows and all(row["owner"].startswith(f"{dead_pid}-") for row in rows), rows
    return rows


@pytest.mark.asyncio
async def test_a_change_whose_writer_was_killed_after_the_commit_is_delivered_by_a_servers_sweep(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, server_env: dict[str, str]
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), unique("killed writer"))
        await wait_for_empty_outbox(shell)
        replica = Replica("api.task", id=task["id"])
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(replica)

            pid = await killed_writer(
                server_env,
                "from api.models import Task",
                f"    task = Task.objects.get(pk={task['id']!r})\n    task.title = 'committed, then killed'\n"
                "    task.save()",
            )
            # The row committed with the write, and waits (a sweep takes it when its lease runs out, 1 s).
            rows = await asyncio.to_thread(waiting_rows, shell, pid)
            assert [(row["kind"], row["model"], row["object_id"]) for row in rows] == [
                ("update", "api.task", task["id"])
            ]

            event = await bob.receive(timeout=15)
            assert event["type"] == "UPDATE_TASK"
            assert event["payload"] == {**task, "title": "committed, then killed"}
            assert event["payload"] == await get(alice, f"/api/tasks/{task['id']}/")
            assert event["meta"]["changed"] == ["title"]
            await wait_for_empty_outbox(shell)
            await receive_nothing(bob.ws)


@pytest.mark.asyncio
async def test_a_token_deleted_by_a_writer_killed_after_the_commit_still_closes_its_sockets(
    asgi_servers: tuple[AsgiServer, AsgiServer], shell: Shell, server_env: dict[str, str]
) -> None:
    user = (await new_users(shell, "leaving"))["leaving"]
    async with socket(asgi_servers[0], user.token) as ws:
        await send_json(ws, {"action": "ping", "request_id": 1})
        assert (await recv_json(ws))["type"] == "PONG"

        pid = await killed_writer(
            server_env,
            "from rest_framework.authtoken.models import Token",
            f"    Token.objects.filter(key={user.token!r}).delete()",
        )
        rows = await asyncio.to_thread(waiting_rows, shell, pid)
        assert [row["kind"] for row in rows] == ["close"]

        assert await frames_until_closed(ws) == ([], 4001)
        await wait_for_empty_outbox(shell)


# A payload that cannot be produced ------------------------------------------------------

FAULTY_SERIALIZER = """
from api.models import Task
from api.serializers import TaskSerializer
from notifications.relay import relay

original = TaskSerializer.to_representation

def to_representation(self, instance):
    if instance.title == "cannot be serialized":
        raise RuntimeError("a serializer that raises, on purpose")
    return original(self, instance)

TaskSerializer.to_representation = to_representation
task = Task.objects.get(pk={task!r})
task.title = "cannot be serialized"
task.save()
assert relay.flush(30), "the relay did not finish"
result = relay.stats.lost
"""


@pytest.mark.asyncio
async def test_an_event_whose_payload_cannot_be_produced_is_never_recovered_across(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, server_env: dict[str, str]
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["bob"]) as bob_http:
        project = await website(bob_http)
        task = await create_task(bob_http, project, unique("unserializable"))
        await wait_for_empty_outbox(shell)
        # One client leaves before the failure (and stays registered for RESUME_WINDOW), one stays.
        away = [Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})]
        async with client(server_a, tokens["bob"]) as leaving:
            for replica in away:
                await leaving.subscribe(replica)
        staying = [Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})]
        async with client(server_a, tokens["bob"]) as live:
            for replica in staying:
                await live.subscribe(replica)

            # The relay of another process, whose serializer raises for this row.
            faulty = Shell(server_env, "faulty-serializer").start()
            try:
                lost = await faulty.arun(FAULTY_SERIALIZER.format(task=task["id"]))
            finally:
                faulty.close()
            assert lost == 2  # the task's own stream and its project's list
            assert "Could not decide update for" in faulty.log_path.read_text()

            # The socket cannot vouch for what its client holds: it closes, and the client recovers.
            assert await frames_until_closed(live.ws) == ([], 4031)
        await wait_for_empty_outbox(shell)

        for replica in staying + away:
            epoch = replica.epoch
            async with client(server_b, tokens["bob"]) as back:
                reply = await back.subscribe(replica, recover=True)
                assert reply["meta"]["recovered"] is False, reply
                assert reply["meta"]["epoch"] != epoch
                await receive_nothing(back.ws)
        # The snapshots are the rows as committed (the servers' serializer does not raise).
        assert staying[0].state == away[0].state == await get(bob_http, f"/api/tasks/{task['id']}/")
        assert staying[1].state == away[1].state == await project_tasks(bob_http, project)
        assert staying[0].state["title"] == "cannot be serialized"


# Redis goes away ------------------------------------------------------------------------

WHILE_DOWN = 5


@pytest.mark.asyncio
@pytest.mark.parametrize("appendonly", [False, True], ids=["redis-without-persistence", "redis-append-only-file"])
async def test_writes_while_redis_is_down_commit_and_clients_end_on_the_database_rows(
    deployment: Callable[..., Deployment], appendonly: bool
) -> None:
    setup = deployment("outage-aof" if appendonly else "outage", appendonly=appendonly)
    server_a, server_b = setup.servers
    async with rest(server_b, setup.tokens["alice"]) as alice:
        project = await website(alice)
        task = await create_task(alice, project, "through the outage")
        await wait_for_empty_outbox(setup.shell)
        row, listed = Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})

        async def database() -> dict[Replica, Any]:
            return {row: await get(alice, f"/api/tasks/{task['id']}/"), listed: await project_tasks(alice, project)}

        async with client(server_a, setup.tokens["bob"]) as bob:
            await bob.subscribe(row)
            await bob.subscribe(listed)
            await patch_task(alice, task["id"], title="before the outage")
            await bob.settle(await database())
            before = {replica: (replica.seq, replica.epoch) for replica in (row, listed)}

            setup.redis.kill()
            # Every write commits, and the sockets are closed so that their clients recover.
            for i in range(WHILE_DOWN):
                await patch_task(alice, task["id"], title=f"while down {i}", done=i % 2 == 0)
                await create_task(alice, project, f"created while down {i}")
            assert await frames_until_closed(bob.ws) == ([], 4031)
        waiting = await asyncio.to_thread(outbox, setup.shell)
        assert len(waiting) >= 2 * WHILE_DOWN, waiting

        setup.redis.start()
        # Written right after the restart: published at once, perhaps before the rows that waited.
        await patch_task(alice, task["id"], title="after the restart")
        if appendonly:
            await wait_for_empty_outbox(setup.shell)
        # Without persistence, the client comes back at once, racing the sweep that publishes the rows.
        async with recovering(server_b, setup.tokens["bob"], [row, listed]) as back:
            for replica in (row, listed):
                recovered = replica.replies[-1]["meta"]["recovered"]
                if appendonly:
                    # Nothing was lost: every event written meanwhile follows, in seq order (the replica
                    # fails on a gap or a repeat).
                    assert recovered is True, replica.replies[-1]
                    assert replica.epoch == before[replica][1]
                else:
                    assert recovered is False, replica.replies[-1]
                    assert replica.epoch != before[replica][1]
            await wait_for_empty_outbox(setup.shell)
            await back.settle(await database())
            if appendonly:
                assert row.seq - before[row][0] >= WHILE_DOWN + 1
                assert listed.seq - before[listed][0] >= 2 * WHILE_DOWN + 1
                # (Two servers sweep: rows of different transactions may go out in either order.)
                created = [event["payload"]["title"] for event in listed.events if event["type"] == "CREATE_TASK"]
                assert sorted(created) == [f"created while down {i}" for i in range(WHILE_DOWN)]

            # And live again.
            await patch_task(alice, task["id"], title="live again")
            await back.settle(await database())
    print(f"\noutage (appendonly={appendonly}): {len(waiting)} rows waited; replies {row.replies[-1]['meta']}")


@pytest.mark.asyncio
async def test_an_outbox_that_overflowed_while_redis_was_down_rotates_every_epoch(
    deployment: Callable[..., Deployment],
) -> None:
    setup = deployment("overflow", appendonly=True, settings={"OUTBOX_LIMIT": 5})
    server_a, server_b = setup.servers
    async with rest(server_b, setup.tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), "overflowing")
        await wait_for_empty_outbox(setup.shell)
        row = Replica("api.task", id=task["id"])
        async with client(server_a, setup.tokens["bob"]) as bob:
            await bob.subscribe(row)
            setup.redis.kill()
            for i in range(12):
                await patch_task(alice, task["id"], title=f"while down {i}")
            assert await frames_until_closed(bob.ws) == ([], 4031)

        # A sweep drops the oldest rows; the loss is settled once Redis is back.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not [entry for entry in await asyncio.to_thread(outbox, setup.shell) if entry["kind"] == "lost"]:
            assert loop.time() < deadline, "no sweep trimmed the outbox"
            await asyncio.sleep(0.2)
        setup.redis.start()
        await wait_for_empty_outbox(setup.shell)

        epoch = row.epoch
        async with recovering(server_b, setup.tokens["bob"], [row]) as back:
            assert row.replies[-1]["meta"]["recovered"] is False, row.replies[-1]
            assert row.epoch != epoch
            assert row.state == await get(alice, f"/api/tasks/{task['id']}/")
            assert row.state["title"] == "while down 11"
            await receive_nothing(back.ws)
    logs = "".join(server.log_path.read_text() for server in setup.servers)
    assert "held more than OUTBOX_LIMIT=5 rows" in logs
