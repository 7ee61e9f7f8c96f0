"""The WebSocket URL and the ASGI application that serves it."""

from __future__ import annotations

from typing import Any, cast

from channels.routing import URLRouter
from django.urls import path, re_path

from . import logs
from .auth import LiveAuthMiddlewareStack, deny
from .consumers import NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
]


def websocket_application(consumer: type[NotificationConsumer] = NotificationConsumer) -> Any:
    """The ``"websocket"`` entry of a ``ProtocolTypeRouter``: auth, then the consumer.

    Called once where the ASGI server loads the application, it also bounds
    what clients can make that server log (``notifications.logs``).
    """
    logs.install()
    return URLRouter(
        [
            path("ws/notifications/", LiveAuthMiddlewareStack(consumer.as_asgi())),
            re_path(r"", cast(Any, no_such_path)),
        ]
    )


async def no_such_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any other WebSocket path: refused with 404, rather than raise (a traceback in the log per handshake)."""
    await deny(scope, receive, send, NOT_FOUND)


NOT_FOUND = 404


async def lifespan_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ``"lifespan"`` entry of a ``ProtocolTypeRouter``: sweep the outbox from start-up.

    Without it a server process starts sweeping at its first WebSocket
    connection. At shutdown it waits (a few seconds at most) until what this
    process committed is published.
    """
    import asyncio

    from . import metrics
    from .conf import live_settings
    from .relay import relay

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if live_settings.OUTBOX_SWEEP is not False:
                relay.start(sweep=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(relay.flush, 5.0)
            metrics.forget_this_process()  # multiprocess mode: its open sockets no longer count
            await send({"type": "lifespan.shutdown.complete"})
            return
