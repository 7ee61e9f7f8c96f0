"""Hostile input: whatever a client sends, the consumer answers by the protocol and leaks nothing.

Three strategies feed ``NotificationConsumer`` (over the full stack:
``notifications.routing.websocket_application()``): arbitrary JSON values,
arbitrary strings and binary frames, and dicts built from the protocol's keys
with arbitrary values, real ids of visible and invisible objects and labels of
registered and unregistered models. Each example goes to one of two sockets,
reused across examples: alice's (token header) or one that starts
unauthenticated (and may authenticate with a real token the example names).
After every frame a ``ping`` with a fresh ``request_id`` marks the end of its
replies, and every example asserts:

- the frame got exactly one reply, or the socket closed with a documented code
  (1009, 4001, 4008, 4029), in which case it is reopened for the next example;
- the reply is a well-formed FSA: an error with a documented ``payload.code``
  (never ``unavailable``: that is an unexpected exception), or ``SUBSCRIBED``,
  ``UNSUBSCRIBED``, ``PONG``, ``AUTHENTICATED``;
- ``meta.request_id`` echoes the frame's ``request_id`` when it is a valid one,
  and is absent otherwise;
- no frame names or carries an object the socket's user may not see, and every
  ``SUBSCRIBED`` payload is exactly what the REST API returns to that user.

Examples never write, so the domain is built once per test function.
Profiles are in conftest.py: ``ci`` (300 examples per strategy, ``make test``)
and ``fuzz`` (3,400 per strategy, ``make fuzz``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from hypothesis import example, given
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from notifications.routing import websocket_application
from tests.pages import results

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

PATH = "/ws/notifications/"
ERROR_CODES = {
    "parse_error", "invalid", "unknown_action", "not_found", "not_authenticated", "throttled", "limit_exceeded",
    "not_allowed",
}  # fmt: skip
REPLY_TYPES = {"SUBSCRIBED", "UNSUBSCRIBED", "PONG", "AUTHENTICATED", "RETRIEVED", "LISTED"}
CLOSE_CODES = {1009, 4001, 4008, 4029}
MODELS = {"api.user": "users", "api.project": "projects", "api.task": "tasks"}
# Requests are validated, not throttled (every frame is followed by a ping), the
# address may keep guessing tokens, and the unauthenticated socket waits: these
# limits have tests of their own (tests/notifications/test_limits.py). Errors
# and a socket's wrong tokens keep their defaults, so a socket may be closed for
# flooding (4008).
FUZZ_SETTINGS = {
    "SUBSCRIBE_BURST": 10**9,
    "ACTION_BUDGETS": {action: [1, 10**9] for action in ("ping", "unsubscribe", "authenticate", "*")},
    "AUTH_FAILURE_BURST": 10**9,
    "AUTH_TIMEOUT": 3600,
}


# References to the world's ids and tokens, resolved when an example is sent ------------


@dataclass(frozen=True)
class IdRef:
    """The wire id of a named object of the domain (or of one that was deleted)."""

    name: str


@dataclass(frozen=True)
class TokenRef:
    """The API token of a named user."""

    name: str


@dataclass(frozen=True)
class EpochRef:
    """The epoch this socket was last told for the frame's target (``"none"`` before any)."""


OBJECTS = ["alice", "bob", "carol", "dave", "erin", "website", "secret", "task", "hidden", "gone_task", "gone_project"]
TOKEN_USERS = ["alice", "bob", "carol", "dave", "erin"]
LABELS = [
    "api.task", "api.Task", "API.TASK", "api.user", "api.User", "api.project", "api.Project",
    "auth.user", "auth.permission", "authtoken.token", "sessions.session", "contenttypes.contenttype",
    "api", "api.", "", ".", "api.task.x", "api.nope", "notifications.registration",
]  # fmt: skip
ACTIONS = [
    "subscribe", "unsubscribe", "ping", "authenticate", "retrieve", "list", "Subscribe", "", "update",
    "partial_update", "destroy", "delete", "create", "recheck",
]  # fmt: skip
FILTER_KEYS = ["project", "id", "title", "assignee", "owner", "members", "project__owner", "pk"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ids = st.builds(IdRef, st.sampled_from(OBJECTS))
protocol_values = {
    "action": st.sampled_from(ACTIONS) | json_values,
    "model": st.sampled_from(LABELS) | json_values,
    "id": ids | st.text(max_size=20) | json_values,
    "filter": st.dictionaries(st.sampled_from(FILTER_KEYS) | st.text(max_size=8), ids | json_values, max_size=3)
    | json_values,
    "since": st.integers(min_value=-2, max_value=5) | json_values,
    "epoch": st.just(EpochRef()) | st.text(max_size=20) | json_values,
    "request_id": (
        st.text(max_size=120) | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | json_values
    ),
    "token": st.builds(TokenRef, st.sampled_from(TOKEN_USERS)) | st.text(max_size=50) | json_values,
}
# Any subset of the protocol's keys, with hostile values: mostly refused before it gets far.
wild_dicts = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional=protocol_values),
    st.dictionaries(st.text(max_size=8), json_values, max_size=2),
)
# A well-formed request (to a visible or an invisible object) with at most one hostile
# key: these get past the parsing into validation, the REST rules and the snapshot.
mutation = (
    st.just({})
    | st.just({})
    | st.sampled_from(sorted(protocol_values)).flatmap(lambda key: protocol_values[key].map(lambda value: {key: value}))
)
request_ids = st.fixed_dictionaries({}, optional={"request_id": st.text(max_size=10) | st.integers()})
OBJECTS_OF = {
    "api.user": ["alice", "bob", "carol", "dave", "erin"],
    "api.project": ["website", "secret", "gone_project"],
    "api.task": ["task", "hidden", "gone_task"],
}
# Ids of the model named (visible, invisible, deleted), and ids of anything under any label.
matched_targets = st.sampled_from([(label, name) for label, names in OBJECTS_OF.items() for name in names]).map(
    lambda pair: {"model": pair[0], "id": IdRef(pair[1])}
) | st.sampled_from(OBJECTS_OF["api.project"]).map(
    lambda name: {"model": "api.task", "filter": {"project": IdRef(name)}}
)
targets = st.one_of(
    matched_targets,
    matched_targets,
    st.fixed_dictionaries({"model": st.sampled_from(LABELS[:7]), "id": ids}),
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["api.task", "api.Task", "api.project"]),
            "filter": st.fixed_dictionaries({"project": ids}),
        }
    ),
)
near_requests = st.builds(
    lambda action, target, recovery, request_id, mutated: {**action, **target, **recovery, **request_id, **mutated},
    st.sampled_from([{"action": "subscribe"}, {"action": "unsubscribe"}, {}]),
    targets,
    st.just({}) | st.fixed_dictionaries({"since": st.integers(min_value=0, max_value=3), "epoch": st.just(EpochRef())}),
    request_ids,
    mutation,
)
near_authenticates = st.builds(
    lambda token, request_id, mutated: {"action": "authenticate", "token": token, **request_id, **mutated},
    st.builds(TokenRef, st.sampled_from(TOKEN_USERS)) | st.text(max_size=45),
    request_ids,
    mutation,
)
protocol_dicts = st.one_of(near_requests, near_authenticates, wild_dicts)
sockets = st.sampled_from(["alice", "anonymous"])


# The world: the domain, what each user may see, and what the REST API shows them --------


@dataclass
class World:
    ids: dict[str, str]  # name -> wire id (deleted objects too)
    tokens: dict[str, str]  # user name -> token key
    token_users: dict[str, str]  # token key -> wire id of its (active) user
    visible: dict[str | None, set[tuple[str, str]]]  # user wire id -> {(model label, wire id)}
    rest: dict[tuple[str, str, str], Any]  # (user, model, id) -> GET of the object
    collections: dict[tuple[str, str], Any]  # (user, project id) -> GET /api/tasks/?project=<id>


@pytest.fixture
def world(domain: dict[str, Any], make_user: Any) -> World:
    from api.models import Project, Task, User

    dave = make_user("dave")  # shares nothing with anybody
    erin = make_user("erin", is_active=False)
    domain["secret"].members.add(erin)
    gone_task = Task.objects.create(project=domain["website"], title="Gone")
    gone_project = Project.objects.create(name="Gone", owner=domain["alice"])
    names = {**{key: value for key, value in domain.items()}, "dave": dave, "erin": erin}
    wire = {name: str(obj.pk) for name, obj in names.items()}
    wire["gone_task"], wire["gone_project"] = str(gone_task.pk), str(gone_project.pk)
    gone_task.delete()
    gone_project.delete()

    users = {name: names[name] for name in TOKEN_USERS}
    tokens = {name: Token.objects.get_or_create(user=user)[0].key for name, user in users.items()}
    visible: dict[str | None, set[tuple[str, str]]] = {None: set()}
    rest: dict[tuple[str, str, str], Any] = {}
    collections: dict[tuple[str, str], Any] = {}
    querysets = {"api.user": User.objects, "api.project": Project.objects, "api.task": Task.objects}
    for user in users.values():
        if not user.is_active:
            continue
        client = APIClient()
        client.force_authenticate(user)
        seen = visible[str(user.pk)] = set()
        for label, manager in querysets.items():
            for pk in manager.visible_to(user).values_list("pk", flat=True):
                seen.add((label, str(pk)))
                response = client.get(f"/api/{MODELS[label]}/{pk}/")
                assert response.status_code == 200, response.content
                rest[(str(user.pk), label, str(pk))] = response.json()
                if label == "api.project":
                    response = client.get("/api/tasks/", {"project": str(pk)})
                    assert response.status_code == 200, response.content
                    collections[(str(user.pk), str(pk))] = response.json()
            # The unfiltered collection: every object of the model the user sees, the REST list.
            response = client.get(f"/api/{MODELS[label]}/")
            assert response.status_code == 200, response.content
            collections[(str(user.pk), label)] = response.json()
    assert ("api.task", wire["hidden"]) not in visible[wire["alice"]]
    assert ("api.user", wire["dave"]) not in visible[wire["alice"]]
    token_users = {key: str(users[name].pk) for name, key in tokens.items() if users[name].is_active}
    return World(wire, tokens, token_users, visible, rest, collections)


# Sending and checking ------------------------------------------------------------------


@dataclass
class Socket:
    communicator: WebsocketCommunicator
    user: str | None  # wire id of the user it is authenticated as
    epochs: dict[tuple[str, str], str] = field(default_factory=dict)


class Harness:
    """Two reusable sockets on one event loop; ``check`` sends one frame and checks what comes back."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = asyncio.new_event_loop()
        self.sockets: dict[str, Socket] = {}
        self.sentinels = itertools.count()
        self.examples = 0
        self.outcomes: Counter[str] = Counter()  # reply types, error codes and close codes, for the summary

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def socket(self, kind: str) -> Socket:
        if kind not in self.sockets:
            headers = [(b"authorization", f"Token {self.world.tokens['alice']}".encode())] if kind == "alice" else []
            communicator = WebsocketCommunicator(websocket_application(), PATH, headers=headers)
            connected, _ = await communicator.connect(timeout=5)
            assert connected
            user = self.world.token_users[self.world.tokens["alice"]] if kind == "alice" else None
            self.sockets[kind] = Socket(communicator, user)
        return self.sockets[kind]

    async def drop(self, kind: str) -> None:
        socket = self.sockets.pop(kind)
        await socket.communicator.disconnect()

    async def close(self) -> None:
        for kind in list(self.sockets):
            await self.drop(kind)
        layer: Any = get_channel_layer()
        await layer.flush()

    def resolve(self, value: Any, socket: Socket, content: dict[str, Any] | None = None) -> Any:
        if isinstance(value, IdRef):
            return self.world.ids[value.name]
        if isinstance(value, TokenRef):
            return self.world.tokens[value.name]
        if isinstance(value, EpochRef):
            assert content is not None
            return socket.epochs.get((str(content.get("model", "")).lower(), str(content.get("id"))), "none")
        if isinstance(value, dict):
            return {key: self.resolve(item, socket, value) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, socket) for item in value]
        return value

    def check(self, kind: str, frame: Any) -> None:
        """Send ``frame`` (``bytes``, a ``str`` as is, or anything else as JSON) and check the outcome."""
        self.examples += 1
        self.run(self._check(kind, frame))

    async def _check(self, kind: str, frame: Any) -> None:
        socket = await self.socket(kind)
        communicator = socket.communicator
        # send_input, not send_to: an empty frame is a frame too.
        if isinstance(frame, bytes):
            await communicator.send_input({"type": "websocket.receive", "bytes": frame})
            text = None
        else:
            text = frame if isinstance(frame, str) else json.dumps(self.resolve(frame, socket))
            await communicator.send_input({"type": "websocket.receive", "text": text})
        sentinel = f"sentinel-{next(self.sentinels)}"
        await communicator.send_json_to({"action": "ping", "request_id": sentinel})

        replies: list[dict[str, Any]] = []
        while True:
            output = await communicator.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                code = output.get("code")
                assert code in CLOSE_CODES, output
                # A hard limit replaces the reply; nothing comes after the close.
                assert replies == [], (output, replies)
                self.outcomes[f"close {code}"] += 1
                await self.drop(kind)
                return
            assert output["type"] == "websocket.send" and isinstance(output.get("text"), str), output
            reply = json.loads(output["text"])
            if reply == {"type": "PONG", "payload": None, "meta": {"request_id": sentinel}}:
                break
            replies.append(reply)
        assert len(replies) == 1, replies
        reply = replies[0]
        self.check_reply(reply, text, socket)
        self.outcomes[reply["payload"]["code"] if "error" in reply else reply["type"]] += 1

    def check_reply(self, reply: Any, text: str | None, socket: Socket) -> None:
        assert isinstance(reply, dict), reply
        assert isinstance(reply.get("type"), str) and "payload" in reply and isinstance(reply.get("meta"), dict), reply
        content = parse(text)
        request_id = valid_request_id(content)
        if request_id is None:
            assert "request_id" not in reply["meta"], reply
        else:
            assert "request_id" in reply["meta"] and reply["meta"]["request_id"] == request_id, reply
            assert type(reply["meta"]["request_id"]) is type(request_id)

        if "error" in reply:
            assert set(reply) == {"type", "error", "payload", "meta"}, reply
            assert reply["type"] == "ERROR" and reply["error"] is True, reply
            payload = reply["payload"]
            assert isinstance(payload, dict) and payload.get("code") in ERROR_CODES, reply
            assert isinstance(payload.get("detail"), str) and payload["detail"], reply
            assert set(payload) <= {"code", "detail", "fields"}, reply
            if "fields" in payload:
                assert payload["code"] == "invalid", reply
                assert isinstance(payload["fields"], list) and all(isinstance(name, str) for name in payload["fields"])
            assert set(reply["meta"]) <= {"request_id"}, reply
            return

        assert set(reply) == {"type", "payload", "meta"}, reply
        assert reply["type"] in REPLY_TYPES, reply
        assert content is not None, reply  # only a JSON object gets anything but an error
        meta = reply["meta"]
        if reply["type"] == "PONG":
            assert reply["payload"] is None and set(meta) <= {"request_id"}, reply
        elif reply["type"] == "AUTHENTICATED":
            # Only a real, active user's token authenticates, and as that user.
            assert reply["payload"] == {"user": self.world.token_users[content["token"]]}, reply
            assert socket.user in (None, reply["payload"]["user"]), reply
            socket.user = reply["payload"]["user"]
        elif reply["type"] == "UNSUBSCRIBED":
            # Echoes the target the client named, carries nothing, and no revocation happens here.
            assert reply["payload"] is None and "reason" not in meta, reply
        elif reply["type"] == "RETRIEVED":
            # Only what the user may see, exactly as the REST API shows it to them.
            user, model = socket.user, meta.get("model")
            assert user is not None and (model, meta.get("id")) in self.world.visible[user], reply
            assert reply["payload"] == self.world.rest[(user, model, meta["id"])], reply
        elif reply["type"] == "LISTED":
            user, model = socket.user, meta.get("model")
            assert user is not None and model in MODELS, reply
            items = results(reply["payload"])
            assert all((model, item["id"]) in self.world.visible[user] for item in items), reply
        else:
            self.check_subscribed(reply, socket)

    def check_subscribed(self, reply: dict[str, Any], socket: Socket) -> None:
        meta, user = reply["meta"], socket.user
        assert user is not None, reply  # an unauthenticated socket subscribes to nothing
        visible = self.world.visible[user]
        model = meta.get("model")
        assert model in MODELS, reply
        assert isinstance(meta.get("seq"), int) and isinstance(meta.get("epoch"), str), reply
        if meta.get("filter") == {}:
            expected = self.world.collections[(user, model)]
        elif "filter" in meta:
            assert model == "api.task" and set(meta["filter"]) == {"project"}, reply
            project = meta["filter"]["project"]
            assert ("api.project", project) in visible, f"{user} may not see project {project}: {reply}"
            expected = self.world.collections[(user, project)]
            items = results(reply["payload"]) if reply["payload"] is not None else []
            assert all(("api.task", item["id"]) in visible for item in items), reply
        else:
            assert (model, meta.get("id")) in visible, f"{user} may not see {model} {meta.get('id')}: {reply}"
            expected = self.world.rest[(user, model, meta["id"])]
            socket.epochs[(model, meta["id"])] = meta["epoch"]
        if meta.get("recovered") is True:
            assert reply["payload"] is None, reply
        else:
            assert reply["payload"] == expected, reply


def parse(text: str | None) -> dict[str, Any] | None:
    """The frame as the server reads it: a JSON object, or None."""
    if text is None:
        return None
    try:
        content = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return content if isinstance(content, dict) else None


def valid_request_id(content: dict[str, Any] | None) -> Any:
    """The request_id a reply must echo: a string of at most 100 characters or a number; else None."""
    if content is None:
        return None
    value = content.get("request_id")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, str) and len(value) > 100:
        return None
    return value


@pytest.fixture
def harness(world: World, settings: Any) -> Iterator[Harness]:
    settings.DRF_LIVE = FUZZ_SETTINGS
    harness = Harness(world)
    yield harness
    try:
        harness.run(harness.close())
    finally:
        harness.loop.close()
    print(f"{harness.examples} examples: {dict(harness.outcomes.most_common())}")


# The properties -------------------------------------------------------------------------


@given(kind=sockets, value=json_values)
def test_arbitrary_json_values_get_well_formed_replies_and_leak_nothing(
    harness: Harness, kind: str, value: Any
) -> None:
    harness.check(kind, json.dumps(value))


@given(kind=sockets, frame=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_strings_and_binary_frames_get_well_formed_replies(harness: Harness, kind: str, frame: Any) -> None:
    harness.check(kind, frame)


@given(kind=sockets, content=protocol_dicts)
# Found by this test on PostgreSQL, which refuses NUL in a query: was an `unavailable` error.
@example(kind="alice", content={"action": "authenticate", "token": "\x00"})
@example(kind="anonymous", content={"action": "authenticate", "token": "key\x00"})
def test_protocol_dicts_with_hostile_values_get_well_formed_replies_and_leak_nothing(
    harness: Harness, kind: str, content: dict[str, Any]
) -> None:
    harness.check(kind, content)
