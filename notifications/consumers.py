"""``NotificationConsumer``: the one WebSocket endpoint (``/ws/notifications/``)."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable, Hashable, Mapping
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from . import actions as viewset_actions
from . import delivery, frames, metrics, sessions
from .auth import authenticate_token, client_address, header
from .conf import live_settings
from .delivery import REVOKE, Subscription, Verdict
from .exceptions import RequestError, Unavailable
from .frames import CloseCode
from .hub import Hub, get_hub
from .limits import ActionBudgets, TokenBucket, auth_failures
from .outgoing import Outgoing
from .registration import default_host
from .registry import Registry, site
from .relay import relay
from .streams import Position, control_channel, get_store
from .subscriptions import (
    Seen,
    SubscriptionSerializer,
    TargetSerializer,
    ViewsetRequestSerializer,
    error_code,
    look_up_together,
    user_state,
    visible_target,
)
from .targets import Target, session_group, token_group, user_group, user_key
from .trips import database_trip

logger = logging.getLogger("notifications.consumers")

CLOSE_NOT_AUTHENTICATED = CloseCode.NOT_AUTHENTICATED
CLOSE_NORMAL = 1000  # what ASGI assumes for a websocket.close without a code

#: Subscribes of one socket under way at the same time, at most.
CONCURRENT_SUBSCRIBES = 32


def _same_user(consumer: NotificationConsumer, *args: Any, **kwargs: Any) -> Any:
    """The subscribes of one user on one host go in one trip, so that their objects are read together."""
    user = consumer.user
    return None if user is None or not user.is_authenticated else (user.pk, consumer.host)


class SharedTrip:
    """What the subscribes in one trip to the database share (``prepare`` of ``admit``).

    ``seen``: the objects they name, looked up together per user and model
    (``look_up_together``). ``admitted``: each target let in and read so far in
    the trip, by user (``user_state``), origin, stream and what was read: the
    same user asking for the same target in the same trip, after the positions
    of both were registered, gets the same check and the same read (several tabs
    that reconnect together). A refusal is not kept: the next asks again.
    """

    def __init__(self, seen: Seen) -> None:
        self.seen = seen
        self.admitted: dict[Hashable, tuple[Any, dict[str, bool] | None]] = {}


def _look_up_together(calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> SharedTrip:
    """Before a trip's subscribes: the objects they name, one query per user and model (``look_up_together``)."""
    return SharedTrip(look_up_together((args[0].user, args[0].host, args[2]) for args, _ in calls))


class NotificationConsumer(AsyncWebsocketConsumer):
    """Validates subscriptions with DRF serializers and forwards pre-encoded events.

    The socket has no channel of its own: it listens on its targets' stream
    channels through the process's ``Hub``, which receives each message once and
    hands it to ``hub_message`` of every local member. The relay decided who may
    see each event and encoded its frames; the socket only applies the verdict
    to its user (``delivery``). No input raises out of this class: every frame
    gets a reply, and an error reply never closes the socket.
    """

    registry: Registry = site
    # The frame actions and the methods that handle them (looked up per frame,
    # not bound per socket: at 10,000 sockets every byte per socket counts).
    actions: dict[str, str] = {
        "subscribe": "subscribe",
        "unsubscribe": "unsubscribe",
        "authenticate": "authenticate",
        "ping": "ping",
        # Answered by the registered viewset (notifications.actions), as the REST API answers.
        "retrieve": "viewset_request",
        "list": "viewset_request",
        "create": "viewset_request",
        "update": "viewset_request",
        "partial_update": "viewset_request",
        "destroy": "viewset_request",
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
        self.budgets = ActionBudgets()
        self.error_bucket = TokenBucket(live_settings.ERROR_RATE, live_settings.ERROR_BURST)
        self.auth_failures = 0
        # Events held while access is being re-checked (None: none is).
        self.held: list[tuple[str, dict[str, Any], int | None]] | None = None
        self.rechecks = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        # The subscribes under way and their streams (None while there are none).
        self.subscribing: dict[asyncio.Task[Any], str] | None = None
        self.replacing = 0  # subscriptions being replaced by a subscribe of the same target
        # The metrics recorder this socket counts into, from its accept to its end (a no-op until then).
        self.recorder: metrics.Recorder = metrics.NOOP

    # Connection -------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Like AsyncConsumer.__call__, but without a channel per socket: the hub
        # brings stream messages, so only the client's frames are awaited here.
        self.scope = scope
        self.channel_layer = None
        self.hub: Hub = get_hub()
        # Frames go out through ``self.out`` only; channels' accept() and close() reach
        # the ASGI server through ``base_send``, which refuses a frame (``_control_send``).
        self.base_send = self._control_send
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
            await self.shutdown()  # The connection is gone, however it ended.

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Only the ASGI server's websocket.* messages arrive here. Channels
        # closes stale DB connections before each; our ORM work runs in
        # database_sync_to_async, which does that itself.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        # A server process publishes what other processes left in the outbox.
        if live_settings.OUTBOX_SWEEP is None:
            relay.start(sweep=True)
        await self.accept()
        self.recorder = metrics.recorder
        self.recorder.socket_opened()
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
            self.spawn(self.shutdown(CLOSE_NOT_AUTHENTICATED))

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None and self.user.is_authenticated

    async def login(self, user: Any, credentials: tuple[str, str] | None) -> None:
        if self.counted_user is None:
            if not await self.hub.admit(user_key(user), self):
                await self.shutdown(CloseCode.TOO_MANY_SOCKETS)
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

    async def shutdown(self, code: int | None = None, reason: str | None = None) -> None:
        """The one way a socket ends, whoever ends it.

        With ``code``, the server closes the socket: after the send in progress
        (if any) has unwound, ``websocket.close`` goes out; nothing is sent after
        it. Without, the connection is gone (the client closed it, a send failed,
        the ASGI call ended): nothing is sent, and the socket's background tasks
        stop.

        Safe to call any number of times, from anywhere: the closed state, the
        close frame and each metric happen once; leaving the hub and the store
        and giving back the per-user lease happen whenever something is still
        held (a subscribe or a login under way may join after the first call,
        and the ASGI call's end calls again).
        """
        first = not self.closed
        self.closed = True
        if first:
            self.out.stop()
            if code is not None:
                self.recorder.closed(code)
        await self.leave_groups()
        if self.counted_user is not None:
            self.hub.dismiss(self)
            self.counted_user = None
        if code is None:
            current = asyncio.current_task()
            for task in self.tasks:
                if task is not current:
                    task.cancel()
            self.recorder.socket_closed()
            self.recorder = metrics.NOOP  # counted once
        elif first:
            # A client that is not reading: the close frame waits behind what it did not
            # read, and the ASGI server drops the connection after its close timeout.
            await self.out.settle()
            try:
                await super().close(code, reason)
            except OSError:
                pass  # The client left meanwhile (uvicorn's ClientDisconnected): nothing to close.

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Channels' way to close from the server end: the socket shuts down (``shutdown``)."""
        await self.shutdown(CLOSE_NORMAL if code is None or code is True else code, reason)

    async def disconnect(self, code: int) -> None:
        await self.shutdown()

    async def leave_groups(self) -> None:
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        for key in self.credential_keys:
            self.hub.detach(key, self)
        self.credential_keys = []
        subscriptions = list(self.subscriptions.values())
        self.subscriptions.clear()
        for subscription in subscriptions:
            self.recorder.unsubscribed(subscription.target.model)
            await self._leave(subscription)

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        """Run ``coroutine`` in the background, cancelled if the socket goes away."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # Sending ----------------------------------------------------------------

    async def send_frame(self, frame: frames.Frame) -> None:
        self.send_text(frames.encode(frame))

    def send_text(self, text: str) -> None:
        """Queue one frame after those before it; never waits for the client.

        The one way out to the socket: every frame goes through ``self.out``
        (its order, its bound, its slow-consumer clock), and none after a close.
        """
        if not self.closed:
            self.out.offer(text)

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False
    ) -> None:
        """Channels' way to send a frame, routed like every other one (``send_text``)."""
        if text_data is None:
            raise ValueError("drf-live sends JSON text frames only: pass text_data.")
        self.send_text(text_data)
        if close:
            await self.close(None if close is True else close)

    async def _control_send(self, message: dict[str, Any]) -> None:
        """What channels' accept() and close() hand the ASGI server; never a frame."""
        if message["type"] == "websocket.send":
            raise RuntimeError("A frame must go through the socket's queue (send_text), not straight to the server.")
        await self.out.send(message)

    def _overflowed(self) -> None:
        logger.info("Slow consumer: closing the socket with %s", CloseCode.SLOW_CONSUMER)
        self.spawn(self.shutdown(CloseCode.SLOW_CONSUMER))

    def _send_failed(self, exc: BaseException) -> None:
        # The client went away mid-send (Outgoing stopped already); the ASGI server tells us with
        # websocket.disconnect, and we let go now.
        logger.debug("Send failed: %r", exc)
        self.spawn(self.shutdown())

    # Client frames --------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return  # Closed by the server: a reply would follow websocket.close.
        size = len(text_data) if text_data is not None else len(bytes_data or b"")
        if size > int(live_settings.MAX_FRAME_BYTES):
            await self.shutdown(CloseCode.FRAME_TOO_LARGE)
            return
        request_id = None
        try:
            content = self.parse(text_data)
            request_id = self.request_id(content)
            action = content.get("action", "subscribe" if "model" in content else None)
            if not isinstance(action, str):
                raise RequestError("invalid", "Say what to do in `action`.", fields=["action"])
            method = self.actions.get(action)
            if method is None and any(action in registration.custom_actions for registration in self.registry):
                method = "viewset_request"  # a registration's own action (its custom_actions)
            if method is None:
                raise RequestError("unknown_action")
            if not self.budgets.take(action):
                raise RequestError("throttled")
            if action not in {"authenticate", "ping"} and self.user is None:
                raise RequestError("not_authenticated")
            if method != "subscribe":
                # Any other frame is answered after every subscribe sent before it.
                await self.settle_subscribes()
            await getattr(self, method)(content, request_id)
        except Exception as exc:
            await self.failed(exc, request_id)

    async def failed(self, exc: Exception, request_id: Any) -> None:
        """The error reply to a request that raised ``exc``: its code, or ``unavailable`` (logged)."""
        if isinstance(exc, RequestError):
            await self.send_error(frames.error(exc.code, request_id, exc.detail, **exc.extra))
        else:
            logger.error("Unexpected error while handling a frame", exc_info=exc)
            await self.send_error(frames.error("unavailable", request_id))

    async def subscribe(self, content: dict[str, Any], request_id: Any) -> None:
        """Start a subscribe beside those under way on this socket, and read the next frame meanwhile.

        A client subscribes to a page of objects at once, and to all it holds
        again after a reconnect: answered together, their checks and reads
        share trips to the database (``admit``), where one after another each
        waits for the last. A subscribe waits for one under way of the same
        target, and for room beyond ``CONCURRENT_SUBSCRIBES``; any other frame
        waits for them all (``receive``).
        """
        data = self._validated(SubscriptionSerializer, content, {"check_access": False})  # no database
        stream = data["target"].stream
        while self.subscribing and (
            stream in self.subscribing.values() or len(self.subscribing) >= CONCURRENT_SUBSCRIBES
        ):
            await asyncio.wait(list(self.subscribing), return_when=asyncio.FIRST_COMPLETED)
        if self.closed:
            return
        task = asyncio.ensure_future(self._answer_subscribe(data, request_id))
        self.tasks.add(task)
        if self.subscribing is None:
            self.subscribing = {}
        self.subscribing[task] = stream
        task.add_done_callback(self._subscribe_done)

    def _subscribe_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if self.subscribing is not None:
            self.subscribing.pop(task, None)
            if not self.subscribing:
                self.subscribing = None

    async def settle_subscribes(self) -> None:
        """Wait until every subscribe under way on this socket is answered."""
        while self.subscribing:
            await asyncio.wait(list(self.subscribing))

    async def _answer_subscribe(self, data: dict[str, Any], request_id: Any) -> None:
        try:
            await self.subscribe_validated(data, request_id)
        except Exception as exc:
            await self.failed(exc, request_id)

    async def send_error(self, frame: frames.Frame) -> None:
        # A client that keeps making errors is flooding: close it.
        if not self.error_bucket.take():
            await self.shutdown(CloseCode.FLOOD)
            return
        self.recorder.error(frame["payload"]["code"])
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
            await self.shutdown(CloseCode.FLOOD)
            return
        user = await self.hub.user_of_token(key, authenticate_token)
        if user is None:
            if self.failed_authentication(address):
                await self.shutdown(CloseCode.FLOOD)
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
            await self.shutdown(CLOSE_NOT_AUTHENTICATED)

    async def subscribe_validated(self, data: dict[str, Any], request_id: Any) -> None:
        # The request's shape was checked without the database; the access check comes with
        # the snapshot, in one trip to the database thread, after the registration.
        target: Target = data["target"]
        held = len(self.subscriptions) + self.replacing
        if target.stream not in self.subscriptions and held >= int(live_settings.MAX_SUBSCRIPTIONS):
            raise RequestError(
                "limit_exceeded",
                f"A socket may hold {live_settings.MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first.",
            )
        previous = self.subscriptions.pop(target.stream, None)
        # A subscribe with `since` of a target this socket holds (a client that timed out asks
        # again, after the first request was answered) can lean on the subscription it replaces.
        again = previous is not None and previous.pending is None and "since" in data
        # An object needs no second access check to be recovered: each event is decided for this
        # user as it is committed, and a change elsewhere (a membership) re-checks it or ends it
        # (`recheck`), so the subscription stands for the access unless a re-check is under way.
        vouched = again and self.held is None and not target.is_collection
        # The same request (same `since` and `epoch`): its client got, on this socket, every event
        # the first answer was followed by, and holds them while it waits for this answer
        # (docs/protocol.md, section 5); the replay starts after them rather than repeat them.
        same = again and previous is not None and previous.asked == (data["since"], data["epoch"])
        resume = previous.sent if same and previous is not None and previous.epoch == data["epoch"] else None
        if previous is not None:
            self.recorder.unsubscribed(previous.target.model)
            # Still counted against MAX_SUBSCRIPTIONS by the subscribes beside this one.
            self.replacing += 1
            try:
                await self._leave(previous)
            finally:
                self.replacing -= 1
        subscription = Subscription(target, data["registration"], user_key(self.user))
        self.subscriptions[target.stream] = subscription
        self.recorder.subscribed(target.model)
        tracked = False
        try:
            # Listen first, then register and read the position, then check access
            # and read the snapshot: an event is either in the snapshot (seq <=
            # position) or decided for this user and delivered afterwards.
            await self.hub.join(target.stream, self)
            position = await self._register(subscription)
            self.hub.track(target.stream, subscription.user)
            tracked = True
            await self.send_snapshot(subscription, position, data, request_id, vouched=vouched, resume=resume)
        except Exception as exc:
            # No SUBSCRIBED reply (the user may not see the target, the store is
            # down): no events either.
            await self.drop(subscription, tracked=tracked)
            if isinstance(exc, RequestError):
                raise
            if not isinstance(exc, Unavailable):
                logger.warning("Could not subscribe to %s", target.stream, exc_info=True)
            raise RequestError("unavailable") from None
        pending, subscription.pending = subscription.pending or [], None
        self.recorder.delivered(sum(self.forward(subscription, message, prev) for message, prev in pending))

    async def _register(self, subscription: Subscription) -> Position:
        try:
            return await get_store().register(subscription.target.stream, subscription.user)
        except Exception as exc:
            logger.warning(
                "Stream store unavailable while subscribing to %s", subscription.target.stream, exc_info=True
            )
            raise Unavailable(str(exc)) from exc

    async def send_snapshot(
        self,
        subscription: Subscription,
        position: Position,
        data: dict[str, Any],
        request_id: Any,
        *,
        vouched: bool = False,
        resume: int | None = None,
    ) -> None:
        target = subscription.target
        meta = target.meta()
        subscription.epoch = position.epoch
        texts: list[str] | None = None
        if "since" in data:
            try:
                start = max(data["since"], resume or 0)
                replay = await get_store().replay(target.stream, start, data["epoch"])
            except Exception as exc:
                logger.warning("Stream store unavailable while recovering %s", target.stream, exc_info=True)
                raise Unavailable(str(exc)) from exc
            subscription.sent = start
            subscription.asked = (data["since"], data["epoch"])
            texts = (
                delivery.replay(subscription, replay.earlier, replay.messages) if replay.messages is not None else None
            )
        # Recovered, an object needs no read; a collection, the ids of its members now.
        read = "full" if texts is None else "members" if target.is_collection else None
        if read is None and vouched:
            payload, members = None, None
        else:
            data, payload, members = await self.admit(subscription, data, read)
        if texts is not None:
            subscription.seq = replay.position.seq
            subscription.epoch = replay.position.epoch
            if target.is_collection:
                # From now on, what the client holds is what the list shows now.
                subscription.members = members
                subscription.complete = True
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
            for text in texts:
                self.send_text(text)
            self.recorder.recovery(True)
            self.recorder.delivered(len(texts))
            return
        subscription.seq = subscription.sent = position.seq
        subscription.members = members
        subscription.complete = True
        extra = {"recovered": False} if "since" in data else {}
        if "since" in data:
            self.recorder.recovery(False)
        await self.send_frame(
            frames.reply("SUBSCRIBED", payload, request_id, **meta, seq=position.seq, epoch=position.epoch, **extra)
        )

    @database_trip(key=_same_user, prepare=_look_up_together)
    def admit(
        self,
        subscription: Subscription,
        data: dict[str, Any],
        read: str | None,
        *,
        prepared: SharedTrip | None = None,
    ) -> tuple[dict[str, Any], Any, dict[str, bool] | None]:
        """May this user see the target (``not_found`` if not), and, in the same trip, its snapshot.

        ``data``: the request as validated without the database. ``read``:
        ``"full"`` (the payload, and a collection's members), ``"members"`` (a
        collection's members only) or None (nothing). ``prepared``: what the
        subscribes of this trip share (``SharedTrip``).
        """
        state = user_state(self.user)
        shared = prepared if prepared is not None and state is not None else None
        key = (state, self.origin, subscription.target.stream, read)
        if shared is not None and key in shared.admitted:
            # This user was let in and read this target in this trip already: the same answer.
            payload, members = shared.admitted[key]
        else:
            seen = prepared.seen.get((state, self.host)) if prepared is not None else None
            payload, members = self._admit(subscription, data, read, seen)
            if shared is not None:
                shared.admitted[key] = (payload, members)
        # Each subscription keeps its own members (events change them); the payload is only encoded.
        return data, payload, None if members is None else dict(members)

    def _admit(
        self, subscription: Subscription, data: dict[str, Any], read: str | None, seen: Mapping[Any, Any] | None
    ) -> tuple[Any, dict[str, bool] | None]:
        target, registration = subscription.target, subscription.registration
        if target.is_collection:
            # The objects the filter names are checked once, for the access and the list alike.
            lookups = registration.collection_lookups(self.user, data["filter"], host=self.host, seen=seen)
            instance = None if lookups is None else registration.collection_queryset(self.user, lookups, host=self.host)
            data = {**data, "lookups": lookups}
        else:
            instance = visible_target(data, self.user, self.host, seen)
        if instance is None:
            raise RequestError("not_found")
        if read is None:
            return None, None
        return self._read_snapshot(subscription, {**data, "instance": instance}, members_only=read == "members")

    def _read_snapshot(
        self, subscription: Subscription, data: dict[str, Any], *, members_only: bool = False
    ) -> tuple[Any, dict[str, bool] | None]:
        """The target's state as ``GET`` shows it to this user, read after the position.

        For a collection, also the ids of the members it shows (what the client
        will hold), from the same queryset.
        """
        registration = subscription.registration
        if subscription.target.is_collection:
            # The queryset the access check built, in this same trip.
            queryset = data["instance"]
            members = {registration.wire_id(pk): True for pk in queryset.values_list("pk", flat=True)}
            if members_only:
                return None, members
            # The REST API's list of the collection, paginated as the REST list is: the first page.
            listed = viewset_actions.run(
                registration, "list", self.user, self.origin, lookups=data["lookups"], query=dict(data["filter"])
            )
            return listed.payload, members
        # The object as the access check read it, in this same trip: one read decides both.
        return registration.serialize(data["instance"], self.user, host=self.host), None

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

    async def drop(self, subscription: Subscription, *, tracked: bool = True) -> None:
        if self.subscriptions.get(subscription.target.stream) is subscription:
            del self.subscriptions[subscription.target.stream]
            self.recorder.unsubscribed(subscription.target.model)
        await self._leave(subscription, tracked=tracked)

    async def _leave(self, subscription: Subscription, *, tracked: bool = True) -> None:
        if tracked:
            self.hub.untrack(subscription.target.stream, subscription.user)
        if not any(other.target.stream == subscription.target.stream for other in self.subscriptions.values()):
            await self.hub.leave(subscription.target.stream, self)

    async def validate(
        self, serializer_class: type[TargetSerializer], content: dict[str, Any], **context: Any
    ) -> dict[str, Any]:
        return await self._validate(serializer_class, content, context)

    @database_sync_to_async
    def _validate(
        self, serializer_class: type[TargetSerializer], content: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        return self._validated(serializer_class, content, extra)

    def _validated(
        self, serializer_class: type[TargetSerializer], content: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        context = {"registry": self.registry, "user": self.user, "host": self.host, **extra}
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

    @property
    def origin(self) -> viewset_actions.Origin:
        """The host and scheme the client reached: links the viewset builds (pagination) are the REST API's."""
        host = header(self.scope, b"host") or default_host()
        return viewset_actions.Origin(host, secure=self.scope.get("scheme") == "wss")

    # Requests the viewset answers ----------------------------------------------------

    async def viewset_request(self, content: dict[str, Any], request_id: Any) -> None:
        action = content["action"]
        registration = self.registry.get_by_label(content.get("model"))
        if registration is None:
            raise RequestError("not_found")
        if action not in registration.socket_actions and action not in registration.custom_actions:
            # Whatever the body: what a registration has not enabled does not run.
            raise RequestError("not_allowed", f"{action} is not enabled for {registration.label}.")
        data = await self.validate(ViewsetRequestSerializer, content, action=action, collection=action == "list")
        held = data["target"].stream if action in ("list", "retrieve") else None
        subscription = self.subscriptions.get(held) if held is not None else None
        if subscription is not None and subscription.pending is not None:
            subscription = None  # Still subscribing: its SUBSCRIBED will carry the seq.
        meta = data["target"].meta() if action != "create" else {"model": registration.label}
        if subscription is not None:
            # A page of a collection (or an object) this socket holds is answered in its event
            # stream, at its seq: the events that arrive meanwhile follow the reply, so a client
            # applies the page, then only the events after it.
            subscription.pending = []
            # The seq of the last event the client was sent (events skipped since, as not
            # its own, are nothing it waits for).
            meta.update(seq=subscription.sent, epoch=subscription.epoch)
        try:
            reply = await self._run_viewset(registration, action, data)
            if action == "list" and "page" in data:
                meta["page"] = data["page"]
            if action == "list" and content.get("query"):
                meta["query"] = content["query"]
            await self.send_frame(frames.reply(reply.type, reply.payload, request_id, **meta, **reply.meta))
        finally:
            if subscription is not None and subscription.pending is not None:
                pending, subscription.pending = subscription.pending, None
                sent = sum(self.forward(subscription, message, prev) for message, prev in pending)
                self.recorder.delivered(sent)

    @database_sync_to_async
    def _run_viewset(self, registration: Any, action: str, data: dict[str, Any]) -> viewset_actions.Reply:
        if action in registration.custom_actions:
            return viewset_actions.call_custom(
                registration, action, self.user, self.origin, pk=data.get("pk"), data=data.get("data")
            )
        return viewset_actions.run(
            registration,
            action,
            self.user,
            self.origin,
            pk=data.get("pk"),
            lookups=data.get("lookups"),
            query=data.get("query"),
            data=data.get("data"),
        )

    # Stream and control messages, from the hub ------------------------------------

    def hub_message(self, channel: str, message: dict[str, Any], prev: int | None) -> bool:
        """A message of one of this socket's channels; must not block. True when it sent an event frame."""
        if self.closed:
            return False
        if channel == control_channel():
            self.control(message)
        elif self.held is not None:
            # Hold every event until the re-check is done, so that a socket that
            # lost access never sees the event of the write that took it away.
            self.held.append((channel, message, prev))
        else:
            return self.take_event(channel, message, prev)
        return False

    def control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "recheck":
            if self.held is None:
                self.held = []
            self.rechecks += 1
            self.spawn(self.recheck(message.get("stream")))
        elif kind == "close":
            self.spawn(self.shutdown(int(message.get("code", CLOSE_NOT_AUTHENTICATED))))
        elif kind == "rotate-all":
            self.resync("every epoch rotated")

    def hub_lost(self, channel: str, error: BaseException) -> None:
        """The store's connection (Redis) failed: close so that the client reconnects and recovers."""
        logger.warning("Stream store lost; closing the socket with %s: %r", CloseCode.LAYER_LOST, error)
        self.spawn(self.shutdown(CloseCode.LAYER_LOST))

    def resync(self, reason: str) -> None:
        """This socket cannot vouch for what its client holds: close it so that the client recovers."""
        logger.info("Closing a socket with %s so that it recovers: %s", CloseCode.LAYER_LOST, reason)
        self.spawn(self.shutdown(CloseCode.LAYER_LOST))

    def take_event(self, channel: str, message: dict[str, Any], prev: int | None) -> bool:
        """A message for one of this socket's targets: forwarded if it is still subscribed."""
        subscription = self.subscriptions.get(channel)
        if subscription is not None:
            return self.forward(subscription, message, prev)
        return False

    def forward(self, subscription: Subscription, message: dict[str, Any], prev: int | None) -> bool:
        """Apply the relay's verdict for this socket's user, once, in seq order; True when a frame was sent."""
        if subscription.pending is not None:
            subscription.pending.append((message, prev))
            return False
        seq = message.get("seq")
        if isinstance(seq, int):
            if message.get("epoch") != subscription.epoch:
                # The stream started a new history (its keys expired, Redis lost them): the seqs
                # start again, and what the client holds can no longer be vouched for.
                self.resync(f"{subscription.target.stream}: epoch {message.get('epoch')}")
                return False
            if seq <= subscription.seq:
                return False  # In the snapshot, or a repeat.
            if seq > max(subscription.seq, prev or 0) + 1:
                # The process never received an event between the snapshot and this one.
                self.resync(f"{subscription.target.stream}: event {seq} after {subscription.seq}")
                return False
            subscription.seq = seq
        result = delivery.outcome(subscription, message)
        if result is REVOKE:
            self.spawn(self.revoke(subscription))
        elif isinstance(result, Verdict):
            self.resync(f"{subscription.target.stream}: {message.get('type') or message.get('kind')}")
        elif result is not None and isinstance(seq, int):
            self.send_text(delivery.text(subscription, result, seq))
            return True
        return False

    async def revoke(self, subscription: Subscription) -> None:
        if self.subscriptions.get(subscription.target.stream) is not subscription:
            return
        await self.drop(subscription)
        await self.send_frame(frames.reply("UNSUBSCRIBED", None, **subscription.target.meta(), reason="revoked"))

    async def recheck(self, stream: str | None) -> None:
        """A write may have changed who sees ``stream`` (or, without one, anything)."""
        try:
            if stream is not None:
                subscriptions = [self.subscriptions[stream]] if stream in self.subscriptions else []
            else:
                subscriptions = list(self.subscriptions.values())
            lost = await self.lost_access(subscriptions) if subscriptions else []
            for subscription in lost:
                await self.revoke(subscription)
        finally:
            self.rechecks -= 1
            if self.rechecks == 0 and self.held is not None:
                held, self.held = self.held, None
                self.recorder.delivered(sum(self.take_event(channel, message, prev) for channel, message, prev in held))

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
