"""Clients authenticated as a user: a socket through your ASGI application, and a REST client.

``live_socket(user)`` opens ``/ws/notifications/`` with channels'
``WebsocketCommunicator`` through the whole ASGI stack (``ASGI_APPLICATION``:
your routing, drf-live's authentication, the consumer), signed in with a
session made for ``user`` as ``Client.force_login`` makes one. Use it as a
context manager (the socket is closed at the end of the block) or ``await`` it
(close it yourself, or use the ``live_socket`` fixture, which closes every
socket it opened)::

    async with live_socket(bob) as socket:
        await socket.subscribe(Task, id=task.pk)
        await database_sync_to_async(rename)(task, "New title")
        await socket.assert_pushed(type="UPDATE_TASK", payload={"title": "New title"})
        await socket.assert_nothing_pushed()

The socket's user reads through the consumer's own database thread, so the
test's rows must be committed: use ``transactional_db`` (or
``django_db(transaction=True)``), as the fixture does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import models

from ..registry import Registry, site

#: The socket's path, as ``notifications.routing`` routes it.
PATH = "/ws/notifications/"
#: Seconds ``assert_pushed`` and the request helpers wait for a frame: the relay publishes
#: after the commit, in a thread of its own.
TIMEOUT = 5.0
#: Seconds ``assert_nothing_pushed`` listens for a frame that should not come.
QUIET = 0.5

_ANY: Any = object()


def api_client(user: Any = None) -> Any:
    """A DRF ``APIClient`` signed in as ``user`` (``force_authenticate``), for the writes of a test."""
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def default_application() -> Any:
    """``ASGI_APPLICATION`` if the project names one (the whole stack), else drf-live's WebSocket application."""
    if getattr(settings, "ASGI_APPLICATION", None):
        from channels.routing import get_default_application

        return get_default_application()
    from ..routing import websocket_application

    return websocket_application()


def _session_cookie(user: Any) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class LiveSocket:
    """One open socket, and the assertions a test makes on what it receives."""

    def __init__(self, communicator: WebsocketCommunicator, user: Any = None, registry: Registry = site) -> None:
        self.communicator = communicator
        self.user = user
        self.registry = registry
        self.closed = False
        self._request_ids = 0

    # Frames ---------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_json_to(frame)

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame; fails the test if none arrives within ``timeout`` seconds.

        The socket stays open either way (channels' ``receive_from`` would
        cancel the application on a timeout).
        """
        if await self.communicator.receive_nothing(timeout):
            raise AssertionError(f"No frame arrived within {timeout} s.")
        text = await self.communicator.receive_from()
        frame = json.loads(text)
        if not isinstance(frame, dict):
            raise AssertionError(f"Expected a JSON object, got {text}")
        return frame

    async def request(self, frame: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Send ``frame`` with a fresh ``request_id``; its reply (frames in between fail the test)."""
        self._request_ids += 1
        request_id = frame.get("request_id", f"kit-{self._request_ids}")
        await self.send({**frame, "request_id": request_id})
        reply = await self.receive(timeout)
        if reply.get("meta", {}).get("request_id") != request_id:
            raise AssertionError(f"Expected the reply to request {request_id!r}, got {reply}")
        return reply

    # Subscriptions -----------------------------------------------------------------

    def target(
        self, model: type[models.Model] | str, id: Any = None, filter: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The wire form of a target: a model (class or label), and an object (instance, pk or id) or a filter."""
        registration = self._registration(model)
        target: dict[str, Any] = {"model": registration.label if registration else str(model).lower()}
        if id is not None:
            target["id"] = registration.wire_id(id) if registration else str(id)
        elif filter is not None:
            target["filter"] = {
                name: registration.wire_value(name, value) if registration else str(value)
                for name, value in filter.items()
            }
        return target

    async def subscribe(
        self,
        model: type[models.Model] | str,
        id: Any = None,
        *,
        filter: dict[str, Any] | None = None,
        since: int | None = None,
        epoch: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        """Subscribe to an object (``id``), a collection (``filter``) or every object (neither); the reply.

        Fails the test unless the reply is ``SUBSCRIBED`` (it shows the error
        reply: ``not_found`` for an object the user may not see, say).
        """
        frame: dict[str, Any] = {"action": "subscribe", **self.target(model, id, filter)}
        if since is not None:
            frame["since"] = since
        if epoch is not None:
            frame["epoch"] = epoch
        reply = await self.request(frame, timeout)
        if reply.get("type") != "SUBSCRIBED":
            raise AssertionError(f"Expected SUBSCRIBED to {self.target(model, id, filter)}, got {reply}")
        return reply

    async def unsubscribe(
        self, model: type[models.Model] | str, id: Any = None, *, filter: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        reply = await self.request({"action": "unsubscribe", **self.target(model, id, filter)})
        if reply.get("type") != "UNSUBSCRIBED":
            raise AssertionError(f"Expected UNSUBSCRIBED, got {reply}")
        return reply

    # Assertions --------------------------------------------------------------------

    async def assert_pushed(
        self,
        type: str | None = None,
        *,
        payload: Any = _ANY,
        model: type[models.Model] | str | None = None,
        id: Any = None,
        filter: dict[str, Any] | None = None,
        timeout: float = TIMEOUT,
        **meta: Any,
    ) -> dict[str, Any]:
        """The next frame, which must match; fails with the frame that came instead (or none).

        ``payload``: a dict matches a payload holding those keys with those
        values (others may be there too); anything else must be equal.
        ``model``, ``id`` and ``filter`` name the target as ``subscribe`` does;
        more keywords must be equal in ``meta`` (``changed=["title"]``, say).
        """
        try:
            frame = await self.receive(timeout)
        except AssertionError:
            raise AssertionError(
                f"Expected {self._expected(type, payload, meta)}: nothing arrived within {timeout} s."
            ) from None
        expected_meta = dict(meta)
        if model is None and isinstance(id, models.Model):
            model = id.__class__
        if model is not None:
            expected_meta["model"] = self.target(model)["model"]
        if id is not None:
            expected_meta["id"] = self.target(model, id)["id"] if model is not None else str(id)
        if filter is not None:
            expected_meta["filter"] = self.target(model, filter=filter)["filter"] if model is not None else filter
        wrong = []
        if type is not None and frame.get("type") != type:
            wrong.append(f"type is {frame.get('type')!r}, not {type!r}")
        if payload is not _ANY and not _matches(frame.get("payload"), payload):
            wrong.append(f"payload is {frame.get('payload')!r}")
        for key, value in expected_meta.items():
            if frame.get("meta", {}).get(key, _ANY) != value:
                wrong.append(f"meta[{key!r}] is {frame.get('meta', {}).get(key)!r}, not {value!r}")
        if wrong:
            raise AssertionError(
                f"Expected {self._expected(type, payload, expected_meta)}, got {frame}: " + "; ".join(wrong)
            )
        return frame

    async def assert_nothing_pushed(self, timeout: float = QUIET) -> None:
        """No frame arrives within ``timeout`` seconds."""
        if not await self.communicator.receive_nothing(timeout):
            frame = await self.communicator.receive_from()
            raise AssertionError(f"Expected nothing within {timeout} s, got {frame}")

    async def assert_closed(self, code: int | None = None, timeout: float = TIMEOUT) -> int:
        """The server closes the socket (with ``code``); frames before the close fail the test. The code."""
        message = await self.communicator.receive_output(timeout)
        if message["type"] != "websocket.close":
            raise AssertionError(f"Expected the socket to close, got {message}")
        self.closed = True
        if code is not None and message.get("code") != code:
            raise AssertionError(f"Expected close code {code}, got {message.get('code')}")
        return int(message.get("code", 1000))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.communicator.disconnect()

    # Helpers -------------------------------------------------------------------------

    def _registration(self, model: type[models.Model] | str) -> Any:
        if isinstance(model, str):
            return self.registry.get_by_label(model)
        return self.registry.get_for(model)

    @staticmethod
    def _expected(type: str | None, payload: Any, meta: dict[str, Any]) -> str:
        parts = [f"type={type!r}"] if type is not None else []
        if payload is not _ANY:
            parts.append(f"payload={payload!r}")
        parts += [f"{key}={value!r}" for key, value in meta.items()]
        return "a frame with " + ", ".join(parts) if parts else "a frame"


def _matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict) and isinstance(actual, dict):
        return all(key in actual and _matches(actual[key], value) for key, value in expected.items())
    return bool(actual == expected)


class _Opening:
    """What ``live_socket()`` returns: ``await`` it for a socket, or ``async with`` it for one closed afterwards."""

    def __init__(self, connect: Callable[[], Awaitable[LiveSocket]]) -> None:
        self._connect = connect
        self._socket: LiveSocket | None = None

    def __await__(self) -> Generator[Any, None, LiveSocket]:
        return self._connect().__await__()

    async def __aenter__(self) -> LiveSocket:
        self._socket = await self._connect()
        return self._socket

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._socket is not None:
            await self._socket.close()


def live_socket(
    user: Any = None,
    *,
    token: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    path: str = PATH,
    application: Any = None,
    registry: Registry = site,
) -> _Opening:
    """A socket signed in as ``user`` (a session), or by API ``token``, or anonymous (neither).

    The handshake must be accepted (it fails the test otherwise). ``headers``
    adds raw handshake headers; ``application`` replaces ``ASGI_APPLICATION``.
    """

    async def connect() -> LiveSocket:
        all_headers = list(headers)
        if token is not None:
            all_headers.append((b"authorization", f"Token {token}".encode()))
        elif user is not None and user.is_authenticated:
            cookie = await database_sync_to_async(_session_cookie)(user)
            all_headers.append((b"cookie", cookie.encode("latin-1")))
        communicator = WebsocketCommunicator(application or default_application(), path, headers=all_headers)
        connected, _subprotocol = await communicator.connect()
        if not connected:
            raise AssertionError(f"The handshake of {path} was refused (as {user!r}).")
        return LiveSocket(communicator, user, registry)

    return _Opening(connect)
