"""A socket's outgoing frames: sent at once when the client keeps up, queued (bounded) when not.

The fan-out hands every local subscriber the same pre-encoded frame in one
loop, so handing a frame to one socket must never wait for that socket: a
client that stops reading would hold up everyone after it. ``Outgoing.offer``
starts the ASGI ``send`` and, in the common case where the frame goes straight
into the transport's buffer, that is all (no task, no queue). Only when the
send has to wait (the client's buffers are full) does a task take over, and
later frames queue behind it. The socket is a slow consumer, and
``on_overflow`` closes it, when more than ``limit`` frames wait or when no frame
went out for ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("notifications.outgoing")


class Outgoing:
    # One per socket: slots, and no deque until a frame has to wait.
    __slots__ = (
        "send",
        "limit",
        "timeout",
        "timer",
        "on_overflow",
        "on_error",
        "_backlog",
        "writer",
        "stopping",
        "stopped",
    )

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
        *,
        limit: int,
        timeout: float,
        on_overflow: Callable[[], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.send = send
        self.limit = limit
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.on_overflow = on_overflow
        self.on_error = on_error
        self._backlog: deque[str] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.stopping: asyncio.Task[None] | None = None
        self.stopped = False

    @property
    def backlog(self) -> deque[str]:
        if self._backlog is None:
            self._backlog = deque()
        return self._backlog

    @property
    def waiting(self) -> int:
        """Frames not yet handed to the ASGI server."""
        return len(self._backlog) if self._backlog is not None else 0

    def offer(self, text: str) -> None:
        """Send ``text`` after everything offered before it, without waiting."""
        if self.stopped:
            return
        if self.writer is not None:
            if len(self.backlog) >= self.limit:
                self._overflow()
                return
            self.backlog.append(text)
            return
        coroutine = self.send({"type": "websocket.send", "text": text})
        self._start(coroutine)

    def _start(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        # Step the send by hand: most sends finish without suspending, and then
        # no task is needed. One that suspends is finished by a task.
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return
        except BaseException as exc:  # noqa: BLE001 - reported to the owner
            self.stop()
            self.on_error(exc)
            return
        self.writer = asyncio.get_running_loop().create_task(self._finish(coroutine, awaited))
        self._arm()

    def _arm(self) -> None:
        """(Re)start the clock: the next frame must go out within ``timeout``."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._overflow)

    def _overflow(self) -> None:
        if not self.stopped:
            self.stop()
            self.on_overflow()

    async def _finish(self, coroutine: Coroutine[Any, Any, Any], awaited: Any) -> None:
        try:
            await _resume(coroutine, awaited)
            while self._backlog and not self.stopped:
                self._arm()
                await self.send({"type": "websocket.send", "text": self.backlog.popleft()})
        except asyncio.CancelledError:
            coroutine.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the owner
            self.stop()
            self.on_error(exc)
        finally:
            self.writer = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    async def drain(self) -> None:
        """Wait until every frame offered so far was handed to the ASGI server."""
        while self.writer is not None:
            await asyncio.shield(self.writer)

    def stop(self) -> None:
        """Send nothing more (the socket is closing)."""
        self.stopped = True
        if self._backlog is not None:
            self._backlog.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.writer is not None and self.writer is not _current_task():
            self.writer.cancel()
            self.stopping = self.writer

    async def settle(self) -> None:
        """After ``stop()``: wait until a cancelled send has unwound, so that the
        ASGI server is no longer writing for us (before a close, say)."""
        if self.stopping is not None and not self.stopping.done():
            await asyncio.wait((self.stopping,))


async def _resume(coroutine: Coroutine[Any, Any, Any], awaited: Any) -> None:
    """Finish ``coroutine``, which suspended on the future ``awaited``, as a task would."""
    while True:
        if awaited is None:
            await asyncio.sleep(0)  # A bare yield: let the loop run once.
        else:
            # The coroutine reads the future's result (or exception) itself
            # when resumed; here we only wait for it to be done.
            awaited._asyncio_future_blocking = False
            await asyncio.wait((awaited,))
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
