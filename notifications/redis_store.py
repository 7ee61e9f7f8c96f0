"""The stream store on Redis: one script per step, and a pub/sub connection per server loop.

Keys of a stream ``S`` (readable with ``redis-cli``): ``S:seq`` (a hash: seq,
generation, subscriber-set version), ``S:hist`` (a Redis Stream of the events
kept for recovery), ``S:subs`` (a sorted set of subscribed users, scored by
the time their registration runs out) and ``S:hold`` (the relay's claim).
Events are published on the channel ``S``. A relay step is one round trip: a
claim reads the subscribers, a commit takes the seq, records and publishes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from .conf import live_settings
from .messages import Entry
from .streams import Claim, Listener, Position, Receiver, Replay, StoreBusy, contiguous, control_channel, new_epoch

logger = logging.getLogger("notifications.streams")

# Who is subscribed, and the hold: nobody subscribed means no hold and no event.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local users = redis.call('ZRANGE', KEYS[1], 0, -1)
if #users == 0 then return {0} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1} end
return {1, redis.call('HGET', KEYS[2], 'ver') or '0', users}
"""

# The next seq, kept in the history and published, unless someone subscribed since the claim.
_COMMIT = """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return {-1} end
redis.call('DEL', KEYS[4])
if (redis.call('HGET', KEYS[2], 'ver') or '0') ~= ARGV[2] then return {0} end
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[4]; redis.call('SET', KEYS[1], epoch) end
redis.call('HSETNX', KEYS[2], 'gen', ARGV[4])
local name = epoch .. '.' .. redis.call('HGET', KEYS[2], 'gen')
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
local message = '{"seq":' .. seq .. ',"epoch":"' .. name .. '",' .. ARGV[3]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'm', message)
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[7], message)
return {seq, name}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"""

# Count a user among the subscribers (a new one changes the version) and read the position.
_REGISTER = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[4]; redis.call('SET', KEYS[1], epoch) end
redis.call('HSETNX', KEYS[2], 'gen', ARGV[4])
local old = redis.call('ZSCORE', KEYS[3], ARGV[1])
if (not old) or tonumber(old) < tonumber(ARGV[3]) then redis.call('HINCRBY', KEYS[2], 'ver', 1) end
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {redis.call('HGET', KEYS[2], 'seq') or 0, epoch .. '.' .. redis.call('HGET', KEYS[2], 'gen')}
"""

_ROTATE = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[1], epoch) end
redis.call('HSET', KEYS[2], 'gen', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
local name = epoch .. '.' .. ARGV[1]
redis.call('PUBLISH', ARGV[3], '{"type":"rotate","epoch":"' .. name .. '"}')
return name
"""


def keys(stream: str) -> tuple[str, str, str, str]:
    """The seq hash, history, subscriber set and hold of ``stream``."""
    return f"{stream}:seq", f"{stream}:hist", f"{stream}:subs", f"{stream}:hold"


def epoch_key() -> str:
    return f"{live_settings.PREFIX}:epoch"


def history_ttl() -> int:
    """``HISTORY_TTL`` in whole seconds, at least one (``EXPIRE 0`` would delete the key)."""
    return max(1, math.ceil(float(live_settings.HISTORY_TTL)))


class RedisStreamStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._sync: Any = None
        self._scripts: dict[str, Any] = {}
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._register_scripts: dict[asyncio.AbstractEventLoop, Any] = {}

    # Clients ----------------------------------------------------------------

    def _client(self) -> Any:
        """The relay thread's client (redis-py is thread-safe through its pool)."""
        if self._sync is None:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.retry import Retry

            # After a Redis restart every pooled connection is dead: retry once on
            # a fresh one. A script either ran or not; running one twice after a
            # lost reply at worst publishes an event twice, which clients drop.
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,))
            self._sync = redis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, retry=retry
            )
            for name, source in (("claim", _CLAIM), ("commit", _COMMIT), ("release", _RELEASE), ("rotate", _ROTATE)):
                self._scripts[name] = self._sync.register_script(source)
        return self._sync

    def _aclient(self) -> Any:
        """A client for the running loop (redis.asyncio connections belong to one loop)."""
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
                self._register_scripts.pop(old, None)
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,))
            client = aredis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, retry=retry
            )
            self._clients[loop] = client
            self._register_scripts[loop] = client.register_script(_REGISTER)
        return client

    # The relay's side ---------------------------------------------------------

    def claim(self, stream: str) -> Claim | None:
        self._client()  # loads the scripts
        seq_key, _, subs_key, hold_key = keys(stream)
        token = secrets.token_hex(8)
        hold_ms = int(float(live_settings.CLAIM_TIMEOUT) * 1000)
        deadline = time.monotonic() + float(live_settings.CLAIM_TIMEOUT)
        pause = 0.001
        while True:
            reply = self._scripts["claim"](keys=[subs_key, seq_key, hold_key], args=[token, hold_ms, time.time()])
            status = int(reply[0])
            if status == 0:
                return None
            if status == 1:
                users = tuple(sorted(user.decode() for user in reply[2]))
                return Claim(stream, users, reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]), token)
            if time.monotonic() > deadline:
                raise StoreBusy(stream)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def commit(self, claim: Claim, entry: Entry) -> int | None:
        seq_key, history_key, _, hold_key = keys(claim.stream)
        body = orjson.dumps(entry).decode()[1:]  # the entry's fields, after the seq and epoch
        ttl = history_ttl()
        reply = self._scripts["commit"](
            keys=[epoch_key(), seq_key, history_key, hold_key],
            args=[claim.token, claim.version, body, new_epoch(), ttl, int(live_settings.HISTORY_LENGTH), claim.stream],
        )
        seq = int(reply[0])
        return seq if seq > 0 else None

    def release(self, claim: Claim, message: dict[str, Any] | None = None) -> None:
        _, _, _, hold_key = keys(claim.stream)
        text = orjson.dumps(message).decode() if message is not None else ""
        self._scripts["release"](keys=[hold_key], args=[claim.token, claim.stream, text])

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        self._client().publish(channel, orjson.dumps(message))

    def rotate(self, streams: Iterable[str]) -> None:
        client = self._client()
        for stream in set(streams):
            seq_key, history_key, _, _ = keys(stream)
            self._scripts["rotate"](
                keys=[epoch_key(), seq_key, history_key],
                args=[new_epoch(), history_ttl(), stream],
                client=client,
            )

    def rotate_all(self) -> None:
        client = self._client()
        client.set(epoch_key(), new_epoch())
        client.publish(control_channel(), orjson.dumps({"type": "rotate-all"}))

    # The sockets' side ----------------------------------------------------------

    async def register(self, stream: str, user: str) -> Position:
        seq_key, _, subs_key, _ = keys(stream)
        now = time.time()
        window = float(live_settings.RESUME_WINDOW)
        self._aclient()
        seq, epoch = await self._register_scripts[asyncio.get_running_loop()](
            keys=[epoch_key(), seq_key, subs_key],
            args=[user, now + window, now, new_epoch(), history_ttl(), int(window * 2) + 1],
        )
        return Position(int(seq), epoch.decode())

    async def refresh(self, pairs: Iterable[tuple[str, str]]) -> None:
        window = float(live_settings.RESUME_WINDOW)
        until = time.time() + window
        async with self._aclient().pipeline(transaction=False) as pipe:
            count = 0
            for stream, user in pairs:
                seq_key, _, subs_key, _ = keys(stream)
                pipe.zadd(subs_key, {user: until}, gt=True)
                pipe.expire(subs_key, int(window * 2) + 1)
                # A quiet target keeps its seq and epoch while anyone holds it: the
                # numbering must not start again under a socket that stays open.
                pipe.expire(seq_key, history_ttl(), gt=True)
                count += 1
            if count:
                await pipe.execute()

    async def unregister(self, stream: str, user: str) -> None:
        await self.refresh([(stream, user)])

    async def replay(self, stream: str, since: int, epoch: str) -> Replay:
        seq_key, history_key, _, _ = keys(stream)
        client = self._aclient()
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(epoch_key())
            pipe.hmget(seq_key, ["seq", "gen"])
            pipe.xrange(history_key)
            current_epoch, (seq, generation), entries = await pipe.execute()
        if current_epoch is None or generation is None:
            return Replay(Position(0, ""), None)
        position = Position(int(seq or 0), f"{current_epoch.decode()}.{generation.decode()}")
        if position.epoch != epoch or since > position.seq:
            return Replay(position, None)
        horizon_ms = (time.time() - live_settings.HISTORY_TTL) * 1000
        held = [
            orjson.loads(fields[b"m"]) for entry_id, fields in entries if int(entry_id.split(b"-")[0]) >= horizon_ms
        ]
        earlier = [message for message in held if message["seq"] <= since and message.get("epoch") == epoch]
        return Replay(position, contiguous(held, since, position), earlier)

    def listener(self, receiver: Receiver) -> Listener:
        return RedisListener(self.url, receiver)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._clients.clear()
        self._register_scripts.clear()


class RedisListener:
    """One pub/sub connection of a server loop: SUBSCRIBE as sockets join, messages to the receiver.

    A plain RESP reader rather than redis-py's PubSub, which reconnects and
    resubscribes on its own: messages published meanwhile would be lost
    without a word. Here a lost connection is reported (``Receiver.lost``),
    and the sockets close so that their clients recover with ``since``.
    """

    def __init__(self, url: str, receiver: Receiver) -> None:
        self.url = url
        self.receiver = receiver
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
            parts = urlsplit(self.url)
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname or "localhost", parts.port or 6379, ssl=context), 5
            )
            if parts.password:
                auth = (
                    [unquote(parts.username), unquote(parts.password)] if parts.username else [unquote(parts.password)]
                )
                writer.write(_command("AUTH", *auth))
                reply = await asyncio.wait_for(_read(reader), 5)
                if isinstance(reply, Exception):
                    writer.close()
                    raise reply
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

    async def add(self, channel: str) -> None:
        await self._connect()
        assert self.writer is not None
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(channel, []).append(confirmed)
        self.writer.write(_command("SUBSCRIBE", channel))
        await confirmed

    async def remove(self, channel: str) -> None:
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
                    self.receiver.deliver(channel, message)
                elif kind == b"subscribe":
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
            self.receiver.lost(exc)


#: Seconds between PINGs on an idle pub/sub connection; three times as long without a reply is a loss.
KEEPALIVE = 15.0


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
