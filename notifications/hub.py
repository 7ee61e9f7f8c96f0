"""Per-process fan-out: one channel-layer channel per group, whatever the number of local sockets.

With plain Channels, every socket has its own channel and joins groups with it,
so an event to a group with 1,000 subscribers is 1,000 channel-layer messages
(each a Redis round trip with channels_redis) and 1,000 dispatches through the
consumer. Here each server process joins a group once, with a channel of its
own, as soon as one of its sockets subscribes; an event reaches the process
once and is handed to every local member. Anything sent with
``channel_layer.group_send`` to a drf-live group still reaches its subscribers,
because the group's members are ordinary channels of the layer.

Messages about credentials and users (close the sockets of a revoked token,
re-check the access of a removed member) go to one control group that every
process joins once; each names the local keys it is for in ``"to"``, and the
hub hands it to the sockets registered under those keys (``attach``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import get_channel_layer

logger = logging.getLogger("notifications.hub")


class Member(Protocol):
    """What the hub delivers to: a socket's consumer."""

    def hub_message(self, group: str, message: dict[str, Any]) -> None:
        """Handle one message sent to ``group``; must not block (called for every member in turn)."""

    def hub_lost(self, group: str, error: BaseException) -> None:
        """The channel layer failed: no more messages will come for ``group``."""


@dataclass(eq=False)
class _Group:
    name: str
    members: set[Member] = field(default_factory=set)
    channel: str | None = None
    pump: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None


def control_group() -> str:
    """The group every server process joins once, for messages addressed by key."""
    from .conf import live_settings

    return f"{live_settings.PREFIX}.control"


class Hub:
    """The groups this process's sockets are in, on one event loop and channel layer."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.groups: dict[str, _Group] = {}
        self.keys: dict[str, set[Member]] = {}
        self.refresher: asyncio.Task[None] | None = None

    async def attach(self, key: str, member: Member) -> None:
        """Let control messages addressed to ``key`` reach ``member`` (joins the control group once)."""
        self.keys.setdefault(key, set()).add(member)
        await self.join(control_group(), self)

    def detach(self, key: str, member: Member) -> None:
        members = self.keys.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self.keys[key]

    # The hub is the control group's one member: it routes by key.
    def hub_message(self, group: str, message: dict[str, Any]) -> None:
        for key in message.get("to", ()):
            for member in list(self.keys.get(key, ())):
                member.hub_message(key, message)

    def hub_lost(self, group: str, error: BaseException) -> None:
        for members in list(self.keys.values()):
            for member in list(members):
                member.hub_lost(group, error)
        self.keys.clear()

    def members(self, group: str) -> set[Member]:
        entry = self.groups.get(group)
        return set(entry.members) if entry is not None else set()

    async def join(self, group: str, member: Member) -> None:
        """Add ``member`` to ``group``; returns once the layer sends the group's messages here."""
        entry = self.groups.get(group)
        if entry is None:
            entry = self.groups[group] = _Group(group)
            entry.members.add(member)
            try:
                entry.channel = await self.layer.new_channel()
                await self.layer.group_add(group, entry.channel)
            except BaseException as exc:
                entry.error = exc
                entry.ready.set()
                if self.groups.get(group) is entry:
                    del self.groups[group]
                raise
            entry.pump = asyncio.get_running_loop().create_task(self._pump(entry))
            entry.ready.set()
            if self.refresher is None or self.refresher.done():
                self.refresher = asyncio.get_running_loop().create_task(self._refresh())
            return
        entry.members.add(member)
        await entry.ready.wait()
        if entry.error is not None:
            entry.members.discard(member)
            raise entry.error

    async def leave(self, group: str, member: Member) -> None:
        """Remove ``member``; the process leaves the group with its last local member."""
        entry = self.groups.get(group)
        if entry is None:
            return
        entry.members.discard(member)
        if entry.members or not entry.ready.is_set():
            return
        del self.groups[group]
        await self._close(entry)

    async def _close(self, entry: _Group) -> None:
        if entry.pump is not None:
            entry.pump.cancel()
        if entry.channel is not None and entry.error is None:
            try:
                await self.layer.group_discard(entry.name, entry.channel)
            except Exception:  # noqa: BLE001 - the layer is gone; the membership expires.
                logger.warning("Could not leave group %s", entry.name, exc_info=True)

    async def _pump(self, entry: _Group) -> None:
        assert entry.channel is not None
        while True:
            try:
                message = await self.layer.receive(entry.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc)
                return
            for member in list(entry.members):
                try:
                    member.hub_message(entry.name, message)
                except Exception:
                    logger.exception("A member failed to take a message for %s", entry.name)

    def refresh_interval(self) -> float:
        """Seconds between re-adds: a quarter of the layer's ``group_expiry``."""
        expiry = getattr(self.layer, "group_expiry", None) or 86400
        return max(float(expiry) / 4, 0.05)

    async def _refresh(self) -> None:
        """Re-add every group this process is in, well before the layer expires the membership.

        Both channels_redis and the in-memory layer drop a group member
        ``group_expiry`` seconds (a day by default) after it was added, and a
        process may stay in a popular group for longer than that while sockets
        come and go. Re-adding only renews the membership's time.
        """
        while self.groups:
            await asyncio.sleep(self.refresh_interval())
            for entry in list(self.groups.values()):
                if entry.channel is None or entry.error is not None or self.groups.get(entry.name) is not entry:
                    continue
                try:
                    await self.layer.group_add(entry.name, entry.channel)
                except Exception:  # noqa: BLE001 - retried at the next interval; a dead layer ends the pumps
                    logger.warning("Could not renew the membership of group %s", entry.name, exc_info=True)

    def _lost(self, error: BaseException) -> None:
        """The layer failed: forget every group and tell every member.

        One failing receive means the layer's server (Redis) is gone for all of
        this process's groups, though with channels_redis only the receive that
        was reading at the time sees the error. Members close with 4031 and
        their clients reconnect; a later join reaches the layer afresh (and
        fails while it is still down).
        """
        entries = list(self.groups.values())
        self.groups.clear()
        current = asyncio.current_task()
        for entry in entries:
            entry.error = error
            if entry.pump is not None and entry.pump is not current:
                entry.pump.cancel()
            for member in list(entry.members):
                member.hub_lost(entry.name, error)
            entry.members.clear()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Hub]] = weakref.WeakKeyDictionary()


def get_hub(layer: Any = None) -> Hub:
    """The hub of the running event loop for ``layer`` (the default channel layer)."""
    layer = layer if layer is not None else get_channel_layer()
    if layer is None:
        raise RuntimeError("drf-live needs a channel layer: configure CHANNEL_LAYERS.")
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(id(layer))
    if hub is None or hub.layer is not layer:
        hub = hubs[id(layer)] = Hub(layer)
    return hub
