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

A function may also name a ``key`` and a ``prepare``. The queued calls with the
key of a call taken for a trip go in that same trip (the subscribes of one user,
say); ``prepare`` runs once per trip, in the database thread before the calls,
with the arguments of every call of the function in the trip, and each call gets
what it returned as ``prepared`` (None if it raised: the calls then do their own
work). That is how the work of several calls becomes one query.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from channels.db import database_sync_to_async

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)

#: Calls per trip at most.
BATCH = 32

#: Seconds the oldest queued call may wait before the newest calls go first.
LIFO_AFTER = 1.0


class _Call:
    __slots__ = ("args", "context", "func", "future", "key", "kwargs", "prepare", "queued_at", "taken")

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Any = None,
        prepare: Callable[[list[tuple[tuple[Any, ...], dict[str, Any]]]], Any] | None = None,
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.key = key
        self.prepare = prepare
        self.context = contextvars.copy_context()
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queued_at = time.monotonic()
        self.taken = False  # in a trip already (taken with a call of the same key, before its turn)


class _Queue:
    def __init__(self) -> None:
        self.calls: deque[_Call] = deque()
        # The calls with a key, by function and key: a trip takes a call's companions from
        # here without a scan of the queue (they stay in ``calls``, marked taken).
        self.keyed: dict[tuple[Callable[..., Any], Any], deque[_Call]] = {}
        self.drainer: asyncio.Task[None] | None = None

    def append(self, queued: _Call) -> None:
        self.calls.append(queued)
        if queued.key is not None:
            self.keyed.setdefault((queued.func, queued.key), deque()).append(queued)

    def companions(self, queued: _Call, room: int) -> list[_Call]:
        """Up to ``room`` waiting calls with ``queued``'s function and key, oldest first, taken."""
        group = (queued.func, queued.key)
        waiting = self.keyed.get(group)
        taken: list[_Call] = []
        while waiting:
            other = waiting[0]
            if other.taken or other.future.done():
                waiting.popleft()  # gone already (``queued`` itself, among them): forgotten here too
            elif len(taken) < room:
                other.taken = True
                taken.append(waiting.popleft())
            else:
                break
        if not waiting:
            self.keyed.pop(group, None)
        return taken


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()


def database_trip(
    func: Callable[..., Any] | None = None,
    *,
    key: Callable[..., Any] | None = None,
    prepare: Callable[[list[tuple[tuple[Any, ...], dict[str, Any]]]], Any] | None = None,
) -> Any:
    """``database_sync_to_async``, with the calls of concurrent callers sharing trips.

    ``key(*args, **kwargs)``: calls with the same key (not None) go in one trip.
    ``prepare(calls)``: run once per trip with the ``(args, kwargs)`` of each of
    the function's calls in it; its result reaches each call as ``prepared``.
    """
    if func is None:
        return functools.partial(database_trip, key=key, prepare=prepare)
    return _sharing(func, key, prepare)


def _sharing(
    func: Callable[P, R], key: Callable[..., Any] | None, prepare: Callable[..., Any] | None
) -> Callable[P, Awaitable[R]]:
    @functools.wraps(func)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = _Queue()
        queued = _Call(func, args, kwargs, key(*args, **kwargs) if key is not None else None, prepare)
        queue.append(queued)
        if queue.drainer is None or queue.drainer.done():
            queue.drainer = loop.create_task(_drain(queue))
        return await queued.future

    return call


async def _drain(queue: _Queue) -> None:
    loop = asyncio.get_running_loop()
    while queue.calls:
        while queue.calls and queue.calls[0].taken:
            queue.calls.popleft()  # went with a companion: its age is not the queue's
        if not queue.calls:
            break
        batch: list[_Call] = []
        newest_first = time.monotonic() - queue.calls[0].queued_at >= LIFO_AFTER
        while queue.calls and len(batch) < BATCH:
            queued = queue.calls.pop() if newest_first else queue.calls.popleft()
            if queued.taken:
                continue  # went with a companion
            queued.taken = True
            live = not queued.future.done()  # a caller that gave up (cancelled) is skipped
            if live:
                batch.append(queued)
            if queued.key is not None:
                batch.extend(queue.companions(queued, BATCH - len(batch) if live else 0))
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


def _prepared(batch: list[_Call]) -> dict[Callable[..., Any], Any]:
    """What each function's ``prepare`` returns for its calls in this trip (None where it raised)."""
    groups: dict[Callable[..., Any], list[_Call]] = {}
    for queued in batch:
        if queued.prepare is not None:
            groups.setdefault(queued.func, []).append(queued)
    prepared: dict[Callable[..., Any], Any] = {}
    for func, calls in groups.items():
        prepare = calls[0].prepare
        assert prepare is not None
        try:
            prepared[func] = calls[0].context.copy().run(prepare, [(c.args, c.kwargs) for c in calls])
        except Exception:
            logger.warning("Could not prepare %d calls of %s together", len(calls), func.__qualname__, exc_info=True)
            prepared[func] = None
    return prepared


@database_sync_to_async
def _trip(batch: list[_Call], loop: asyncio.AbstractEventLoop) -> None:
    prepared = _prepared(batch)
    for queued in batch:
        try:
            if queued.prepare is not None:
                result = queued.context.run(queued.func, *queued.args, prepared=prepared[queued.func], **queued.kwargs)
            else:
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
