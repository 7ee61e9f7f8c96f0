"""A store on two Redis shards, one of which stops: only its own streams' sockets notice.

Two ``redis-server`` processes are the example project's channel layer hosts
(``REDIS_URL=redis://a,redis://b``), and drf-live's store follows them: each
task's stream lives on the shard its name hashes to. Two uvicorn servers and a
``manage.py shell`` writer run on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from notifications.shards import shard_index
from notifications.targets import Target
from tests.integration.clients import (
    Replica,
    client,
    create_project,
    create_task,
    error_reply,
    frames_until_closed,
    get,
    me,
    new_users,
    outbox,
    patch_task,
    project_tasks,
    recovering,
    rest,
    socket,
    unique,
    wait_for_empty_outbox,
)
from tests.integration.conftest import OUTAGE_TRACEBACKS
from tests.servers import AsgiServer, RedisServer, Shell, demo_tokens, receive_nothing, recv_json, send_json

pytestmark = pytest.mark.e2e


@dataclass
class Sharded:
    shards: tuple[RedisServer, RedisServer]
    servers: tuple[AsgiServer, AsgiServer]
    shell: Shell
    tokens: dict[str, str]


@pytest.fixture
def sharded(demo_databases: Callable[[str], dict[str, str]]) -> Iterator[Sharded]:
    """Two Redis shards, a database with the demo data, two servers and a shell on them."""
    shards = (RedisServer().start(), RedisServer().start())
    env = demo_databases(",".join(shard.url for shard in shards))
    servers = (AsgiServer(env, "sharded-a"), AsgiServer(env, "sharded-b"))
    shell = Shell(env, "sharded-shell")
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            server.wait_ready()
        shell.start()
        yield Sharded(shards, servers, shell, demo_tokens(servers[0]))
    finally:
        shell.close()
        for server in servers:
            server.stop()
        for shard in shards:
            shard.close()
    for server in servers:
        server.assert_only_expected_tracebacks(*OUTAGE_TRACEBACKS)


def shard_of(target: Target) -> int:
    return shard_index(target.stream, 2)


async def project_listed_on(http: Any, shard: int, members: list[str]) -> str:
    """A new project whose task list's stream lives on ``shard``."""
    while True:
        project = (await create_project(http, unique("Sharded"), members))["id"]
        if shard_of(Target.collection("api.task", {"project": project})) == shard:
            return str(project)


async def task_on_each_shard(http: Any, project: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two new tasks of ``project``: the first's stream on shard 0, the second's on shard 1."""
    found: dict[int, dict[str, Any]] = {}
    while len(found) < 2:
        task = await create_task(http, project, unique("sharded"))
        found.setdefault(shard_of(Target("api.task", id=task["id"])), task)
    return found[0], found[1]


async def alive(ws: ClientConnection) -> None:
    await send_json(ws, {"action": "ping", "request_id": "alive"})
    assert (await recv_json(ws))["type"] == "PONG"


@pytest.mark.asyncio
async def test_a_stopped_shard_closes_only_the_sockets_of_its_streams(sharded: Sharded) -> None:
    server, other_server = sharded.servers
    [fresh] = (await new_users(sharded.shell, "fresh")).values()
    async with rest(server, sharded.tokens["alice"]) as alice, rest(server, sharded.tokens["bob"]) as bob_http:
        project = await project_listed_on(alice, 1, [(await me(bob_http))["id"]])
        on_stopped, on_running = await task_on_each_shard(alice, project)
        await wait_for_empty_outbox(sharded.shell)
        stopped_row, running_row = Replica("api.task", id=on_stopped["id"]), Replica("api.task", id=on_running["id"])
        listed, watched = Replica("api.task", filter={"project": project}), Replica("api.task", id=on_running["id"])
        async with (
            client(server, sharded.tokens["bob"]) as bob_stopped,
            client(server, sharded.tokens["bob"]) as bob_running,
            client(other_server, sharded.tokens["alice"]) as watcher,
            socket(server, fresh.token) as bare,  # subscribed to nothing: it listens to control messages only
        ):
            await bob_stopped.subscribe(stopped_row)
            await bob_running.subscribe(running_row)
            await bob_running.subscribe(listed)
            await watcher.subscribe(watched)

            sharded.shards[0].kill()

            # The socket of the stopped shard's stream is closed so that its client recovers ...
            assert await frames_until_closed(bob_stopped.ws) == ([], 4031)
            # ... those of the other shard's streams, in the same process and another, stay and deliver.
            await patch_task(alice, on_running["id"], title="while shard 0 is down")
            expected = {running_row: await get(alice, f"/api/tasks/{on_running['id']}/")}
            await bob_running.settle({**expected, listed: await project_tasks(alice, project)})
            await watcher.settle({watched: running_row.state})
            assert running_row.state["title"] == watched.state["title"] == "while shard 0 is down"
            await alive(bare)

            # A write to the stopped shard's stream commits: its list (on the other shard) shows it at
            # once, its own event waits in the outbox. Subscribing to it is refused for now.
            await patch_task(alice, on_stopped["id"], title="written while its shard is down")
            await bob_running.settle({listed: await project_tasks(alice, project)})
            async with socket(other_server, sharded.tokens["bob"]) as again:
                subscribe = {"action": "subscribe", "model": "api.task", "id": on_stopped["id"], "request_id": 1}
                assert await error_reply(again, subscribe) == "unavailable"

            # A client that missed events of the running shard's stream recovers them: recovered: true.
            missed_since, held = running_row.seq, dict(running_row.state)
            await patch_task(alice, on_running["id"], done=True)
            expected = {running_row: await get(alice, f"/api/tasks/{on_running['id']}/")}
            await bob_running.settle({**expected, listed: await project_tasks(alice, project)})
            late = Replica("api.task", id=on_running["id"], seq=missed_since, epoch=running_row.epoch, state=held)
            async with recovering(other_server, sharded.tokens["bob"], [late]) as recovered:
                assert late.recovered
                await recovered.settle({late: running_row.state})
                assert late.seqs == [missed_since + 1]

            # Control messages still reach every process: a deleted token closes its socket (4001).
            await sharded.shell.arun(
                "from rest_framework.authtoken.models import Token\n"
                f"Token.objects.filter(key={fresh.token!r}).delete()\n"
            )
            assert await frames_until_closed(bare) == ([], 4001)

            # The stopped shard's event keeps waiting, and the retries send the list no repeat.
            await receive_nothing(bob_running.ws, 2.5)
            assert await asyncio.to_thread(outbox, sharded.shell)

            # The shard is back, empty: what waited goes out, and the other shard's streams get nothing again.
            sharded.shards[0].start()
            await wait_for_empty_outbox(sharded.shell)
            await receive_nothing(bob_running.ws)

        # A client recovering the stopped shard's stream gets a fresh snapshot with the write it missed.
        async with recovering(server, sharded.tokens["bob"], [stopped_row]) as recovered:
            assert not stopped_row.recovered
            assert stopped_row.state["title"] == "written while its shard is down"
            await patch_task(alice, on_stopped["id"], done=True)
            await recovered.settle({stopped_row: await get(alice, f"/api/tasks/{on_stopped['id']}/")})
