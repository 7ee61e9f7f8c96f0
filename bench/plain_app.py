"""The consumer a team would write by hand: ``group_add`` on subscribe, ``send_json`` per event.

Served by ``uvicorn bench.plain_app:application`` with ``bench.settings_nolive``
at ``/ws/plain/``. A client sends ``{"action": "subscribe", "id": "<hashid>"}``;
the writer saves the task, serializes it with ``TaskSerializer`` and calls
``async_to_sync(channel_layer.group_send)(group_for(id), {"type": "task.update", "frame": ...})``.
Scenario E's clients first send ``{"action": "authenticate", "token": "<key>"}``, which
looks the token up as a hand-written consumer would (one query); subscribing does
not require it, so scenarios A to D, which never send it, are unchanged.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_nolive")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


def group_for(task_id: str) -> str:
    return f"bench.task.{task_id}"


@database_sync_to_async
def user_of(key: str) -> Any:
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token is not None and token.user.is_active else None


class TaskConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("action") == "authenticate":
            user = await user_of(str(content.get("token", "")))
            if user is None:
                await self.send_json({"type": "ERROR", "payload": {"code": "not_authenticated"}})
                return
            self.scope["user"] = user
            await self.send_json({"type": "AUTHENTICATED", "meta": {"request_id": content.get("request_id")}})
            return
        task_id = str(content.get("id", ""))
        if not task_id.isalnum():
            await self.send_json({"type": "ERROR", "payload": {"code": "invalid"}})
            return
        await self.channel_layer.group_add(group_for(task_id), self.channel_name)
        await self.send_json({"type": "SUBSCRIBED", "meta": {"id": task_id}})

    async def task_update(self, message: dict[str, Any]) -> None:
        await self.send_json(message["frame"])


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/plain/", TaskConsumer.as_asgi())]),
    }
)
