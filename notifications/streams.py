"""Per-target event streams: seq, epoch, history, who is subscribed, and the bus that carries events.

A stream belongs to one target (an object or a collection). The relay claims
it, decides the event from the committed database state for every user
subscribed to it, then commits: the next seq is taken, the event is kept in the
stream's history and published on the stream's channel, in one step. Server
processes listen on the channels of the targets their sockets hold.

``RedisStreamStore`` (``redis_store``) is shared by every process that uses the
same Redis shards (``shards``: each stream lives on one of them);
``MemoryStreamStore`` serves one process (the demo's default). A
stream's epoch names its history: it changes when the history was lost (Redis
flushed or restarted, the stream expired) or when an event could not be
decided, so a ``(seq, epoch)`` pair never promises events it cannot replay.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import shards
from .conf import live_settings
from .limits import SocketCount
from .shards import Shard

if TYPE_CHECKING:
    from .messages import Entry


class StoreBusy(Exception):
    """Another process holds the stream's claim for longer than a claim may wait."""


@dataclass(frozen=True)
class Position:
    seq: int
    epoch: str


@dataclass(frozen=True)
class Replay:
    """The answer to "what happened after ``since``": the event messages in order, or None if unknown.

    ``earlier`` holds the history's messages up to ``since`` (same epoch), for
    what they say about a user's view before it.
    """

    position: Position
    messages: list[dict[str, Any]] | None
    earlier: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    """The relay's hold on one stream: the users subscribed to it, as of the claim."""

    stream: str
    users: tuple[str, ...]
    version: str
    token: str


@dataclass(frozen=True)
class Claims:
    """What ``claim_all`` found: holds on the streams someone is subscribed to, and the streams left to ``claim``.

    ``pending`` are streams someone is subscribed to whose hold another relay
    has, and streams on a shard that could not be asked; a stream in neither
    has nobody subscribed.
    """

    held: dict[str, Claim]
    pending: frozenset[str] = frozenset()

    @property
    def live(self) -> set[str]:
        return set(self.held) | self.pending


class Listener(Protocol):
    """A process's subscription to stream channels, for one event loop (see ``hub``)."""

    async def add(self, channel: str) -> None:
        """Listen on ``channel``; returns once messages published afterwards will arrive."""

    async def remove(self, channel: str) -> None: ...

    async def close(self) -> None: ...


class Receiver(Protocol):
    """What a listener hands messages to (a ``Hub``); both calls are made on the listener's loop."""

    def deliver(self, channel: str, message: dict[str, Any]) -> None: ...

    def lost(self, error: BaseException, channels: Collection[str] | None = None) -> None:
        """No more messages will come for ``channels`` (None: for any channel; the listener is done)."""


class StreamStore(Protocol):
    # The relay's side: synchronous, called from the relay thread.

    def claim(self, stream: str) -> Claim | None:
        """Hold ``stream`` and return who is subscribed; None (and no hold) when nobody is."""

    def claim_all(self, streams: Iterable[str]) -> Claims:
        """Hold each of ``streams`` that someone is subscribed to, without waiting: one round trip per shard.

        Most of the streams a write concerns (its object, each collection it is
        in) have nobody subscribed: they are neither held nor pending. A
        stream held elsewhere, or whose shard cannot be asked, is pending: claim
        it with ``claim``. Every hold taken is committed or released.
        """

    def commit(self, claim: Claim, entry: Entry, event: str = "", retry: bool = False) -> int | None:
        """Take the next seq, keep and publish ``entry`` as that event, release the hold.

        None when someone subscribed since the claim (the hold is released):
        claim again and decide anew, so that no subscriber misses the event.
        ``event`` names the event for good; on a ``retry`` (an earlier attempt
        may have committed it before its reply was lost), an event the history
        holds already is not committed twice: its seq is returned.
        """

    def release(self, claim: Claim, message: dict[str, Any] | None = None) -> None:
        """Release the hold, publishing ``message`` (no seq: a revocation, say) on the stream's channel."""

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Publish ``message`` on ``channel`` (the control channel)."""

    def rotate(self, streams: Iterable[str]) -> None:
        """Give ``streams`` a new epoch (an event of theirs was lost) and tell their listeners."""

    def rotate_all(self) -> None:
        """Give every stream a new epoch (events were dropped) and tell every server process."""

    # The sockets' side: asynchronous, on a server's event loop.

    async def register(self, stream: str, user: str) -> Position:
        """Count ``user`` among the subscribers of ``stream``; its position now."""

    async def refresh(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Keep these (stream, user) registrations alive."""

    async def unregister(self, stream: str, user: str) -> None:
        """``user``'s last local socket left ``stream``: keep the registration for ``RESUME_WINDOW`` only."""

    async def replay(self, stream: str, since: int, epoch: str) -> Replay:
        """The events after ``since``, if ``epoch`` is current and every one of them is still held."""

    def listener(self, receiver: Receiver) -> Listener:
        """A new listener for the running loop, delivering to ``receiver``."""

    # Sockets per user (``MAX_SOCKETS_PER_USER``), in every process that shares the store.

    async def admit_socket(self, user: str, socket: str, limit: int) -> bool:
        """Count ``socket`` among ``user``'s open sockets; False (not counted) when they hold ``limit`` already."""

    async def renew_sockets(self, sockets: Iterable[tuple[str, str]]) -> None:
        """Keep these (user, socket) counted for ``SOCKET_LEASE`` more seconds (a killed process's run out)."""

    async def release_socket(self, user: str, socket: str) -> None:
        """The socket closed: count it no more."""

    def close(self) -> None: ...


def new_epoch() -> str:
    return secrets.token_hex(4)


def control_channel() -> str:
    """The channel every server process listens on, for messages addressed to sockets by key."""
    return f"{live_settings.PREFIX}.control"


def contiguous(messages: list[dict[str, Any]], since: int, position: Position) -> list[dict[str, Any]] | None:
    """The messages ``since+1 .. position.seq`` in order, or None if any is missing."""
    by_seq = {
        message["seq"]: message
        for message in messages
        if message.get("epoch") == position.epoch and message["seq"] > since
    }
    ordered = []
    for seq in range(since + 1, position.seq + 1):
        message = by_seq.get(seq)
        if message is None:
            return None
        ordered.append(message)
    return ordered


# The in-process store -------------------------------------------------------------


@dataclass
class _MemoryStream:
    epoch: str
    seq: int = 0
    version: int = 0
    held_by: str | None = None
    users: dict[str, float] = field(default_factory=dict)  # user -> registered until (monotonic)
    history: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)
    # The event ids of the history's messages, by seq (``commit``'s ``event``).
    events: dict[int, str] = field(default_factory=dict)
    touched: float = field(default_factory=time.monotonic)


class MemoryStreamStore:
    """Streams in this process's memory; its bus calls the listeners' loops thread-safely."""

    def __init__(self) -> None:
        self._streams: dict[str, _MemoryStream] = {}
        self._lock = threading.Condition()
        self._generation = new_epoch()
        self._listeners: dict[str, set[_MemoryListener]] = {}
        self._sockets = SocketCount()

    def _get(self, stream: str) -> _MemoryStream:
        entry = self._streams.get(stream)
        now = time.monotonic()
        if entry is not None and entry.held_by is None and now - entry.touched > live_settings.HISTORY_TTL:
            entry = None  # Quiet for longer than the history is kept: start afresh.
        if entry is None:
            entry = self._streams[stream] = _MemoryStream(f"{self._generation}.{new_epoch()}")
        entry.touched = now
        return entry

    # The relay's side

    def claim(self, stream: str) -> Claim | None:
        deadline = time.monotonic() + float(live_settings.CLAIM_TIMEOUT)
        with self._lock:
            while True:
                try:
                    return self._hold(stream)
                except StoreBusy:
                    if not self._lock.wait(max(deadline - time.monotonic(), 0)):
                        raise

    def _hold(self, stream: str) -> Claim | None:
        """Hold ``stream`` if someone is subscribed (under the lock); None if nobody is, StoreBusy if held."""
        entry = self._get(stream)
        now = time.monotonic()
        users = tuple(sorted(user for user, until in entry.users.items() if until >= now))
        if not users:
            return None
        if entry.held_by is not None:
            raise StoreBusy(stream)
        entry.held_by = secrets.token_hex(8)
        return Claim(stream, users, str(entry.version), entry.held_by)

    def claim_all(self, streams: Iterable[str]) -> Claims:
        held: dict[str, Claim] = {}
        pending: set[str] = set()
        with self._lock:
            for stream in dict.fromkeys(streams):
                if stream not in self._streams:
                    continue  # nobody ever registered: nothing to make
                try:
                    claim = self._hold(stream)
                except StoreBusy:
                    pending.add(stream)
                    continue
                if claim is not None:
                    held[stream] = claim
        return Claims(held, frozenset(pending))

    def commit(self, claim: Claim, entry: Entry, event: str = "", retry: bool = False) -> int | None:
        # One process holds both the relay and this store, so no reply is ever lost; but a
        # published transaction's rows are deleted a little later, and a retry may find it here.
        with self._lock:
            stream = self._get(claim.stream)
            if stream.held_by != claim.token:
                return None
            stream.held_by = None
            self._lock.notify_all()
            if str(stream.version) != claim.version:
                return None
            if retry and event:
                for seq, committed in stream.events.items():
                    if committed == event:
                        return seq
            stream.seq += 1
            message = {"seq": stream.seq, "epoch": stream.epoch, **entry}
            stream.history.append((time.monotonic(), message))
            if event:
                stream.events[stream.seq] = event
            while len(stream.history) > live_settings.HISTORY_LENGTH:
                _at, dropped = stream.history.popleft()
                stream.events.pop(dropped["seq"], None)
            seq = stream.seq
        self.publish(claim.stream, message)
        return seq

    def release(self, claim: Claim, message: dict[str, Any] | None = None) -> None:
        with self._lock:
            stream = self._get(claim.stream)
            if stream.held_by == claim.token:
                stream.held_by = None
                self._lock.notify_all()
        if message is not None:
            self.publish(claim.stream, message)

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        for listener in list(self._listeners.get(channel, ())):
            listener.post(channel, message)

    def rotate(self, streams: Iterable[str]) -> None:
        for name in set(streams):
            with self._lock:
                stream = self._get(name)
                stream.epoch = f"{self._generation}.{new_epoch()}"
                stream.history.clear()
                stream.events.clear()
                epoch = stream.epoch
            self.publish(name, {"type": "rotate", "epoch": epoch})

    def rotate_all(self) -> None:
        with self._lock:
            self._generation = new_epoch()
            for stream in self._streams.values():
                stream.epoch = f"{self._generation}.{new_epoch()}"
                stream.history.clear()
                stream.events.clear()
        self.publish(control_channel(), {"type": "rotate-all"})

    # The sockets' side

    async def register(self, stream: str, user: str) -> Position:
        with self._lock:
            entry = self._get(stream)
            now = time.monotonic()
            if entry.users.get(user, -1.0) < now:
                entry.version += 1
            entry.users[user] = max(entry.users.get(user, 0.0), now + float(live_settings.RESUME_WINDOW))
            return Position(entry.seq, entry.epoch)

    async def refresh(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            until = time.monotonic() + float(live_settings.RESUME_WINDOW)
            for stream, user in pairs:
                entry = self._get(stream)
                entry.users[user] = max(entry.users.get(user, 0.0), until)

    async def unregister(self, stream: str, user: str) -> None:
        await self.refresh([(stream, user)])

    async def replay(self, stream: str, since: int, epoch: str) -> Replay:
        with self._lock:
            entry = self._get(stream)
            position = Position(entry.seq, entry.epoch)
            horizon = time.monotonic() - live_settings.HISTORY_TTL
            held = [message for at, message in entry.history if at >= horizon]
        if position.epoch != epoch or since > position.seq:
            return Replay(position, None)
        earlier = [message for message in held if message["seq"] <= since]
        return Replay(position, contiguous(held, since, position), earlier)

    def listener(self, receiver: Receiver) -> Listener:
        return _MemoryListener(self, receiver, asyncio.get_running_loop())

    # Sockets per user: this process is every process.

    async def admit_socket(self, user: str, socket: str, limit: int) -> bool:
        return self._sockets.add(user, limit)

    async def renew_sockets(self, sockets: Iterable[tuple[str, str]]) -> None:
        return None

    async def release_socket(self, user: str, socket: str) -> None:
        self._sockets.remove(user)

    def close(self) -> None:
        return None


class _MemoryListener:
    def __init__(self, store: MemoryStreamStore, receiver: Receiver, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.receiver = receiver
        self.loop = loop

    def post(self, channel: str, message: dict[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.receiver.deliver, channel, dict(message))
        except RuntimeError:  # The loop closed: this listener is gone.
            self.store._listeners.get(channel, set()).discard(self)

    async def add(self, channel: str) -> None:
        self.store._listeners.setdefault(channel, set()).add(self)

    async def remove(self, channel: str) -> None:
        listeners = self.store._listeners.get(channel)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del self.store._listeners[channel]

    async def close(self) -> None:
        for channel in list(self.store._listeners):
            await self.remove(channel)


# Choosing the store -------------------------------------------------------------

_store: StreamStore | None = None
_store_lock = threading.Lock()


def get_store() -> StreamStore:
    """The process's stream store, chosen by the ``STORE_URL`` setting."""
    global _store
    with _store_lock:
        if _store is None:
            shards = store_shards()
            if shards:
                from .redis_store import RedisStreamStore

                _store = RedisStreamStore(shards)
            else:
                _store = MemoryStreamStore()
        return _store


def reset_store() -> None:
    """Forget the store (tests, and settings changes)."""
    global _store
    with _store_lock:
        if _store is not None:
            _store.close()
        _store = None


def store_shards() -> list[Shard] | None:
    """The Redis shards of the store, in order, or None for process memory.

    ``STORE_URL`` names them (a URL, comma-separated URLs, a dict, or a list);
    without it, they are every host of a channels_redis default channel layer.
    """
    configured = live_settings.STORE_URL
    if configured == "memory":
        return None
    if configured:
        return shards.parse(configured)
    from django.conf import settings

    return shards.from_layer(getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}))
