"""Per-target event streams: the seq counter, the epoch and the bounded history.

``RedisStreamStore`` is shared by every process that uses the same Redis;
``MemoryStreamStore`` serves one process (the in-memory channel layer's case).
A stream's epoch names its history: it changes when the history was lost
(Redis flushed or restarted, the stream expired) or when an event could not be
recorded, so a ``(seq, epoch)`` pair never promises events it cannot replay.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .conf import live_settings


@dataclass(frozen=True)
class Position:
    seq: int
    epoch: str


@dataclass(frozen=True)
class Replay:
    """The answer to "what happened after ``seq``": the events, or None if unknown."""

    position: Position
    frames: list[tuple[int, str]] | None


class StreamStore(Protocol):
    async def next(self, stream: str) -> Position:
        """Reserve the next seq of ``stream``."""

    async def record(self, stream: str, seq: int, frames: Mapping[str, str]) -> None:
        """Keep the frames (by audience) of event ``seq`` for recovery."""

    async def position(self, stream: str) -> Position:
        """The current seq and epoch of ``stream``."""

    async def replay(self, stream: str, since: int, epoch: str, audience: str) -> Replay:
        """The frames after ``since`` for ``audience``, if every one of them is still held."""

    def mark_lost(self) -> None:
        """An event could not be recorded: rotate the epoch on the next contact."""

    @property
    def lost(self) -> bool:
        """An event was lost and the epoch not yet rotated for it."""

    async def rotate_if_lost(self) -> None:
        """Rotate the epoch now if an event was lost (before the process exits)."""

    async def close(self) -> None: ...


def _new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass
class _MemoryStream:
    seq: int
    epoch: str
    history: deque[tuple[int, float, dict[str, str]]] = field(default_factory=deque)


class MemoryStreamStore:
    """An in-process ring buffer per stream; safe to use from several event loops."""

    def __init__(self) -> None:
        self._streams: dict[str, _MemoryStream] = {}
        self._lock = threading.Lock()
        self._generation = _new_epoch()

    def _get(self, stream: str) -> _MemoryStream:
        entry = self._streams.get(stream)
        now = time.monotonic()
        if entry is not None and entry.history and now - entry.history[-1][1] > live_settings.HISTORY_TTL:
            entry = None  # Quiet for longer than the history is kept: start afresh.
        if entry is None:
            entry = _MemoryStream(0, f"{self._generation}.{_new_epoch()}")
            self._streams[stream] = entry
        return entry

    async def next(self, stream: str) -> Position:
        with self._lock:
            entry = self._get(stream)
            entry.seq += 1
            return Position(entry.seq, entry.epoch)

    async def record(self, stream: str, seq: int, frames: Mapping[str, str]) -> None:
        with self._lock:
            entry = self._get(stream)
            entry.history.append((seq, time.monotonic(), dict(frames)))
            while len(entry.history) > live_settings.HISTORY_LENGTH:
                entry.history.popleft()

    async def position(self, stream: str) -> Position:
        with self._lock:
            entry = self._get(stream)
            return Position(entry.seq, entry.epoch)

    async def replay(self, stream: str, since: int, epoch: str, audience: str) -> Replay:
        with self._lock:
            entry = self._get(stream)
            position = Position(entry.seq, entry.epoch)
            horizon = time.monotonic() - live_settings.HISTORY_TTL
            held = [(seq, frames.get(audience)) for seq, at, frames in entry.history if seq > since and at >= horizon]
        return Replay(position, _contiguous(held, since, position, epoch))

    def mark_lost(self) -> None:
        with self._lock:
            self._generation = _new_epoch()
            self._streams.clear()

    @property
    def lost(self) -> bool:
        return False  # mark_lost() rotates at once

    async def rotate_if_lost(self) -> None:
        return None

    async def close(self) -> None:
        return None


# Reserve a seq: create the global epoch and the stream's generation if they
# are missing (Redis restarted or the stream expired), in one round trip.
_NEXT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[1]; redis.call('SET', KEYS[1], epoch) end
redis.call('HSETNX', KEYS[2], 'gen', ARGV[1])
local gen = redis.call('HGET', KEYS[2], 'gen')
local seq = redis.call('HINCRBY', KEYS[2], 'seq', tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return {seq, epoch .. '.' .. gen}
"""

_ROTATE = "redis.call('SET', KEYS[1], ARGV[1]) return 1"


class RedisStreamStore:
    """Seq counters in Redis hashes, history in Redis Streams capped by length and age."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lost = False

    @property
    def _prefix(self) -> str:
        return live_settings.PREFIX

    def _client(self) -> Any:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            # from_url() retries nothing: after a Redis restart the first command
            # on each pooled (now dead) connection would fail, dropping an event
            # although Redis is back. Retry once on a fresh connection; a lost
            # reply can at worst skip a seq, which clients see as a gap.
            retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,))
            client = redis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30, retry=retry
            )
            self._clients[loop] = client
        return client

    def _keys(self, stream: str) -> tuple[str, str, str]:
        prefix = self._prefix
        return f"{prefix}:epoch", f"{prefix}:seq:{stream}", f"{prefix}:history:{stream}"

    async def _rotate_if_lost(self, client: Any) -> None:
        if self._lost:
            await client.eval(_ROTATE, 1, f"{self._prefix}:epoch", _new_epoch())
            self._lost = False

    async def _reserve(self, stream: str, increment: int) -> Position:
        client = self._client()
        await self._rotate_if_lost(client)
        epoch_key, seq_key, _ = self._keys(stream)
        ttl = int(live_settings.HISTORY_TTL)
        seq, epoch = await client.eval(_NEXT, 2, epoch_key, seq_key, _new_epoch(), ttl, increment)
        return Position(int(seq), epoch.decode())

    async def next(self, stream: str) -> Position:
        return await self._reserve(stream, 1)

    async def position(self, stream: str) -> Position:
        return await self._reserve(stream, 0)

    async def record(self, stream: str, seq: int, frames: Mapping[str, str]) -> None:
        _, _, history_key = self._keys(stream)
        fields: dict[str, Any] = {"seq": seq, **{f"a:{audience}": text for audience, text in frames.items()}}
        client = self._client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(history_key, fields, maxlen=int(live_settings.HISTORY_LENGTH), approximate=True)
            pipe.expire(history_key, int(live_settings.HISTORY_TTL))
            await pipe.execute()

    async def replay(self, stream: str, since: int, epoch: str, audience: str) -> Replay:
        _, _, history_key = self._keys(stream)
        position = await self.position(stream)
        if position.epoch != epoch or since > position.seq:
            return Replay(position, None)
        entries = await self._client().xrange(history_key) if position.seq > since else []
        horizon_ms = (time.time() - live_settings.HISTORY_TTL) * 1000
        held: list[tuple[int, str | None]] = []
        for entry_id, fields in entries:
            if int(entry_id.split(b"-")[0]) < horizon_ms:
                continue
            seq = int(fields[b"seq"])
            if seq > since:
                text = fields.get(f"a:{audience}".encode())
                held.append((seq, text.decode() if text is not None else None))
        return Replay(position, _contiguous(held, since, position, epoch))

    def mark_lost(self) -> None:
        self._lost = True

    @property
    def lost(self) -> bool:
        return self._lost

    async def rotate_if_lost(self) -> None:
        await self._rotate_if_lost(self._client())

    async def close(self) -> None:
        for client in list(self._clients.values()):
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._clients.clear()


def _contiguous(
    held: list[tuple[int, str | None]], since: int, position: Position, epoch: str
) -> list[tuple[int, str]] | None:
    """The frames ``since+1 .. position.seq`` in order, or None if any is missing."""
    if position.epoch != epoch or since > position.seq:
        return None
    by_seq = dict(held)
    frames: list[tuple[int, str]] = []
    for seq in range(since + 1, position.seq + 1):
        text = by_seq.get(seq)
        if text is None:
            return None
        frames.append((seq, text))
    return frames


_store: StreamStore | None = None
_store_lock = threading.Lock()


def get_store() -> StreamStore:
    """The process's stream store, chosen by the ``STORE_URL`` setting."""
    global _store
    with _store_lock:
        if _store is None:
            url = store_url()
            _store = RedisStreamStore(url) if url else MemoryStreamStore()
        return _store


def reset_store() -> None:
    """Forget the store (tests, and settings changes)."""
    global _store
    with _store_lock:
        _store = None


def store_url() -> str | None:
    """The Redis URL of the store, or None for process memory."""
    configured = live_settings.STORE_URL
    if configured == "memory":
        return None
    if configured:
        return str(configured)
    from django.conf import settings

    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    if "channels_redis" not in layer.get("BACKEND", ""):
        return None
    hosts = layer.get("CONFIG", {}).get("hosts") or ["redis://localhost:6379"]
    first = hosts[0]
    if isinstance(first, dict):
        first = first.get("address")
    if isinstance(first, (tuple, list)):
        first = f"redis://{first[0]}:{first[1]}"
    return str(first)
