"""Access over time: replay starts where access began, and a user who loses access is told so and nothing more.

The writes are made by other processes (the other server's REST API, one or
two ``manage.py shell`` processes) while the sockets are on a server; the
verdict of each event is taken from the committed rows, so no ordering of
messages between processes may show a user what they could not see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clients import (
    Client,
    Replica,
    body,
    client,
    create_project,
    create_task,
    delete_task,
    get,
    get_list,
    me,
    new_users,
    patch_task,
    project_tasks,
    rest,
    set_members,
    unique,
    wait_for_empty_outbox,
)
from tests.servers import AsgiServer, Shell, receive_nothing, recv_json

pytestmark = pytest.mark.e2e


async def replay_from(live: Client, replica: Replica, since: int) -> dict[str, Any]:
    """Resubscribe ``replica``'s target as a client that claims to hold seq ``since`` of its epoch."""
    claimed = Replica(replica.model, id=replica.id, filter=replica.filter, seq=since, epoch=replica.epoch)
    reply = await live.subscribe(claimed, recover=True)
    # From now on the socket's frames go to ``replica`` again, which holds what the client holds.
    live.replicas[replica.key] = replica
    if not reply["meta"]["recovered"]:
        replica.take_reply(reply)
    return reply


# Replay ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_replay_never_reaches_back_to_before_the_user_could_see_the_target(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        secret = (await create_project(alice, unique("Secret")))["id"]
        task = await create_task(alice, secret, "secret plans")
        await wait_for_empty_outbox(shell)
        tasks = {"project": secret}

        # alice watches, so that the streams keep a history while bob cannot see them.
        alices_task, alices_list = Replica("api.task", id=task["id"]), Replica("api.task", filter=tasks)
        async with client(server_b, tokens["alice"]) as watcher:
            await watcher.subscribe(alices_task)
            await watcher.subscribe(alices_list)
            await patch_task(alice, task["id"], title="edited before bob could see it")
            doomed = await create_task(alice, secret, "created and deleted before bob could see it")
            await delete_task(alice, doomed["id"])
            await watcher.settle(
                {
                    alices_task: await get(alice, f"/api/tasks/{task['id']}/"),
                    alices_list: await project_tasks(alice, secret),
                }
            )
            assert (await bob_http.get(f"/api/tasks/{task['id']}/")).status_code == 404

            await set_members(alice, secret, [bob_id])
            await wait_for_empty_outbox(shell)
            bobs_task, bobs_list = Replica("api.task", id=task["id"]), Replica("api.task", filter=tasks)
            async with client(server_a, tokens["bob"]) as bob:
                await bob.subscribe(bobs_task)
                await bob.subscribe(bobs_list)
                # The edit, and the create and the delete (which alice may have been sent or not: when
                # the create was decided after the delete, she never saw that task); and bob joining,
                # which decided again who sees each task of the project (nothing sent to alice).
                assert (bobs_task.seq, bobs_list.seq) == (1, 4)
                # A client claiming to hold everything from seq 0 of the epoch it was given: every event
                # after 0 was decided before bob could see the target, so none may be replayed to him.
                for replica, path in [
                    (bobs_task, f"/api/tasks/{task['id']}/"),
                    (bobs_list, f"/api/tasks/?project={secret}"),
                ]:
                    reply = await replay_from(bob, replica, 0)
                    assert reply["meta"]["recovered"] is False, reply
                    assert reply["payload"] == await get(bob_http, path)  # a list: the whole page, links included
                    assert reply["meta"]["seq"] == replica.seq
                await receive_nothing(bob.ws)

                # What happened after access began does recover.
                await patch_task(alice, task["id"], title="seen by bob")
                await bob.settle(
                    {
                        bobs_task: await get(bob_http, f"/api/tasks/{task['id']}/"),
                        bobs_list: await project_tasks(bob_http, secret),
                    }
                )
        since = {replica: replica.seq for replica in (bobs_task, bobs_list)}
        await patch_task(alice, task["id"], title="while bob was away")
        await wait_for_empty_outbox(shell)
        async with client(server_b, tokens["bob"]) as bob:
            for replica in (bobs_task, bobs_list):
                assert (await bob.subscribe(replica, recover=True))["meta"]["recovered"] is True
            await bob.settle(
                {
                    bobs_task: await get(bob_http, f"/api/tasks/{task['id']}/"),
                    bobs_list: await project_tasks(bob_http, secret),
                }
            )
            assert [replica.seq - since[replica] for replica in (bobs_task, bobs_list)] == [1, 1]


@pytest.mark.asyncio
async def test_a_task_moved_into_a_shared_project_brings_no_history_from_where_it_was(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        hidden = (await create_project(alice, unique("Unseen")))["id"]
        shared = (await create_project(alice, unique("Shared"), [bob_id]))["id"]
        task = await create_task(alice, hidden, "moving")
        await wait_for_empty_outbox(shell)

        alices = Replica("api.task", id=task["id"])
        async with client(server_b, tokens["alice"]) as watcher, client(server_a, tokens["bob"]) as bob:
            await watcher.subscribe(alices)
            for i in range(3):
                await patch_task(alice, task["id"], title=f"unseen {i}")
                await watcher.receive()
            bobs_list = Replica("api.task", filter={"project": shared})
            listed = await bob.subscribe(bobs_list)

            moved = await patch_task(alice, task["id"], project=shared)
            created = await bob.receive()
            assert created["type"] == "CREATE_TASK"
            assert created["payload"] == moved == await get(bob_http, f"/api/tasks/{task['id']}/")
            await watcher.receive()
            await receive_nothing(bob.ws)

            bobs_task = Replica("api.task", id=task["id"])
            await bob.subscribe(bobs_task)
            assert bobs_task.seq == alices.seq == 4
            # Every event of the task's stream so far was decided before bob could see it.
            for since in (0, 1, 3):
                reply = await replay_from(bob, bobs_task, since)
                assert reply["meta"]["recovered"] is False, reply
                assert reply["payload"] == moved
            await receive_nothing(bob.ws)
            # The collection bob watched all along recovers: the move, as the task's arrival.
            reply = await replay_from(bob, bobs_list, listed["meta"]["seq"])
            assert reply["meta"]["recovered"] is True
            assert await recv_json(bob.ws) == created
            await receive_nothing(bob.ws)


@pytest.mark.asyncio
async def test_recovery_never_names_a_member_the_user_never_saw(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        alice_id, bob_id = (await me(alice))["id"], (await me(bob_http))["id"]
        project = (await create_project(alice, unique("Recovered"), [bob_id]))["id"]
        await wait_for_empty_outbox(shell)
        tasks = {"project": project}
        alices, bobs = Replica("api.task", filter=tasks), Replica("api.task", filter=tasks)
        async with client(server_b, tokens["alice"]) as watcher:
            await watcher.subscribe(alices)
            hidden = await create_task(alice, project, "never bob's", private=True, assignee=alice_id)
            await watcher.receive()
            # bob subscribes after the private task was created, then goes away.
            async with client(server_a, tokens["bob"]) as bob:
                await bob.subscribe(bobs)
            assert bobs.state == {} and bobs.seq == alices.seq
            await delete_task(alice, hidden["id"])
            await watcher.receive()

        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(bobs, recover=True)
            # Recovered or not, bob holds nothing of that project: not even the id of the deleted task
            # may reach him (the replica fails on a DELETE of a member it does not hold).
            await receive_nothing(bob.ws)
            assert bobs.state == await project_tasks(bob_http, project) == {}
    print(f"\nrecovery across a private task's delete: {bobs.replies[-1]['meta']}")


# Revocation -------------------------------------------------------------------------------


def revoked(model: str, **target: Any) -> dict[str, Any]:
    return {"type": "UNSUBSCRIBED", "payload": None, "meta": {"model": model, **target, "reason": "revoked"}}


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["removed", "deleted"])
async def test_a_user_who_no_longer_shares_a_project_is_revoked_from_a_third_partys_subscription(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, how: str
) -> None:
    server_a, server_b = asgi_servers
    users = await new_users(shell, "m", "t")
    m, t = users["m"], users["t"]
    async with (
        rest(server_b, tokens["alice"]) as alice,
        rest(server_a, m.token) as m_http,
        rest(server_b, t.token) as t_http,
    ):
        project = (await create_project(alice, unique("P"), [m.id, t.id]))["id"]  # all m and t share
        await wait_for_empty_outbox(shell)
        async with client(server_a, m.token) as watcher:
            seen = await watcher.subscribe(Replica("api.user", id=t.id))
            assert seen["payload"] == await get(m_http, f"/api/users/{t.id}/")

            if how == "removed":
                await set_members(alice, project, [m.id])
            else:
                body(await alice.delete(f"/api/projects/{project}/"), 204)

            assert await recv_json(watcher.ws) == revoked("api.user", id=t.id)
            # Nothing more, not even when t changes what m used to see.
            body(await t_http.patch(f"/api/users/{t.id}/", json={"display_name": "t, renamed"}))
            await wait_for_empty_outbox(shell)
            await receive_nothing(watcher.ws)
            assert (await m_http.get(f"/api/users/{t.id}/")).status_code == 404


@pytest.mark.asyncio
async def test_an_edit_and_the_removal_of_a_member_in_one_transaction_end_as_one_revocation(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        project = (await create_project(alice, unique("Revoked"), [bob_id]))["id"]
        task = await create_task(alice, project, "about to be hidden")
        await wait_for_empty_outbox(shell)
        async with client(server_a, tokens["bob"]) as bob, client(server_b, tokens["alice"]) as watcher:
            await bob.subscribe(Replica("api.task", id=task["id"]))
            await bob.subscribe(Replica("api.task", filter={"project": project}))
            await watcher.subscribe(Replica("api.task", id=task["id"]))

            await shell.arun(
                "from django.db import transaction\n"
                "from api.models import Project, Task, User\n"
                "with transaction.atomic():\n"
                f"    task = Task.objects.get(pk={task['id']!r})\n"
                "    task.title = 'edited as bob is removed'\n"
                "    task.save()\n"
                f"    Project.objects.get(pk={project!r}).members.remove(User.objects.get(pk={bob_id!r}))\n"
            )
            edit = await watcher.receive()  # It was published ...
            assert edit["payload"]["title"] == "edited as bob is removed"
            # ... and bob is told he lost both targets, and nothing else.
            frames = [await recv_json(bob.ws), await recv_json(bob.ws)]
            assert sorted(frames, key=lambda frame: "filter" in frame["meta"]) == [
                revoked("api.task", id=task["id"]),
                revoked("api.task", filter={"project": project}),
            ]
            await receive_nothing(bob.ws)


REVOCATION_ROUNDS = 10
# In the remover: its relay publishes each transaction SLOW seconds after the commit (a busy process),
# so that its news of the removal comes after the edit that the editor commits just after it.
SLOW_RELAY = """
import time
from api.models import Project, Task, User
from notifications.relay import Relay

SLOW = 0.0
_publish_rows = Relay.publish_rows

def publish_rows(self, using, rows):
    time.sleep(SLOW)
    return _publish_rows(self, using, rows)

Relay.publish_rows = publish_rows
"""


@pytest.fixture(scope="module")
def racers(server_env: dict[str, str]) -> Iterator[tuple[Shell, Shell]]:
    """Two ``manage.py shell`` processes: one removes bob from the project, the other edits its task."""
    remover, editor = Shell(server_env, "remover").start(), Shell(server_env, "editor").start()
    try:
        remover.run(SLOW_RELAY)
        editor.run("import time\nfrom api.models import Project, Task, User")
        yield remover, editor
    finally:
        remover.close()
        editor.close()


@pytest.mark.asyncio
async def test_an_edit_committed_by_one_process_just_after_another_removed_the_member_never_reaches_them(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, racers: tuple[Shell, Shell]
) -> None:
    server_a, server_b = asgi_servers
    remover, editor = racers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        project = (await create_project(alice, unique("Race"), [bob_id]))["id"]
        task = await create_task(alice, project, "raced")
        await wait_for_empty_outbox(shell)
        remove = f"Project.objects.get(pk={project!r}).members.remove(User.objects.get(pk={bob_id!r}))"
        # The editor commits its edit as soon as it sees the removal committed.
        edit = (
            "deadline = time.monotonic() + 30\n"
            f"while Project.objects.filter(pk={project!r}, members={bob_id!r}).exists():\n"
            "    assert time.monotonic() < deadline, 'the removal never committed'\n"
            "    time.sleep(0.0005)\n"
            f"task = Task.objects.get(pk={task['id']!r})\n"
            "task.title = f'leak {round_}'\n"
            "task.save()\n"
        )
        async with client(server_a, tokens["bob"]) as bob, client(server_b, tokens["alice"]) as watcher:
            await watcher.subscribe(Replica("api.task", id=task["id"]))
            for round_ in range(REVOCATION_ROUNDS):
                if round_:
                    await set_members(alice, project, [bob_id])
                    await wait_for_empty_outbox(shell)
                await bob.subscribe(Replica("api.task", id=task["id"]))
                await bob.subscribe(Replica("api.task", filter={"project": project}))

                # Every other round the remover's relay is slow: its removal is published after the edit.
                slow = 0.3 if round_ % 2 == 0 else 0.0
                await asyncio.gather(
                    editor.arun(f"round_ = {round_}\n{edit}"), remover.arun(f"SLOW = {slow}\n{remove}")
                )

                assert (await watcher.receive())["payload"]["title"] == f"leak {round_}"
                frames = [await recv_json(bob.ws), await recv_json(bob.ws)]
                assert sorted(frames, key=lambda frame: "filter" in frame["meta"]) == [
                    revoked("api.task", id=task["id"]),
                    revoked("api.task", filter={"project": project}),
                ], f"round {round_}"
                await receive_nothing(bob.ws, slow + 0.3)
    print(f"\nrevocation race: {REVOCATION_ROUNDS} rounds, no edit reached bob")


@pytest.mark.asyncio
@pytest.mark.parametrize("model", ["api.task", "api.user"])
@pytest.mark.parametrize("change", ["joined", "left"])
async def test_an_unfiltered_list_follows_the_users_access_when_a_project_shares_or_stops_sharing(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell, change: str, model: str
) -> None:
    server_a, server_b = asgi_servers
    path = {"api.task": "/api/tasks/", "api.user": "/api/users/"}[model]
    other = (await new_users(shell, "x"))["x"]
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        members = [other.id] if change == "joined" else [other.id, bob_id]
        project = (await create_project(alice, unique(change), members))["id"]
        tasks = [await create_task(alice, project, f"task {i}") for i in range(2)]
        await wait_for_empty_outbox(shell)
        shared = {other.id} if model == "api.user" else {task["id"] for task in tasks}
        everything = Replica(model, filter={})  # Neither id nor filter: every object bob may see.
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(everything)
            assert everything.state == {row["id"]: row for row in await get_list(bob_http, path)}
            assert bool(shared & set(everything.state)) is (change == "left")

            # Shared with bob, they enter his list (CREATE_*); hidden from him again, they leave it (DELETE_*).
            await set_members(alice, project, [other.id, bob_id] if change == "joined" else [other.id])
            await wait_for_empty_outbox(shell)
            # Every event is published once the outbox is empty: 3 s bounds only the trip to the socket.
            expected = {row["id"]: row for row in await get_list(bob_http, path)}
            assert bool(shared & set(expected)) is (change == "joined")
            await bob.settle({everything: expected}, timeout=3)
