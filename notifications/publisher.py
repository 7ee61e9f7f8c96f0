"""The one bridge from sync code (a ``save()`` after commit) to the async channel layer.

``publish()`` never blocks on Redis or on fan-out: it hands the event to an
event loop and returns. With a Redis channel layer that loop runs in one
publishing thread per process, so publishing never competes with the ASGI
server's loop; with the in-memory layer it is the server's own loop (the one
its sockets run on), or the publishing thread in a process without a server.
Events are delivered one at a time, in the order they were published, so a
target's seqs follow that order. A failure is logged and counted, never raised
to the writer.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import SyncToAsync
from channels.layers import get_channel_layer

from .conf import live_settings
from .frames import encode
from .hub import control_group
from .streams import get_store
from .targets import Target, group_name

logger = logging.getLogger("notifications.publisher")


@dataclass
class Delivery:
    """One event for one target: a frame per audience, ``seq`` filled in on delivery."""

    target: Target
    type: str
    payloads: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recheck:
    """Ask sockets to re-check their access: to ``stream``, or to everything.

    ``groups`` are channel-layer groups (a target's subscribers); ``keys`` name
    sockets through the control group (``user_group(pk)``: that user's sockets).
    """

    groups: list[str] = field(default_factory=list)
    stream: str | None = None
    keys: list[str] = field(default_factory=list)


@dataclass
class Stats:
    """Counters a deployment can export; read them with ``publisher.stats``."""

    published: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


Job = Callable[[], Awaitable[None]]


class Publisher:
    def __init__(self) -> None:
        self.stats = Stats()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = weakref.WeakKeyDictionary()
        self._home: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # Choosing the loop ----------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the ASGI server's loop (called when a socket connects)."""
        self._home = weakref.ref(loop)

    def _target_loop(self) -> asyncio.AbstractEventLoop:
        if not _layer_in_memory():
            # Redis: publish from the publishing thread, so that its round trips
            # and encoding never hold up the server's loop (and the response to
            # the request that made the write).
            return self._own_loop()
        # The in-memory layer must be used from the loop its sockets run on.
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            pass
        if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid():
            loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
            if loop is not None and loop.is_running():
                return loop
        home = self._home() if self._home is not None else None
        if home is not None and home.is_running():
            return home
        return self._own_loop()

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread_loop is None or self._thread_loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="drf-live-publisher", daemon=True)
                thread.start()
                self._thread_loop = loop
            return self._thread_loop

    # Submitting -------------------------------------------------------------

    def publish(self, deliveries: list[Delivery | Recheck]) -> None:
        """Send ``deliveries`` in order, from any thread; returns at once."""
        if deliveries:
            self.stats.published += 1
            self.submit(lambda: self._deliver(deliveries))

    def submit(self, job: Job) -> None:
        """Run ``job`` on the publishing loop after every job submitted before it."""
        loop = self._target_loop()
        try:
            if _running_in(loop):
                self._enqueue(loop, job)
            else:
                loop.call_soon_threadsafe(self._enqueue, loop, job)
        except RuntimeError:  # The loop closed under us: fall back to our own.
            loop = self._own_loop()
            loop.call_soon_threadsafe(self._enqueue, loop, job)

    def _enqueue(self, loop: asyncio.AbstractEventLoop, job: Job) -> None:
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _LoopQueue(self)
        queue.put(job)

    async def drain(self) -> None:
        """Wait until the current loop has delivered everything submitted to it."""
        queue = self._queues.get(asyncio.get_running_loop())
        if queue is not None:
            await queue.idle()

    def flush(self, timeout: float = 5.0) -> bool:
        """From sync code: wait until the publishing thread has delivered everything."""
        loop = self._thread_loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return True
        future = asyncio.run_coroutine_threadsafe(self.drain(), loop)
        try:
            future.result(timeout)
        except TimeoutError:
            return False
        return True

    def settle_epoch(self, timeout: float = 2.0) -> bool:
        """From sync code, before the process exits: if an event was lost, rotate the epoch now.

        A process rotates the epoch on its next contact with the store after a
        failed publish; one that exits first (a management command that ran
        while Redis was unreachable) would never make that contact, and a client
        recovering with ``since`` would be told ``recovered: true`` across the
        lost event. False, with an error logged, when the store is still out of
        reach.
        """
        store = get_store()
        if not store.lost:
            return True
        loop = self._thread_loop
        try:
            if loop is not None and not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(store.rotate_if_lost(), loop).result(timeout)
            else:
                asyncio.run(asyncio.wait_for(store.rotate_if_lost(), timeout))
        except Exception:  # noqa: BLE001 - reported below; the process is exiting
            logger.error(
                "%d event(s) of this process could not be published and the epoch could not be rotated "
                "(the event store is unreachable): clients that recover with `since` will not see them; "
                "the next event of each affected target carries its current state",
                self.stats.failed + self.stats.dropped,
                exc_info=True,
            )
            return False
        return True

    # Delivering -------------------------------------------------------------

    async def _deliver(self, deliveries: list[Delivery | Recheck]) -> None:
        store = get_store()
        layer = get_channel_layer()
        for delivery in deliveries:
            if isinstance(delivery, Recheck):
                # Sent before the event that changed access, and a socket handles
                # its messages in order, so a revoked socket never sees that event.
                message = {"type": "drf_live.recheck", "stream": delivery.stream}
                for group in delivery.groups:
                    await self.send_to_group(group, message)
                if delivery.keys:
                    await self.send_to_group(control_group(), {**message, "to": delivery.keys})
                continue
            try:
                position = await store.next(delivery.target.stream)
                frames = {
                    audience: encode(
                        {
                            "type": delivery.type,
                            "payload": payload,
                            "meta": {**delivery.target.meta(), **delivery.meta, "seq": position.seq},
                        }
                    )
                    for audience, payload in delivery.payloads.items()
                }
                await store.record(delivery.target.stream, position.seq, frames)
                if layer is not None:
                    for audience, text in frames.items():
                        await layer.group_send(
                            group_name(delivery.target, audience),
                            {
                                "type": "drf_live.event",
                                "stream": delivery.target.stream,
                                "seq": position.seq,
                                "text": text,
                            },
                        )
                self.stats.delivered += 1
            except Exception:
                self.stats.failed += 1
                store.mark_lost()
                logger.exception("Could not publish %s for %s", delivery.type, delivery.target.stream)

    async def send_to_group(self, group: str, message: dict[str, Any]) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            await layer.group_send(group, message)
        except Exception:
            self.stats.failed += 1
            logger.exception("Could not send %s to %s", message.get("type"), group)


class _LoopQueue:
    """Jobs for one loop, run one at a time by a task that exists only while there is work."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.jobs: deque[Job] = deque()
        self.task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.done.set()

    def put(self, job: Job) -> None:
        if len(self.jobs) >= live_settings.PUBLISH_QUEUE_LIMIT:
            self.publisher.stats.dropped += 1
            get_store().mark_lost()
            logger.error("Publish queue full (%d jobs): dropping an event", len(self.jobs))
            return
        self.jobs.append(job)
        if self.task is None or self.task.done():
            self.done.clear()
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.jobs:
                job = self.jobs.popleft()
                try:
                    await job()
                except Exception:
                    logger.exception("A drf-live publishing job failed")
        finally:
            self.done.set()

    async def idle(self) -> None:
        await self.done.wait()


def _layer_in_memory() -> bool:
    from channels.layers import InMemoryChannelLayer

    return isinstance(get_channel_layer(), InMemoryChannelLayer)


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


publisher = Publisher()


@atexit.register
def _flush_at_exit() -> None:
    # A management command that saved objects exits right after: deliver first,
    # then make sure no lost event is left behind an unchanged epoch.
    publisher.flush(timeout=5.0)
    publisher.settle_epoch(timeout=2.0)
