"""Fixtures for the notifications unit tests."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import models
from django.db.backends.utils import CursorWrapper

from notifications.registration import Registration
from notifications.registry import site
from notifications.routing import websocket_application

PATH = "/ws/notifications/"

Connect = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
def replace_registration() -> Iterator[Any]:
    """Swap a model's registration on ``site`` for one test; the original comes back afterwards."""
    originals: dict[type[models.Model], Registration | None] = {}

    def replace(model: type[models.Model], registration_class: type[Registration], **options: Any) -> Registration:
        originals.setdefault(model, site.get_for(model))
        if site.is_registered(model):
            site.unregister(model)
        return site.register(model, registration_class, **options)

    yield replace
    for model, original in originals.items():
        if site.is_registered(model):
            site.unregister(model)
        if original is not None:
            site._registry[model] = original  # the very same object, as before the test


@pytest_asyncio.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open sockets on ``/ws/notifications/`` through the full stack (auth middleware included).

    ``await connect(token=key)`` sends ``Authorization: Token <key>``; ``headers``
    adds raw handshake headers; ``client`` is the scope's client address;
    ``accepted=False`` expects the handshake to be refused. Every socket is
    disconnected and the channel layer flushed afterwards.
    """
    opened: list[WebsocketCommunicator] = []

    async def open_socket(
        *,
        token: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        accepted: bool = True,
        client: tuple[str, int] | None = None,
    ) -> WebsocketCommunicator:
        all_headers = list(headers)
        if token is not None:
            all_headers.append((b"authorization", f"Token {token}".encode()))
        communicator = WebsocketCommunicator(websocket_application(), PATH, headers=all_headers)
        if client is not None:
            communicator.scope["client"] = client  # read when the application starts, at connect()
        opened.append(communicator)
        connected, _detail = await communicator.connect()
        assert connected is accepted, f"expected the handshake to be {'accepted' if accepted else 'refused'}"
        return communicator

    yield open_socket

    for communicator in opened:
        await communicator.disconnect()
    layer: Any = get_channel_layer()
    await layer.flush()


class Statements(list[tuple[str, str]]):
    """Every SQL statement any thread ran (each thread has its own connection), with the thread's name."""

    def outside_relay(self) -> list[str]:
        """The statements of every thread but the relay's, whose sweeps come and go on their own."""
        return [sql for thread, sql in self if thread != "drf-live-relay"]

    def of_relay(self) -> list[str]:
        return [sql for thread, sql in self if thread == "drf-live-relay"]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    """Records every SQL statement from now on; ``clear()`` it where the measured part starts."""
    executed = Statements()
    original = CursorWrapper._execute_with_wrappers

    def recording(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        executed.append((threading.current_thread().name, sql))
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", recording)
    return executed
