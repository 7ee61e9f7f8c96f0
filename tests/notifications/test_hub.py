"""The per-process hub: one channel per group, messages handed to every local member."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from notifications.hub import Hub

pytestmark = pytest.mark.asyncio


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lost: list[str] = []

    def hub_message(self, group: str, message: dict[str, Any]) -> None:
        self.messages.append((group, message))

    def hub_lost(self, group: str, error: BaseException) -> None:
        self.lost.append(group)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_group_send_reaches_every_local_member_through_one_channel() -> None:
    layer = InMemoryChannelLayer()
    hub = Hub(layer)
    first, second, elsewhere = Recorder(), Recorder(), Recorder()
    await hub.join("drf-live.g1", first)
    await hub.join("drf-live.g1", second)
    await hub.join("drf-live.g2", elsewhere)

    await layer.group_send("drf-live.g1", {"type": "drf_live.event", "n": 1})
    await settle()

    assert first.messages == [("drf-live.g1", {"type": "drf_live.event", "n": 1})]
    assert second.messages == first.messages
    assert elsewhere.messages == []
    # One channel-layer member for the group, however many sockets.
    assert len(layer.groups["drf-live.g1"]) == 1


async def test_the_process_leaves_the_group_with_its_last_member() -> None:
    layer = InMemoryChannelLayer()
    hub = Hub(layer)
    first, second = Recorder(), Recorder()
    await hub.join("drf-live.g", first)
    await hub.join("drf-live.g", second)

    await hub.leave("drf-live.g", first)
    await layer.group_send("drf-live.g", {"type": "drf_live.event", "n": 1})
    await settle()
    assert first.messages == []
    assert [message["n"] for _, message in second.messages] == [1]

    await hub.leave("drf-live.g", second)
    assert "drf-live.g" not in layer.groups or not layer.groups["drf-live.g"]
    assert hub.members("drf-live.g") == set()


async def test_messages_reach_members_in_the_order_they_were_sent() -> None:
    layer = InMemoryChannelLayer()
    hub = Hub(layer)
    member = Recorder()
    await hub.join("drf-live.g", member)

    for n in range(20):
        await layer.group_send("drf-live.g", {"type": "drf_live.event", "n": n})
    await settle()
    await asyncio.sleep(0.01)

    assert [message["n"] for _, message in member.messages] == list(range(20))


async def test_a_failing_layer_tells_every_member_and_forgets_the_group() -> None:
    class BrokenOnReceive(InMemoryChannelLayer):
        async def receive(self, channel: str) -> dict[str, Any]:
            raise ConnectionError("redis is gone")

    hub = Hub(BrokenOnReceive())
    first, second = Recorder(), Recorder()
    await hub.join("drf-live.g", first)
    await hub.join("drf-live.g", second)
    await settle()

    assert first.lost == ["drf-live.g"]
    assert second.lost == ["drf-live.g"]
    assert hub.members("drf-live.g") == set()


async def test_a_join_that_cannot_reach_the_layer_raises_and_leaves_nothing_behind() -> None:
    class BrokenOnAdd(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            raise ConnectionError("redis is gone")

    hub = Hub(BrokenOnAdd())
    with pytest.raises(ConnectionError):
        await hub.join("drf-live.g", Recorder())
    assert hub.groups == {}


async def test_a_failure_in_one_group_ends_every_group_of_the_process() -> None:
    class FailsOnDemand(InMemoryChannelLayer):
        broken = False

        async def receive(self, channel: str) -> dict[str, Any]:
            message = await super().receive(channel)
            if self.broken:
                raise ConnectionError("redis is gone")
            return message

    layer = FailsOnDemand()
    hub = Hub(layer)
    first, second = Recorder(), Recorder()
    await hub.join("drf-live.a", first)
    await hub.join("drf-live.b", second)

    layer.broken = True
    await layer.group_send("drf-live.a", {"type": "drf_live.event"})
    await settle()

    # Only group a's receive saw the failure; group b is dropped all the same.
    assert first.lost == ["drf-live.a"]
    assert second.lost == ["drf-live.b"]
    assert hub.groups == {}


async def test_the_hub_renews_its_memberships_before_the_layer_expires_them() -> None:
    # The layer drops a membership group_expiry seconds after it was added (a day
    # by default); a process may stay in a group longer than that.
    layer = InMemoryChannelLayer(group_expiry=1)
    hub = Hub(layer)
    member = Recorder()
    await hub.join("drf-live.long-lived", member)

    await asyncio.sleep(2.5)  # well past the expiry of the first group_add
    await layer.group_send("drf-live.long-lived", {"type": "drf_live.event", "n": 1})
    await settle()

    assert member.messages == [("drf-live.long-lived", {"type": "drf_live.event", "n": 1})]
    await hub.leave("drf-live.long-lived", member)
    await asyncio.sleep(hub.refresh_interval() * 2)
    assert hub.refresher is not None and hub.refresher.done()  # stops with the last group
