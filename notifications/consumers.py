"""``NotificationConsumer``: the one WebSocket endpoint (``/ws/notifications/``)."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from . import frames, sessions
from .auth import authenticate_token, client_address, header
from .conf import live_settings
from .exceptions import Unavailable
from .frames import CloseCode
from .hub import Hub, get_hub
from .limits import UNLIMITED, ActionBudgets, TokenBucket, auth_failures, sockets_per_user
from .outgoing import Outgoing
from .publisher import publisher
from .registration import Registration
from .registry import Registry, site
from .streams import get_store
from .subscriptions import SubscriptionSerializer, TargetSerializer, error_code
from .targets import Target, session_group, token_group, user_group

logger = logging.getLogger("notifications.consumers")

CLOSE_NOT_AUTHENTICATED = CloseCode.NOT_AUTHENTICATED


@dataclass(eq=False, slots=True)
class Subscription:
    """One target this socket receives, and the last seq it was sent.

    ``pending`` holds the events that arrive while the snapshot is being taken;
    they are sent after ``SUBSCRIBED``, those not already in the snapshot.
    """

    target: Target
    group: str
    audience: str
    registration: Registration
    seq: int = 0
    pending: list[dict[str, Any]] | None = None


class RequestError(Exception):
    """A request that gets an ``ERROR`` reply."""

    def __init__(self, code: frames.ErrorCode, detail: str | None = None, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra


class NotificationConsumer(AsyncWebsocketConsumer):
    """Validates subscriptions with DRF serializers and forwards pre-encoded events.

    The socket has no channel-layer channel of its own: it joins groups through
    the process's ``Hub``, which receives each group's messages once and hands
    them to ``hub_message`` of every local member. No input raises out of this
    class: every frame gets a reply, and an error reply never closes the socket.
    """

    registry: Registry = site
    # The frame actions and the methods that handle them (looked up per frame,
    # not bound per socket: at 10,000 sockets every byte per socket counts).
    actions: dict[str, str] = {
        "subscribe": "subscribe",
        "unsubscribe": "unsubscribe",
        "authenticate": "authenticate",
        "ping": "ping",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user: Any = None
        self.subscriptions: dict[str, Subscription] = {}
        self.credential_keys: list[str] = []
        self.auth_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.counted_user: Any = None
        # Every action's budget, subscribe's included, is checked in receive();
        # subscribe() still takes from subscribe_bucket, which never runs dry.
        self.budgets = ActionBudgets()
        self.subscribe_bucket: TokenBucket = UNLIMITED
        self.error_bucket = TokenBucket(live_settings.ERROR_RATE, live_settings.ERROR_BURST)
        self.auth_failures = 0
        # Events held while access is being re-checked (None: none is).
        self.held: list[dict[str, Any]] | None = None
        self.rechecks = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    # Connection -------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Like AsyncConsumer.__call__, but without a channel per socket: the hub
        # brings group messages, so only the client's frames are awaited here.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.hub: Hub = get_hub(self.channel_layer)
        self.base_send = send
        self.out = Outgoing(
            send,
            limit=int(live_settings.SEND_QUEUE_LIMIT),
            timeout=float(live_settings.SEND_TIMEOUT),
            on_overflow=self._overflowed,
            on_error=self._send_failed,
        )
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Idempotent: after a normal disconnect() nothing is left to leave.
            self.closed = True
            self.out.stop()
            await self.leave_groups()
            self._release()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Only the ASGI server's websocket.* messages arrive here. Channels
        # closes stale DB connections before each; our ORM work runs in
        # database_sync_to_async, which does that itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        publisher.bind(asyncio.get_running_loop())
        await self.accept()
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self.login(user, self.scope.get("drf_live_credentials"))
            await self.watch_session()
        elif not live_settings.ALLOW_ANONYMOUS:
            self.auth_timer = asyncio.get_running_loop().call_later(
                float(live_settings.AUTH_TIMEOUT), self._auth_timed_out
            )
        else:
            self.user = user

    def _auth_timed_out(self) -> None:
        if not self.is_authenticated:
            self.spawn(self.end(CLOSE_NOT_AUTHENTICATED))

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
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        # The keys under which control messages reach this socket: revoked
        # credentials close it, a removed membership re-checks its access.
        keys = [user_group(user.pk)]
        if credentials is not None:
            kind, secret = credentials
            keys.append(token_group(secret) if kind == "token" else session_group(secret))
        for key in keys:
            if key not in self.credential_keys:
                self.credential_keys.append(key)
                try:
                    await self.hub.attach(key, self)
                except Exception as exc:
                    self.hub_lost(key, exc)
                    return

    async def end(self, code: int, *, wait: bool = True) -> None:
        """Close the socket and stop forwarding: nothing may be sent after ``websocket.close``.

        ``wait=False`` closes in the background, for a client that is not
        reading (the close frame waits behind what it did not read, and the
        ASGI server drops the connection after its close timeout).
        """
        if self.closed:
            return
        self.closed = True
        self.out.stop()
        await self.leave_groups()
        if wait:
            await self.out.settle()
            await self.close(code)
        else:
            self.spawn(self._close_after_send(code))

    async def _close_after_send(self, code: int) -> None:
        await self.out.settle()
        await self.close(code)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        self.out.stop()
        await self.leave_groups()

    async def leave_groups(self) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        for key in self.credential_keys:
            self.hub.detach(key, self)
        self.credential_keys = []
        groups = {subscription.group for subscription in self.subscriptions.values()}
        self.subscriptions.clear()
        for group in groups:
            await self.hub.leave(group, self)

    def _release(self) -> None:
        self.closed = True
        if self.counted_user is not None:
            sockets_per_user.remove(self.counted_user)
            self.counted_user = None
        for task in self.tasks:
            task.cancel()

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run ``coroutine`` in the background, cancelled if the socket goes away."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # Sending ----------------------------------------------------------------

    async def send_frame(self, frame: frames.Frame) -> None:
        self.send_text(frames.encode(frame))

    def send_text(self, text: str) -> None:
        """Queue one frame after those before it; never waits for the client."""
        if not self.closed:
            self.out.offer(text)

    def _overflowed(self) -> None:
        logger.info("Slow consumer: closing the socket with %s", CloseCode.SLOW_CONSUMER)
        self.spawn(self.end(CloseCode.SLOW_CONSUMER, wait=False))

    def _send_failed(self, exc: BaseException) -> None:
        # The client went away mid-send; the ASGI server tells us with websocket.disconnect.
        logger.debug("Send failed: %r", exc)
        self.closed = True

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
            method = self.actions.get(action)
            if method is None:
                raise RequestError("unknown_action")
            if not self.budgets.take(action):
                raise RequestError("throttled")
            if action not in {"authenticate", "ping"} and self.user is None:
                raise RequestError("not_authenticated")
            await getattr(self, method)(content, request_id)
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

    # Actions --------------------------------------------------------------

    async def ping(self, content: dict[str, Any], request_id: Any) -> None:
        await self.send_frame(frames.reply("PONG", None, request_id))

    async def authenticate(self, content: dict[str, Any], request_id: Any) -> None:
        key = content.get("token")
        if not isinstance(key, str) or not key or len(key) > 200:
            raise RequestError("invalid", "Send the API token in `token`.", fields=["token"])
        address = self.scope.get("drf_live_address") or client_address(self.scope)
        if not auth_failures.allows(address):
            # This address guessed too often: no token of it is looked up for a while.
            await self.end(CloseCode.FLOOD)
            return
        user = await authenticate_token(key)
        if user is None:
            if self.failed_authentication(address):
                await self.end(CloseCode.FLOOD)
                return
            raise RequestError("not_authenticated", "Invalid token.")
        if self.is_authenticated and user.pk != self.user.pk:
            raise RequestError("invalid", "This socket is authenticated as another user already.", fields=["token"])
        await self.login(user, ("token", key))
        stranger = self.scope.get("drf_live_stranger")
        if stranger is not None:
            stranger.release()  # No longer counted among the unauthenticated sockets.
        await self.send_frame(frames.reply("AUTHENTICATED", {"user": str(user.pk)}, request_id))

    def failed_authentication(self, address: str) -> bool:
        """Count a wrong token against the socket and its address; True when the socket must close."""
        auth_failures.spend(address)
        self.auth_failures += 1
        return self.auth_failures >= int(live_settings.MAX_AUTH_FAILURES)

    # Session sockets ----------------------------------------------------------

    async def watch_session(self) -> None:
        """A session socket also closes when its user's session auth hash changes, and re-checks its session."""
        credentials = self.scope.get("drf_live_credentials")
        if self.closed or credentials is None or credentials[0] != "session":
            return
        key = sessions.user_key(self.user)
        if key not in self.credential_keys:
            self.credential_keys.append(key)
            try:
                await self.hub.attach(key, self)
            except Exception as exc:
                self.hub_lost(key, exc)
                return
        self.schedule_session_check()

    def schedule_session_check(self) -> None:
        interval = live_settings.SESSION_RECHECK_INTERVAL
        if interval is None or self.closed:
            return
        # Spread: sockets opened together do not re-check together. A weak
        # reference: the timer does not keep a closed socket's consumer alive.
        delay = float(interval) * random.uniform(0.75, 1.0)
        asyncio.get_running_loop().call_later(delay, _session_check_due, weakref.ref(self))

    async def check_session(self) -> None:
        """Close with 4001 if Django would no longer accept this socket's session cookie."""
        credentials = self.scope.get("drf_live_credentials")
        if self.closed or credentials is None:
            return
        try:
            valid = await sessions.still_valid(credentials[1], self.user)
        except Exception:
            # The database or session store failed: the socket stays, and tries again later.
            logger.warning("Could not re-validate a session socket", exc_info=True)
            valid = True
        if valid:
            self.schedule_session_check()
        else:
            await self.end(CLOSE_NOT_AUTHENTICATED)

    async def subscribe(self, content: dict[str, Any], request_id: Any) -> None:
        if not self.subscribe_bucket.take():
            raise RequestError("throttled")
        data = await self.validate(SubscriptionSerializer, content)
        target: Target = data["target"]
        if target.stream not in self.subscriptions and len(self.subscriptions) >= int(live_settings.MAX_SUBSCRIPTIONS):
            raise RequestError(
                "limit_exceeded",
                f"A socket may hold {live_settings.MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first.",
            )
        previous = self.subscriptions.pop(target.stream, None)
        if previous is not None and previous.group != data["group"]:
            await self.hub.leave(previous.group, self)
        subscription = Subscription(target, data["group"], data["audience"], data["registration"], pending=[])
        self.subscriptions[target.stream] = subscription
        try:
            # Join first, then read the position, then the snapshot: an event is
            # either in the snapshot (seq <= position) or sent afterwards.
            await self.hub.join(subscription.group, self)
            await self.send_snapshot(subscription, data, request_id)
        except Exception as exc:
            # No SUBSCRIBED reply (the layer or store is down, the object vanished
            # or was hidden since it was validated): no events either.
            await self.drop(subscription)
            if isinstance(exc, RequestError):
                raise
            if not isinstance(exc, Unavailable):
                logger.warning("Could not subscribe to %s", target.stream, exc_info=True)
            raise RequestError("unavailable") from None
        pending, subscription.pending = subscription.pending or [], None
        for message in pending:
            self.forward(subscription, message)

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
                        "SUBSCRIBED",
                        None,
                        request_id,
                        **meta,
                        seq=data["since"],
                        epoch=replay.position.epoch,
                        recovered=True,
                    )
                    await self.send_frame(reply)
                    for _seq, text in replay.frames:
                        self.send_text(text)
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
        if self.subscriptions.get(subscription.target.stream) is subscription:
            del self.subscriptions[subscription.target.stream]
        await self.hub.leave(subscription.group, self)

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
        value = header(self.scope, b"host")
        return value.rsplit(":", 1)[0] if value else None

    # Group messages, from the hub -------------------------------------------

    def hub_message(self, group: str, message: dict[str, Any]) -> None:
        """A message sent to one of this socket's groups; must not block."""
        if self.closed:
            return
        kind = message.get("type")
        if kind == "drf_live.event":
            if self.held is not None:
                self.held.append(message)
            else:
                self.take_event(message)
        elif kind == "drf_live.recheck":
            # Hold every event until the re-check is done, so that a socket that
            # lost access never sees the event of the write that took it away.
            if self.held is None:
                self.held = []
            self.rechecks += 1
            self.spawn(self.recheck(message.get("stream")))
        elif kind == "drf_live.close":
            self.spawn(self.end(int(message.get("code", CLOSE_NOT_AUTHENTICATED))))

    def hub_lost(self, group: str, error: BaseException) -> None:
        """The channel layer (Redis) failed: close so that the client reconnects and recovers."""
        logger.warning("Channel layer lost; closing the socket with %s: %r", CloseCode.LAYER_LOST, error)
        self.spawn(self.end(CloseCode.LAYER_LOST, wait=False))

    def take_event(self, message: dict[str, Any]) -> None:
        """An event for one of this socket's targets: forwarded if it is still subscribed."""
        subscription = self.subscriptions.get(message.get("stream", ""))
        if subscription is not None:
            self.forward(subscription, message)

    def forward(self, subscription: Subscription, message: dict[str, Any]) -> None:
        """Send an event once, in seq order, unless the snapshot already holds it."""
        if subscription.pending is not None:
            subscription.pending.append(message)
            return
        seq = message["seq"]
        if seq <= subscription.seq:
            return
        subscription.seq = seq
        self.send_text(message["text"])

    async def recheck(self, stream: str | None) -> None:
        """A write may have changed who sees ``stream`` (or, without one, anything)."""
        try:
            if stream is not None:
                subscriptions = [self.subscriptions[stream]] if stream in self.subscriptions else []
            else:
                subscriptions = list(self.subscriptions.values())
            lost = await self.lost_access(subscriptions) if subscriptions else []
            for subscription in lost:
                await self.drop(subscription)
                await self.send_frame(
                    frames.reply("UNSUBSCRIBED", None, **subscription.target.meta(), reason="revoked")
                )
        finally:
            self.rechecks -= 1
            if self.rechecks == 0 and self.held is not None:
                held, self.held = self.held, None
                for message in held:
                    self.take_event(message)

    @database_sync_to_async
    def lost_access(self, subscriptions: list[Subscription]) -> list[Subscription]:
        return [
            subscription
            for subscription in subscriptions
            if not subscription.registration.is_visible(self.user, subscription.target, host=self.host)
        ]


def _session_check_due(ref: weakref.ReferenceType[NotificationConsumer]) -> None:
    consumer = ref()
    if consumer is not None and not consumer.closed:
        consumer.spawn(consumer.check_session())
