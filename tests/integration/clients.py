"""What the integration tests do as clients: sockets, REST calls, and a replica of what a client holds.

``Replica`` keeps one target as docs/client.md says a client keeps it (each
event applied once, in seq order, a gap or a repeat detected by ``seq`` and
``meta.prev``), and fails the test the moment a frame breaks that contract. A
test then compares what the replica ends on with the database, read through
the REST API.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.pages import results
from tests.servers import RECV_TIMEOUT, AsgiServer, Shell, recv_json, send_json

# Sockets and REST ----------------------------------------------------------------


@asynccontextmanager
async def socket(server: AsgiServer, token: str) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Token {token}"}
    async with connect(server.ws_url, additional_headers=headers, open_timeout=10, proxy=None) as ws:
        yield ws


@asynccontextmanager
async def rest(server: AsgiServer, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=20) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def body(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else None


async def me(http: httpx.AsyncClient) -> dict[str, Any]:
    return dict(body(await http.get("/api/users/me/")))


async def create_project(http: httpx.AsyncClient, name: str, members: Iterable[str] = ()) -> dict[str, Any]:
    return dict(body(await http.post("/api/projects/", json={"name": name, "members": list(members)}), 201))


async def set_members(http: httpx.AsyncClient, project: str, members: Iterable[str]) -> dict[str, Any]:
    return dict(body(await http.patch(f"/api/projects/{project}/", json={"members": list(members)})))


async def create_task(http: httpx.AsyncClient, project: str, title: str, **fields: Any) -> dict[str, Any]:
    return dict(body(await http.post("/api/tasks/", json={"project": project, "title": title, **fields}), 201))


async def patch_task(http: httpx.AsyncClient, task: str, **fields: Any) -> dict[str, Any]:
    return dict(body(await http.patch(f"/api/tasks/{task}/", json=fields)))


async def delete_task(http: httpx.AsyncClient, task: str) -> None:
    body(await http.delete(f"/api/tasks/{task}/"), 204)


async def get(http: httpx.AsyncClient, path: str) -> Any:
    """What ``GET`` returns now: the database as this user's REST API shows it (a list: its page)."""
    return body(await http.get(path))


async def get_list(http: httpx.AsyncClient, path: str) -> list[Any]:
    """The objects of the REST list at ``path``, which must fit on one page (``tests.pages.results``)."""
    return results(await get(http, path))


async def project_tasks(http: httpx.AsyncClient, project: str) -> dict[str, Any]:
    """The project's task list as this user's REST API shows it, by id."""
    return {row["id"]: row for row in await get_list(http, f"/api/tasks/?project={project}")}


async def website(http: httpx.AsyncClient) -> str:
    """The id of alice's demo project "Website" (bob is a member)."""
    projects = await get_list(http, "/api/projects/")
    return str(next(project for project in projects if project["name"] == "Website")["id"])


# Another process's view of the database ----------------------------------------------


@dataclass(frozen=True)
class User:
    id: str
    token: str
    username: str


def make_users(shell: Shell, *names: str) -> dict[str, User]:
    """Fresh users (no password, nothing shared yet), each with an API token, created by another process."""
    code = (
        "from api.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "result = {}\n"
        f"for name, username in {[(name, unique(name)) for name in names]!r}:\n"
        "    user = User.objects.create_user(username, password=None, display_name=name,"
        " email=f'{username}@example.com')\n"
        "    result[name] = [str(user.pk), Token.objects.create(user=user).key, username]\n"
    )
    return {name: User(*values) for name, values in shell.run(code).items()}


async def new_users(shell: Shell, *names: str) -> dict[str, User]:
    """``make_users`` from a test's event loop."""
    return await asyncio.to_thread(make_users, shell, *names)


def outbox(shell: Shell) -> list[dict[str, Any]]:
    """Every row of drf-live's outbox (``drf_live_outbox``), oldest first."""
    code = (
        "from notifications.models import OutboxEntry\n"
        "result = list(OutboxEntry.objects.order_by('id').values("
        "'id', 'txn', 'kind', 'model', 'object_id', 'owner', 'lease_until', 'created'))\n"
    )
    return list(shell.run(code))


async def wait_for_empty_outbox(shell: Shell, timeout: float = 30.0) -> None:
    """Wait until every outbox row was published (and deleted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while rows := await asyncio.to_thread(outbox, shell):
        if loop.time() > deadline:
            pytest.fail(f"{len(rows)} outbox rows still wait after {timeout} s: {rows[:5]}", pytrace=False)
        await asyncio.sleep(0.2)


# A client's copy of its targets --------------------------------------------------------

EVENT_KINDS = ("CREATE", "UPDATE", "DELETE")


@dataclass(eq=False)
class Replica:
    """What a client holds of one target (an object, or a collection by member id), frame by frame.

    Fails the test on a repeat (a seq at or before the one held), a gap (the
    event's ``meta.prev``, or ``seq - 1`` without it, is not the seq held),
    an event of another target, or a collection event that does not fit what
    the client holds (``CREATE`` of a member it holds; ``UPDATE`` or
    ``DELETE`` of one it does not).
    """

    model: str
    id: str | None = None
    filter: dict[str, str] | None = None
    seq: int | None = None
    epoch: str | None = None
    state: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    recovered: bool = False  # since the last recovery with `since`

    @property
    def target(self) -> dict[str, Any]:
        return {"id": self.id} if self.id is not None else {"filter": self.filter}

    @property
    def key(self) -> tuple[str, str]:
        return target_key(self.model, self.target)

    @property
    def seqs(self) -> list[int]:
        return [event["meta"]["seq"] for event in self.events]

    def take_reply(self, reply: dict[str, Any]) -> None:
        """A ``SUBSCRIBED`` reply: a snapshot, or the promise that the missed events follow."""
        assert reply["type"] == "SUBSCRIBED", reply
        meta = reply["meta"]
        self.replies.append(reply)
        self.recovered = bool(meta.get("recovered"))
        if meta.get("recovered"):
            assert reply["payload"] is None, reply
            assert (meta["seq"], meta["epoch"]) == (self.seq, self.epoch), (reply, self.seq, self.epoch)
            return
        payload = reply["payload"]
        # A collection's snapshot is the first page of its REST list: here, the whole list.
        self.state = payload if self.id is not None else {row["id"]: row for row in results(payload)}
        self.seq, self.epoch = meta["seq"], meta["epoch"]

    def apply(self, frame: dict[str, Any]) -> None:
        """An event frame, applied as a client applies it."""
        kind = frame["type"].split("_", 1)[0]
        assert kind in EVENT_KINDS, frame
        meta = frame["meta"]
        assert target_key(meta["model"], meta) == self.key, (frame, self.target)
        assert self.seq is not None, f"an event before SUBSCRIBED: {frame}"
        seq = meta["seq"]
        assert seq > self.seq, f"a repeat: seq {seq} when the client holds {self.seq}: {frame}"
        assert meta.get("prev", seq - 1) == self.seq, f"a gap: the client holds {self.seq}, got {frame}"
        self.seq = seq
        self.events.append(frame)
        payload = frame["payload"]
        if self.id is not None:
            assert payload["id"] == self.id, frame
            self.state = None if kind == "DELETE" else payload
            return
        member = meta["id"]
        assert payload["id"] == member, frame
        if kind == "CREATE":
            # After a recovery, a CREATE may name a member the client's snapshot already showed
            # (docs/protocol.md): it replaces it. Live, never.
            assert member not in self.state or self.recovered, f"CREATE of a member the client holds: {frame}"
        else:
            assert member in self.state, f"{kind} of a member the client does not hold: {frame}"
        if kind == "DELETE":
            del self.state[member]
        else:
            self.state[member] = payload


def target_key(model: str, meta: dict[str, Any]) -> tuple[str, str]:
    """One key for a target, from a subscribe request or an event's ``meta``."""
    if meta.get("filter") is not None:
        return model, json.dumps(meta["filter"], sort_keys=True)
    return model, str(meta["id"])


class Unavailable(Exception):
    """The server answered ``unavailable`` (its store is down): try again later."""


class Client:
    """One socket and the replicas it subscribed; each frame goes to the replica of its target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replicas: dict[tuple[str, str], Replica] = {}
        self.other: list[dict[str, Any]] = []  # frames that are not events (UNSUBSCRIBED, say)
        self.requests = 0

    async def subscribe(self, replica: Replica, *, recover: bool = False) -> dict[str, Any]:
        """Subscribe ``replica``'s target (with ``since`` and ``epoch`` when recovering); the reply."""
        self.requests += 1
        frame: dict[str, Any] = {"action": "subscribe", "model": replica.model, "request_id": self.requests}
        frame.update(replica.target)
        if recover:
            frame.update(since=replica.seq, epoch=replica.epoch)
        self.replicas[replica.key] = replica
        await send_json(self.ws, frame)
        while True:
            reply = await self.receive()
            if reply["meta"].get("request_id") == self.requests:
                break
        if reply["type"] == "ERROR" and reply["payload"]["code"] == "unavailable":
            raise Unavailable(reply)
        replica.take_reply(reply)
        return reply

    async def receive(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next frame; an event is applied to its replica first."""
        return self.take(await recv_json(self.ws, timeout))

    def take(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A frame read from the socket: an event goes to its replica, anything else to ``other``."""
        kind = frame["type"].split("_", 1)[0]
        if "request_id" not in frame["meta"] and kind in EVENT_KINDS:
            replica = self.replicas.get(target_key(frame["meta"]["model"], frame["meta"]))
            assert replica is not None, f"an event of a target never subscribed: {frame}"
            replica.apply(frame)
        else:
            self.other.append(frame)
        return frame

    async def settle(self, expected: dict[Replica, Any], timeout: float = 20.0, quiet: float = 0.5) -> None:
        """Read until every replica holds what ``expected`` says and no frame came for ``quiet`` seconds.

        A replica may hold the expected state for a while before the last
        events arrive (a later event may carry the same state): frames that
        come during the quiet period are applied too, and must end on it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while any(replica.state != state for replica, state in expected.items()):
                try:
                    text = await asyncio.wait_for(self.ws.recv(), max(deadline - loop.time(), 0.01))
                except TimeoutError:
                    differ = {
                        replica.key: {"holds": replica.state, "expected": state, "seq": replica.seq}
                        for replica, state in expected.items()
                        if replica.state != state
                    }
                    pytest.fail(f"Not converged after {timeout} s: {differ}", pytrace=False)
                self.take(json.loads(text))
            try:
                text = await asyncio.wait_for(self.ws.recv(), quiet)
            except TimeoutError:
                return
            self.take(json.loads(text))
            if loop.time() > deadline:
                pytest.fail(f"Frames kept coming for {timeout} s", pytrace=False)


@asynccontextmanager
async def client(server: AsgiServer, token: str) -> AsyncIterator[Client]:
    async with socket(server, token) as ws:
        yield Client(ws)


@asynccontextmanager
async def recovering(
    server: AsgiServer, token: str, replicas: Iterable[Replica], attempts: int = 10
) -> AsyncIterator[Client]:
    """A new socket that resubscribed every replica with ``since`` and ``epoch``, as a client reconnects.

    Right after Redis comes back a subscribe may still answer ``unavailable``,
    or the socket may be closed with 4031: then it tries again, with backoff.
    """
    replicas = list(replicas)
    for attempt in range(attempts):
        async with client(server, token) as live:
            try:
                for replica in replicas:
                    await live.subscribe(replica, recover=True)
            except (Unavailable, ConnectionClosed):
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            yield live
            return
    pytest.fail(f"Could not resubscribe within {attempts} attempts", pytrace=False)


async def frames_until_closed(ws: ClientConnection, timeout: float = 15.0) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the socket, and the close code; fails after ``timeout``."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            text = await asyncio.wait_for(ws.recv(), max(deadline - loop.time(), 0.01))
        except ConnectionClosed as closed:
            return frames, closed.rcvd.code if closed.rcvd is not None else None
        except TimeoutError:
            pytest.fail(f"The socket was not closed within {timeout} s; received {frames}", pytrace=False)
        frames.append(json.loads(text))


async def error_reply(ws: ClientConnection, frame: dict[str, Any]) -> str:
    """Send ``frame``; the code of the ``ERROR`` it is answered with."""
    await send_json(ws, frame)
    reply = await recv_json(ws)
    assert reply["type"] == "ERROR", reply
    return str(reply["payload"]["code"])
