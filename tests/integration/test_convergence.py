"""Convergence: concurrent writers in three processes, subscribers on two servers, one row.

For every target, the last event a subscriber receives carries a state at
least as new as the last commit, whichever process wrote it; so once the
writes stop, every subscriber holds the database's row. The replicas check on
the way that each one's seqs only increase, without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack

import httpx
import pytest

from tests.integration.clients import (
    Client,
    Replica,
    client,
    create_task,
    get,
    patch_task,
    project_tasks,
    rest,
    unique,
    wait_for_empty_outbox,
    website,
)
from tests.servers import AsgiServer, Shell

pytestmark = pytest.mark.e2e

WRITES = 30  # per writer; three writers


async def pump(live: Client) -> None:
    """Apply frames as they come, so that no socket falls behind while the writers run."""
    while True:
        await live.receive(timeout=120)


@pytest.mark.asyncio
async def test_concurrent_writers_on_one_row_leave_every_subscriber_on_the_database_row(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_a, tokens["alice"]) as alice, rest(server_b, tokens["bob"]) as bob:
        project = await website(alice)
        task = await create_task(alice, project, unique("contended"))
        await wait_for_empty_outbox(shell)

        async with AsyncExitStack() as stack:
            # alice and bob, each on both servers, each on the task and on the project's list.
            sockets: list[tuple[Client, Replica, Replica]] = []
            for server in (server_a, server_b):
                for name in ("alice", "bob"):
                    live = await stack.enter_async_context(client(server, tokens[name]))
                    row, listed = Replica("api.task", id=task["id"]), Replica("api.task", filter={"project": project})
                    await live.subscribe(row)
                    await live.subscribe(listed)
                    sockets.append((live, row, listed))
            start = sockets[0][1].seq
            pumps = [asyncio.create_task(pump(live)) for live, _, _ in sockets]

            async def through_rest(http: httpx.AsyncClient, name: str, seed: int) -> None:
                rng = random.Random(seed)
                for i in range(WRITES):
                    fields = {"title": f"{name} {i}"}
                    if rng.random() < 0.5:
                        fields["done"] = rng.random() < 0.5
                    await patch_task(http, task["id"], **fields)

            through_shell = (
                "import random\n"
                "from api.models import Task\n"
                "rng = random.Random(3)\n"
                f"for i in range({WRITES}):\n"
                f"    task = Task.objects.get(pk={task['id']!r})\n"
                "    task.title = f'shell {i}'\n"
                "    task.done = rng.random() < 0.5\n"
                "    task.save()\n"
            )
            await asyncio.gather(
                through_rest(alice, "alice via A", 1), through_rest(bob, "bob via B", 2), shell.arun(through_shell)
            )
            await wait_for_empty_outbox(shell)
            for running in pumps:
                running.cancel()
            failures = [result for result in await asyncio.gather(*pumps, return_exceptions=True)]
            assert all(isinstance(result, asyncio.CancelledError) for result in failures), failures

            expected_row = await get(alice, f"/api/tasks/{task['id']}/")
            expected_list = await project_tasks(alice, project)
            assert expected_row == await get(bob, f"/api/tasks/{task['id']}/")
            for live, row, listed in sockets:
                await live.settle({row: expected_row, listed: expected_list})

            # Every subscriber got the same events, and nothing is missing at the end.
            first = sockets[0]
            for _live, row, listed in sockets[1:]:
                assert row.events == first[1].events
                assert listed.events == first[2].events
            assert first[1].seq - start >= 3 * WRITES, "a write that committed published no event"
            late = Replica("api.task", id=task["id"])
            await sockets[-1][0].subscribe(late)
            assert (late.seq, late.epoch, late.state) == (first[1].seq, first[1].epoch, expected_row)
    titles = [event["payload"]["title"] for event in first[1].events]
    print(f"\nconvergence: {len(titles)} events for {3 * WRITES} writes; last {titles[-3:]} -> {expected_row['title']}")


@pytest.mark.asyncio
async def test_a_save_of_an_object_loaded_before_another_commit_leaves_subscribers_on_the_row(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), unique("stale"))
        await wait_for_empty_outbox(shell)
        replica = Replica("api.task", id=task["id"])
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(replica)
            # A process loads the task; another ticks it; the first saves what it loaded.
            await shell.arun(f"from api.models import Task\nstale = Task.objects.get(pk={task['id']!r})")
            await patch_task(alice, task["id"], done=True)
            await bob.settle({replica: {**task, "done": True}})
            await shell.arun("stale.save()")
            await wait_for_empty_outbox(shell)

            row = await get(alice, f"/api/tasks/{task['id']}/")
            assert row["done"] is False  # The row went back ...
            # ... and every event is published once the outbox is empty: 3 s bounds only the trip to the socket.
            await bob.settle({replica: row}, timeout=3)
