"""Shared trips to the database thread (``notifications/trips.py``)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest
from django.db import connection

from notifications.trips import database_trip

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


@database_trip
def username_of(pk: int, connections: list[Any]) -> str:
    from api.models import User

    name = User.objects.get(pk=pk).username
    # The driver's connection object itself, kept so that its address is not reused.
    if not any(raw is connection.connection for raw in connections):
        connections.append(connection.connection)
    return name


@database_trip
def whose(value: int) -> tuple[str, int, int]:
    if value < 0:
        raise ValueError(f"negative: {value}")
    return caller.get(), value, threading.get_ident()


def recorder() -> tuple[Any, list[int], threading.Event]:
    """A trip function that records its values in order; the call with 0 holds its trip until released."""
    ran: list[int] = []
    release = threading.Event()

    @database_trip
    def record(value: int) -> int:
        if value == 0:
            release.wait(timeout=10)
        ran.append(value)
        return value

    return record, ran, release


async def test_concurrent_calls_share_trips_and_each_gets_its_own_answer() -> None:
    from api.models import User

    users = [await User.objects.acreate(username=f"trip-{index}") for index in range(64)]
    used: list[Any] = []

    names = await asyncio.gather(*(username_of(user.pk, used) for user in users))

    assert names == [user.username for user in users]
    # A trip per call would open a connection per call (CONN_MAX_AGE 0); shared trips open a few.
    assert 1 <= len(used) <= 4, len(used)


async def test_a_lone_call_gets_its_answer() -> None:
    from api.models import User

    user = await User.objects.acreate(username="alone")

    assert await username_of(user.pk, []) == "alone"


async def test_an_exception_reaches_only_its_own_caller() -> None:
    results = await asyncio.gather(whose(1), whose(-2), whose(3), return_exceptions=True)

    assert [r[1] if isinstance(r, tuple) else r for r in results[::2]] == [1, 3]
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "negative: -2"


async def test_each_call_runs_in_its_callers_context() -> None:
    async def as_caller(name: str, value: int) -> tuple[str, int, int]:
        caller.set(name)
        return await whose(value)

    results = await asyncio.gather(*(as_caller(f"socket-{index}", index) for index in range(10)))

    assert [(name, value) for name, value, _thread in results] == [(f"socket-{i}", i) for i in range(10)]
    assert len({thread for _name, _value, thread in results}) == 1  # Django's one database thread


async def test_a_result_reaches_its_caller_before_the_rest_of_the_trip_is_done() -> None:
    release = threading.Event()

    @database_trip
    def quick() -> str:
        return "quick"

    @database_trip
    def slow() -> str:
        if not release.wait(timeout=10):
            raise TimeoutError("never released")
        return "slow"

    # Queued before the trip starts, the three calls go in one trip, in this order.
    first = asyncio.ensure_future(quick())
    second = asyncio.ensure_future(quick())
    third = asyncio.ensure_future(slow())
    assert await asyncio.wait_for(first, 5) == "quick"

    # `slow` is still running in the same trip as `second`, and `second` has its answer already.
    assert await asyncio.wait_for(second, 5) == "quick"
    assert not third.done()
    release.set()
    assert await asyncio.wait_for(third, 5) == "slow"


async def test_a_caller_that_gave_up_before_its_trip_is_not_run() -> None:
    record, ran, release = recorder()

    blocking = asyncio.ensure_future(record(0))
    await asyncio.sleep(0.05)  # the first trip is under way
    abandoned = asyncio.ensure_future(record(1))
    kept = asyncio.ensure_future(record(2))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()

    assert await asyncio.wait_for(kept, 5) == 2
    assert await blocking == 0
    assert ran == [0, 2]


@pytest.mark.parametrize(("wait", "order"), [(0.0, [0, 1, 2, 3]), (0.2, [0, 3, 2, 1])])
async def test_calls_go_in_order_until_the_oldest_has_waited_too_long_then_newest_first(
    monkeypatch: pytest.MonkeyPatch, wait: float, order: list[int]
) -> None:
    from notifications import trips

    monkeypatch.setattr(trips, "LIFO_AFTER", 0.1)
    record, ran, release = recorder()

    under_way = asyncio.ensure_future(record(0))
    await asyncio.sleep(0.05)  # its trip is under way; the next calls queue
    old = asyncio.ensure_future(record(1))
    await asyncio.sleep(wait)
    newer = [asyncio.ensure_future(record(2)), asyncio.ensure_future(record(3))]
    await asyncio.sleep(0)
    release.set()

    assert await asyncio.wait_for(asyncio.gather(under_way, old, *newer), 5) == [0, 1, 2, 3]
    assert ran == order


def grouping() -> tuple[Any, list[list[str]], threading.Event]:
    """A trip function keyed by its value's letter, whose ``prepare`` records each trip's calls.

    ``"hold"`` holds its trip until released. Each call returns its value and what ``prepare`` gave it.
    """
    trips: list[list[str]] = []
    release = threading.Event()

    def prepare(calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> str:
        values = [args[0] for args, _kwargs in calls]
        trips.append(values)
        if "boom" in values:
            raise RuntimeError("could not prepare")
        return "+".join(values)

    @database_trip(key=lambda value: value[0], prepare=prepare)
    def keyed(value: str, *, prepared: str | None = None) -> tuple[str, str | None]:
        if value == "hold":
            release.wait(timeout=10)
        return value, prepared

    return keyed, trips, release


async def test_queued_calls_with_one_key_share_a_trip_and_what_it_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    from notifications import trips as trips_module

    monkeypatch.setattr(trips_module, "BATCH", 2)
    keyed, trips, release = grouping()

    under_way = asyncio.ensure_future(keyed("hold"))
    await asyncio.sleep(0.05)  # its trip is under way; the next calls queue, letters interleaved
    queued = [asyncio.ensure_future(keyed(value)) for value in ["a1", "b1", "a2", "b2"]]
    await asyncio.sleep(0)
    release.set()

    results = await asyncio.wait_for(asyncio.gather(*queued), 5)
    assert (await under_way)[0] == "hold"
    # In order of arrival, two per trip, the trips would be a1+b1 and a2+b2; the key pairs them.
    assert trips == [["hold"], ["a1", "a2"], ["b1", "b2"]]
    assert results == [("a1", "a1+a2"), ("b1", "b1+b2"), ("a2", "a1+a2"), ("b2", "b1+b2")]


async def test_calls_whose_prepare_raised_are_still_answered_each_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    keyed, trips, _release = grouping()

    results = await asyncio.wait_for(asyncio.gather(keyed("boom"), keyed("bonus")), 5)

    assert trips == [["boom", "bonus"]]
    assert results == [("boom", None), ("bonus", None)]
    assert "Could not prepare 2 calls" in caplog.text


async def test_a_drained_queue_keeps_no_call_of_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Calls taken with a companion, taken in their own turn, and given up on: none stays behind
    # (each holds its caller's arguments: a socket, for a subscribe).
    from notifications import trips as trips_module

    monkeypatch.setattr(trips_module, "BATCH", 3)
    keyed, trips, release = grouping()

    under_way = asyncio.ensure_future(keyed("hold"))
    await asyncio.sleep(0.05)
    calls = [asyncio.ensure_future(keyed(value)) for value in ["a1", "b1", "a2", "a3", "b2", "a4", "c1"]]
    await asyncio.sleep(0)
    calls[3].cancel()  # a3 gives up
    release.set()

    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    await under_way
    queue = trips_module._queues[asyncio.get_running_loop()]
    assert [result[0] for result in results if isinstance(result, tuple)] == ["a1", "b1", "a2", "b2", "a4", "c1"]
    assert trips == [["hold"], ["a1", "a2", "a4"], ["b1", "b2", "c1"]]
    assert not queue.calls
    assert queue.keyed == {}
