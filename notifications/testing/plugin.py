"""The pytest plugin: ``pytest_plugins = ["notifications.testing"]`` in your top-level ``conftest.py``.

Fixtures:

- ``live_socket``: opens sockets as ``notifications.testing.live_socket`` does
  (``await live_socket(bob)``, or ``async with live_socket(bob) as socket``), on
  a transactional database; after the test it closes them, lets the relay
  finish and stop sweeping before the database is flushed, and forgets the
  in-memory streams and the per-address budgets, so tests do not see each
  other's events.
- ``captured_events``: ``capture_events()`` around the whole test; the list of
  what it published.
- ``api_client``: ``api_client(user)`` makes a DRF ``APIClient`` signed in as ``user``.

Needs pytest-django and pytest-asyncio. Nothing here imports Django at import
time, so the plugin may load before pytest-django configures Django.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio


def _request_database(request: pytest.FixtureRequest) -> None:
    """Set up the test's database (transactional if the test's is) before the fixture, so it goes after it."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames
    if marker is not None:
        transactional = transactional or bool(
            marker.kwargs.get("transaction", False) or (marker.args and marker.args[0])
        )
    request.getfixturevalue("transactional_db" if transactional else "db")


def _settle() -> None:
    """Let the relay publish what the test committed and stop sweeping; forget streams and budgets."""
    from .. import limits
    from ..relay import relay
    from ..streams import reset_store

    relay.stop_sweeping()
    relay.flush(timeout=10)
    reset_store()
    limits.reset()


@pytest_asyncio.fixture(name="live_socket")
async def live_socket_fixture(transactional_db: None) -> AsyncIterator[Callable[..., Any]]:
    """Opens sockets (``notifications.testing.live_socket``); closes them after the test.

    The socket's consumer reads in a thread of its own, which sees only
    committed rows: the test's database is transactional (a parameter, so that
    pytest-django knows before it sets up ``db``, if the test asks for that too).
    """
    from .clients import LiveSocket, live_socket

    opened: list[LiveSocket] = []

    class Tracked:
        def __init__(self, opening: Any) -> None:
            self.opening = opening
            self.socket: LiveSocket | None = None

        def __await__(self) -> Any:
            return self._open().__await__()

        async def _open(self) -> LiveSocket:
            self.socket = await self.opening
            opened.append(self.socket)
            return self.socket

        async def __aenter__(self) -> LiveSocket:
            return await self._open()

        async def __aexit__(self, *exc_info: Any) -> None:
            if self.socket is not None:
                await self.socket.close()

    def open_socket(*args: Any, **kwargs: Any) -> Tracked:
        return Tracked(live_socket(*args, **kwargs))

    yield open_socket
    for socket in opened:
        await socket.close()
    _settle()


@pytest.fixture(name="captured_events")
def captured_events_fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
    """What the whole test publishes (``notifications.testing.capture_events``)."""
    from .capture import capture_events

    _request_database(request)
    with capture_events() as events:
        yield events


@pytest.fixture(name="api_client")
def api_client_fixture() -> Callable[..., Any]:
    """``api_client(user)``: a DRF ``APIClient`` signed in as ``user``."""
    from .clients import api_client

    return api_client
