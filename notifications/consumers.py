"""``NotificationConsumer``: the one WebSocket endpoint (``/ws/notifications/``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from . import frames
from .auth import authenticate_token
from .conf import live_settings
from .exceptions import Unavailable
from .frames import CloseCode
from .limits import TokenBucket, sockets_per_user
from .publisher import publisher
from .registration import Registration
from .registry import Registry, site
from .streams import get_store
from .subscriptions import SubscriptionSerializer, TargetSerializer, error_code
from .targets import Target, session_group, token_group, user_group

logger = logging.getLogger("notifications.consumers")

CLOSE_NOT_AUTHENTICATED = CloseCode.NOT_AUTHENTICATED


@dataclass
class Subscription:
    """One target this socket receives, and the last seq it was sent."""

    target: Target
    group: str
    audience: str
    registration: Registration
    seq: int


class RequestError(Exception):
    """A request that gets an ``ERROR`` reply."""

    def __init__(self, code: frames.ErrorCode, detail: str | None = None, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra


class NotificationConsumer(AsyncWebsocketConsumer):
    """Validates subscriptions with DRF serializers and forwards pre-encoded events.

    No input raises out of this class: every frame gets a reply, and an error
    reply never closes the socket.
    """

    registry: Registry = site

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user: Any = None
        self.credentials: tuple[str, str] | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.credential_groups: list[str] = []
        self.auth_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.counted_user: Any = None
        self.subscribe_bucket = TokenBucket(live_settings.SUBSCRIBE_RATE, live_settings.SUBSCRIBE_BURST)
        self.error_bucket = TokenBucket(live_settings.ERROR_RATE, live_settings.ERROR_BURST)
        self.actions: dict[str, Callable[[dict[str, Any], Any], Awaitable[None]]] = {
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "authenticate": self.authenticate,
            "ping": self.ping,
        }

    # Connection -------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if not _is_layer_failure(exc):
                raise
            # The channel layer (Redis) failed under this socket: it would get no
            # more events. Close with a code that tells the client to reconnect
            # and recover with `since`.
            logger.warning("Channel layer lost; closing the socket with %s: %r", CloseCode.LAYER_LOST, exc)
            self.closed = True
            sockets_per_user_release(self)
            try:
                await send({"type": "websocket.close", "code": CloseCode.LAYER_LOST})
            except Exception:  # noqa: BLE001 - the client may be gone already.
                pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections before every message; our ORM
        # work runs in database_sync_to_async, which does that itself, so the
        # per-event cost (a thread hop) is skipped.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None or message["type"].startswith("_"):
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        publisher.bind(asyncio.get_running_loop())
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self.login(user, self.scope.get("drf_live_credentials"))
        elif not live_settings.ALLOW_ANONYMOUS:
            self.auth_timer = asyncio.get_running_loop().call_later(
                float(live_settings.AUTH_TIMEOUT), self._auth_timed_out
            )
        else:
            self.user = user

    def _auth_timed_out(self) -> None:
        if not self.is_authenticated:
            asyncio.ensure_future(self.end(CLOSE_NOT_AUTHENTICATED))

    async def end(self, code: int, *, wait: bool = True) -> None:
        """Close the socket and stop forwarding: nothing may be sent after ``websocket.close``.

        ``wait=False`` closes in the background, for a client that is not
        reading (the close frame waits behind what it did not read, and the
        ASGI server drops the connection after its close timeout).
        """
        if self.closed:
            return
        self.closed = True
        await self.leave_groups()
        if wait:
            await self.close(code)
        else:
            self.closing = asyncio.ensure_future(self.close(code))

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None and self.user.is_authenticated

    async def login(self, user: Any, credentials: tuple[str, str] | None) -> None:
        if self.counted_user is None:
            if not sockets_per_user.add(user.pk, int(live_settings.MAX_SOCKETS_PER_USER)):
                await self.end(CloseCode.TOO_MANY_SOCKETS)
                return
            self.counted_user = user.pk
        self.user = user
        self.credentials = credentials
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        groups = [user_group(user.pk)]
        if credentials is not None:
            kind, secret = credentials
            groups.append(token_group(secret) if kind == "token" else session_group(secret))
        for group in groups:
            if group not in self.credential_groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.credential_groups.append(group)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        sockets_per_user_release(self)
        await self.leave_groups()

    async def leave_groups(self) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        groups = [subscription.group for subscription in self.subscriptions.values()] + self.credential_groups
        self.subscriptions.clear()
        self.credential_groups = []
        for group in groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # noqa: BLE001 - the layer may be gone; the groups expire.
                logger.warning("Could not leave group %s on disconnect", group, exc_info=True)

    # Client frames --------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return  # Closed by the server: a reply would follow websocket.close.
        size = len(text_data) if text_data is not None else len(bytes_data or b"")
        if size > int(live_settings.MAX_FRAME_BYTES):
            await self.end(CloseCode.FRAME_TOO_LARGE)
            return
        request_id = None
        try:
            content = self.parse(text_data)
            request_id = self.request_id(content)
            action = content.get("action", "subscribe" if "model" in content else None)
            if not isinstance(action, str):
                raise RequestError("invalid", "Say what to do in `action`.", fields=["action"])
            handler = self.actions.get(action)
            if handler is None:
                raise RequestError("unknown_action")
            if action not in {"authenticate", "ping"} and self.user is None:
                raise RequestError("not_authenticated")
            await handler(content, request_id)
        except RequestError as exc:
            await self.send_error(frames.error(exc.code, request_id, exc.detail, **exc.extra))
        except Exception:
            logger.exception("Unexpected error while handling a frame")
            await self.send_error(frames.error("unavailable", request_id))

    async def send_error(self, frame: frames.Frame) -> None:
        # A client that keeps making errors is flooding: close it.
        if not self.error_bucket.take():
            await self.end(CloseCode.FLOOD)
            return
        await self.send_frame(frame)

    def parse(self, text_data: str | None) -> dict[str, Any]:
        if text_data is None:
            raise RequestError("parse_error", "Send JSON text frames, not binary ones.")
        try:
            content = orjson.loads(text_data)
        except orjson.JSONDecodeError:
            raise RequestError("parse_error") from None
        if not isinstance(content, dict):
            raise RequestError("parse_error", "Send one JSON object per frame.")
        return content

    def request_id(self, content: dict[str, Any]) -> Any:
        value = content.get("request_id")
        if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)):
            if isinstance(value, str) and len(value) > 100:
                raise RequestError("invalid", "request_id is too long.", fields=["request_id"])
            return value
        raise RequestError("invalid", "request_id must be a string or a number.", fields=["request_id"])

    async def send_frame(self, frame: frames.Frame) -> None:
        await self.send_text(frames.encode(frame))

    async def send_text(self, text: str) -> None:
        """Send one frame; a client that cannot take it within ``SEND_TIMEOUT`` is closed (4030)."""
        if self.closed:
            # A handler can close the socket half-way (an authenticate frame past
            # MAX_SOCKETS_PER_USER, a slow consumer in a replay): a send after
            # websocket.close is an ASGI protocol error, so drop the frame.
            return
        try:
            async with asyncio.timeout(float(live_settings.SEND_TIMEOUT)):
                await self.send(text_data=text)
        except TimeoutError:
            logger.info("Slow consumer: closing the socket with %s", CloseCode.SLOW_CONSUMER)
            await self.end(CloseCode.SLOW_CONSUMER, wait=False)

    # Actions --------------------------------------------------------------

    async def ping(self, content: dict[str, Any], request_id: Any) -> None:
        await self.send_frame(frames.reply("PONG", None, request_id))

    async def authenticate(self, content: dict[str, Any], request_id: Any) -> None:
        key = content.get("token")
        if not isinstance(key, str) or not key or len(key) > 200:
            raise RequestError("invalid", "Send the API token in `token`.", fields=["token"])
        user = await authenticate_token(key)
        if user is None:
            raise RequestError("not_authenticated", "Invalid token.")
        if self.is_authenticated and user.pk != self.user.pk:
            raise RequestError("invalid", "This socket is authenticated as another user already.", fields=["token"])
        await self.login(user, ("token", key))
        await self.send_frame(frames.reply("AUTHENTICATED", {"user": str(user.pk)}, request_id))

    async def subscribe(self, content: dict[str, Any], request_id: Any) -> None:
        if not self.subscribe_bucket.take():
            raise RequestError("throttled")
        data = await self.validate(SubscriptionSerializer, content)
        if data["target"].stream not in self.subscriptions and len(self.subscriptions) >= int(
            live_settings.MAX_SUBSCRIPTIONS
        ):
            raise RequestError(
                "limit_exceeded", f"A socket may hold {live_settings.MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first."
            )
        registration: Registration = data["registration"]
        target: Target = data["target"]
        previous = self.subscriptions.get(target.stream)
        if previous is not None and previous.group != data["group"]:
            await self.channel_layer.group_discard(previous.group, self.channel_name)
        # Join first, then read the position, then the snapshot: an event is
        # either in the snapshot (seq <= position) or forwarded afterwards.
        await self.channel_layer.group_add(data["group"], self.channel_name)
        subscription = Subscription(target, data["group"], data["audience"], registration, seq=0)
        self.subscriptions[target.stream] = subscription
        try:
            await self.send_snapshot(subscription, data, request_id)
        except Unavailable:
            await self.drop(subscription)
            raise RequestError("unavailable") from None
        except Exception:
            # No SUBSCRIBED reply (the object vanished or was hidden since it was
            # validated, or anything else failed): no events either.
            await self.drop(subscription)
            raise

    async def send_snapshot(self, subscription: Subscription, data: dict[str, Any], request_id: Any) -> None:
        store = get_store()
        target = subscription.target
        meta = target.meta()
        try:
            if "since" in data:
                replay = await store.replay(target.stream, data["since"], data["epoch"], subscription.audience)
                if replay.frames is not None:
                    subscription.seq = replay.position.seq
                    reply = frames.reply(
                        "SUBSCRIBED", None, request_id, **meta, seq=data["since"], epoch=replay.position.epoch, recovered=True
                    )
                    await self.send_frame(reply)
                    for _seq, text in replay.frames:
                        await self.send_text(text)
                    return
            position = await store.position(target.stream)
        except Exception as exc:
            logger.warning("Event store unavailable while subscribing to %s", target.stream, exc_info=True)
            raise Unavailable(str(exc)) from exc
        payload = await self.snapshot(subscription, data)
        subscription.seq = position.seq
        extra = {"recovered": False} if "since" in data else {}
        await self.send_frame(
            frames.reply("SUBSCRIBED", payload, request_id, **meta, seq=position.seq, epoch=position.epoch, **extra)
        )

    @database_sync_to_async
    def snapshot(self, subscription: Subscription, data: dict[str, Any]) -> Any:
        """The target's state as ``GET`` shows it to this user, read after the position."""
        registration = subscription.registration
        if subscription.target.is_collection:
            return registration.serialize_collection(self.user, data["filter"], host=self.host)
        instance = registration.get_visible(self.user, data["instance"].pk, host=self.host)
        if instance is None:  # Deleted or hidden since it was validated.
            raise RequestError("not_found")
        return registration.serialize(instance, self.user, host=self.host)

    async def unsubscribe(self, content: dict[str, Any], request_id: Any) -> None:
        try:
            data = await self.validate(TargetSerializer, content)
            target = data["target"]
        except RequestError as exc:
            if exc.code != "not_found":
                raise
            # Unknown model: nothing to leave, and the same answer as for any target.
            target = Target(str(content.get("model", "")).lower(), id=content.get("id"))
        subscription = self.subscriptions.get(target.stream)
        if subscription is not None:
            await self.drop(subscription)
        await self.send_frame(frames.reply("UNSUBSCRIBED", None, request_id, **target.meta()))

    async def drop(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.target.stream, None)
        await self.channel_layer.group_discard(subscription.group, self.channel_name)

    async def validate(self, serializer_class: type[TargetSerializer], content: dict[str, Any]) -> dict[str, Any]:
        return await self._validate(serializer_class, content)

    @database_sync_to_async
    def _validate(self, serializer_class: type[TargetSerializer], content: dict[str, Any]) -> dict[str, Any]:
        context = {"registry": self.registry, "user": self.user, "host": self.host}
        serializer = serializer_class(data=content, context=context)
        if not serializer.is_valid():
            code, fields = error_code(serializer.errors)
            if code == "not_found":
                raise RequestError("not_found")
            raise RequestError("invalid", fields=fields)
        return dict(serializer.validated_data)

    @property
    def host(self) -> str | None:
        from .auth import header

        value = header(self.scope, b"host")
        return value.rsplit(":", 1)[0] if value else None

    # Channel-layer events ---------------------------------------------------

    async def drf_live_event(self, message: dict[str, Any]) -> None:
        """An event for a target: forwarded once, in seq order, if still subscribed."""
        subscription = self.subscriptions.get(message["stream"])
        if self.closed or subscription is None or message["seq"] <= subscription.seq:
            return
        subscription.seq = message["seq"]
        await self.send_text(message["text"])

    async def drf_live_recheck(self, message: dict[str, Any]) -> None:
        """A write may have changed who sees ``stream`` (or, without one, anything)."""
        stream = message.get("stream")
        if stream is not None:
            subscriptions = [self.subscriptions[stream]] if stream in self.subscriptions else []
        else:
            subscriptions = list(self.subscriptions.values())
        if not subscriptions:
            return
        for subscription in await self.lost_access(subscriptions):
            await self.drop(subscription)
            await self.send_frame(frames.reply("UNSUBSCRIBED", None, **subscription.target.meta(), reason="revoked"))

    @database_sync_to_async
    def lost_access(self, subscriptions: list[Subscription]) -> list[Subscription]:
        return [
            subscription
            for subscription in subscriptions
            if not subscription.registration.is_visible(self.user, subscription.target, host=self.host)
        ]

    async def drf_live_close(self, message: dict[str, Any]) -> None:
        """The credentials of this socket were revoked."""
        await self.end(message.get("code", CLOSE_NOT_AUTHENTICATED))


def sockets_per_user_release(consumer: NotificationConsumer) -> None:
    if consumer.counted_user is not None:
        sockets_per_user.remove(consumer.counted_user)
        consumer.counted_user = None


def _is_layer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the channel layer's backend went away (Redis down)."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - channels_redis not installed
        return isinstance(exc, (ConnectionError, OSError))
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError))
