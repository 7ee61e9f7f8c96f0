"""Seq counters, epochs and history (``notifications/streams.py``), in process memory.

The Redis store is tested against a real redis-server elsewhere.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from notifications.streams import MemoryStreamStore, Position, RedisStreamStore, get_store, reset_store, store_url

STREAM = "drf-live.api.task.o.Xk3Lp9q"
OTHER = "drf-live.api.task.o.Pq7aaaa"


def frames(seq: int) -> dict[str, str]:
    return {"self": f"self-{seq}", "others": f"others-{seq}"}


async def fill(store: MemoryStreamStore, stream: str, count: int) -> Position:
    position = Position(0, "")
    for _ in range(count):
        position = await store.next(stream)
        await store.record(stream, position.seq, frames(position.seq))
    return position


@pytest.mark.asyncio
async def test_next_counts_each_stream_on_its_own() -> None:
    store = MemoryStreamStore()

    first = await store.next(STREAM)
    second = await store.next(STREAM)
    other = await store.next(OTHER)
    third = await store.next(STREAM)

    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert other.seq == 1
    assert first.epoch == second.epoch == third.epoch
    assert other.epoch != first.epoch


@pytest.mark.asyncio
async def test_position_is_the_last_seq_without_advancing() -> None:
    store = MemoryStreamStore()

    fresh = await store.position(STREAM)
    await store.next(STREAM)
    await store.next(STREAM)
    now = await store.position(STREAM)

    assert fresh.seq == 0
    assert now == Position(2, fresh.epoch)
    assert await store.position(STREAM) == now


@pytest.mark.asyncio
async def test_replay_returns_the_missed_frames_of_the_audience_in_order() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 5)

    replay = await store.replay(STREAM, 2, position.epoch, "others")

    assert replay.position == position
    assert replay.frames == [(3, "others-3"), (4, "others-4"), (5, "others-5")]
    assert (await store.replay(STREAM, 2, position.epoch, "self")).frames == [
        (3, "self-3"),
        (4, "self-4"),
        (5, "self-5"),
    ]


@pytest.mark.asyncio
async def test_replay_of_an_audience_without_frames_is_unknown() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 2)

    assert (await store.replay(STREAM, 0, position.epoch, "all")).frames is None


@pytest.mark.asyncio
async def test_replay_from_the_current_seq_is_an_empty_recovery() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 3)

    replay = await store.replay(STREAM, 3, position.epoch, "self")

    assert replay.frames == []
    assert replay.position == position


@pytest.mark.asyncio
async def test_replay_with_a_wrong_epoch_is_unknown() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 3)

    replay = await store.replay(STREAM, 1, "not-the-epoch", "self")

    assert replay.frames is None
    assert replay.position == position
    assert (await store.replay(STREAM, 3, "not-the-epoch", "self")).frames is None


@pytest.mark.asyncio
async def test_replay_from_the_future_is_unknown() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 3)

    assert (await store.replay(STREAM, 4, position.epoch, "self")).frames is None


@pytest.mark.asyncio
async def test_replay_with_an_unrecorded_event_is_unknown() -> None:
    store = MemoryStreamStore()
    await fill(store, STREAM, 2)
    await store.next(STREAM)  # reserved, never recorded (a publish that failed half-way)
    position = await fill(store, STREAM, 1)

    assert position.seq == 4
    assert (await store.replay(STREAM, 1, position.epoch, "self")).frames is None
    assert (await store.replay(STREAM, 3, position.epoch, "self")).frames == [(4, "self-4")]


@pytest.mark.asyncio
@override_settings(DRF_LIVE={"HISTORY_LENGTH": 5})
async def test_replay_from_beyond_the_history_length_is_unknown() -> None:
    store = MemoryStreamStore()
    position = await fill(store, STREAM, 12)

    assert (await store.replay(STREAM, 6, position.epoch, "self")).frames is None
    kept = await store.replay(STREAM, 7, position.epoch, "self")
    assert [seq for seq, _ in kept.frames or []] == [8, 9, 10, 11, 12]


@pytest.mark.asyncio
async def test_mark_lost_changes_the_epoch_and_forgets_the_history() -> None:
    store = MemoryStreamStore()
    before = await fill(store, STREAM, 3)

    store.mark_lost()
    after = await store.position(STREAM)

    assert after.epoch != before.epoch
    assert (await store.replay(STREAM, 1, before.epoch, "self")).frames is None
    assert after.seq == 0
    assert (await store.replay(STREAM, 0, after.epoch, "self")).frames == []


@pytest.mark.asyncio
async def test_two_stores_never_share_an_epoch() -> None:
    assert (await MemoryStreamStore().position(STREAM)).epoch != (await MemoryStreamStore().position(STREAM)).epoch


# Choosing the store ----------------------------------------------------------------


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
    assert store_url() is None
    assert isinstance(get_store(), MemoryStreamStore)


@override_settings(DRF_LIVE={"STORE_URL": "redis://store.example:6380/3"})
def test_store_url_can_be_given() -> None:
    assert store_url() == "redis://store.example:6380/3"
    store = get_store()
    assert isinstance(store, RedisStreamStore)
    assert store.url == "redis://store.example:6380/3"


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://layer.example:6379/2"]},
        }
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_string_host() -> None:
    assert store_url() == "redis://layer.example:6379/2"


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {"address": "redis://layer.example:6390", "socket_timeout": None},
                    {"address": "redis://second:1"},
                ]
            },
        }
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_dict_host() -> None:
    assert store_url() == "redis://layer.example:6390"


@override_settings(
    CHANNEL_LAYERS={
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("layer.example", 6391)]}}
    }
)
def test_store_url_follows_a_channels_redis_layer_with_a_tuple_host() -> None:
    assert store_url() == "redis://layer.example:6391"


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}})
def test_store_url_of_a_channels_redis_layer_without_hosts_is_its_default() -> None:
    assert store_url() == "redis://localhost:6379"


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}})
def test_store_url_of_the_in_memory_layer_is_none() -> None:
    assert store_url() is None
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
