"""uvicorn's HTTP protocols with a deadline for each request's headers (the WebSocket handshake's included).

uvicorn closes an idle keep-alive connection ``--timeout-keep-alive`` seconds
after a response, but it starts that timer only once a response is complete:
a connection that sends nothing, or half a request line, or one header byte
every few seconds, is held until the client gives up (3,000 such connections
stayed open for a minute, each a file descriptor and a protocol object). These
classes apply the same ``--timeout-keep-alive`` to the request's headers as
well: from the moment the connection is made, and again after each response,
the client has that long to finish its next request's headers, or the
connection is closed. Once the headers are in, the request (or the WebSocket)
is no longer timed by this.

Serve with ``uvicorn --http notifications.handshake:HttpProtocol
--timeout-keep-alive 5`` (``make run`` and the test servers do).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.h11_impl import H11Protocol as UvicornH11Protocol

if TYPE_CHECKING:
    _Base = UvicornH11Protocol
else:
    _Base = object


class HeaderDeadline(_Base):
    """Closes the connection if a request's headers are not complete within ``timeout_keep_alive`` seconds."""

    header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_header_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm_header_deadline()

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The connection now belongs to the WebSocket protocol (its ping timeout).
        self.disarm_header_deadline()
        super().handle_websocket_upgrade(*args)

    def arm_header_deadline(self) -> None:
        self.disarm_header_deadline()
        self.header_deadline = self.loop.call_later(self.timeout_keep_alive, self.header_deadline_passed)

    def disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def header_deadline_passed(self) -> None:
        self.header_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # The headers came in time; the request is being answered.
        if not self.transport.is_closing():
            self.transport.close()


class H11Protocol(HeaderDeadline, UvicornH11Protocol):
    """uvicorn's h11 protocol with the header deadline."""


HttpProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as UvicornHttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
    HttpProtocol = H11Protocol
else:

    class HttpToolsProtocol(HeaderDeadline, UvicornHttpToolsProtocol):  # type: ignore[misc]
        """uvicorn's httptools protocol (its default) with the header deadline."""

    HttpProtocol = HttpToolsProtocol
