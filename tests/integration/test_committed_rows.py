"""An event carries the committed row, as each subscriber's ``GET`` shows it, and only to those who may see it.

Every write here is made by another process than the one serving the socket
(the other server's REST API, or ``manage.py shell``), and every expected frame
is compared with what the same user's REST API returns after the commit.
"""

from __future__ import annotations

import pytest

from tests.integration.clients import (
    Replica,
    client,
    create_project,
    create_task,
    delete_task,
    error_reply,
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
    website,
)
from tests.servers import AsgiServer, Shell, receive_nothing

pytestmark = pytest.mark.e2e


@pytest.mark.asyncio
async def test_the_push_carries_the_committed_row_not_the_writers_object(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice:
        task = await create_task(alice, await website(alice), unique("committed"))
        replica = Replica("api.task", id=task["id"])
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(replica)

            # The writer changes its object after the save, before the commit.
            await shell.arun(
                "from django.db import transaction\n"
                "from api.models import Task\n"
                "with transaction.atomic():\n"
                f"    task = Task.objects.get(pk={task['id']!r})\n"
                "    task.title = 'saved'\n"
                "    task.save()\n"
                "    task.title = 'never-saved'\n"
            )
            event = await bob.receive()
            assert event["type"] == "UPDATE_TASK"
            assert event["payload"] == {**task, "title": "saved"} == await get(alice, f"/api/tasks/{task['id']}/")
            assert event["meta"]["changed"] == ["title"]
            await receive_nothing(bob.ws)

            # A savepoint that rolls back takes its save with it: alone, nothing is sent;
            # next to a save that commits, the push shows only what committed.
            await shell.arun(
                "def rolled_back(task):\n"
                "    try:\n"
                "        with transaction.atomic():\n"
                "            task.title = 'rolled-back'\n"
                "            task.save()\n"
                "            raise RuntimeError('roll the savepoint back')\n"
                "    except RuntimeError:\n"
                "        pass\n"
                "with transaction.atomic():\n"
                f"    rolled_back(Task.objects.get(pk={task['id']!r}))\n"
                "with transaction.atomic():\n"
                f"    task = Task.objects.get(pk={task['id']!r})\n"
                "    task.done = True\n"
                "    task.save()\n"
                "    rolled_back(task)\n"
            )
            event = await bob.receive()  # The next seq: the first transaction published nothing.
            assert event["type"] == "UPDATE_TASK"
            assert event["payload"] == {**task, "title": "saved", "done": True}
            assert event["payload"] == await get(alice, f"/api/tasks/{task['id']}/")
            assert event["meta"]["changed"] == ["done"]
            await receive_nothing(bob.ws)


@pytest.mark.asyncio
async def test_a_projects_subscribers_get_its_open_tasks_fresh_when_its_tasks_change(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        counted = await create_project(alice, unique("Counted"), [bob_id])
        other = await create_project(alice, unique("Other"), [bob_id])
        await wait_for_empty_outbox(shell)  # Their own events (members set after the create) are out.
        project, elsewhere = Replica("api.project", id=counted["id"]), Replica("api.project", id=other["id"])
        async with client(server_a, tokens["bob"]) as bob:
            assert (await bob.subscribe(project))["payload"]["open_tasks"] == 0
            await bob.subscribe(elsewhere)

            async def open_tasks(replica: Replica, count: int) -> None:
                """bob gets UPDATE_PROJECT for ``replica`` with the count ``GET`` shows him now."""
                event = await bob.receive()
                assert event["meta"]["id"] == replica.id, event
                assert event["type"] == "UPDATE_PROJECT"
                assert event["meta"]["changed"] == ["open_tasks"]
                assert event["payload"] == await get(bob_http, f"/api/projects/{replica.id}/")
                assert event["payload"]["open_tasks"] == count

            first = await create_task(alice, counted["id"], "one")
            await open_tasks(project, 1)
            second = await create_task(alice, counted["id"], "two")
            await open_tasks(project, 2)
            await patch_task(alice, first["id"], done=True)  # ticked
            await open_tasks(project, 1)
            # A rename does not change the count: no event (the replica would see a gap or an extra seq).
            await patch_task(alice, first["id"], title="one, renamed")
            await patch_task(alice, first["id"], done=False)  # reopened
            await open_tasks(project, 2)
            await delete_task(alice, second["id"])
            await open_tasks(project, 1)
            # Moved to another project: both counts change.
            await patch_task(alice, first["id"], project=other["id"])
            expected = {
                project: await get(bob_http, f"/api/projects/{counted['id']}/"),
                elsewhere: await get(bob_http, f"/api/projects/{other['id']}/"),
            }
            await bob.settle(expected)
            assert (project.state["open_tasks"], elsewhere.state["open_tasks"]) == (0, 1)
            assert [event["meta"]["changed"] for event in project.events + elsewhere.events] == [["open_tasks"]] * 7
            assert project.seqs == [1, 2, 3, 4, 5, 6] and elsewhere.seqs == [1]
    print(f"\nopen_tasks seen: {[event['payload']['open_tasks'] for event in project.events]}")


@pytest.mark.asyncio
async def test_a_private_task_reaches_only_its_assignee_and_the_owner(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        alice_id, bob_id = (await me(alice))["id"], (await me(bob_http))["id"]
        project = await create_project(alice, unique("Private"), [bob_id])
        await wait_for_empty_outbox(shell)
        tasks = {"project": project["id"]}
        bobs, alices = Replica("api.task", filter=tasks), Replica("api.task", filter=tasks)
        async with client(server_a, tokens["bob"]) as bob, client(server_b, tokens["alice"]) as owner:
            await bob.subscribe(bobs)
            await owner.subscribe(alices)

            async def alice_sees(kind: str) -> dict:
                """alice (the owner) gets every change; only once she has it does bob's absence mean anything."""
                event = await owner.receive()
                assert event["type"] == f"{kind}_TASK", event
                return event

            hidden = await create_task(alice, project["id"], "hidden", private=True, assignee=alice_id)
            await alice_sees("CREATE")
            await receive_nothing(bob.ws)
            await patch_task(alice, hidden["id"], title="hidden, edited")
            await alice_sees("UPDATE")
            await receive_nothing(bob.ws)
            peek = {"action": "subscribe", "model": "api.task", "id": hidden["id"], "request_id": "peek"}
            assert await error_reply(bob.ws, peek) == "not_found"

            # Made public: bob is told of it as a new member, and that he was sent nothing for two events.
            await patch_task(alice, hidden["id"], private=False)
            await alice_sees("UPDATE")
            shown = await bob.receive()
            assert shown["type"] == "CREATE_TASK"
            assert shown["payload"] == await get(bob_http, f"/api/tasks/{hidden['id']}/")
            assert shown["meta"]["seq"] == alices.seq
            assert shown["meta"]["prev"] == bobs.replies[0]["meta"]["seq"] == alices.seq - 3

            # Private again: it leaves bob's list.
            await patch_task(alice, hidden["id"], private=True)
            await alice_sees("UPDATE")
            gone = await bob.receive()
            assert gone["type"] == "DELETE_TASK"
            assert gone["payload"] == {"id": hidden["id"]}
            assert "prev" not in gone["meta"]
            assert bobs.state == {}

            # Another private task, created, edited and deleted: never even its id reaches bob.
            other = await create_task(alice, project["id"], "other", private=True, assignee=alice_id)
            await alice_sees("CREATE")
            await patch_task(alice, other["id"], title="other, edited")
            await alice_sees("UPDATE")
            await delete_task(alice, other["id"])
            await alice_sees("DELETE")
            await receive_nothing(bob.ws)

            # Assigned to bob, still private: he may see it now.
            await patch_task(alice, hidden["id"], assignee=bob_id)
            await alice_sees("UPDATE")
            assigned = await bob.receive()
            assert assigned["type"] == "CREATE_TASK"
            assert assigned["payload"] == await get(bob_http, f"/api/tasks/{hidden['id']}/")
            assert assigned["payload"]["private"] is True
            assert assigned["meta"]["prev"] == gone["meta"]["seq"] == alices.seq - 4
            await receive_nothing(bob.ws)
            assert (await bob.subscribe(Replica("api.task", id=hidden["id"])))["payload"] == assigned["payload"]

            # Taken back: bob loses the task (its subscription) and it leaves his list.
            await patch_task(alice, hidden["id"], assignee=alice_id)
            await alice_sees("UPDATE")
            frames = [await bob.receive(), await bob.receive()]
            assert {frame["type"] for frame in frames} == {"UNSUBSCRIBED", "DELETE_TASK"}
            assert next(frame for frame in frames if frame["type"] == "UNSUBSCRIBED")["meta"] == {
                "model": "api.task",
                "id": hidden["id"],
                "reason": "revoked",
            }
            await receive_nothing(bob.ws)

            assert bobs.state == await project_tasks(bob_http, project["id"])
            assert alices.state == await project_tasks(alice, project["id"])
            assert set(bobs.seqs) < set(alices.seqs)
    print(f"\nprivate task: bob was sent seqs {bobs.seqs} of {alices.seqs}")


@pytest.mark.asyncio
async def test_changed_names_only_the_fields_each_user_can_see(
    asgi_servers: tuple[AsgiServer, AsgiServer], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    users = await new_users(shell, "ann", "ben")
    ann, ben = users["ann"], users["ben"]
    async with rest(server_b, ann.token) as ann_http, rest(server_a, ben.token) as ben_http:
        await create_project(ann_http, unique("Shared"), [ben.id])
        await wait_for_empty_outbox(shell)
        own, theirs = Replica("api.user", id=ann.id), Replica("api.user", id=ann.id)
        async with client(server_b, ann.token) as ann_socket, client(server_a, ben.token) as ben_socket:
            await ann_socket.subscribe(own)
            await ben_socket.subscribe(theirs)
            assert "email" in own.state and "email" not in theirs.state

            # There is no REST route for the email: another process changes it, with the display name.
            await shell.arun(
                "from api.models import User\n"
                f"user = User.objects.get(pk={ann.id!r})\n"
                "user.display_name = 'Ann, renamed'\n"
                "user.email = 'ann.renamed@example.com'\n"
                "user.save()\n"
            )
            mine = await ann_socket.receive()
            assert sorted(mine["meta"]["changed"]) == ["display_name", "email"]
            assert mine["payload"] == await get(ann_http, "/api/users/me/")
            assert mine["payload"]["email"] == "ann.renamed@example.com"
            seen = await ben_socket.receive()
            assert seen["meta"]["changed"] == ["display_name"]
            assert seen["payload"] == await get(ben_http, f"/api/users/{ann.id}/")
            assert "email" not in seen["payload"]

            # The email alone: ann is told, ben is sent nothing ...
            await shell.arun(
                f"user = User.objects.get(pk={ann.id!r}); user.email = 'ann.again@example.com'; user.save()"
            )
            mine = await ann_socket.receive()
            assert mine["meta"]["changed"] == ["email"]
            assert mine["payload"]["email"] == "ann.again@example.com"
            await receive_nothing(ben_socket.ws)

            # ... and his next event says which seq he was sent last.
            response = await ann_http.patch(f"/api/users/{ann.id}/", json={"display_name": "Ann, again"})
            assert response.status_code == 200, response.text
            mine, seen = await ann_socket.receive(), await ben_socket.receive()
            assert mine["meta"]["changed"] == seen["meta"]["changed"] == ["display_name"]
            assert seen["meta"]["seq"] == mine["meta"]["seq"] == own.seq
            assert seen["meta"]["prev"] == seen["meta"]["seq"] - 2
            assert theirs.state == await get(ben_http, f"/api/users/{ann.id}/")
            assert own.state == await get(ann_http, "/api/users/me/")
            await receive_nothing(ben_socket.ws)
            await receive_nothing(ann_socket.ws)


@pytest.mark.asyncio
async def test_a_change_of_who_sees_a_user_sends_nothing_to_those_who_still_see_the_same(
    asgi_servers: tuple[AsgiServer, AsgiServer], tokens: dict[str, str], shell: Shell
) -> None:
    server_a, server_b = asgi_servers
    x = (await new_users(shell, "x"))["x"]
    async with rest(server_b, tokens["alice"]) as alice, rest(server_a, tokens["bob"]) as bob_http:
        bob_id = (await me(bob_http))["id"]
        await create_project(alice, unique("Shared with bob"), [bob_id, x.id])
        elsewhere = (await create_project(alice, unique("Not bob's"), [x.id]))["id"]
        await wait_for_empty_outbox(shell)
        async with client(server_a, tokens["bob"]) as bob:
            await bob.subscribe(Replica("api.user", id=x.id))
            everyone = Replica("api.user", filter={})
            await bob.subscribe(everyone)
            assert x.id in everyone.state

            # x leaves a project bob is not in: bob still sees x, exactly as before.
            await set_members(alice, elsewhere, [])
            await wait_for_empty_outbox(shell)
            await receive_nothing(bob.ws)
            assert everyone.state == {row["id"]: row for row in await get_list(bob_http, "/api/users/")}
