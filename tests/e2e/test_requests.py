"""Requests over a real socket answered as the REST API answers them: every reply compared with REST.

For each demo user, every object and list of users, projects and tasks that
the REST API shows them is asked again on the socket (``retrieve``, ``list``,
with and without a filter, page by page), and the two answers must be equal
once parsed. A real uvicorn, with the in-memory store and with Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.conftest import Live
from tests.pages import results
from tests.servers import recv_json, send_json

pytestmark = pytest.mark.e2e

_ids = itertools.count(1)


@asynccontextmanager
async def session(live: Live, user: str) -> AsyncIterator[tuple[ClientConnection, httpx.AsyncClient]]:
    headers = {"Authorization": f"Token {live.tokens[user]}"}
    async with (
        connect(live.server.ws_url, additional_headers=headers, open_timeout=10, proxy=None) as ws,
        httpx.AsyncClient(base_url=live.server.http_url, headers=headers, timeout=20) as http,
    ):
        yield ws, http


async def ask(ws: ClientConnection, **frame: Any) -> dict[str, Any]:
    request_id = next(_ids)
    await send_json(ws, {**frame, "request_id": request_id})
    reply = await recv_json(ws)
    assert reply["meta"].get("request_id") == request_id, reply
    return reply


async def rest_get(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def rest_pages(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every page of the REST list at ``path``, first to last, following each page's ``next`` link."""
    pages = [await rest_get(http, path)]
    while pages[-1]["next"]:
        pages.append(await rest_get(http, pages[-1]["next"].removeprefix(str(http.base_url).rstrip("/"))))
    return pages


@pytest.mark.asyncio
@pytest.mark.parametrize("user", ["alice", "bob"])
async def test_every_socket_reply_equals_the_same_users_rest_response(live: Live, user: str) -> None:
    async with session(live, user) as (ws, http):
        for model, url in (("api.user", "/api/users/"), ("api.project", "/api/projects/"), ("api.task", "/api/tasks/")):
            for number, expected in enumerate(await rest_pages(http, url), start=1):
                listed = await ask(ws, action="list", model=model, page=number)
                assert listed["type"] == "LISTED"
                assert listed["payload"] == expected  # count, next, previous and results, links included
                for obj in expected["results"]:
                    retrieved = await ask(ws, action="retrieve", model=model, id=obj["id"])
                    assert retrieved["type"] == "RETRIEVED"
                    assert retrieved["payload"] == await rest_get(http, f"{url}{obj['id']}/")
        for page in await rest_pages(http, "/api/projects/"):
            for project in page["results"]:
                collection = await ask(ws, action="list", model="api.task", filter={"project": project["id"]})
                assert collection["payload"] == await rest_get(http, f"/api/tasks/?project={project['id']}")


@pytest.mark.asyncio
async def test_what_a_user_may_not_see_is_not_found_on_the_socket_as_in_rest(live: Live) -> None:
    async with session(live, "alice") as (_ws, alice_http):
        private = (
            await alice_http.post(
                "/api/tasks/",
                json={"project": await website_id(alice_http), "title": "Alice's private task", "private": True},
            )
        ).json()
    async with session(live, "bob") as (ws, http):
        assert (await http.get(f"/api/tasks/{private['id']}/")).status_code == 404
        reply = await ask(ws, action="retrieve", model="api.task", id=private["id"])
        assert reply["error"] is True
        assert reply["payload"] == {"code": "not_found", "detail": "No such object."}
        bobs_tasks = await rest_get(http, "/api/tasks/")
        assert private["id"] not in {task["id"] for task in results(bobs_tasks)}
        assert (await ask(ws, action="list", model="api.task"))["payload"] == bobs_tasks


@pytest.mark.asyncio
async def test_pages_of_a_long_list_are_the_rest_pages(live: Live) -> None:
    async with session(live, "alice") as (ws, http):
        created = await http.post("/api/projects/", json={"name": "Long list"})
        assert created.status_code == 201, created.text
        project = created.json()
        try:
            for n in range(55):
                created = await http.post("/api/tasks/", json={"project": project["id"], "title": f"Item {n:02d}"})
                assert created.status_code == 201, created.text
            pages = await rest_pages(http, f"/api/tasks/?project={project['id']}")
            assert [(page["count"], len(page["results"])) for page in pages] == [(55, 50), (55, 5)]
            first = pages[0]

            for number, expected in enumerate(pages, start=1):
                reply = await ask(ws, action="list", model="api.task", filter={"project": project["id"]}, page=number)
                assert reply["payload"] == expected  # count, next, previous and results, links included

            # A subscription's snapshot is the first page, and the socket's next page is the REST one.
            subscribed = await ask(ws, action="subscribe", model="api.task", filter={"project": project["id"]})
            assert subscribed["payload"] == first
            second = await ask(ws, action="list", model="api.task", filter={"project": project["id"]}, page=2)
            assert second["payload"] == pages[1]
            assert second["meta"]["seq"] == subscribed["meta"]["seq"]
        finally:
            # Both servers of the module share its database, and its other tests read alice's lists.
            deleted = await http.delete(f"/api/projects/{project['id']}/")
            assert deleted.status_code == 204, deleted.text


async def website_id(http: httpx.AsyncClient) -> str:
    return str(next(p for p in results(await rest_get(http, "/api/projects/")) if p["name"] == "Website")["id"])
