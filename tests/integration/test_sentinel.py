"""A store on a Redis master watched by Sentinel, through a failover.

A master, its replica and three sentinels (``redis-sentinel``, or
``redis-server --sentinel``) run on free ports; the example project is given
``REDIS_URL=sentinel://...`` (its channel layer's hosts, from which drf-live
derives its store). The master is killed: writes still commit, sockets close
with 4031, the sentinels promote the replica, and clients recover with a fresh
snapshot (the promoted replica cannot vouch for the history), after which
events flow through the new master.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.integration.clients import (
    Replica,
    client,
    create_task,
    frames_until_closed,
    get,
    patch_task,
    recovering,
    rest,
    wait_for_empty_outbox,
    website,
)
from tests.integration.conftest import OUTAGE_TRACEBACKS
from tests.servers import (
    AsgiServer,
    RedisServer,
    SentinelServer,
    Shell,
    demo_tokens,
    receive_nothing,
    wait_for_failover,
)

pytestmark = pytest.mark.e2e

MASTER = "drf-live"


@dataclass
class Watched:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]
    server: AsgiServer
    shell: Shell
    tokens: dict[str, str]


@pytest.fixture
def watched(demo_databases: Callable[[str], dict[str, str]]) -> Iterator[Watched]:
    master = RedisServer().start()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinels = [SentinelServer(master.port, MASTER, quorum=2).start() for _ in range(3)]
    env = demo_databases(f"sentinel://{','.join(sentinel.address for sentinel in sentinels)}/{MASTER}/0")
    server, shell = AsgiServer(env, "sentinel-asgi"), Shell(env, "sentinel-shell")
    try:
        server.start()
        shell.start()
        yield Watched(master, replica, sentinels, server, shell, demo_tokens(server))
    finally:
        shell.close()
        server.stop()
        for sentinel in sentinels:
            sentinel.close()
        replica.close()
        master.close()
    server.assert_only_expected_tracebacks(*OUTAGE_TRACEBACKS)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


@pytest.mark.asyncio
async def test_a_failover_closes_the_sockets_and_they_recover_on_the_new_master(watched: Watched) -> None:
    # The sentinels know each other (they need a majority to fail over), and the replica is in sync.
    await asyncio.to_thread(
        wait_until, lambda: all(s.sentinels_known() == 2 for s in watched.sentinels), "sentinels discover each other"
    )
    async with rest(watched.server, watched.tokens["alice"]) as alice:
        project = await website(alice)
        task = await create_task(alice, project, "before the failover")
        await wait_for_empty_outbox(watched.shell)
        row = Replica("api.task", id=task["id"])
        async with client(watched.server, watched.tokens["bob"]) as bob:
            await bob.subscribe(row)
            await patch_task(alice, task["id"], title="through the first master")
            await bob.settle({row: await get(alice, f"/api/tasks/{task['id']}/")})
            before = (row.seq, row.epoch)

            watched.master.kill()

            # The pub/sub connection died with the master: the socket closes so that its client recovers.
            assert await frames_until_closed(bob.ws) == ([], 4031)
            # Writes commit during the failover; their events wait in the outbox.
            await patch_task(alice, task["id"], title="during the failover")

        new_master = await asyncio.to_thread(wait_for_failover, watched.sentinels[0], watched.master.port)
        assert new_master[1] == watched.replica.port

        # Recovery from where the client was: the new master cannot vouch for the history (it may
        # lack writes the old one acknowledged), so the client gets a fresh snapshot, with the write
        # made during the failover.
        async with recovering(watched.server, watched.tokens["bob"], [row], attempts=30) as again:
            assert not row.recovered
            assert row.epoch != before[1]
            await again.settle({row: await get(alice, f"/api/tasks/{task['id']}/")})
            assert row.state["title"] == "during the failover"

            # Events flow through the new master. The write made during the failover may be
            # published only now, from the outbox (it carries the row as committed last): once
            # the outbox is empty, every event is out.
            await patch_task(alice, task["id"], title="through the new master")
            await wait_for_empty_outbox(watched.shell)
            await again.settle({row: await get(alice, f"/api/tasks/{task['id']}/")})
            assert row.events[-1]["payload"]["title"] == "through the new master"
            await receive_nothing(again.ws)
