"""A stream store spread over Redis shards (``notifications/shards.py``, ``redis_store``, ``redis_pubsub``).

The store's contract on two and three shards runs in ``test_streams.py``. These
show what sharding adds, on real redis-servers: each stream's keys where the
hash says, a stopped shard that takes only its own streams down, control
messages that still reach every process, a promoted replica that gives its
shard a new epoch, a Sentinel failover, and the sockets of each user counted
across processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from channels_redis.utils import _consistent_hash
from django.test import override_settings

from notifications import redis_pubsub
from notifications.redis_clients import ShardDown, check_master, epoch_key
from notifications.redis_store import RedisStreamStore, sockets_key
from notifications.shards import shard_index
from notifications.streams import Position, control_channel
from tests.notifications.test_streams import (
    OTHER_USER,
    USER,
    commit_events,
    listening,
    new_stream,
    nothing_more,
)
from tests.servers import RedisServer, SentinelServer, wait_for_failover


@pytest.fixture
def shards() -> Iterator[list[RedisServer]]:
    """Three redis-servers of the test's own (tests stop and restart them)."""
    servers = [RedisServer().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


def stream_on(index: int, count: int) -> str:
    """A fresh stream name that lives on shard ``index`` of ``count``."""
    while True:
        name = new_stream()
        if shard_index(name, count) == index:
            return name


def client_of(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)


# Hashing -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 16])
def test_a_stream_goes_to_the_shard_channels_redis_would_put_a_group_on(count: int) -> None:
    names = ["drf-live.api.task.o.1", "drf-live.api.task.c.project-x", "drf-live:sockets:42", "é", ""]
    names += [new_stream() for _ in range(200)]

    assert [shard_index(name, count) for name in names] == [_consistent_hash(name, count) for name in names]
    used = {shard_index(name, count) for name in names}
    assert used == set(range(count))  # 200 names spread over every shard


@pytest.mark.asyncio
async def test_each_streams_keys_live_on_the_shard_its_name_hashes_to(shards: list[RedisServer]) -> None:
    store = RedisStreamStore([server.url for server in shards])
    try:
        streams = [stream_on(index, 3) for index in (0, 1, 2, 0)]
        for stream in streams:
            await store.register(stream, USER)
            commit_events(store, stream, 1)
        assert await store.admit_socket(USER, "socket-1", 5)

        for index, server in enumerate(shards):
            held = set(client_of(server).keys("*"))
            expected = {
                f"{stream}:{suffix}"
                for stream in streams
                if shard_index(stream, 3) == index
                for suffix in ("seq", "hist", "subs")
            }
            if shard_index(sockets_key(USER), 3) == index:
                expected.add(sockets_key(USER))
            # Each shard has its own epoch key, beside the streams that name their epoch after it.
            assert held == expected | {epoch_key()}, (index, held)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_streams_events_are_published_on_its_own_shard(shards: list[RedisServer]) -> None:
    store = RedisStreamStore([server.url for server in shards[:2]])
    stream = stream_on(1, 2)
    other = redis.Redis(host="127.0.0.1", port=shards[0].port).pubsub()
    own = redis.Redis(host="127.0.0.1", port=shards[1].port).pubsub()
    try:
        for pubsub in (other, own):
            pubsub.subscribe(stream)
            assert pubsub.get_message(timeout=1)["type"] == "subscribe"
        await store.register(stream, USER)
        commit_events(store, stream, 1)

        message = own.get_message(timeout=2)
        assert message is not None and message["channel"].decode() == stream
        assert other.get_message(timeout=0.3) is None
    finally:
        other.close()
        own.close()
        store.close()


# One shard down ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_stopped_shard_takes_down_only_its_own_streams(shards: list[RedisServer]) -> None:
    store = RedisStreamStore([server.url for server in shards[:2]])
    down, up = stream_on(0, 2), stream_on(1, 2)
    try:
        for stream in (down, up):
            await store.register(stream, USER)
        async with listening(store, down, up, control_channel()) as (listener, inbox):
            shards[0].kill()

            await asyncio.wait_for(inbox.failed.wait(), 5)
            # Only the channels of the lost shard are reported; the control channel lives on.
            assert inbox.lost_channels == [{down}]

            # The other shard's stream goes on: registered, numbered, published, replayed.
            position = await store.register(up, OTHER_USER)
            assert commit_events(store, up, 1) == [position.seq + 1]
            assert (await inbox.next())[0] == up
            assert [m["seq"] for m in (await store.replay(up, position.seq, position.epoch)).messages or []] == [
                position.seq + 1
            ]
            # Control messages still reach the process, through the shard that is up.
            store.publish(control_channel(), {"type": "close", "to": ["drf-live.user.1"]})
            assert await inbox.next() == (control_channel(), {"type": "close", "to": ["drf-live.user.1"]})

            # The lost shard's streams fail: listening, registering, and the relay's claims.
            with pytest.raises(ConnectionError):
                await listener.add(stream_on(0, 2))
            with pytest.raises(redis.ConnectionError):
                await store.register(down, USER)
            with pytest.raises(redis.ConnectionError):
                store.claim(down)
            started = time.monotonic()
            with pytest.raises(ShardDown):
                store.claim(down)  # right after a failure: not even tried
            assert time.monotonic() - started < 0.1
            # Renewals of both shards' registrations: the live one is renewed, the failure is raised.
            with override_settings(DRF_LIVE={"RESUME_WINDOW": 300}):
                with pytest.raises(redis.ConnectionError):
                    await store.refresh([(down, USER), (up, USER)])
            assert float(client_of(shards[1]).zscore(f"{up}:subs", USER) or 0) > time.time() + 200
            # Every epoch cannot rotate while a shard is away: it must rotate there too.
            with pytest.raises(redis.ConnectionError):
                store.rotate_all()
            # Nothing else came (a barrier on the shard that is up comes next), and no second loss.
            barrier = stream_on(1, 2)
            await listener.add(barrier)
            store.publish(barrier, {"type": "barrier"})
            assert await inbox.next() == (barrier, {"type": "barrier"})
            assert len(inbox.errors) == 1
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_control_message_published_on_every_shard_arrives_once(shards: list[RedisServer]) -> None:
    store = RedisStreamStore([server.url for server in shards])
    try:
        async with listening(store, control_channel()) as (listener, inbox):
            store.publish(control_channel(), {"type": "recheck", "to": ["drf-live.user.1"]})

            assert await inbox.next() == (control_channel(), {"type": "recheck", "to": ["drf-live.user.1"]})
            await nothing_more(store, listener, inbox)
            await asyncio.sleep(0.2)
            assert inbox.queue.empty()
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_shard_back_after_an_outage_carries_the_control_channel_again(
    shards: list[RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pubsub, "CONTROL_RETRY", 0.2)
    store = RedisStreamStore([server.url for server in shards[:2]])
    try:
        async with listening(store, control_channel()) as (listener, inbox):
            shards[0].kill()
            await asyncio.sleep(0.5)
            shards[0].start()
            await asyncio.sleep(1.0)  # the listener subscribed again on the shard that came back

            shards[1].kill()
            await asyncio.sleep(0.3)
            store.publish(control_channel(), {"type": "close", "to": ["drf-live.user.2"]})

            assert await inbox.next() == (control_channel(), {"type": "close", "to": ["drf-live.user.2"]})
            assert inbox.errors == []  # the control channel was never lost: one shard always carried it
    finally:
        store.close()


@pytest.mark.asyncio
async def test_the_control_channel_is_lost_when_no_shard_carries_it(shards: list[RedisServer]) -> None:
    store = RedisStreamStore([server.url for server in shards[:2]])
    stream = stream_on(1, 2)
    try:
        async with listening(store, control_channel(), stream) as (listener, inbox):
            shards[0].kill()
            shards[1].kill()

            deadline = time.monotonic() + 5
            while set().union(*(lost or set() for lost in inbox.lost_channels)) != {control_channel(), stream}:
                assert time.monotonic() < deadline, inbox.lost_channels
                await asyncio.sleep(0.05)
            with pytest.raises(ConnectionError):
                await listener.add(control_channel())
    finally:
        store.close()


# A promoted replica --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_promoted_replica_gives_its_shard_a_new_epoch(shards: list[RedisServer]) -> None:
    master, replica = shards[0], shards[1]
    stream = new_stream()
    store = RedisStreamStore(master.url)
    try:
        assert check_master(redis.Redis(port=master.port)) is True  # first contact: an epoch of its own
        assert check_master(redis.Redis(port=master.port)) is False  # the same server: nothing to do
        before = await store.register(stream, USER)
        commit_events(store, stream, 2)
        client_of(replica).replicaof("127.0.0.1", master.port)
        deadline = time.monotonic() + 10
        while client_of(replica).hget(f"{stream}:seq", "seq") != "2":
            assert time.monotonic() < deadline, "the replica did not sync"
            await asyncio.sleep(0.05)
    finally:
        store.close()

    master.kill()
    client_of(replica).replicaof("NO", "ONE")  # what Sentinel does in a failover

    promoted = RedisStreamStore(replica.url)
    try:
        # The replica holds the stream's keys and epoch, but it cannot vouch for writes it may have missed.
        assert await promoted.register(stream, USER) == Position(2, before.epoch)
        assert check_master(redis.Redis(port=replica.port)) is True
        after = await promoted.register(stream, USER)
        assert after.seq == 2 and after.epoch != before.epoch
        assert (await promoted.replay(stream, 2, before.epoch)).messages is None
        assert commit_events(promoted, stream, 1) == [3]
    finally:
        promoted.close()


@pytest.mark.asyncio
async def test_through_sentinel_a_failover_gives_a_new_epoch_and_events_flow_on_the_new_master() -> None:
    master = RedisServer().start()
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel = SentinelServer(master.port, "drfmaster").start()
    stream = new_stream()
    store = RedisStreamStore(f"sentinel://{sentinel.address}/drfmaster/0")
    try:
        before = await store.register(stream, USER)
        commit_events(store, stream, 2)
        async with listening(store, stream, control_channel()) as (listener, inbox):
            deadline = time.monotonic() + 10
            while client_of(replica).hget(f"{stream}:seq", "seq") != "2":
                assert time.monotonic() < deadline, "the replica did not sync"
                await asyncio.sleep(0.05)

            master.kill()

            await asyncio.wait_for(inbox.failed.wait(), 5)  # the pub/sub connection died with the master
            wait_for_failover(sentinel, master.port)
            # The promoted replica had both events, but nobody is told it recovered across a failover.
            after = await store.register(stream, USER)
            assert after.seq == 2 and after.epoch != before.epoch
            assert (await store.replay(stream, 2, before.epoch)).messages is None
            # The relay's client found the new master too, and the events flow through it.
            await listener.add(stream)
            assert commit_events(store, stream, 1) == [3]
            channel, message = await inbox.next()
            assert (channel, message["seq"], message["epoch"]) == (stream, 3, after.epoch)
    finally:
        store.close()
        sentinel.close()
        replica.close()
        master.close()


# Sockets per user, across processes ---------------------------------------------------------


@pytest.mark.asyncio
async def test_sockets_are_counted_across_processes_and_a_dead_processs_run_out(shards: list[RedisServer]) -> None:
    urls = [server.url for server in shards[:2]]
    one, two = RedisStreamStore(urls), RedisStreamStore(urls)
    user = f"u{uuid.uuid4().hex[:6]}"
    try:
        with override_settings(DRF_LIVE={"SOCKET_LEASE": 1.0}):
            assert await one.admit_socket(user, "a-1", 3)
            assert await one.admit_socket(user, "a-2", 3)
            assert await two.admit_socket(user, "b-1", 3)
            assert not await two.admit_socket(user, "b-2", 3)
            assert not await one.admit_socket(user, "a-3", 3)
            assert await one.admit_socket(user, "a-1", 3)  # a socket counted already stays admitted
            assert await one.admit_socket(OTHER_USER, "a-4", 3)  # another user is not concerned

            # A socket that closes frees its place at once.
            await two.release_socket(user, "b-1")
            assert await two.admit_socket(user, "b-2", 3)

            # Process one dies (stops renewing); process two renews its own.
            await asyncio.sleep(0.6)
            await two.renew_sockets([(user, "b-2")])
            await asyncio.sleep(0.6)
            assert await two.admit_socket(user, "b-3", 3)
            assert await two.admit_socket(user, "b-4", 3)
            assert not await two.admit_socket(user, "b-5", 3)
    finally:
        one.close()
        two.close()
