"""Trips to the database thread that several callers share.

Each ``database_sync_to_async`` call is one trip to the process's database
thread: a hop there and back and, with Django's default ``CONN_MAX_AGE`` of 0,
a connection opened before the call and closed after it. When many sockets
authenticate and subscribe at once (every client reconnects after a deploy or
a restart), a trip per socket makes that overhead a large part of the storm.

A function decorated with ``database_trip`` is queued instead. The calls made
while a trip is under way go together in the next one (up to ``BATCH`` of
them, so that other work waiting for the thread is not held up for long). Each
call runs in its caller's context, and its result or exception reaches its
caller as soon as it returns, not at the end of the trip. A lone call is one
trip, as before.

The queue is first in, first out until its oldest call has waited ``LIFO_AFTER``
seconds; from then on, until it empties, the newest calls go first. Under a
load the thread cannot keep up with, first in, first out serves every call
late: in a reconnect storm, later than the clients wait for a reply, so that
each one gives up, asks again and is served late again, and none recovers.
Newest first serves most calls in time, and the old ones once the load passes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from channels.db import database_sync_to_async

P = ParamSpec("P")
R = TypeVar("R")

#: Calls per trip at most.
BATCH = 32

#: Seconds the oldest queued call may wait before the newest calls go first.
LIFO_AFTER = 1.0


class _Call:
    __slots__ = ("args", "context", "func", "future", "kwargs", "queued_at")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.context = contextvars.copy_context()
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued_at = time.monotonic()


class _Queue:
    def __init__(self) -> None:
        self.calls: deque[_Call] = deque()
        self.drainer: asyncio.Task[None] | None = None


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()


def database_trip(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``database_sync_to_async``, with the calls of concurrent callers sharing trips."""

    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = _Queue()
        queued = _Call(func, args, kwargs)
        queue.calls.append(queued)
        if queue.drainer is None or queue.drainer.done():
            queue.drainer = loop.create_task(_drain(queue))
        return await queued.future

    return call


async def _drain(queue: _Queue) -> None:
    loop = asyncio.get_running_loop()
    while queue.calls:
        batch: list[_Call] = []
        newest_first = time.monotonic() - queue.calls[0].queued_at >= LIFO_AFTER
        while queue.calls and len(batch) < BATCH:
            queued = queue.calls.pop() if newest_first else queue.calls.popleft()
            if not queued.future.done():  # a caller that gave up (cancelled) is skipped
                batch.append(queued)
        if not batch:
            continue
        try:
            await _trip(batch, loop)
        except BaseException as exc:
            # The trip itself failed (the thread could not run it): every call left gets the error.
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise


@database_sync_to_async
def _trip(batch: list[_Call], loop: asyncio.AbstractEventLoop) -> None:
    for queued in batch:
        try:
            result = queued.context.run(queued.func, *queued.args, **queued.kwargs)
        except Exception as exc:  # noqa: BLE001 - it is the caller's, and reaches the caller
            loop.call_soon_threadsafe(_settle, queued.future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, queued.future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
