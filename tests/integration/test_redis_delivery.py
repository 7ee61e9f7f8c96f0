"""Events that cross processes through a real Redis: written in one process, delivered by another.

The stream store itself (seq, epoch, history, registrations, listeners) is
tested on a real redis-server in ``tests/notifications/test_streams.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.integration.clients import get_list
from tests.servers import (
    MANAGE,
    PYTHON,
    ROOT,
    AsgiServer,
    free_port,
    manage,
    receive_nothing,
    recv_json,
    subscribe,
)

pytestmark = pytest.mark.e2e


# Across processes --------------------------------------------------------------


async def new_task(server: AsgiServer, token: str, title: str) -> dict[str, Any]:
    """A task in alice's "Website" project (bob is a member), created through the REST API."""
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=10) as http:
        projects = await get_list(http, "/api/projects/")
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


def _exit_code(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in ``manage.py shell`` and let the process exit (atexit handlers run)."""
    return subprocess.run(
        [PYTHON, MANAGE, "shell", "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.asyncio
async def test_a_write_by_a_process_whose_redis_is_unreachable_commits_and_reaches_sockets_through_a_sweep(
    asgi_servers: tuple[AsgiServer, AsgiServer], server_env: dict[str, str], tokens: dict[str, str]
) -> None:
    server = asgi_servers[0]
    task = await new_task(server, tokens["alice"], "Saved while Redis is away")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**server_env, "DRF_LIVE": json.dumps({"STORE_URL": dead})}
    title = f"saved while the store was down {uuid.uuid4().hex[:6]}"
    code = (
        f"from api.models import Task; task = Task.objects.get(pk={task['id']!r}); task.title = {title!r}; task.save()"
    )

    async with connect(server.ws_url, additional_headers={"Authorization": f"Token {tokens['bob']}"}) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])

        done = await asyncio.to_thread(_exit_code, code, env)

        # The write commits, and says where its event waits.
        assert done.returncode == 0, done.stderr
        assert "the events wait in the outbox" in done.stderr
        # A server process sweeps the outbox and publishes it (after OUTBOX_GRACE or the retry delay).
        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == {**task, "title": title}
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        assert event["meta"]["changed"] == ["title"]
        await receive_nothing(ws)
