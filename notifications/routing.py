"""The WebSocket URL and the ASGI application that serves it."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from django.urls import path

from .auth import LiveAuthMiddlewareStack
from .consumers import NotificationConsumer

websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
]


def websocket_application(consumer: type[NotificationConsumer] = NotificationConsumer) -> Any:
    """The ``"websocket"`` entry of a ``ProtocolTypeRouter``: auth, then the consumer."""
    patterns = (
        websocket_urlpatterns if consumer is NotificationConsumer else [path("ws/notifications/", consumer.as_asgi())]
    )
    return LiveAuthMiddlewareStack(URLRouter(patterns))
