"""Outgoing: frames go out at once when the client keeps up, queue (bounded) when it does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifications.outgoing import Outgoing

pytestmark = pytest.mark.asyncio


class FakeTransport:
    """An ASGI send whose client reads only while ``reading`` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.suspended = 0

    async def send(self, message: dict[str, Any]) -> None:
        if not self.reading.is_set():
            self.suspended += 1
            await self.reading.wait()
        self.sent.append(message["text"])


def outgoing(transport: FakeTransport, limit: int = 3, timeout: float = 5.0) -> tuple[Outgoing, list[str]]:
    events: list[str] = []
    out = Outgoing(
        transport.send,
        limit=limit,
        timeout=timeout,
        on_overflow=lambda: events.append("overflow"),
        on_error=lambda exc: events.append(f"error {exc!r}"),
    )
    return out, events


async def test_a_client_that_keeps_up_gets_frames_at_once_without_a_task() -> None:
    transport = FakeTransport()
    out, events = outgoing(transport)

    out.offer("a")
    out.offer("b")

    assert transport.sent == ["a", "b"]  # no await needed: sent synchronously
    assert out.writer is None
    assert events == []


async def test_a_stalled_client_queues_frames_in_order_and_gets_them_when_it_reads() -> None:
    transport = FakeTransport()
    out, events = outgoing(transport)
    transport.reading.clear()

    out.offer("a")
    out.offer("b")
    out.offer("c")

    assert transport.sent == []
    assert out.writer is not None
    assert out.waiting == 2
    transport.reading.set()
    await out.drain()
    assert transport.sent == ["a", "b", "c"]
    assert out.writer is None
    out.offer("d")
    assert transport.sent == ["a", "b", "c", "d"]
    assert events == []


async def test_overflowing_the_backlog_stops_the_socket_and_reports_it() -> None:
    transport = FakeTransport()
    out, events = outgoing(transport, limit=2)
    transport.reading.clear()

    for text in ["a", "b", "c", "d", "e"]:
        out.offer(text)

    assert events == ["overflow"]
    assert out.stopped
    transport.reading.set()
    await asyncio.sleep(0.01)
    assert transport.sent == []  # the stalled send was cancelled; nothing more goes out
    out.offer("f")
    assert transport.sent == []


async def test_a_failing_send_is_reported_and_stops_the_socket() -> None:
    async def broken(message: dict[str, Any]) -> None:
        raise ConnectionResetError("gone")

    events: list[str] = []
    out = Outgoing(
        broken,
        limit=5,
        timeout=5.0,
        on_overflow=lambda: events.append("overflow"),
        on_error=lambda exc: events.append(type(exc).__name__),
    )

    out.offer("a")
    out.offer("b")

    assert events == ["ConnectionResetError"]
    assert out.stopped


async def test_a_send_failing_after_it_suspended_is_reported() -> None:
    gate = asyncio.Event()

    async def fails_later(message: dict[str, Any]) -> None:
        await gate.wait()
        raise ConnectionResetError("gone")

    events: list[str] = []
    out = Outgoing(
        fails_later,
        limit=5,
        timeout=5.0,
        on_overflow=lambda: events.append("overflow"),
        on_error=lambda exc: events.append(type(exc).__name__),
    )
    out.offer("a")
    gate.set()
    await asyncio.sleep(0.01)

    assert events == ["ConnectionResetError"]
    assert out.writer is None


async def test_a_client_that_takes_nothing_for_the_timeout_is_a_slow_consumer() -> None:
    transport = FakeTransport()
    out, events = outgoing(transport, limit=100, timeout=0.05)
    transport.reading.clear()

    out.offer("a")
    await asyncio.sleep(0.2)

    assert events == ["overflow"]
    assert out.stopped


async def test_a_slow_client_that_keeps_reading_is_not_cut_off() -> None:
    transport = FakeTransport()
    out, events = outgoing(transport, limit=100, timeout=0.1)
    transport.reading.clear()
    for text in "abcde":
        out.offer(text)

    # The client reads one frame every 0.05 s: slower than offered, within the timeout each time.
    for _ in range(5):
        transport.reading.set()
        await asyncio.sleep(0)
        transport.reading.clear()
        await asyncio.sleep(0.05)
    transport.reading.set()
    await out.drain()

    assert transport.sent == list("abcde")
    assert events == []
