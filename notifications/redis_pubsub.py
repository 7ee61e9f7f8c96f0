"""A server loop's pub/sub: one connection per shard, each stream's channel on its own shard.

A plain RESP reader rather than redis-py's PubSub, which reconnects and
resubscribes on its own: messages published meanwhile would be lost without a
word. Here a lost connection is reported for the channels of its shard only
(``Receiver.lost``): their sockets close so that their clients recover with
``since``, and the channels of the other shards keep delivering.

The control channel is listened to on every shard, because the store publishes
each control message on every shard: one shard down still lets close, recheck
and rotate-all reach every process. A message that arrives through several
shards is handed over once (by its ``id``). A shard whose control subscription
was lost is subscribed again in the background; the control channel counts as
lost only when no shard carries it any more.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from .redis_clients import ShardClients
from .shards import shard_index
from .streams import Receiver, control_channel

logger = logging.getLogger("notifications.streams")

#: Seconds between PINGs on an idle pub/sub connection; three times as long without a reply is a loss.
KEEPALIVE = 15.0
#: Seconds between attempts to listen on the control channel of a shard that is down.
CONTROL_RETRY = 2.0
#: Seconds the first listening on the control channel waits for the other shards, once one listens.
CONTROL_SETTLE = 1.0
#: Control message ids remembered, to hand over once a message that came through several shards.
SEEN_IDS = 1024


class RedisListener:
    """The subscriptions of one server loop, on one connection per shard (made on first use)."""

    def __init__(self, shards: list[ShardClients], receiver: Receiver) -> None:
        self.shards = shards
        self.receiver = receiver
        self.control = control_channel()
        self.connections: list[_Connection | None] = [None] * len(shards)
        self.control_on: set[int] = set()  # the shards whose connection listens on the control channel
        self.control_wanted = False
        self.retries: dict[int, asyncio.Task[None]] = {}
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def _connection(self, index: int) -> _Connection:
        connection = self.connections[index]
        if connection is None:
            connection = self.connections[index] = _Connection(
                self.shards[index], self.receiver.deliver, self.control, self._control_message, self._lost
            )
        return connection

    async def add(self, channel: str) -> None:
        if channel == self.control:
            await self._add_control()
        else:
            await self._connection(shard_index(channel, len(self.shards))).add(channel)

    async def remove(self, channel: str) -> None:
        if channel == self.control:
            self.control_wanted = False
            self._cancel_retries()
            for index in list(self.control_on):
                await self._connection(index).remove(channel)
            self.control_on.clear()
            return
        connection = self.connections[shard_index(channel, len(self.shards))]
        if connection is not None:
            await connection.remove(channel)

    async def close(self) -> None:
        self.closed = True
        self.control_wanted = False
        self._cancel_retries()
        for connection in self.connections:
            if connection is not None:
                await connection.close()
        self.connections = [None] * len(self.shards)

    # The control channel, on every shard -------------------------------------------------

    async def _add_control(self) -> None:
        """Returns once one shard listens (every control message is published on every shard).

        It waits for the others too, up to ``CONTROL_SETTLE`` seconds, so that
        the first shard lost right afterwards does not leave the channel unheard.
        """
        if self.control_wanted and self.control_on:
            return
        self.control_wanted = True
        loop = asyncio.get_running_loop()
        attempts = [loop.create_task(self._listen_to_control(index)) for index in range(len(self.shards))]
        for attempt in attempts:  # the loop keeps only weak references to tasks
            self.tasks.add(attempt)
            attempt.add_done_callback(self.tasks.discard)
        errors = []
        for next_done in asyncio.as_completed(attempts):
            error = await next_done
            if error is None:
                await asyncio.wait(attempts, timeout=CONTROL_SETTLE)  # a slower shard goes on in the background
                return
            errors.append(error)
        self.control_wanted = False
        self._cancel_retries()
        raise errors[0]

    async def _listen_to_control(self, index: int) -> BaseException | None:
        """Listen on the control channel on shard ``index``; on failure, try again later."""
        try:
            await self._connection(index).add(self.control)
        except Exception as exc:  # noqa: BLE001 - the shard is down: another one carries the messages
            self._retry_control(index)
            return exc
        if self.control_wanted:
            self.control_on.add(index)
        return None

    def _retry_control(self, index: int) -> None:
        running = self.retries.get(index)
        if self.closed or not self.control_wanted or (running is not None and not running.done()):
            return

        async def retry() -> None:
            await asyncio.sleep(CONTROL_RETRY)
            del self.retries[index]
            if self.control_wanted and index not in self.control_on:
                await self._listen_to_control(index)

        self.retries[index] = asyncio.get_running_loop().create_task(retry())

    def _cancel_retries(self) -> None:
        for task in self.retries.values():
            task.cancel()
        self.retries.clear()

    # From the connections ------------------------------------------------------------------

    def _control_message(self, message: dict[str, Any]) -> None:
        """A control message, from any shard: handed over once."""
        ident = message.pop("id", None)
        if ident is not None:
            if ident in self.seen:
                return
            self.seen[ident] = None
            if len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
        self.receiver.deliver(self.control, message)

    def _lost(self, connection: _Connection, error: BaseException) -> None:
        index = self.shards.index(connection.shard)
        if self.connections[index] is connection:
            self.connections[index] = None  # the next add connects afresh (and fails while the shard is down)
        channels = connection.channels - {self.control}
        if index in self.control_on:
            self.control_on.discard(index)
            if self.control_wanted and not self.control_on and not self.closed:
                self.control_wanted = False
                self._cancel_retries()
                channels.add(self.control)
            else:
                self._retry_control(index)
        logger.warning("Lost the pub/sub connection to %s: %r", connection.shard.name, error)
        if channels:
            self.receiver.lost(error, channels)


class _Connection:
    """One pub/sub connection to one shard's master: SUBSCRIBE as sockets join, messages to the listener."""

    def __init__(
        self,
        shard: ShardClients,
        deliver: Callable[[str, dict[str, Any]], None],
        control: str,
        on_control: Callable[[dict[str, Any]], None],
        on_lost: Callable[[_Connection, BaseException], None],
    ) -> None:
        self.shard = shard
        # Stream messages go straight to the receiver (the hub): this is the hot path.
        self.deliver = deliver
        self.control = control
        self.on_control = on_control
        self.on_lost = on_lost
        self.channels: set[str] = set()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.connecting: asyncio.Future[None] | None = None
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        self.failed: BaseException | None = None
        self.pinger: asyncio.Task[None] | None = None
        self.heard = 0.0

    async def _connect(self) -> None:
        if self.failed is not None:
            raise ConnectionError(f"The Redis pub/sub connection was lost: {self.failed!r}")
        if self.writer is not None:
            return
        if self.connecting is not None:
            await asyncio.shield(self.connecting)
            return
        self.connecting = asyncio.get_running_loop().create_future()
        try:
            reader, writer = await asyncio.wait_for(self._open(), 5)
            self.reader, self.writer = reader, writer
            self.heard = time.monotonic()
            self.task = asyncio.get_running_loop().create_task(self._run())
            self.pinger = asyncio.get_running_loop().create_task(self._keepalive())
            self.connecting.set_result(None)
        except BaseException as exc:
            self.connecting.set_exception(exc)
            self.connecting.exception()  # retrieved: waiters re-raise it
            self.connecting = None
            raise
        self.connecting = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the shard's master (asking the sentinels where it is), authenticate, check its role."""
        config = self.shard.shard
        if config.is_sentinel:
            username, password = config.username, config.password
        else:
            parts = urlsplit(config.url or "")
            username = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password else None
        if not config.is_sentinel and parts.scheme == "unix":
            host, port = parts.path, 0
            reader, writer = await asyncio.open_unix_connection(parts.path)
        else:
            host, port = await self.shard.master_address()
            context = ssl.create_default_context() if config.ssl else None
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
        try:
            if password:
                writer.write(_command("AUTH", *([username, password] if username else [password])))
                reply = await _read(reader)
                if isinstance(reply, Exception):
                    raise reply
            if config.is_sentinel:
                # Right after a failover a sentinel may still name the old master, now a replica.
                writer.write(_command("ROLE"))
                reply = await _read(reader)
                if isinstance(reply, Exception):
                    raise reply
                if not isinstance(reply, list) or reply[0] != b"master":
                    raise ConnectionError(f"{config.name}: {host}:{port} is not the master (yet)")
        except BaseException:
            writer.close()
            raise
        return reader, writer

    async def add(self, channel: str) -> None:
        await self._connect()
        assert self.writer is not None
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(channel, []).append(confirmed)
        self.writer.write(_command("SUBSCRIBE", channel))
        await confirmed

    async def remove(self, channel: str) -> None:
        self.channels.discard(channel)
        if self.writer is not None and self.failed is None:
            self.writer.write(_command("UNSUBSCRIBE", channel))

    async def close(self) -> None:
        for task in (self.task, self.pinger):
            if task is not None:
                task.cancel()
        if self.writer is not None:
            self.writer.close()
        self.writer = None

    async def _keepalive(self) -> None:
        """PING an idle connection: one that stays silent (half-open, say) counts as lost."""
        while self.writer is not None and self.failed is None:
            await asyncio.sleep(KEEPALIVE)
            if self.writer is None or self.failed is not None:
                return
            if time.monotonic() - self.heard > 3 * KEEPALIVE:
                self.writer.close()  # _run reads the end of the stream and reports the loss
                return
            self.writer.write(_command("PING"))

    async def _run(self) -> None:
        assert self.reader is not None
        try:
            while True:
                reply = await _read(self.reader)
                self.heard = time.monotonic()
                if isinstance(reply, Exception):
                    raise reply  # NOAUTH, say: nothing this connection was asked will happen
                if not isinstance(reply, list) or len(reply) < 3:
                    continue
                kind = reply[0]
                channel = reply[1].decode()
                if kind == b"message":
                    try:
                        message = orjson.loads(reply[2])
                    except orjson.JSONDecodeError:
                        logger.warning("Dropped a message that is not JSON on %s", channel)
                        continue
                    if channel == self.control:
                        self.on_control(message)
                    else:
                        self.deliver(channel, message)
                elif kind == b"subscribe":
                    self.channels.add(channel)
                    for future in self.waiting.pop(channel, []):
                        if not future.done():
                            future.set_result(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the connection is gone: report it
            self.failed = exc
            if self.writer is not None:
                self.writer.close()
            self.writer = None
            if self.pinger is not None:
                self.pinger.cancel()
            for futures in self.waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(ConnectionError(f"Redis pub/sub connection lost: {exc!r}"))
                        future.exception()
            self.waiting.clear()
            self.on_lost(self, exc)


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _read(reader: asyncio.StreamReader) -> Any:
    """One RESP2 reply: an array, bulk string, integer, simple string or error."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    prefix, rest = line[:1], line[1:-2]
    if prefix == b"*":
        count = int(rest)
        return [await _read(reader) for _ in range(count)] if count >= 0 else None
    if prefix == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2]
    if prefix == b":":
        return int(rest)
    if prefix == b"+":
        return rest
    if prefix == b"-":
        return ConnectionError(rest.decode(errors="replace"))
    raise ConnectionError(f"Unexpected reply from Redis: {line[:40]!r}")
