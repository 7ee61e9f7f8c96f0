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
