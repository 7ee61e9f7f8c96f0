"""The per-process hub (``notifications/hub.py``) on the in-memory stream store.

One listener per process and loop, whatever the number of sockets: each
message reaches every local member of its channel once, with the last seq the
process saw there; control messages reach the sockets attached under their
keys; a lost store connection reaches every socket once; and the registrations
of local sockets stay alive in the store while they last.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
from django.test import override_settings

from notifications.hub import Hub
from notifications.streams import Listener, MemoryStreamStore, Receiver, control_channel

pytestmark = pytest.mark.asyncio

CHANNEL = "drf-live.api.task.o.one"
OTHER = "drf-live.api.task.o.two"


class Recorder:
    """A member (a socket's consumer) that records what the hub hands it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], int | None]] = []
        self.lost: list[tuple[str, BaseException]] = []

    def hub_message(self, channel: str, message: dict[str, Any], prev: int | None) -> None:
        self.messages.append((channel, message, prev))

    def hub_lost(self, channel: str, error: BaseException) -> None:
        self.lost.append((channel, error))


class SpyListener:
    """The memory store's listener, recording calls; ``fail`` makes it die like a dropped Redis connection."""

    def __init__(self, inner: Listener, receiver: Receiver) -> None:
        self.inner = inner
        self.receiver = receiver
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None  # add() waits for it when set
        self.error: BaseException | None = None  # add() raises it when set

    async def add(self, channel: str) -> None:
        self.calls.append(("add", channel))
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        await self.inner.add(channel)

    async def remove(self, channel: str) -> None:
        self.calls.append(("remove", channel))
        await self.inner.remove(channel)

    async def close(self) -> None:
        await self.inner.close()

    async def fail(self, error: BaseException) -> None:
        await self.inner.close()  # A dead connection delivers nothing more.
        self.receiver.lost(error)


class SpyStore(MemoryStreamStore):
    """The memory store, remembering the listeners it made and the registration calls it got."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[SpyListener] = []
        self.refreshed: list[set[tuple[str, str]]] = []
        self.unregistered: list[tuple[str, str]] = []

    def listener(self, receiver: Receiver) -> SpyListener:
        spy = SpyListener(super().listener(receiver), receiver)
        self.listeners.append(spy)
        return spy

    async def refresh(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = list(pairs)
        self.refreshed.append(set(pairs))
        await super().refresh(pairs)

    async def unregister(self, stream: str, user: str) -> None:
        self.unregistered.append((stream, user))
        await super().unregister(stream, user)


async def settle() -> None:
    """Let the loop run what the store and the hub scheduled (the memory bus uses call_soon_threadsafe)."""
    for _ in range(5):
        await asyncio.sleep(0)


# Channels ------------------------------------------------------------------------------


async def test_a_message_reaches_every_local_member_of_its_channel_once() -> None:
    store = SpyStore()
    hub = Hub(store)
    first, second, elsewhere = Recorder(), Recorder(), Recorder()
    await hub.join(CHANNEL, first)
    await hub.join(CHANNEL, second)
    await hub.join(CHANNEL, second)  # A socket joining twice is still one member.
    await hub.join(OTHER, elsewhere)

    store.publish(CHANNEL, {"seq": 1, "n": 1})
    await settle()

    assert first.messages == [(CHANNEL, {"seq": 1, "n": 1}, None)]
    assert second.messages == first.messages
    assert elsewhere.messages == []
    # One subscription per channel for the process, however many sockets.
    assert [call for call in store.listeners[0].calls if call[1] == CHANNEL] == [("add", CHANNEL)]


async def test_the_process_stops_listening_with_the_last_local_member() -> None:
    store = SpyStore()
    hub = Hub(store)
    first, second = Recorder(), Recorder()
    await hub.join(CHANNEL, first)
    await hub.join(CHANNEL, second)

    await hub.leave(CHANNEL, first)
    assert ("remove", CHANNEL) not in store.listeners[0].calls
    store.publish(CHANNEL, {"seq": 1})
    await settle()
    assert first.messages == []
    assert second.messages == [(CHANNEL, {"seq": 1}, None)]

    await hub.leave(CHANNEL, second)
    assert store.listeners[0].calls[-1] == ("remove", CHANNEL)
    assert hub.members(CHANNEL) == set()
    store.publish(CHANNEL, {"seq": 2})
    await settle()
    assert second.messages == [(CHANNEL, {"seq": 1}, None)]


async def test_members_are_told_the_last_seq_the_process_saw_on_the_channel() -> None:
    store = SpyStore()
    hub = Hub(store)
    member, other = Recorder(), Recorder()
    await hub.join(CHANNEL, member)
    await hub.join(OTHER, other)

    for message in ({"seq": 1}, {"seq": 2}, {"type": "revoke", "users": ["9"]}, {"seq": 4}, {"seq": 3}):
        store.publish(CHANNEL, message)
    store.publish(OTHER, {"seq": 7})
    await settle()

    # None before the first; a message without seq (a revocation) moves nothing;
    # a seq the process never saw (3, before 4) shows as a gap, and a late one moves nothing back.
    assert [prev for _channel, _message, prev in member.messages] == [None, 1, 2, 2, 4]
    assert other.messages == [(OTHER, {"seq": 7}, None)]


async def test_a_member_joining_after_the_process_left_starts_without_a_last_seq() -> None:
    store = SpyStore()
    hub = Hub(store)
    member = Recorder()
    await hub.join(CHANNEL, member)
    store.publish(CHANNEL, {"seq": 1})
    await settle()
    await hub.leave(CHANNEL, member)

    store.publish(CHANNEL, {"seq": 2})  # The process does not listen: it cannot vouch for it.
    await hub.join(CHANNEL, member)
    store.publish(CHANNEL, {"seq": 3})
    await settle()

    assert member.messages == [(CHANNEL, {"seq": 1}, None), (CHANNEL, {"seq": 3}, None)]


async def test_a_join_that_cannot_listen_raises_and_leaves_nothing_behind() -> None:
    store = SpyStore()
    hub = Hub(store)
    listener = store.listeners[0]
    listener.gate = asyncio.Event()
    listener.error = ConnectionError("store down")
    first, second = Recorder(), Recorder()

    joining = asyncio.ensure_future(hub.join(CHANNEL, first))
    waiting = asyncio.ensure_future(hub.join(CHANNEL, second))  # Waits for the first one's add().
    await settle()
    listener.gate.set()

    for join in (joining, waiting):
        with pytest.raises(ConnectionError, match="store down"):
            await join
    assert hub.members(CHANNEL) == set()
    assert CHANNEL not in hub.groups
    assert listener.calls == [("add", CHANNEL)]

    # Once the store answers again, a join listens afresh.
    listener.error = None
    await hub.join(CHANNEL, second)
    store.publish(CHANNEL, {"seq": 1})
    await settle()
    assert first.messages == []
    assert second.messages == [(CHANNEL, {"seq": 1}, None)]


async def test_a_member_that_leaves_during_its_join_does_not_keep_the_channel() -> None:
    store = SpyStore()
    hub = Hub(store)
    listener = store.listeners[0]
    listener.gate = asyncio.Event()
    member = Recorder()

    joining = asyncio.ensure_future(hub.join(CHANNEL, member))
    await settle()
    await hub.leave(CHANNEL, member)  # The socket closed (a control "close") while it subscribed.
    listener.gate.set()
    await joining

    assert CHANNEL not in hub.groups
    assert ("remove", CHANNEL) in listener.calls


# Keys and the control channel --------------------------------------------------------------


async def test_a_control_message_reaches_only_the_members_attached_under_its_keys() -> None:
    store = SpyStore()
    hub = Hub(store)
    alice_one, alice_two, bob, subscriber = Recorder(), Recorder(), Recorder(), Recorder()
    await hub.attach("drf-live.user.1", alice_one)
    await hub.attach("drf-live.user.1", alice_two)
    await hub.attach("drf-live.user.2", bob)
    await hub.join(CHANNEL, subscriber)

    close = {"type": "close", "to": ["drf-live.user.1"], "code": 4001}
    store.publish(control_channel(), close)
    await settle()

    assert alice_one.messages == [(control_channel(), close, None)]
    assert alice_two.messages == alice_one.messages
    assert bob.messages == []
    assert subscriber.messages == []
    # The control channel is listened on once.
    assert store.listeners[0].calls.count(("add", control_channel())) == 1


async def test_a_detached_member_gets_no_more_control_messages() -> None:
    store = SpyStore()
    hub = Hub(store)
    stays, goes = Recorder(), Recorder()
    await hub.attach("drf-live.token.abc", stays)
    await hub.attach("drf-live.token.abc", goes)

    hub.detach("drf-live.token.abc", goes)
    close = {"type": "close", "to": ["drf-live.token.abc"]}
    store.publish(control_channel(), close)
    await settle()

    assert stays.messages == [(control_channel(), close, None)]
    assert goes.messages == []


async def test_a_control_message_for_several_keys_reaches_a_member_once() -> None:
    store = SpyStore()
    hub = Hub(store)
    member = Recorder()
    await hub.attach("drf-live.user.1", member)
    await hub.attach("drf-live.token.abc", member)

    recheck = {"type": "recheck", "to": ["drf-live.user.1", "drf-live.token.abc"], "stream": CHANNEL}
    store.publish(control_channel(), recheck)
    await settle()

    assert member.messages == [(control_channel(), recheck, None)]


async def test_rotate_all_reaches_every_member_of_every_channel_once() -> None:
    store = SpyStore()
    hub = Hub(store)
    both, first, second = Recorder(), Recorder(), Recorder()
    for channel, member in ((CHANNEL, both), (OTHER, both), (CHANNEL, first), (OTHER, second)):
        await hub.join(channel, member)
    await hub.attach("drf-live.user.1", both)

    store.publish(control_channel(), {"type": "rotate-all"})
    await settle()

    for member in (both, first, second):
        assert member.messages == [(control_channel(), {"type": "rotate-all"}, None)]


# A lost store connection ----------------------------------------------------------------


async def test_a_lost_connection_tells_every_member_once_and_later_joins_listen_afresh() -> None:
    store = SpyStore()
    hub = Hub(store)
    everywhere, subscriber, attached = Recorder(), Recorder(), Recorder()
    await hub.join(CHANNEL, everywhere)
    await hub.join(OTHER, everywhere)
    await hub.attach("drf-live.user.1", everywhere)
    await hub.join(CHANNEL, subscriber)
    await hub.attach("drf-live.user.2", attached)
    error = ConnectionError("Redis closed the connection")

    await store.listeners[0].fail(error)

    for member in (everywhere, subscriber, attached):
        assert member.lost == [("*", error)]
    assert hub.groups == {}
    assert hub.keys == {}

    # A later join and attach use a new listener, and messages flow again.
    again = Recorder()
    await hub.join(CHANNEL, again)
    await hub.attach("drf-live.user.3", again)
    assert len(store.listeners) == 2
    assert store.listeners[1].calls == [("add", CHANNEL), ("add", control_channel())]
    store.publish(CHANNEL, {"seq": 5})
    store.publish(control_channel(), {"type": "close", "to": ["drf-live.user.3", "drf-live.user.1"]})
    await settle()
    assert again.messages == [
        (CHANNEL, {"seq": 5}, None),
        (control_channel(), {"type": "close", "to": ["drf-live.user.3", "drf-live.user.1"]}, None),
    ]
    assert everywhere.messages == subscriber.messages == attached.messages == []


async def test_a_lost_shard_tells_only_the_members_of_its_channels() -> None:
    store = SpyStore()
    hub = Hub(store)
    on_lost, on_both, elsewhere, attached = Recorder(), Recorder(), Recorder(), Recorder()
    await hub.join(CHANNEL, on_lost)
    await hub.join(CHANNEL, on_both)
    await hub.join(OTHER, on_both)
    await hub.join(OTHER, elsewhere)
    await hub.attach("drf-live.user.1", attached)
    error = ConnectionError("Redis closed the connection")

    hub.lost(error, {CHANNEL})

    assert on_lost.lost == [(CHANNEL, error)]
    assert on_both.lost == [(CHANNEL, error)]  # once, though it holds another channel too
    assert elsewhere.lost == attached.lost == []
    assert set(hub.groups) == {OTHER, control_channel()}
    # The other channels, and the control channel, keep delivering on the same listener.
    store.publish(OTHER, {"seq": 1})
    store.publish(control_channel(), {"type": "close", "to": ["drf-live.user.1"]})
    await settle()
    assert elsewhere.messages == [(OTHER, {"seq": 1}, None)]
    assert attached.messages == [(control_channel(), {"type": "close", "to": ["drf-live.user.1"]}, None)]
    assert len(store.listeners) == 1


async def test_losing_the_control_channel_tells_every_attached_member() -> None:
    store = SpyStore()
    hub = Hub(store)
    attached, subscriber = Recorder(), Recorder()
    await hub.attach("drf-live.user.1", attached)
    await hub.join(CHANNEL, subscriber)
    error = ConnectionError("no shard carries the control channel")

    hub.lost(error, {control_channel()})

    assert attached.lost == [(control_channel(), error)]
    assert subscriber.lost == []
    assert hub.keys == {}
    # A later attach listens on the control channel again.
    await hub.attach("drf-live.user.2", Recorder())
    assert store.listeners[0].calls.count(("add", control_channel())) == 2


# Sockets per user ------------------------------------------------------------------------


async def test_sockets_past_max_sockets_per_user_are_refused_until_one_is_dismissed() -> None:
    store = SpyStore()
    with override_settings(DRF_LIVE={"MAX_SOCKETS_PER_USER": 2}):
        hub = Hub(store)
        first, second, third, other_user = Recorder(), Recorder(), Recorder(), Recorder()

        assert await hub.admit("1", first)
        assert await hub.admit("1", second)
        assert not await hub.admit("1", third)
        assert await hub.admit("2", other_user)

        hub.dismiss(first)
        await settle()
        assert await hub.admit("1", third)
        hub.dismiss(first)  # twice: counted once
        await settle()
        assert not await hub.admit("1", Recorder())


async def test_a_store_that_cannot_count_admits_the_socket_and_counts_it_at_its_renewal() -> None:
    class Failing(SpyStore):
        def __init__(self) -> None:
            super().__init__()
            self.renewed: list[list[tuple[str, str]]] = []

        async def admit_socket(self, user: str, socket: str, limit: int) -> bool:
            raise ConnectionError("the shard of this user is down")

        async def renew_sockets(self, sockets: Iterable[tuple[str, str]]) -> None:
            self.renewed.append(list(sockets))

    store = Failing()
    with override_settings(DRF_LIVE={"SOCKET_LEASE": 0.2}):  # renewed every 0.05 s
        hub = Hub(store)
        member = Recorder()
        assert await hub.admit("1", member)
        await asyncio.sleep(0.12)
        assert store.renewed and store.renewed[-1] == [hub.sockets[member]]
        hub.dismiss(member)
        assert hub.refresher is not None
        await asyncio.wait_for(hub.refresher, 1)


# Registrations --------------------------------------------------------------------------


async def test_the_last_local_socket_of_a_user_unregisters_it() -> None:
    store = SpyStore()
    hub = Hub(store)
    hub.track(CHANNEL, "1")
    hub.track(CHANNEL, "1")  # Two sockets of user 1
    hub.track(CHANNEL, "2")

    hub.untrack(CHANNEL, "1")
    await settle()
    assert store.unregistered == []

    hub.untrack(CHANNEL, "1")
    await settle()
    assert store.unregistered == [(CHANNEL, "1")]
    assert set(hub.registered) == {(CHANNEL, "2")}


async def test_the_refresher_renews_every_tracked_registration_until_none_is_left() -> None:
    store = SpyStore()
    pairs = {(CHANNEL, "1"), (CHANNEL, "2"), (OTHER, "1")}
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 0.2}):  # renewed every 0.05 s
        hub = Hub(store)
        for stream, user in pairs:
            hub.track(stream, user)
        hub.track(OTHER, "1")

        await asyncio.sleep(0.2)
        assert len(store.refreshed) >= 2
        assert all(refreshed == pairs for refreshed in store.refreshed)

        for stream, user in [*pairs, (OTHER, "1")]:
            hub.untrack(stream, user)
        assert hub.refresher is not None
        await asyncio.wait_for(hub.refresher, 1)
        count = len(store.refreshed)
        await asyncio.sleep(0.15)
        assert len(store.refreshed) == count
        assert sorted(store.unregistered) == sorted(pairs)


async def test_a_tracked_user_stays_claimable_past_the_resume_window() -> None:
    store = MemoryStreamStore()
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 0.2}):
        hub = Hub(store)
        await store.register(CHANNEL, "1")
        hub.track(CHANNEL, "1")

        await asyncio.sleep(0.5)
        claim = store.claim(CHANNEL)
        assert claim is not None
        assert claim.users == ("1",)
        store.release(claim)

        hub.untrack(CHANNEL, "1")
        await settle()
        await asyncio.sleep(0.3)
        assert store.claim(CHANNEL) is None
