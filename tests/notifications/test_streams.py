"""The stream store (``notifications/streams.py``, ``notifications/redis_store.py``) and its listeners.

The contract tests run on ``MemoryStreamStore`` and on ``RedisStreamStore``
with real redis-servers: one, two and three shards. The Redis-only tests after
them show what only a shared store can: data lost with Redis, several processes
on one Redis, readable keys, and a pub/sub connection that fails, or needs a
password. ``test_shards.py`` shows what sharding adds.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.test import override_settings

from notifications import redis_store as redis_store_module
from notifications.redis_clients import ASYNC_POOL_SIZE
from notifications.redis_store import RedisStreamStore
from notifications.shards import Shard, shard_index
from notifications.streams import (
    Claim,
    Listener,
    MemoryStreamStore,
    Position,
    StoreBusy,
    StreamStore,
    control_channel,
    get_store,
    reset_store,
    store_shards,
)
from tests.servers import RedisServer

USER, OTHER_USER = "1", "2"


# Fixtures and helpers -------------------------------------------------------------


@pytest.fixture(scope="module")
def more_redis_servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    """Two more redis-servers: with ``redis_server``, the shards of a two- or three-shard store."""
    servers = (RedisServer().start(), RedisServer().start())
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop or kill it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["memory", "redis", "redis-2-shards", "redis-3-shards"])
def store(request: pytest.FixtureRequest) -> Iterator[StreamStore]:
    """Each contract test runs on process memory, on a real Redis, and on two and three Redis shards."""
    made: StreamStore
    if request.param == "memory":
        made = MemoryStreamStore()
    else:
        servers: list[RedisServer] = [request.getfixturevalue("redis_server")]
        if request.param != "redis":
            servers += request.getfixturevalue("more_redis_servers")[: int(request.param.split("-")[1]) - 1]
        made = RedisStreamStore([server.url for server in servers])
    yield made
    made.close()


def new_stream() -> str:
    return f"drf-live.api.task.o.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stream() -> str:
    return new_stream()


def entry(stream: str, n: int) -> dict[str, Any]:
    """An event as the relay commits it (``audience._decide_object``), told apart by its payload."""
    prefix = f'{{"type":"UPDATE_TASK","payload":{{"n":{n}}},"meta":{{"model":"api.task","seq":'
    return {"stream": stream, "kind": "update", "frames": {"update": {"all": prefix}}, "shown": {USER: "all"}}


def entry_message(stream: str, seq: int, epoch: str) -> dict[str, Any]:
    """The message of the ``seq``-th event ``commit_events`` committed, as published and replayed."""
    return {"seq": seq, "epoch": epoch, **entry(stream, seq - 1)}


def commit_events(store: StreamStore, stream: str, count: int) -> list[int]:
    """Claim and commit ``count`` events on ``stream`` (someone must be registered); their seqs."""
    seqs = []
    for n in range(count):
        claim = store.claim(stream)
        assert claim is not None
        seq = store.commit(claim, entry(stream, n))
        assert seq is not None
        seqs.append(seq)
    return seqs


class Inbox:
    """A ``Receiver`` that queues what its listener hands it, and remembers a lost connection."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.errors: list[BaseException] = []
        self.lost_channels: list[set[str] | None] = []
        self.failed = asyncio.Event()

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        self.queue.put_nowait((channel, message))

    def lost(self, error: BaseException, channels: Any = None) -> None:
        self.errors.append(error)
        self.lost_channels.append(set(channels) if channels is not None else None)
        self.failed.set()

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            pytest.fail(f"No message arrived within {timeout} s", pytrace=False)

    async def nothing(self, wait: float = 0.3) -> None:
        """Nothing more arrives within ``wait`` seconds."""
        await asyncio.sleep(wait)
        assert self.queue.empty(), f"Unexpected message: {self.queue.get_nowait()}"


@asynccontextmanager
async def listening(store: StreamStore, *channels: str) -> AsyncIterator[tuple[Listener, Inbox]]:
    """A listener of ``store`` on ``channels``; closed afterwards."""
    inbox = Inbox()
    listener = store.listener(inbox)
    try:
        for channel in channels:
            await listener.add(channel)
        yield listener, inbox
    finally:
        await listener.close()


def shard_count(store: StreamStore) -> int:
    return len(getattr(store, "shards", [None]))


def one_channel_per_shard(store: StreamStore, prefix: str = "drf-live.barrier") -> list[str]:
    """Fresh channel names, one on each shard of ``store`` (in shard order)."""
    count = shard_count(store)
    found: dict[int, str] = {}
    while len(found) < count:
        name = f"{prefix}.{uuid.uuid4().hex[:8]}"
        found.setdefault(shard_index(name, count), name)
    return [found[index] for index in range(count)]


async def nothing_more(store: StreamStore, listener: Listener, inbox: Inbox) -> None:
    """Assert that nothing else arrives: a message published now on a fresh channel of each shard must come next.

    Every store delivers the messages of one shard to a listener in
    publication order, so this is a proof, not a wait.
    """
    barriers = one_channel_per_shard(store)
    for barrier in barriers:
        await listener.add(barrier)
    for barrier in barriers:
        store.publish(barrier, {"type": "barrier"})
    arrived = [await inbox.next() for _ in barriers]
    assert sorted(arrived, key=lambda pair: pair[0]) == sorted((barrier, {"type": "barrier"}) for barrier in barriers)


def holds(store: StreamStore, stream: str) -> Claim:
    """A claim of ``stream`` that must not wait: a hold left behind raises StoreBusy within 0.2 s."""
    with override_settings(DRF_LIVE={"CLAIM_TIMEOUT": 0.2}):
        claim = store.claim(stream)
    assert claim is not None
    return claim


# Claim and commit ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_claim_without_subscribers_returns_none_and_takes_no_hold(store: StreamStore, stream: str) -> None:
    assert store.claim(stream) is None

    await store.register(stream, USER)
    claim = holds(store, stream)
    assert claim.users == (USER,)


@pytest.mark.asyncio
async def test_claim_names_every_subscribed_user_once(store: StreamStore, stream: str) -> None:
    await store.register(stream, OTHER_USER)
    await store.register(stream, USER)
    await store.register(stream, USER)  # A second socket of the same user.

    claim = store.claim(stream)

    assert claim is not None
    assert claim.stream == stream
    assert claim.users == (USER, OTHER_USER)


@pytest.mark.asyncio
async def test_commit_numbers_the_events_of_a_stream_one_after_another(store: StreamStore, stream: str) -> None:
    other = new_stream()
    start = await store.register(stream, USER)
    await store.register(other, USER)

    assert commit_events(store, stream, 3) == [1, 2, 3]
    assert commit_events(store, other, 1) == [1]

    assert start.seq == 0
    assert await store.register(stream, USER) == Position(3, start.epoch)
    replay = await store.replay(stream, 0, start.epoch)
    assert replay.messages is not None
    assert [(message["seq"], message["epoch"]) for message in replay.messages] == [(n, start.epoch) for n in (1, 2, 3)]
    # The entry travels as the relay committed it, under its seq and epoch.
    assert replay.messages[0] == entry_message(stream, 1, start.epoch)


@pytest.mark.asyncio
async def test_commit_publishes_the_event_on_the_stream_channel(store: StreamStore, stream: str) -> None:
    position = await store.register(stream, USER)
    async with listening(store, stream) as (listener, inbox):
        commit_events(store, stream, 1)

        assert await inbox.next() == (stream, entry_message(stream, 1, position.epoch))
        await nothing_more(store, listener, inbox)


@pytest.mark.asyncio
async def test_a_user_registering_during_a_claim_makes_the_commit_decide_again(store: StreamStore, stream: str) -> None:
    await store.register(stream, USER)
    claim = store.claim(stream)
    assert claim is not None

    await store.register(stream, OTHER_USER)

    assert store.commit(claim, entry(stream, 0)) is None
    # The hold is released and nothing was numbered: the next claim decides for both users.
    again = holds(store, stream)
    assert again.users == (USER, OTHER_USER)
    assert store.commit(again, entry(stream, 1)) == 1


@pytest.mark.asyncio
async def test_a_registered_user_registering_again_does_not_disturb_a_claim(store: StreamStore, stream: str) -> None:
    await store.register(stream, USER)
    claim = store.claim(stream)
    assert claim is not None

    await store.register(stream, USER)  # Another socket of the same user, or a refresh.

    assert store.commit(claim, entry(stream, 0)) == 1


@pytest.mark.asyncio
async def test_a_user_whose_registration_ran_out_counts_as_new_when_back(store: StreamStore, stream: str) -> None:
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 0.6}):
        await store.register(stream, USER)
        await store.register(stream, OTHER_USER)
        await asyncio.sleep(0.35)
        await store.register(stream, OTHER_USER)
        await asyncio.sleep(0.35)  # USER ran out; OTHER_USER is counted for 0.25 s more.

        claim = store.claim(stream)
        assert claim is not None
        assert claim.users == (OTHER_USER,)
        await store.register(stream, USER)
        assert store.commit(claim, entry(stream, 0)) is None

        again = holds(store, stream)
        assert again.users == (USER, OTHER_USER)
        assert store.commit(again, entry(stream, 1)) == 1


@pytest.mark.asyncio
async def test_claim_all_holds_the_streams_with_a_registration_that_has_not_run_out(store: StreamStore) -> None:
    # Spread over the shards (``one_channel_per_shard``) and a stream nobody ever registered on.
    watched, lapsed, never = one_channel_per_shard(store, "drf-live.api.task.o"), new_stream(), new_stream()
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 0.4}):
        await store.register(lapsed, USER)
        await asyncio.sleep(0.45)  # USER's registration on ``lapsed`` ran out
        for stream in watched:
            await store.register(stream, OTHER_USER)
        busy = store.claim(watched[-1])  # another relay holds this one
        assert busy is not None

        claims = store.claim_all([*watched, lapsed, never])

        assert set(claims.held) == set(watched[:-1]) and claims.pending == {watched[-1]}
        assert claims.live == set(watched)
        assert all(claim.users == (OTHER_USER,) for claim in claims.held.values())
        assert store.claim_all([]).live == set()
        # They are held until committed: another relay's claim_all finds them pending meanwhile.
        assert store.claim_all(watched).held == {}
        for claim in claims.held.values():
            assert store.commit(claim, entry(claim.stream, 1)) == 1
        store.release(busy)
        assert set(store.claim_all(watched).held) == set(watched)


@pytest.mark.asyncio
async def test_a_second_claim_waits_for_the_hold(store: StreamStore, stream: str) -> None:
    await store.register(stream, USER)
    first = store.claim(stream)
    assert first is not None

    second = asyncio.ensure_future(asyncio.to_thread(store.claim, stream))
    await asyncio.sleep(0.2)
    assert not second.done()

    assert store.commit(first, entry(stream, 0)) == 1
    claim = await asyncio.wait_for(second, 5)
    assert claim is not None
    assert store.commit(claim, entry(stream, 1)) == 2


@pytest.mark.asyncio
async def test_a_claim_held_for_longer_than_claim_timeout_raises_store_busy(store: StreamStore, stream: str) -> None:
    await store.register(stream, USER)
    first = store.claim(stream)  # Held for the default CLAIM_TIMEOUT (10 s).
    assert first is not None

    with override_settings(DRF_LIVE={"CLAIM_TIMEOUT": 0.3}):
        started = time.monotonic()
        with pytest.raises(StoreBusy):
            store.claim(stream)
        waited = time.monotonic() - started

    assert 0.3 <= waited < 3
    store.release(first)
    assert holds(store, stream).users == (USER,)


@pytest.mark.asyncio
async def test_release_frees_the_hold_and_publishes_a_message_without_seq(store: StreamStore, stream: str) -> None:
    start = await store.register(stream, USER)
    async with listening(store, stream) as (listener, inbox):
        claim = store.claim(stream)
        assert claim is not None

        store.release(claim, {"type": "revoke", "users": [USER]})

        assert await inbox.next() == (stream, {"type": "revoke", "users": [USER]})
        # Released without a message: nothing is published.
        store.release(holds(store, stream))
        await nothing_more(store, listener, inbox)
    # A release numbers nothing.
    assert await store.register(stream, USER) == start
    assert holds(store, stream).users == (USER,)


# Replay -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_replay_returns_the_events_after_since_in_order(store: StreamStore, stream: str) -> None:
    start = await store.register(stream, USER)
    commit_events(store, stream, 4)

    replay = await store.replay(stream, 1, start.epoch)

    assert replay.position == Position(4, start.epoch)
    assert replay.messages == [entry_message(stream, seq, start.epoch) for seq in (2, 3, 4)]
    # `earlier` holds what the history says up to `since`.
    assert replay.earlier == [entry_message(stream, 1, start.epoch)]


@pytest.mark.asyncio
async def test_replay_from_the_current_seq_is_an_empty_recovery(store: StreamStore, stream: str) -> None:
    start = await store.register(stream, USER)
    commit_events(store, stream, 2)

    replay = await store.replay(stream, 2, start.epoch)

    assert replay.messages == []
    assert [message["seq"] for message in replay.earlier] == [1, 2]


@pytest.mark.asyncio
async def test_replay_with_another_epoch_or_from_the_future_is_unknown(store: StreamStore, stream: str) -> None:
    start = await store.register(stream, USER)
    commit_events(store, stream, 2)

    assert (await store.replay(stream, 1, "another.epoch")).messages is None
    assert (await store.replay(stream, 3, start.epoch)).messages is None


@pytest.mark.asyncio
async def test_replay_past_the_history_length_is_unknown(store: StreamStore, stream: str) -> None:
    limit, count = 20, 250  # Redis trims whole stream nodes (100 entries): publish well past them.
    with override_settings(DRF_LIVE={"HISTORY_LENGTH": limit}):
        start = await store.register(stream, USER)
        commit_events(store, stream, count)

        assert (await store.replay(stream, 0, start.epoch)).messages is None
        recent = await store.replay(stream, count - limit, start.epoch)
        assert recent.messages is not None
        assert [message["seq"] for message in recent.messages] == list(range(count - limit + 1, count + 1))


@pytest.mark.asyncio
async def test_replay_of_an_event_older_than_the_history_ttl_is_unknown(store: StreamStore, stream: str) -> None:
    with override_settings(DRF_LIVE={"HISTORY_TTL": 1}):
        start = await store.register(stream, USER)
        commit_events(store, stream, 1)
        await asyncio.sleep(0.6)
        commit_events(store, stream, 1)
        await asyncio.sleep(0.55)  # The first event is 1.15 s old, the second 0.55 s.

        assert (await store.replay(stream, 0, start.epoch)).messages is None
        replay = await store.replay(stream, 1, start.epoch)
        assert replay.position == Position(2, start.epoch)
        assert [message["seq"] for message in replay.messages or []] == [2]


@pytest.mark.asyncio
async def test_a_stream_keeps_its_seq_past_the_history_ttl_while_its_users_stay_registered(
    store: StreamStore, stream: str, request: pytest.FixtureRequest
) -> None:
    # A socket that stays open keeps its stream's numbering: refresh renews the seq too.
    with override_settings(DRF_LIVE={"HISTORY_TTL": 1, "RESUME_WINDOW": 5}):
        start = await store.register(stream, USER)
        commit_events(store, stream, 2)
        for _ in range(9):  # 2.25 s, the registration renewed as the hub does
            await asyncio.sleep(0.25)
            await store.refresh([(stream, USER)])

        assert commit_events(store, stream, 1) == [3]
        assert await store.register(stream, USER) == Position(3, start.epoch)


@pytest.mark.asyncio
async def test_two_memory_stores_never_share_an_epoch(stream: str) -> None:
    # Two processes on process memory: a client moving between them must not "recover".
    one, two = MemoryStreamStore(), MemoryStreamStore()

    assert (await one.register(stream, USER)).epoch != (await two.register(stream, USER)).epoch


# Rotation ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rotate_gives_a_stream_a_new_epoch_and_tells_its_listeners(store: StreamStore, stream: str) -> None:
    other = new_stream()
    before = await store.register(stream, USER)
    untouched = await store.register(other, USER)
    commit_events(store, stream, 2)
    async with listening(store, stream) as (listener, inbox):
        store.rotate([stream])

        channel, message = await inbox.next()
        assert channel == stream
        assert message == {"type": "rotate", "epoch": message["epoch"]}
        assert message["epoch"] != before.epoch
        await nothing_more(store, listener, inbox)

    after = await store.register(stream, USER)
    assert after == Position(2, message["epoch"])
    # The history is gone with the old epoch; a client at the new position is up to date.
    assert (await store.replay(stream, 1, before.epoch)).messages is None
    assert (await store.replay(stream, 0, after.epoch)).messages is None
    recovered = await store.replay(stream, 2, after.epoch)
    assert recovered.messages == []
    assert recovered.earlier == []  # Nothing of the old epoch tells what a client holds.
    assert commit_events(store, stream, 1) == [3]
    assert [m["epoch"] for m in (await store.replay(stream, 2, after.epoch)).messages or []] == [after.epoch]
    # Another stream keeps its epoch.
    assert await store.register(other, USER) == untouched


@pytest.mark.asyncio
async def test_rotate_all_changes_every_epoch_and_tells_every_process(store: StreamStore, stream: str) -> None:
    other = new_stream()
    first = await store.register(stream, USER)
    second = await store.register(other, USER)
    commit_events(store, stream, 1)
    commit_events(store, other, 1)
    async with listening(store, control_channel()) as (listener, inbox):
        store.rotate_all()

        assert await inbox.next() == (control_channel(), {"type": "rotate-all"})
        await nothing_more(store, listener, inbox)

    for name, before in ((stream, first), (other, second)):
        after = await store.register(name, USER)
        assert after.seq == 1
        assert after.epoch != before.epoch
        assert (await store.replay(name, 0, before.epoch)).messages is None
        assert (await store.replay(name, 0, after.epoch)).messages is None
        assert (await store.replay(name, 1, after.epoch)).earlier == []


# Registrations ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unregister_keeps_a_user_claimable_for_the_resume_window_only(store: StreamStore, stream: str) -> None:
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 0.5}):
        await store.register(stream, USER)
        await store.unregister(stream, USER)

        claim = store.claim(stream)
        assert claim is not None
        assert claim.users == (USER,)
        store.release(claim)

        await asyncio.sleep(0.65)
        assert store.claim(stream) is None


@pytest.mark.asyncio
async def test_refresh_extends_every_registration_it_names(store: StreamStore, stream: str) -> None:
    other = new_stream()
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 1.0}):
        await store.register(stream, USER)
        await store.register(other, OTHER_USER)
        await asyncio.sleep(0.6)
        await store.refresh([(stream, USER), (other, OTHER_USER)])
        await asyncio.sleep(0.6)  # 1.2 s after registering, 0.6 s after the refresh

        for name, user in ((stream, USER), (other, OTHER_USER)):
            claim = store.claim(name)
            assert claim is not None
            assert claim.users == (user,)
            store.release(claim)

        await asyncio.sleep(0.6)
        assert store.claim(stream) is None
        assert store.claim(other) is None


@pytest.mark.asyncio
async def test_refresh_renews_many_registrations_a_chunk_at_a_time(
    store: StreamStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process holds thousands: they are renewed a few hundred per Redis call (here 2 per call).
    monkeypatch.setattr(redis_store_module, "RENEW_CHUNK", 2)
    pairs = [(new_stream(), user) for user in (USER, OTHER_USER) for _ in range(3)]
    with override_settings(DRF_LIVE={"RESUME_WINDOW": 1.0}):
        for stream, user in pairs:
            await store.register(stream, user)
        await asyncio.sleep(0.6)
        await store.refresh(pairs)
        await asyncio.sleep(0.6)  # 1.2 s after registering, 0.6 s after the refresh

        claims = store.claim_all(stream for stream, _ in pairs)
        assert {stream: claim.users for stream, claim in claims.held.items()} == {
            stream: (user,) for stream, user in pairs
        }
        for claim in claims.held.values():
            store.release(claim)


# Listeners -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_listener_delivers_what_is_published_after_add_returns(store: StreamStore, stream: str) -> None:
    other = new_stream()
    async with listening(store) as (listener, inbox):
        store.publish(stream, {"n": 0})  # Before add(): not for this listener.
        await listener.add(stream)
        await listener.add(other)

        store.publish(stream, {"n": 1})
        store.publish(other, {"n": 2})
        store.publish(new_stream(), {"n": 3})  # A channel it does not listen on.
        store.publish(stream, {"n": 4})

        arrived = [await inbox.next() for _ in range(3)]
        # In publication order on each channel (two channels may live on two shards, two connections).
        assert [message for channel, message in arrived if channel == stream] == [{"n": 1}, {"n": 4}]
        assert [message for channel, message in arrived if channel == other] == [{"n": 2}]
        await nothing_more(store, listener, inbox)


@pytest.mark.asyncio
async def test_a_listener_stops_delivering_a_channel_after_remove(store: StreamStore, stream: str) -> None:
    other = new_stream()
    async with listening(store, stream, other) as (listener, inbox):
        await listener.remove(stream)
        await nothing_more(store, listener, inbox)  # The removal has taken effect.

        store.publish(stream, {"n": 1})
        store.publish(other, {"n": 2})

        assert await inbox.next() == (other, {"n": 2})
        await nothing_more(store, listener, inbox)


@pytest.mark.asyncio
async def test_two_listeners_each_get_every_message_of_their_channel(store: StreamStore, stream: str) -> None:
    async with listening(store, stream) as (one, first), listening(store, stream) as (two, second):
        store.publish(stream, {"n": 1})

        assert await first.next() == (stream, {"n": 1})
        assert await second.next() == (stream, {"n": 1})
        await nothing_more(store, one, first)
        await nothing_more(store, two, second)


# Redis only: what a shared store adds -----------------------------------------------------


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStreamStore]:
    store = RedisStreamStore(redis_server.url)
    yield store
    store.close()


@pytest.mark.asyncio
async def test_two_processes_share_seq_epoch_history_and_registrations(redis_server: RedisServer, stream: str) -> None:
    one, two = RedisStreamStore(redis_server.url), RedisStreamStore(redis_server.url)
    try:
        start = await one.register(stream, USER)  # A socket on one server process ...
        claim = two.claim(stream)  # ... is counted by the relay of another.
        assert claim is not None
        assert claim.users == (USER,)
        assert two.commit(claim, entry(stream, 0)) == 1
        assert commit_events(one, stream, 1) == [2]

        assert await two.register(stream, OTHER_USER) == Position(2, start.epoch)
        replay = await one.replay(stream, 0, start.epoch)
        assert [message["seq"] for message in replay.messages or []] == [1, 2]
        # A process that starts later finds the same stream.
        late = RedisStreamStore(redis_server.url)
        try:
            assert await late.register(stream, USER) == Position(2, start.epoch)
            assert (await late.replay(stream, 1, start.epoch)).messages == (replay.messages or [])[1:]
        finally:
            late.close()
    finally:
        one.close()
        two.close()


@pytest.mark.asyncio
async def test_a_retried_commit_of_an_event_the_history_holds_is_not_committed_twice(
    redis_server: RedisServer, stream: str
) -> None:
    store = RedisStreamStore(redis_server.url)
    try:
        start = await store.register(stream, USER)
        async with listening(store, stream) as (_listener, inbox):
            first = store.claim(stream)
            assert first is not None
            assert store.commit(first, entry(stream, 0), "event-a") == start.seq + 1
            assert await inbox.next() == (stream, entry_message(stream, 1, start.epoch))
            commit_events(store, stream, 1)  # another event in between
            assert (await inbox.next())[1]["seq"] == 2

            # The first attempt's reply was lost: the retry finds event-a in the history.
            again = store.claim(stream)
            assert again is not None
            assert store.commit(again, entry(stream, 0), "event-a", retry=True) == 1
            # A retry of an event that never made it commits it.
            other = store.claim(stream)
            assert other is not None
            assert store.commit(other, entry(stream, 5), "event-b", retry=True) == 3
            assert (await inbox.next())[1]["seq"] == 3
            await inbox.nothing()
        replay = await store.replay(stream, 0, start.epoch)
        assert [message["seq"] for message in replay.messages or []] == [1, 2, 3]
        assert (await store.register(stream, USER)).seq == 3
        # Without ``retry`` nothing is looked up: an event id says nothing on a first attempt.
        last = store.claim(stream)
        assert last is not None
        assert store.commit(last, entry(stream, 0), "event-a") == 4
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_burst_of_registrations_past_the_pool_size_waits_for_a_connection(
    redis_server: RedisServer, stream: str
) -> None:
    # A reconnect storm: hundreds of sockets of one process register at once. redis-py's default
    # pool would refuse every command past its 100th connection ("Too many connections").
    store = RedisStreamStore(redis_server.url)
    observer = redis.Redis(port=redis_server.port)
    try:
        before = len(observer.client_list())
        names = [f"{stream}.{n}" for n in range(4 * ASYNC_POOL_SIZE)]
        positions = await asyncio.gather(*(store.register(name, USER) for name in names))
        assert [position.seq for position in positions] == [0] * len(names)
        assert len({position.epoch.split(".")[0] for position in positions}) == 1
        assert len(observer.client_list()) - before <= ASYNC_POOL_SIZE
    finally:
        observer.close()
        store.close()


@pytest.mark.asyncio
async def test_an_event_committed_by_one_process_reaches_a_listener_of_another(
    redis_server: RedisServer, stream: str
) -> None:
    relay_side, server_side = RedisStreamStore(redis_server.url), RedisStreamStore(redis_server.url)
    try:
        start = await server_side.register(stream, USER)
        async with listening(server_side, stream) as (_listener, inbox):
            commit_events(relay_side, stream, 1)

            assert await inbox.next() == (stream, entry_message(stream, 1, start.epoch))
    finally:
        relay_side.close()
        server_side.close()


@pytest.mark.asyncio
async def test_a_hold_whose_holder_died_runs_out_after_claim_timeout(redis_server: RedisServer, stream: str) -> None:
    stuck, other = RedisStreamStore(redis_server.url), RedisStreamStore(redis_server.url)
    try:
        await other.register(stream, USER)
        with override_settings(DRF_LIVE={"CLAIM_TIMEOUT": 0.3}):
            held = stuck.claim(stream)  # Its relay died (or hangs) before committing.
            assert held is not None

            started = time.monotonic()
            claim = other.claim(stream)
            assert claim is not None
            assert time.monotonic() - started >= 0.25

            # The late holder's commit is refused: it would decide again.
            assert stuck.commit(held, entry(stream, 0)) is None
            assert other.commit(claim, entry(stream, 1)) == 1
    finally:
        stuck.close()
        other.close()


@pytest.mark.asyncio
async def test_flushall_changes_the_epoch(
    redis_store: RedisStreamStore, redis_server: RedisServer, stream: str
) -> None:
    before = await redis_store.register(stream, USER)
    commit_events(redis_store, stream, 2)

    redis.Redis.from_url(redis_server.url).flushall()

    assert (await redis_store.replay(stream, 2, before.epoch)).messages is None
    after = await redis_store.register(stream, USER)
    assert after.seq == 0
    assert after.epoch != before.epoch
    assert commit_events(redis_store, stream, 1) == [1]
    assert [m["epoch"] for m in (await redis_store.replay(stream, 0, after.epoch)).messages or []] == [after.epoch]
    # Every process sees the new epoch.
    elsewhere = RedisStreamStore(redis_server.url)
    try:
        assert await elsewhere.register(stream, OTHER_USER) == Position(1, after.epoch)
    finally:
        elsewhere.close()


@pytest.mark.asyncio
async def test_a_restarted_redis_server_changes_the_epoch(private_redis: RedisServer, stream: str) -> None:
    store = RedisStreamStore(private_redis.url)
    try:
        before = await store.register(stream, USER)
        commit_events(store, stream, 2)

        private_redis.stop()
        private_redis.start()

        # The clients' pooled connections died with the server: the next calls reconnect.
        assert (await store.replay(stream, 2, before.epoch)).messages is None
        after = await store.register(stream, USER)
        assert after.seq == 0
        assert after.epoch != before.epoch
        assert commit_events(store, stream, 1) == [1]
    finally:
        store.close()


@pytest.mark.asyncio
async def test_redis_keys_are_named_after_the_stream_and_expire(
    redis_store: RedisStreamStore, redis_server: RedisServer, stream: str
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with override_settings(DRF_LIVE={"HISTORY_TTL": 600, "RESUME_WINDOW": 30, "CLAIM_TIMEOUT": 5}):
        position = await redis_store.register(stream, USER)
        claim = redis_store.claim(stream)
        assert claim is not None

        assert client.get(f"{stream}:hold") == claim.token
        assert 0 < client.pttl(f"{stream}:hold") <= 5000

        redis_store.commit(claim, entry(stream, 0))

    assert client.exists(f"{stream}:hold") == 0
    fields = client.hgetall(f"{stream}:seq")
    assert fields["seq"] == "1"
    assert position.epoch.endswith(f".{fields['gen']}")
    assert 0 < client.ttl(f"{stream}:seq") <= 600
    assert client.xlen(f"{stream}:hist") == 1
    assert client.xrange(f"{stream}:hist")[0][1]["m"].startswith('{"seq":1,')
    assert 0 < client.ttl(f"{stream}:hist") <= 600
    assert time.time() < float(client.zscore(f"{stream}:subs", USER) or 0) <= time.time() + 30
    assert 0 < client.ttl(f"{stream}:subs") <= 61
    client.close()


# Redis only: the pub/sub connection ------------------------------------------------------


@pytest.mark.asyncio
async def test_a_redis_listener_reports_a_killed_server_and_refuses_new_channels(
    private_redis: RedisServer, stream: str
) -> None:
    store = RedisStreamStore(private_redis.url)
    try:
        async with listening(store, stream) as (listener, inbox):
            store.publish(stream, {"n": 1})
            assert await inbox.next() == (stream, {"n": 1})

            private_redis.kill()

            await asyncio.wait_for(inbox.failed.wait(), 5)
            assert len(inbox.errors) == 1
            with pytest.raises(ConnectionError):
                await listener.add(new_stream())
            # Told once, whatever happens next.
            await asyncio.sleep(0.1)
            assert len(inbox.errors) == 1
    finally:
        store.close()


PASSWORD = "p@ss:w/rd%"  # characters that must be quoted in a URL


@pytest.fixture(scope="module")
def password_redis() -> Iterator[RedisServer]:
    """A redis-server that wants a password (requirepass), and an ACL user ``listener`` with the same one.

    ``tests.servers.RedisServer`` takes no extra arguments: the password is set
    once the server runs.
    """
    server = RedisServer().start()
    try:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.execute_command("ACL", "SETUSER", "listener", "on", f">{PASSWORD}", "~*", "&*", "+@all")
        client.config_set("requirepass", PASSWORD)
        client.close()
        yield server
    finally:
        server.close()


def password_url(server: RedisServer, password: str = PASSWORD, username: str = "") -> str:
    return f"redis://{quote(username, safe='')}:{quote(password, safe='')}@127.0.0.1:{server.port}/0"


@pytest.mark.asyncio
@pytest.mark.parametrize("username", ["", "listener"], ids=["requirepass", "acl-user"])
async def test_a_redis_listener_authenticates_with_the_password_of_the_url(
    password_redis: RedisServer, stream: str, username: str
) -> None:
    store = RedisStreamStore(password_url(password_redis, username=username))
    try:
        async with listening(store, stream) as (listener, inbox):
            store.publish(stream, {"n": 1})

            assert await inbox.next() == (stream, {"n": 1})
            await nothing_more(store, listener, inbox)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_redis_listener_with_a_wrong_password_raises_on_add(password_redis: RedisServer, stream: str) -> None:
    store = RedisStreamStore(password_url(password_redis, password="wrong"))
    listener = store.listener(Inbox())
    try:
        with pytest.raises(ConnectionError, match="WRONGPASS"):
            await asyncio.wait_for(listener.add(stream), 5)
    finally:
        await listener.close()
        store.close()


@pytest.mark.asyncio
async def test_a_redis_listener_without_the_password_redis_wants_raises_on_add(
    password_redis: RedisServer, stream: str
) -> None:
    store = RedisStreamStore(f"redis://127.0.0.1:{password_redis.port}/0")
    listener = store.listener(Inbox())
    try:
        with pytest.raises(Exception, match="NOAUTH"):
            await asyncio.wait_for(listener.add(stream), 2)
    finally:
        await listener.close()
        store.close()


@pytest.mark.asyncio
async def test_a_store_on_a_unix_socket_commits_and_listens_through_it(stream: str) -> None:
    socket_dir = tempfile.mkdtemp(prefix="drf-live-sock-")
    path = os.path.join(socket_dir, "redis.sock")
    server = RedisServer(extra_args=["--unixsocket", path, "--unixsocketperm", "700"]).start()
    store = RedisStreamStore(f"unix://{path}?db=0")
    try:
        start = await store.register(stream, USER)
        async with listening(store, stream) as (listener, inbox):
            commit_events(store, stream, 1)

            assert await inbox.next() == (stream, entry_message(stream, 1, start.epoch))
            await nothing_more(store, listener, inbox)
        # The events went to this server, through the socket.
        assert redis.Redis(unix_socket_path=path).exists(*redis.Redis(unix_socket_path=path).keys(f"*{stream}*"))
    finally:
        store.close()
        server.close()


# Choosing the store ----------------------------------------------------------------


def url_shard(url: str) -> Shard:
    return Shard(url=url)


@override_settings(
    DRF_LIVE={"STORE_URL": "memory"},
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://redis.example:6379/0"]},
        }
    },
)
def test_store_url_memory_means_process_memory() -> None:
    assert store_shards() is None
    assert isinstance(get_store(), MemoryStreamStore)


@override_settings(DRF_LIVE={"STORE_URL": "redis://store.example:6380/3"})
def test_store_url_can_be_given() -> None:
    assert store_shards() == [url_shard("redis://store.example:6380/3")]
    store = get_store()
    assert isinstance(store, RedisStreamStore)
    assert store.config == [url_shard("redis://store.example:6380/3")]


@pytest.mark.parametrize(
    "configured",
    [
        "redis://one.example:6379/0,rediss://two.example:6380/0, redis://:pw@three.example/1",
        ["redis://one.example:6379/0", "rediss://two.example:6380/0", "redis://:pw@three.example/1"],
        [
            {"address": "redis://one.example:6379/0"},
            "rediss://two.example:6380/0,redis://:pw@three.example/1",
        ],
    ],
    ids=["comma-separated", "list", "dict-and-string"],
)
def test_store_url_names_several_shards_in_order(configured: Any) -> None:
    with override_settings(DRF_LIVE={"STORE_URL": configured}):
        shards = store_shards()
        assert shards == [
            url_shard("redis://one.example:6379/0"),
            Shard(url="rediss://two.example:6380/0", ssl=True),
            url_shard("redis://:pw@three.example/1"),
        ]
        assert [shard.name for shard in shards or []] == [
            "redis://one.example:6379/0",
            "rediss://two.example:6380/0",
            "redis://three.example/1",  # no password in logs
        ]


@pytest.mark.parametrize(
    "configured",
    [
        "sentinel://user:s%40cret@s1.example:26379,s2.example:26380,s3.example/mymaster/2?sentinel_password=sp",
        {
            "sentinels": [("s1.example", 26379), ("s2.example", 26380), "s3.example"],
            "master_name": "mymaster",
            "db": 2,
            "username": "user",
            "password": "s@cret",
            "sentinel_kwargs": {"password": "sp"},
        },
    ],
    ids=["url", "dict"],
)
def test_store_url_names_a_sentinel_service(configured: Any) -> None:
    with override_settings(DRF_LIVE={"STORE_URL": configured}):
        (shard,) = store_shards() or []
    assert shard.is_sentinel
    assert shard.sentinels == (("s1.example", 26379), ("s2.example", 26380), ("s3.example", 26379))
    assert (shard.master_name, shard.db, shard.username, shard.password) == ("mymaster", 2, "user", "s@cret")
    assert dict(shard.sentinel_kwargs) == {"password": "sp"}
    assert shard.name == "sentinel://s1.example:26379,s2.example:26380,s3.example:26379/mymaster/2"


def test_sentinel_urls_and_plain_ones_mix_in_one_comma_separated_string() -> None:
    with override_settings(DRF_LIVE={"STORE_URL": "sentinel://a:1,b:2/one,redis://c:3/0,sentinel://d:4/two/1"}):
        shards = store_shards() or []
    assert [shard.name for shard in shards] == [
        "sentinel://a:1,b:2/one/0",
        "redis://c:3/0",
        "sentinel://d:4/two/1",
    ]


@pytest.mark.parametrize("configured", ["http://redis.example", "sentinel://a:1", 42])
def test_a_store_url_drf_live_cannot_read_is_refused(configured: Any) -> None:
    with override_settings(DRF_LIVE={"STORE_URL": configured}):
        with pytest.raises(ValueError):
            store_shards()


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://layer.example:6379/2"]},
        }
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_string_host() -> None:
    assert store_shards() == [url_shard("redis://layer.example:6379/2")]


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {"address": "redis://layer.example:6390", "socket_timeout": None},
                    {"address": "redis://second:1"},
                    ("third", 6379),
                ]
            },
        }
    }
)
def test_store_url_follows_every_host_of_a_channels_redis_layer_in_order() -> None:
    assert store_shards() == [
        url_shard("redis://layer.example:6390"),
        url_shard("redis://second:1"),
        url_shard("redis://third:6379"),
    ]


@override_settings(
    CHANNEL_LAYERS={
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("layer.example", 6391)]}}
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_tuple_host() -> None:
    assert store_shards() == [url_shard("redis://layer.example:6391")]


@pytest.mark.parametrize(
    "backend", ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]
)
def test_store_url_follows_a_channels_redis_layer_on_sentinel(backend: str) -> None:
    host = {"sentinels": [("s1", 26379), ("s2", 26379)], "master_name": "layer", "socket_timeout": None}
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": {"hosts": [host]}}}):
        assert store_shards() == [Shard(sentinels=(("s1", 26379), ("s2", 26379)), master_name="layer")]


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}})
def test_store_url_of_a_channels_redis_layer_without_hosts_is_its_default() -> None:
    assert store_shards() == [url_shard("redis://localhost:6379")]


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"host": "layer.example", "port": 6392, "db": 4, "max_connections": 1000}]},
        }
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_host_and_port_dict() -> None:
    assert store_shards() == [url_shard("redis://layer.example:6392/4")]


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"master_name": "mymaster", "sentinels": [("sentinel.example", 26379)]}]},
        }
    }
)
def test_store_url_of_a_sentinel_layer_is_that_sentinel_service() -> None:
    # Not the string "None" handed to redis-py: the store follows the same Sentinel service.
    (shard,) = store_shards() or []
    assert shard.master_name == "mymaster"
    assert shard.sentinels == (("sentinel.example", 26379),)


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
def test_store_url_of_the_in_memory_layer_is_none() -> None:
    assert store_shards() is None
    assert isinstance(get_store(), MemoryStreamStore)


def test_get_store_is_one_store_until_reset() -> None:
    store = get_store()

    assert get_store() is store
    reset_store()
    assert get_store() is not store


def test_changing_the_settings_resets_the_store() -> None:
    store = get_store()

    with override_settings(DRF_LIVE={"STORE_URL": "redis://elsewhere:6379"}):
        assert get_store() is not store
        assert isinstance(get_store(), RedisStreamStore)
    assert isinstance(get_store(), MemoryStreamStore)
