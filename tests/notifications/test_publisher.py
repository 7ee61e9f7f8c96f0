"""The bridge from committed writes to the channel layer (``notifications/publisher.py``).

These use the in-memory channel layer: they test the publisher, not delivery
across processes (see tests/integration and tests/e2e for that).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from notifications.publisher import Delivery, publisher
from notifications.streams import get_store
from notifications.targets import Target, group_name

TARGET = Target("api.task", id="Xk3Lp9q")
PAYLOAD = {"id": "Xk3Lp9q", "title": "Write the docs", "done": False, "project": "a8Bn2Qz", "assignee": None}


def update(title: str = "Write the docs") -> Delivery:
    return Delivery(TARGET, "UPDATE_TASK", {"all": {**PAYLOAD, "title": title}}, {"changed": ["title"]})


@pytest_asyncio.fixture
async def joined() -> AsyncIterator[tuple[Any, str]]:
    """A fresh channel in the group of TARGET's "all" audience."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = group_name(TARGET, "all")
    await layer.group_add(group, channel)
    yield layer, channel
    await layer.group_discard(group, channel)
    await layer.flush()


async def receive_nothing(layer: Any, channel: str) -> None:
    import asyncio

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout=0.1)


@pytest.mark.asyncio
async def test_published_events_reach_the_group_with_consecutive_seqs(joined: tuple[Any, str]) -> None:
    layer, channel = joined

    publisher.publish([update("First")])
    publisher.publish([update("Second")])
    await publisher.drain()
    first = await layer.receive(channel)
    second = await layer.receive(channel)

    assert first["type"] == "drf_live.event"
    assert first["stream"] == TARGET.stream
    assert [first["seq"], second["seq"]] == [1, 2]
    position = await get_store().position(TARGET.stream)
    assert json.loads(first["text"]) == {
        "type": "UPDATE_TASK",
        "payload": {**PAYLOAD, "title": "First"},
        "meta": {"model": "api.task", "id": "Xk3Lp9q", "changed": ["title"], "seq": 1},
    }
    assert json.loads(second["text"])["meta"]["seq"] == 2
    assert json.loads(second["text"])["payload"]["title"] == "Second"
    assert position.seq == 2
    await receive_nothing(layer, channel)


@pytest.mark.asyncio
async def test_published_events_are_kept_for_recovery(joined: tuple[Any, str]) -> None:
    layer, channel = joined

    publisher.publish([update("First"), update("Second")])
    await publisher.drain()
    sent = [await layer.receive(channel), await layer.receive(channel)]
    position = await get_store().position(TARGET.stream)
    replay = await get_store().replay(TARGET.stream, 0, position.epoch, "all")

    assert replay.frames == [(message["seq"], message["text"]) for message in sent]


@pytest.mark.asyncio
async def test_each_audience_gets_its_own_frame_with_one_seq(joined: tuple[Any, str]) -> None:
    layer, _ = joined
    target = Target("api.user", id="a8Bn2Qz")
    mine, theirs = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(group_name(target, "self"), mine)
    await layer.group_add(group_name(target, "others"), theirs)

    publisher.publish(
        [Delivery(target, "UPDATE_USER", {"self": {"email": "a@x"}, "others": {}}, {"changed": ["email"]})]
    )
    await publisher.drain()
    to_self, to_others = await layer.receive(mine), await layer.receive(theirs)

    assert json.loads(to_self["text"])["payload"] == {"email": "a@x"}
    assert json.loads(to_others["text"])["payload"] == {}
    assert to_self["seq"] == to_others["seq"] == 1
    await receive_nothing(layer, mine)


@pytest.mark.asyncio
async def test_publishing_nothing_counts_nothing(joined: tuple[Any, str]) -> None:
    layer, channel = joined
    published = publisher.stats.published

    publisher.publish([])
    await publisher.drain()

    assert publisher.stats.published == published
    await receive_nothing(layer, channel)


@pytest.mark.asyncio
async def test_a_failing_channel_layer_is_counted_and_rotates_the_epoch(
    joined: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, channel = joined
    publisher.publish([update("Before")])
    await publisher.drain()
    await layer.receive(channel)
    before = await get_store().position(TARGET.stream)

    async def broken(group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("layer down")

    monkeypatch.setattr(layer, "group_send", broken)
    failed, delivered = publisher.stats.failed, publisher.stats.delivered
    publisher.publish([update("Lost")])  # does not raise
    await publisher.drain()
    after = await get_store().position(TARGET.stream)

    assert publisher.stats.failed == failed + 1
    assert publisher.stats.delivered == delivered
    assert after.epoch != before.epoch
    assert (await get_store().replay(TARGET.stream, before.seq, before.epoch, "all")).frames is None


@pytest.mark.asyncio
async def test_a_failure_does_not_stop_the_events_after_it(
    joined: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer, channel = joined
    real = layer.group_send
    calls = 0

    async def flaky(group: str, message: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("blip")
        await real(group, message)

    monkeypatch.setattr(layer, "group_send", flaky)
    publisher.publish([update("Lost")])
    publisher.publish([update("Delivered")])
    await publisher.drain()
    message = await layer.receive(channel)

    assert json.loads(message["text"])["payload"]["title"] == "Delivered"
    await receive_nothing(layer, channel)


def test_publish_from_a_plain_thread_uses_the_publishing_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group_name(TARGET, "all"), channel)
    real = layer.group_send
    threads: list[str] = []

    async def recording(group: str, message: dict[str, Any]) -> None:
        threads.append(threading.current_thread().name)
        await real(group, message)

    monkeypatch.setattr(layer, "group_send", recording)
    writer = threading.Thread(target=publisher.publish, args=([update("From a thread")],), name="writer")
    try:
        writer.start()
        writer.join(5)

        assert publisher.flush() is True
        assert threads == ["drf-live-publisher"]
        message = async_to_sync(layer.receive)(channel)
        assert message["seq"] == 1
        assert json.loads(message["text"])["payload"]["title"] == "From a thread"
    finally:
        async_to_sync(layer.group_discard)(group_name(TARGET, "all"), channel)


def test_flush_with_nothing_published_returns_true() -> None:
    assert publisher.flush(timeout=1) is True
