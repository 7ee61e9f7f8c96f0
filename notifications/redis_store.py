"""The stream store on Redis shards: one script per step, and a pub/sub connection per shard and server loop.

Keys of a stream ``S`` (readable with ``redis-cli``): ``S:seq`` (a hash: seq,
generation, subscriber-set version), ``S:hist`` (a Redis Stream of the events
kept for recovery), ``S:subs`` (a sorted set of subscribed users, scored by
the time their registration runs out) and ``S:hold`` (the relay's claim).
Events are published on the channel ``S``. All of them live on the shard
``shards.shard_index(S)`` names, beside that shard's epoch key. A relay step is
one round trip to one shard: a claim reads the subscribers, a commit takes the
seq, records and publishes.

Control messages are published on every shard, with an id that listeners use
to hand each over once (``redis_pubsub``). The sockets a user holds open, in
every process, are counted on the shard of the user's key (``admit_socket``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .conf import live_settings
from .messages import Entry
from .redis_clients import ShardClients, epoch_key
from .shards import Shard, parse, shard_index
from .streams import (
    Claim,
    Claims,
    Listener,
    Position,
    Receiver,
    Replay,
    StoreBusy,
    contiguous,
    control_channel,
    new_epoch,
)

logger = logging.getLogger("notifications.streams")

T = TypeVar("T")

# The next seq, kept in the history and published, unless someone subscribed since the claim.
# A retry (ARGV[9]) first looks for its event id (ARGV[8]) in the history: an earlier attempt
# whose reply was lost (a timeout, a failover, a process killed) may have committed it already.
_COMMIT = """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return {-1} end
redis.call('DEL', KEYS[4])
if (redis.call('HGET', KEYS[2], 'ver') or '0') ~= ARGV[2] then return {0} end
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[4]; redis.call('SET', KEYS[1], epoch) end
redis.call('HSETNX', KEYS[2], 'gen', ARGV[4])
local name = epoch .. '.' .. redis.call('HGET', KEYS[2], 'gen')
if ARGV[9] == '1' then
  for _, item in ipairs(redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[6])) do
    local fields = item[2]
    if fields[4] == ARGV[8] then return {tonumber(string.match(fields[2], '^{"seq":(%d+)')), name, 1} end
  end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
local message = '{"seq":' .. seq .. ',"epoch":"' .. name .. '",' .. ARGV[3]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'm', message, 'e', ARGV[8])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('PUBLISH', ARGV[7], message)
return {seq, name}
"""

# Who is subscribed to each stream, and its hold (KEYS: subscribers, seq hash and hold of each),
# without waiting: {1, version, users} for a stream now held, {-1} for one held elsewhere, {0}
# for one nobody is subscribed to (no hold, and no event).
_CLAIM_ALL = """
local replies = {}
for i = 1, #KEYS, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[3])
  local users = redis.call('ZRANGE', KEYS[i], 0, -1)
  if #users == 0 then
    replies[#replies + 1] = {0}
  elseif not redis.call('SET', KEYS[i + 2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    replies[#replies + 1] = {-1}
  else
    replies[#replies + 1] = {1, redis.call('HGET', KEYS[i + 1], 'ver') or '0', users}
  end
end
return replies
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


# One more socket for a user, unless they hold ``limit`` already (entries whose process stopped renewing them expire).
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if (not redis.call('ZSCORE', KEYS[1], ARGV[1])) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

_SCRIPTS = {"claim_all": _CLAIM_ALL, "commit": _COMMIT, "release": _RELEASE, "rotate": _ROTATE}
# Renew registrations (KEYS: the subscriber set and seq hash of each; ARGV: until, the set's TTL,
# the seq hash's TTL, then one user per pair): a registration never runs out earlier than it was
# (ZADD GT), and a quiet target keeps its seq and epoch while anyone holds it (EXPIRE GT): the
# numbering must not start again under a socket that stays open.
_REFRESH = """
for i = 1, #KEYS, 2 do
  redis.call('ZADD', KEYS[i], 'GT', ARGV[1], ARGV[3 + (i + 1) / 2])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[3], 'GT')
end
return #KEYS / 2
"""

# Renew counted sockets (KEYS: each user's sockets set; ARGV: until, the TTL, then one socket per
# key). ZADD, not XX: a shard that lost its data (restarted) counts these sockets again.
_RENEW_SOCKETS = """
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2 + i])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
"""

_ASYNC_SCRIPTS = {"register": _REGISTER, "admit": _ADMIT, "refresh": _REFRESH, "renew_sockets": _RENEW_SOCKETS}

#: Pairs (or sockets) renewed per script call: each call keeps Redis busy for about a millisecond,
#: and the event loop between two calls delivers events.
RENEW_CHUNK = 500


def keys(stream: str) -> tuple[str, str, str, str]:
    """The seq hash, history, subscriber set and hold of ``stream``."""
    return f"{stream}:seq", f"{stream}:hist", f"{stream}:subs", f"{stream}:hold"


def _claim_keys(stream: str) -> tuple[str, str, str]:
    """The keys ``_CLAIM_ALL`` takes for ``stream``: its subscriber set, seq hash and hold."""
    seq_key, _, subs_key, hold_key = keys(stream)
    return subs_key, seq_key, hold_key


def _refresh_keys(stream: str) -> tuple[str, str]:
    """The keys ``_REFRESH`` takes for ``stream``: its subscriber set and seq hash."""
    seq_key, _, subs_key, _ = keys(stream)
    return subs_key, seq_key


def _claim(stream: str, reply: list[Any], token: str) -> Claim:
    """The ``Claim`` of a ``_CLAIM_ALL`` reply that holds the stream: {1, version, users}."""
    users = tuple(sorted(user.decode() for user in reply[2]))
    return Claim(stream, users, reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]), token)


def sockets_key(user: str) -> str:
    """The sorted set of the sockets ``user`` holds open in every process, scored by when each runs out."""
    return f"{live_settings.PREFIX}:sockets:{user}"


def history_ttl() -> int:
    """``HISTORY_TTL`` in whole seconds, at least one (``EXPIRE 0`` would delete the key)."""
    return max(1, math.ceil(float(live_settings.HISTORY_TTL)))


class RedisStreamStore:
    """Streams on one or more Redis shards (``STORE_URL``: URLs, Sentinel services, or a list of them)."""

    def __init__(self, config: Any) -> None:
        shards = parse(config)
        if not shards:
            raise ValueError("A Redis stream store needs at least one shard.")
        self.shards = [ShardClients(shard, index, _SCRIPTS, _ASYNC_SCRIPTS) for index, shard in enumerate(shards)]

    @property
    def config(self) -> list[Shard]:
        return [clients.shard for clients in self.shards]

    def shard(self, name: str) -> ShardClients:
        """The shard that holds the stream (or key) ``name``."""
        return self.shards[shard_index(name, len(self.shards))]

    def _call(self, shard: ShardClients, call: Callable[[Any], T]) -> T:
        """``call(client)`` on the relay's client of ``shard``; a connection failure benches the shard a moment."""
        client = shard.sync()
        try:
            return call(client)
        except (RedisConnectionError, RedisTimeoutError):
            shard.failed()
            raise

    def _script(self, shard: ShardClients, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._call(shard, lambda client: shard.scripts[name](keys=keys, args=args, client=client))

    # The relay's side ---------------------------------------------------------

    def claim(self, stream: str) -> Claim | None:
        shard = self.shard(stream)
        token = secrets.token_hex(8)
        hold_ms = int(float(live_settings.CLAIM_TIMEOUT) * 1000)
        deadline = time.monotonic() + float(live_settings.CLAIM_TIMEOUT)
        pause = 0.001
        while True:
            [reply] = self._script(shard, "claim_all", list(_claim_keys(stream)), [token, hold_ms, time.time()])
            status = int(reply[0])
            if status == 0:
                return None
            if status == 1:
                return _claim(stream, reply, token)
            if time.monotonic() > deadline:
                raise StoreBusy(stream)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def claim_all(self, streams: Iterable[str]) -> Claims:
        by_shard: dict[int, list[str]] = {}
        for stream in dict.fromkeys(streams):
            by_shard.setdefault(shard_index(stream, len(self.shards)), []).append(stream)
        held: dict[str, Claim] = {}
        pending: set[str] = set()
        token = secrets.token_hex(8)
        hold_ms = int(float(live_settings.CLAIM_TIMEOUT) * 1000)
        now = time.time()
        for index, names in by_shard.items():
            stream_keys = [key for stream in names for key in _claim_keys(stream)]
            try:
                replies = self._script(self.shards[index], "claim_all", stream_keys, [token, hold_ms, now])
            except (RedisConnectionError, RedisTimeoutError):  # ShardDown too
                pending.update(names)  # not known: their claims will say the shard is down
                continue
            for stream, reply in zip(names, replies, strict=True):
                status = int(reply[0])
                if status == 1:
                    held[stream] = _claim(stream, reply, token)
                elif status == -1:
                    pending.add(stream)
        return Claims(held, frozenset(pending))

    def commit(self, claim: Claim, entry: Entry, event: str = "", retry: bool = False) -> int | None:
        seq_key, history_key, _, hold_key = keys(claim.stream)
        body = orjson.dumps(entry).decode()[1:]  # the entry's fields, after the seq and epoch
        length = int(live_settings.HISTORY_LENGTH)
        reply = self._script(
            self.shard(claim.stream),
            "commit",
            [epoch_key(), seq_key, history_key, hold_key],
            [claim.token, claim.version, body, new_epoch(), history_ttl(), length, claim.stream, event, int(retry)],
        )
        seq = int(reply[0])
        return seq if seq > 0 else None

    def release(self, claim: Claim, message: dict[str, Any] | None = None) -> None:
        _, _, _, hold_key = keys(claim.stream)
        text = orjson.dumps(message).decode() if message is not None else ""
        self._script(self.shard(claim.stream), "release", [hold_key], [claim.token, claim.stream, text])

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        if channel == control_channel():
            self._publish_everywhere(message)
        else:
            shard = self.shard(channel)
            self._call(shard, lambda client: client.publish(channel, orjson.dumps(message)))

    def _publish_everywhere(self, message: dict[str, Any]) -> None:
        """A control message on every shard (listeners hand it over once, by its id); fails only if no shard took it.

        A process listens on every shard, so one shard down still lets the
        message reach every process.
        """
        if len(self.shards) > 1:
            message = {**message, "id": secrets.token_hex(8)}
        data = orjson.dumps(message)
        errors: list[Exception] = []
        for shard in self.shards:
            try:
                self._call(shard, lambda client: client.publish(control_channel(), data))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(exc)
        if len(errors) == len(self.shards):
            raise errors[0]

    def rotate(self, streams: Iterable[str]) -> None:
        for stream in set(streams):
            seq_key, history_key, _, _ = keys(stream)
            args = [new_epoch(), history_ttl(), stream]
            self._script(self.shard(stream), "rotate", [epoch_key(), seq_key, history_key], args)

    def rotate_all(self) -> None:
        """A new epoch on every shard: a shard that is down fails it (once back, its epoch must change too)."""
        errors: list[Exception] = []
        for shard in self.shards:
            try:
                self._call(shard, lambda client: client.set(epoch_key(), new_epoch()))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        self._publish_everywhere({"type": "rotate-all"})

    # The sockets' side ----------------------------------------------------------

    async def register(self, stream: str, user: str) -> Position:
        seq_key, _, subs_key, _ = keys(stream)
        now = time.time()
        window = float(live_settings.RESUME_WINDOW)
        seq, epoch = await self.shard(stream).ascript("register")(
            keys=[epoch_key(), seq_key, subs_key],
            args=[user, now + window, now, new_epoch(), history_ttl(), int(window * 2) + 1],
        )
        return Position(int(seq), epoch.decode())

    async def refresh(self, pairs: Iterable[tuple[str, str]]) -> None:
        window = float(live_settings.RESUME_WINDOW)
        until = time.time() + window
        by_shard: dict[ShardClients, list[tuple[str, str]]] = {}
        for stream, user in pairs:
            by_shard.setdefault(self.shard(stream), []).append((stream, user))

        async def renew(shard: ShardClients, pairs: list[tuple[str, str]]) -> None:
            script = shard.ascript("refresh")
            for start in range(0, len(pairs), RENEW_CHUNK):
                chunk = pairs[start : start + RENEW_CHUNK]
                stream_keys = [key for stream, _ in chunk for key in _refresh_keys(stream)]
                await script(
                    keys=stream_keys,
                    args=[until, int(window * 2) + 1, history_ttl(), *(user for _, user in chunk)],
                )

        await _each(renew(shard, shard_pairs) for shard, shard_pairs in by_shard.items())

    async def unregister(self, stream: str, user: str) -> None:
        await self.refresh([(stream, user)])

    async def replay(self, stream: str, since: int, epoch: str) -> Replay:
        seq_key, history_key, _, _ = keys(stream)
        async with self.shard(stream).aclient().pipeline(transaction=False) as pipe:
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

    # Sockets per user, across processes ---------------------------------------------------

    async def admit_socket(self, user: str, socket: str, limit: int) -> bool:
        key = sockets_key(user)
        now = time.time()
        lease = float(live_settings.SOCKET_LEASE)
        admitted = await self.shard(key).ascript("admit")(
            keys=[key], args=[socket, now, now + lease, limit, math.ceil(lease) + 1]
        )
        return bool(admitted)

    async def renew_sockets(self, sockets: Iterable[tuple[str, str]]) -> None:
        lease = float(live_settings.SOCKET_LEASE)
        until = time.time() + lease
        by_shard: dict[ShardClients, list[tuple[str, str]]] = {}
        for user, socket in sockets:
            key = sockets_key(user)
            by_shard.setdefault(self.shard(key), []).append((key, socket))

        async def renew(shard: ShardClients, entries: list[tuple[str, str]]) -> None:
            script = shard.ascript("renew_sockets")
            for start in range(0, len(entries), RENEW_CHUNK):
                chunk = entries[start : start + RENEW_CHUNK]
                await script(
                    keys=[key for key, _ in chunk], args=[until, math.ceil(lease) + 1, *(socket for _, socket in chunk)]
                )

        await _each(renew(shard, entries) for shard, entries in by_shard.items())

    async def release_socket(self, user: str, socket: str) -> None:
        key = sockets_key(user)
        await self.shard(key).aclient().zrem(key, socket)

    def listener(self, receiver: Receiver) -> Listener:
        from .redis_pubsub import RedisListener

        return RedisListener(self.shards, receiver)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


async def _each(calls: Iterable[Any]) -> None:
    """Run ``calls`` together; one shard's failure leaves the others' done, then raises."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
