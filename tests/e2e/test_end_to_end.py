"""The whole path over real sockets: REST write over HTTP, commit, push to a WebSocket client."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.e2e.conftest import Live
from tests.pages import results
from tests.servers import (
    DEMO_PASSWORD,
    ServerDatabase,
    manage,
    obtain_token,
    process_env,
    receive_nothing,
    recv_json,
    send_json,
    subscribe,
)

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def socket(live: Live, user: str) -> AsyncIterator[ClientConnection]:
    """A WebSocket authenticated by ``user``'s token header (no ``Origin``: not a browser)."""
    headers = {"Authorization": f"Token {live.tokens[user]}"}
    async with connect(live.server.ws_url, additional_headers=headers, open_timeout=10) as ws:
        yield ws


@asynccontextmanager
async def rest(live: Live, user: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Token {live.tokens[user]}"}
    async with httpx.AsyncClient(base_url=live.server.http_url, headers=headers, timeout=10) as http:
        yield http


async def new_task(live: Live, title: str) -> dict[str, Any]:
    """A task that alice creates in her "Website" project (bob is a member) over the REST API."""
    async with rest(live, "alice") as http:
        projects = results((await http.get("/api/projects/")).json())
        website = next(project for project in projects if project["name"] == "Website")
        response = await http.post("/api/tasks/", json={"project": website["id"], "title": title})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.asyncio
async def test_token_endpoint_answers_the_demo_users_and_refuses_a_wrong_password(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.server.http_url, timeout=10) as http:
        assert await obtain_token(http, "alice", DEMO_PASSWORD) == live.tokens["alice"]
        response = await http.post("/api/auth/token/", json={"username": "alice", "password": "wrong"})
    assert response.status_code == 400


@pytest.mark.asyncio
async def test_patch_over_rest_arrives_as_update_with_the_rest_payload(live: Live) -> None:
    task = await new_task(live, "Write the docs")
    async with socket(live, "bob") as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])
        assert subscribed["payload"] == task
        assert subscribed["meta"]["model"] == "api.task"
        assert subscribed["meta"]["id"] == task["id"]

        async with rest(live, "alice") as http:
            response = await http.patch(f"/api/tasks/{task['id']}/", json={"title": "Write the docs today"})
        assert response.status_code == 200, response.text

        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == response.json()
        assert event["meta"]["model"] == "api.task"
        assert event["meta"]["id"] == task["id"]
        assert event["meta"]["changed"] == ["title"]
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        assert "error" not in event
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_invalid_patch_sends_nothing(live: Live) -> None:
    task = await new_task(live, "Stay as you are")
    async with socket(live, "bob") as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])

        async with rest(live, "alice") as http:
            refused = await http.patch(f"/api/tasks/{task['id']}/", json={"title": "", "done": True})
            assert refused.status_code == 400, refused.text
            await receive_nothing(ws)

            # A write that does commit comes next, with the very next seq: nothing was spent.
            accepted = await http.patch(f"/api/tasks/{task['id']}/", json={"done": True})
        assert accepted.status_code == 200, accepted.text
        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        assert event["meta"]["changed"] == ["done"]
        assert event["payload"] == {**task, "done": True}
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_patch_that_changes_nothing_sends_nothing(live: Live) -> None:
    task = await new_task(live, "Unchanged")
    async with socket(live, "bob") as ws:
        await subscribe(ws, "api.task", id=task["id"])
        async with rest(live, "alice") as http:
            response = await http.patch(f"/api/tasks/{task['id']}/", json={"title": "Unchanged"})
        assert response.status_code == 200, response.text
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_delete_over_rest_arrives_as_delete(live: Live) -> None:
    task = await new_task(live, "Short-lived")
    async with socket(live, "bob") as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])

        async with rest(live, "alice") as http:
            response = await http.delete(f"/api/tasks/{task['id']}/")
        assert response.status_code == 204, response.text

        event = await recv_json(ws)
        assert event["type"] == "DELETE_TASK"
        assert event["payload"] == {"id": task["id"]}
        assert event["meta"]["id"] == task["id"]
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_create_arrives_in_the_project_collection(live: Live) -> None:
    async with rest(live, "alice") as http:
        projects = results((await http.get("/api/projects/")).json())
        website = next(project for project in projects if project["name"] == "Website")
        listed = (await http.get("/api/tasks/", params={"project": website["id"]})).json()
    async with socket(live, "bob") as ws:
        subscribed = await subscribe(ws, "api.task", filter={"project": website["id"]})
        assert subscribed["payload"] == listed

        task = await new_task(live, "Born live")

        event = await recv_json(ws)
        assert event["type"] == "CREATE_TASK"
        assert event["payload"] == task
        assert event["meta"]["filter"] == {"project": website["id"]}
        assert event["meta"]["seq"] == subscribed["meta"]["seq"] + 1
        await receive_nothing(ws)


@pytest.mark.asyncio
async def test_only_the_user_themself_gets_their_email(live: Live) -> None:
    async with rest(live, "alice") as http:
        alice = (await http.get("/api/users/me/")).json()
    async with socket(live, "alice") as own, socket(live, "bob") as other:
        mine = await subscribe(own, "api.user", id=alice["id"])
        theirs = await subscribe(other, "api.user", id=alice["id"])
        assert mine["payload"]["email"] == "alice@example.com"
        assert "email" not in theirs["payload"]

        display_name = f"Alice {uuid.uuid4().hex[:6]}"
        async with rest(live, "alice") as http:
            response = await http.patch(f"/api/users/{alice['id']}/", json={"display_name": display_name})
        assert response.status_code == 200, response.text

        own_event, other_event = await recv_json(own), await recv_json(other)
        assert own_event["type"] == other_event["type"] == "UPDATE_USER"
        assert own_event["payload"] == response.json()
        assert own_event["payload"]["email"] == "alice@example.com"
        assert other_event["payload"] == {key: value for key, value in response.json().items() if key != "email"}
        assert own_event["meta"]["changed"] == other_event["meta"]["changed"] == ["display_name"]
        assert own_event["meta"]["seq"] == other_event["meta"]["seq"] == mine["meta"]["seq"] + 1
        await receive_nothing(own)
        await receive_nothing(other)


async def session_cookie(live: Live, username: str) -> str:
    """Log in through DRF's browsable-API login form, as a browser would; the ``sessionid``."""
    async with httpx.AsyncClient(base_url=live.server.http_url, timeout=10) as http:
        form = await http.get("/api-auth/login/")
        assert form.status_code == 200, form.text
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert match is not None, "no CSRF token in the login form"
        response = await http.post(
            "/api-auth/login/",
            data={
                "username": username,
                "password": DEMO_PASSWORD,
                "csrfmiddlewaretoken": match.group(1),
                "next": "/api/",
            },
        )
        assert response.status_code == 302, response.text
        session = http.cookies.get("sessionid")
    assert session, "the login did not set a session cookie"
    return str(session)


@pytest.mark.asyncio
async def test_session_cookie_from_an_allowed_origin_subscribes(live: Live) -> None:
    task = await new_task(live, "Seen from a browser")
    headers = {"Cookie": f"sessionid={await session_cookie(live, 'bob')}"}
    origin = Origin(f"http://127.0.0.1:{live.server.port}")

    async with connect(live.server.ws_url, origin=origin, additional_headers=headers, open_timeout=10) as ws:
        subscribed = await subscribe(ws, "api.task", id=task["id"])
        assert subscribed["payload"] == task

        async with rest(live, "alice") as http:
            response = await http.patch(f"/api/tasks/{task['id']}/", json={"done": True})
        assert response.status_code == 200, response.text
        event = await recv_json(ws)
        assert event["type"] == "UPDATE_TASK"
        assert event["payload"] == response.json()


@pytest.mark.asyncio
async def test_session_cookie_from_another_origin_is_refused_with_403(live: Live) -> None:
    headers = {"Cookie": f"sessionid={await session_cookie(live, 'bob')}"}

    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            live.server.ws_url, origin=Origin("https://evil.example"), additional_headers=headers, open_timeout=10
        ):
            pass

    assert refused.value.response.status_code == 403


@pytest.mark.asyncio
async def test_token_header_without_origin_is_accepted(live: Live) -> None:
    async with socket(live, "bob") as ws:
        await send_json(ws, {"action": "ping", "request_id": "p"})
        pong = await recv_json(ws)
        assert pong == {"type": "PONG", "payload": None, "meta": {"request_id": "p"}}
        await receive_nothing(ws)


COUNTS = (
    "import json; from api.models import Project, Task, User; "
    "from rest_framework.authtoken.models import Token; "
    "print(json.dumps({'users': User.objects.count(), 'projects': Project.objects.count(), "
    "'tasks': Task.objects.count(), 'tokens': Token.objects.count(), "
    "'members': Project.members.through.objects.count()}))"
)


def test_load_demo_is_idempotent() -> None:
    database = ServerDatabase()
    try:
        env = process_env(database.url)
        manage("migrate", "--noinput", env=env)
        manage("load_demo", "--quiet", env=env)
        first = json.loads(manage("shell", "-c", COUNTS, env=env).strip().splitlines()[-1])
        manage("load_demo", "--quiet", env=env)
        second = json.loads(manage("shell", "-c", COUNTS, env=env).strip().splitlines()[-1])
    finally:
        database.drop()

    assert first == {"users": 3, "projects": 2, "tasks": 3, "tokens": 3, "members": 2}
    assert second == first
