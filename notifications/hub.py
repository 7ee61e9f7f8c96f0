"""Per-process fan-out: one subscription to a stream's channel, whatever the number of local sockets.

Each server process listens once on the channel of every target one of its
sockets holds (a Redis ``SUBSCRIBE`` on one connection per event loop, see
``streams.Listener``); an event reaches the process once and is handed to every
local member, which picks its frame (the relay encoded one per audience). The
hub also remembers the last seq it saw per channel, so that a member can tell
an event it was not meant to see from one the process never received.

Messages about credentials and users (close the sockets of a revoked token,
re-check the access of a removed member) come on one control channel that every
process listens on; each names the local keys it is for in ``"to"``, and the hub
hands it to the sockets attached under those keys (``attach``).

The hub also keeps each local (stream, user) registration alive in the store:
the relay decides events only for registered users; and it counts the local
sockets of each user in the store (``MAX_SOCKETS_PER_USER``, across processes
with Redis), renewing them while they stay open.

When the store's connection for some channels fails (one Redis shard), only
the members of those channels are told; the others keep receiving.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import os
import secrets
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import metrics
from .conf import live_settings
from .streams import Listener, StreamStore, control_channel, get_store
from .targets import token_group, user_group

logger = logging.getLogger("notifications.hub")


class Member(Protocol):
    """What the hub delivers to: a socket's consumer."""

    def hub_message(self, channel: str, message: dict[str, Any], prev: int | None) -> bool | None:
        """Handle one message of ``channel``; ``prev`` is the seq the process saw last on it (None: none yet).

        Must not block: it is called for every member in turn. True when it
        sent its client an event frame (counted as a delivery, metrics on).
        """

    def hub_lost(self, channel: str, error: BaseException) -> None:
        """The store's connection failed: no more messages will come for ``channel``."""


@dataclass(eq=False)
class _Group:
    channel: str
    members: set[Member] = field(default_factory=set)
    last_seq: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


class Hub:
    """The channels this process's sockets listen on, on one event loop and one store."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store
        self.listener: Listener = store.listener(self)
        self.groups: dict[str, _Group] = {}
        self.keys: dict[str, set[Member]] = {}
        self.registered: Counter[tuple[str, str]] = Counter()
        self.sockets: dict[Member, tuple[str, str]] = {}  # member -> (user, socket id), counted in the store
        self.refresher: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        # API tokens whose user is known here (user_of_token), and the lookups under way.
        self.tokens: dict[str, _KnownToken] = {}
        self.token_lookups: dict[str, asyncio.Future[Any]] = {}
        self.closes = 0  # control messages that closed sockets, so far
        self._socket_ids = (f"{os.getpid()}.{secrets.token_hex(4)}.{n}" for n in itertools.count(1))

    # Channels -------------------------------------------------------------------

    async def join(self, channel: str, member: Member) -> None:
        """Add ``member`` to ``channel``; returns once messages published afterwards reach it."""
        entry = self.groups.get(channel)
        if entry is None:
            entry = self.groups[channel] = _Group(channel)
            entry.members.add(member)
            try:
                await self.listener.add(channel)
            except BaseException as exc:
                entry.error = exc
                entry.ready.set()
                if self.groups.get(channel) is entry:
                    del self.groups[channel]
                raise
            entry.ready.set()
            if not entry.members and self.groups.get(channel) is entry:
                await self.leave(channel, member)  # Its only member left while it joined.
            return
        entry.members.add(member)
        await entry.ready.wait()
        if entry.error is not None:
            entry.members.discard(member)
            raise entry.error

    async def leave(self, channel: str, member: Member) -> None:
        """Remove ``member``; the process stops listening with its last local member."""
        entry = self.groups.get(channel)
        if entry is None:
            return
        entry.members.discard(member)
        if entry.members or not entry.ready.is_set() or channel == control_channel():
            return
        del self.groups[channel]
        try:
            await self.listener.remove(channel)
        except Exception:  # noqa: BLE001 - a dead connection listens to nothing anyway
            logger.debug("Could not stop listening on %s", channel, exc_info=True)

    def members(self, channel: str) -> set[Member]:
        entry = self.groups.get(channel)
        return set(entry.members) if entry is not None else set()

    # Keys (the control channel) ----------------------------------------------------

    async def attach(self, key: str, member: Member) -> None:
        """Let control messages addressed to ``key`` reach ``member`` (listens on the control channel once)."""
        self.keys.setdefault(key, set()).add(member)
        await self.join(control_channel(), _CONTROL)

    def detach(self, key: str, member: Member) -> None:
        members = self.keys.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self.keys[key]
                self.tokens.pop(key, None)

    # API tokens ----------------------------------------------------------------------

    async def user_of_token(self, key: str, lookup: Callable[[str], Awaitable[Any]]) -> Any | None:
        """The active user of API token ``key``, or None: ``lookup(key)``, or what it answered a moment ago.

        An answer is reused only while a socket of this process is attached
        under the token (``attach``), so that the control message that closes
        the token's sockets (the token deleted, its user deactivated or
        deleted) reaches this process and forgets it, and for at most
        ``TOKEN_MEMORY`` seconds. Concurrent lookups of one token are one.
        Each caller gets a copy of the user of its own.
        """
        group = token_group(key)
        loop = asyncio.get_running_loop()
        known = self.tokens.get(group)
        if known is not None:
            if group in self.keys and loop.time() < known.until:
                return copy.copy(known.user)
            del self.tokens[group]
        pending = self.token_lookups.get(group)
        if pending is None:
            pending = self.token_lookups[group] = asyncio.ensure_future(self._look_up(group, key, lookup))
            pending.add_done_callback(lambda done: self._looked_up(group, done))
        user = await asyncio.shield(pending)
        return None if user is None else copy.copy(user)

    async def _look_up(self, group: str, key: str, lookup: Callable[[str], Awaitable[Any]]) -> Any | None:
        closes = self.closes
        user = await lookup(key)
        if user is not None and self.closes == closes:
            # Not kept when sockets were closed meanwhile: the answer may predate a revocation.
            until = asyncio.get_running_loop().time() + TOKEN_MEMORY
            self.tokens[group] = _KnownToken(user, user_group(user.pk), until)
        return user

    def _looked_up(self, group: str, done: asyncio.Future[Any]) -> None:
        if self.token_lookups.get(group) is done:
            del self.token_lookups[group]

    def _forget_tokens(self, keys: Collection[str]) -> None:
        for group, known in list(self.tokens.items()):
            if group in keys or known.user_key in keys:
                del self.tokens[group]

    # Registrations in the store -----------------------------------------------------

    def track(self, stream: str, user: str) -> None:
        """A local socket subscribed to ``stream`` as ``user`` (already registered in the store)."""
        self.registered[(stream, user)] += 1
        self._keep_renewing()

    def _keep_renewing(self) -> None:
        if self.refresher is None or self.refresher.done():
            self.refresher = asyncio.get_running_loop().create_task(self._refresh())

    def untrack(self, stream: str, user: str) -> None:
        """That socket left: with the user's last local socket, the registration starts to run out."""
        pair = (stream, user)
        self.registered[pair] -= 1
        if self.registered[pair] <= 0:
            del self.registered[pair]
            self._spawn(self._unregister(stream, user))

    async def _unregister(self, stream: str, user: str) -> None:
        try:
            await self.store.unregister(stream, user)
        except Exception:  # noqa: BLE001 - it runs out by itself
            logger.debug("Could not unregister %s from %s", user, stream, exc_info=True)

    async def _refresh(self) -> None:
        """Renew every local registration and counted socket well before it runs out.

        Registrations last ``RESUME_WINDOW``, counted sockets ``SOCKET_LEASE``:
        each is renewed every quarter of that.
        """
        loop = asyncio.get_running_loop()
        due = {"registrations": 0.0, "sockets": 0.0}
        while self.registered or self.sockets:
            periods = {
                "registrations": max(float(live_settings.RESUME_WINDOW) / 4, 0.05),
                "sockets": max(float(live_settings.SOCKET_LEASE) / 4, 0.05),
            }
            for name, period in periods.items():
                due[name] = due[name] or loop.time() + period
            await asyncio.sleep(max(min(due.values()) - loop.time(), 0))
            now = loop.time()
            if now >= due["registrations"]:
                due["registrations"] = now + periods["registrations"]
                if self.registered:
                    try:
                        await self.store.refresh(list(self.registered))
                    except Exception:  # noqa: BLE001 - tried again next time; a dead store closes the sockets
                        logger.warning("Could not renew the registrations of this process", exc_info=True)
            if now >= due["sockets"]:
                due["sockets"] = now + periods["sockets"]
                if self.sockets:
                    try:
                        await self.store.renew_sockets(list(self.sockets.values()))
                    except Exception:  # noqa: BLE001 - tried again next time; they run out only after SOCKET_LEASE
                        logger.warning("Could not renew the socket counts of this process", exc_info=True)

    # Sockets per user ------------------------------------------------------------------

    async def admit(self, user: str, member: Member) -> bool:
        """Count ``member`` among ``user``'s open sockets; False past ``MAX_SOCKETS_PER_USER`` (close it with 4029).

        A store that cannot count (its shard is down) admits the socket: the
        limit is a defence against hoarding, not worth refusing service for.
        The socket is counted again by its next renewal.
        """
        ident = next(self._socket_ids)
        try:
            admitted = await self.store.admit_socket(user, ident, int(live_settings.MAX_SOCKETS_PER_USER))
        except Exception:  # noqa: BLE001 - see above
            logger.warning("Could not count a socket of user %s; admitting it", user, exc_info=True)
            admitted = True
        if admitted:
            self.sockets[member] = (user, ident)
            self._keep_renewing()
        return admitted

    def dismiss(self, member: Member) -> None:
        """``member`` closed: count it no more."""
        counted = self.sockets.pop(member, None)
        if counted is not None:
            self._spawn(self._release_socket(*counted))

    async def _release_socket(self, user: str, ident: str) -> None:
        try:
            await self.store.release_socket(user, ident)
        except Exception:  # noqa: BLE001 - it runs out by itself after SOCKET_LEASE
            logger.debug("Could not release socket %s of user %s", ident, user, exc_info=True)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # From the listener -------------------------------------------------------------------

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        if channel == control_channel():
            self._control(message)
            return
        entry = self.groups.get(channel)
        if entry is None:
            return
        prev = entry.last_seq
        seq = message.get("seq")
        if isinstance(seq, int):
            entry.last_seq = seq if prev is None else max(prev, seq)
        recorder = metrics.recorder
        if recorder.enabled:
            self._deliver_counted(recorder, entry, message, prev)
            return
        for member in list(entry.members):
            try:
                member.hub_message(channel, message, prev)
            except Exception:
                logger.exception("A socket failed to take a message of %s", channel)

    def _deliver_counted(
        self, recorder: metrics.Recorder, entry: _Group, message: dict[str, Any], prev: int | None
    ) -> None:
        """``deliver``'s loop with metrics on: the frames sent are added up and recorded once per event.

        A loop of its own so that, metrics off, the fan-out does not even add.
        """
        channel = entry.channel
        sent = 0
        for member in list(entry.members):
            try:
                if member.hub_message(channel, message, prev):
                    sent += 1
            except Exception:
                logger.exception("A socket failed to take a message of %s", channel)
        recorder.delivered(sent, message.get("created"))

    def _control(self, message: dict[str, Any]) -> None:
        if message.get("type") == "rotate-all":
            targets: set[Member] = {member for entry in self.groups.values() for member in entry.members}
        else:
            keys = message.get("to", ())
            if message.get("type") == "close":
                self.closes += 1
                self._forget_tokens(keys)
            targets = {member for key in keys for member in self.keys.get(key, ())}
        for member in targets:
            if member is _CONTROL:
                continue
            try:
                member.hub_message(control_channel(), message, None)
            except Exception:
                logger.exception("A socket failed to take a control message")

    def lost(self, error: BaseException, channels: Collection[str] | None = None) -> None:
        """The store's connection for ``channels`` failed (None: for every one): forget them and tell their members.

        Members close with 4031 and their clients reconnect and recover; a later
        join connects afresh (and fails while the store, or that shard, is still
        down). Losing the control channel tells every attached member, since
        messages about its credentials would no longer reach it.
        """
        if channels is not None:
            told: dict[Member, str] = {}
            for channel in channels:
                entry = self.groups.pop(channel, None)
                if entry is not None:
                    told.update((member, channel) for member in entry.members if member not in told)
                if channel == control_channel():
                    told.update((member, channel) for group in self.keys.values() for member in group)
                    self.keys.clear()
                    self.tokens.clear()
            for member, channel in told.items():
                self._tell_lost(member, channel, error)
            return
        entries = list(self.groups.values())
        self.groups.clear()
        self.listener = self.store.listener(self)
        members = {member for entry in entries for member in entry.members}
        members.update(member for group in self.keys.values() for member in group)
        self.keys.clear()
        self.tokens.clear()
        for member in members:
            self._tell_lost(member, "*", error)

    def _tell_lost(self, member: Member, channel: str, error: BaseException) -> None:
        if member is _CONTROL:
            return
        try:
            member.hub_lost(channel, error)
        except Exception:
            logger.exception("A socket failed to take the loss of the store")


#: Seconds an API token's user is reused for new sockets (``Hub.user_of_token``).
TOKEN_MEMORY = 60.0


@dataclass(frozen=True)
class _KnownToken:
    user: Any
    user_key: str  # the user's control key: a message closing it forgets the token
    until: float


class _ControlMember:
    """Stands for the control channel's subscription (the hub routes its messages by key)."""

    def hub_message(self, channel: str, message: dict[str, Any], prev: int | None) -> bool | None:
        return None

    def hub_lost(self, channel: str, error: BaseException) -> None:
        return None


_CONTROL = _ControlMember()

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop, on the process's stream store."""
    store = get_store()
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.store is not store:
        hub = _hubs[loop] = Hub(store)
    return hub
