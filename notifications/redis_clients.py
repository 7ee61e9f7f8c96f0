"""The connections to one shard: the relay's client, one client per event loop, and its master's address.

A shard is a Redis URL, or a Sentinel service whose clients ask the sentinels
for the master (redis-py's ``Sentinel.master_for``) and follow it through a
failover. A promoted replica may lack writes its master acknowledged
(replication is asynchronous): its counters and histories could then repeat
seqs that clients already hold under the same epoch. So every new connection to
a Sentinel shard first runs ``_FAILOVER_CHECK``: the shard keeps the run id of
the server that last vouched for its epoch, and a server with another run id (a
promoted replica, or a restarted master) gives the shard a new epoch before
anything else is read or written there.

The relay's side also stops trying a shard that just failed, for
``SHARD_RETRY`` seconds, so that a shard that is down costs the other shards'
events no connect timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio import sentinel as async_sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from .conf import live_settings
from .shards import Shard
from .streams import new_epoch

logger = logging.getLogger("notifications.streams")

#: Seconds the relay's side leaves a shard alone after a connection to it failed.
SHARD_RETRY = 1.0

# Run on every new connection to a Sentinel shard: a server that is not the one that last vouched for
# the shard's epoch (a promoted replica, a restarted master) may lack acknowledged writes: new epoch.
_FAILOVER_CHECK = """
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local vouched = redis.call('GET', KEYS[2])
if vouched == run then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], run)
if vouched then return 1 end
return 2
"""


class ShardDown(RedisConnectionError):
    """The shard failed less than ``SHARD_RETRY`` seconds ago: not tried again yet."""


def epoch_key() -> str:
    """The key of a shard's epoch, the first half of every epoch of its streams."""
    return f"{live_settings.PREFIX}:epoch"


def master_key() -> str:
    """The key of the run id of the server that last vouched for a Sentinel shard's epoch."""
    return f"{live_settings.PREFIX}:master"


def check_master(client: Any, shard_name: str = "") -> bool:
    """Run the failover check through ``client`` (what each new Sentinel connection does); True if it rotated."""
    reply = client.eval(_FAILOVER_CHECK, 2, epoch_key(), master_key(), new_epoch())
    _rotated(shard_name or "A shard", reply)
    return bool(reply)


def _rotated(shard_name: str, reply: Any) -> None:
    """Log a rotation (reply 1); 2 is a first contact (an empty shard), 0 the master that vouched already."""
    if reply == 1:
        logger.warning("%s: a new (or restarted) master serves this shard; its streams get a new epoch", shard_name)


class _FailoverChecked(SentinelManagedConnection):
    shard_name = ""

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health)
        self.send_command("EVAL", _FAILOVER_CHECK, 2, epoch_key(), master_key(), new_epoch())
        _rotated(self.shard_name, self.read_response())


class _FailoverCheckedSSL(_FailoverChecked, SentinelManagedSSLConnection):
    pass


class _AsyncFailoverChecked(async_sentinel.SentinelManagedConnection):
    shard_name = ""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health)
        await self.send_command("EVAL", _FAILOVER_CHECK, 2, epoch_key(), master_key(), new_epoch())
        _rotated(self.shard_name, await self.read_response())


class _AsyncFailoverCheckedSSL(_AsyncFailoverChecked, async_sentinel.SentinelManagedSSLConnection):
    pass


def _options() -> dict[str, Any]:
    """Timeouts, and one retry on a fresh connection (after a restart every pooled one is dead).

    A script either ran or not; running one twice after a lost reply at worst
    publishes an event twice, which clients drop.
    """
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)),
    }


#: Connections of a server loop's client per shard, and how long a command waits for one when
#: all are busy. redis-py's default pool refuses the 101st concurrent command at once
#: ("Too many connections"): a reconnect storm's registrations failed with `unavailable`.
ASYNC_POOL_SIZE = 50
ASYNC_POOL_TIMEOUT = 5.0


class _BlockingSentinelPool(async_sentinel.SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel pool that waits for a free connection, as ``BlockingConnectionPool`` does."""


def _async_options() -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,))
    return {**_options(), "retry": retry}


def _master_options(shard: Shard) -> dict[str, Any]:
    options: dict[str, Any] = {"db": shard.db}
    if shard.username is not None:
        options["username"] = shard.username
    if shard.password is not None:
        options["password"] = shard.password
    return options


class ShardClients:
    """One shard's clients, made on first use: a thread-safe one for the relay, one per event loop for sockets."""

    def __init__(self, shard: Shard, index: int, scripts: Mapping[str, str], async_scripts: Mapping[str, str]) -> None:
        self.shard = shard
        self.index = index
        self._script_sources = scripts
        self._async_script_sources = async_scripts
        self._sync: Any = None
        self.scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._async_scripts: dict[asyncio.AbstractEventLoop, dict[str, Any]] = {}
        self._sentinels: dict[asyncio.AbstractEventLoop, Any] = {}

    @property
    def name(self) -> str:
        return self.shard.name

    # The relay's side ------------------------------------------------------------

    def sync(self) -> Any:
        """The relay thread's client (redis-py is thread-safe through its pool); ``ShardDown`` right after a failure."""
        if time.monotonic() < self._down_until:
            raise ShardDown(f"{self.name} failed less than {SHARD_RETRY} s ago")
        with self._lock:
            if self._sync is None:
                self._sync = self._make_sync()
                for name, source in self._script_sources.items():
                    self.scripts[name] = self._sync.register_script(source)
            return self._sync

    def failed(self) -> None:
        """A call to this shard failed to connect or to answer: leave it alone for a moment."""
        self._down_until = time.monotonic() + SHARD_RETRY

    def _make_sync(self) -> Any:
        import redis
        from redis.sentinel import Sentinel

        if not self.shard.is_sentinel:
            return redis.Redis.from_url(self.shard.url or "", **_options())
        sentinel = Sentinel(
            list(self.shard.sentinels),
            sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 2, **self.shard.sentinel_kwargs},
        )
        connection_class = type(
            "FailoverChecked", (_FailoverCheckedSSL if self.shard.ssl else _FailoverChecked,), {"shard_name": self.name}
        )
        return sentinel.master_for(
            self.shard.master_name, connection_class=connection_class, **_master_options(self.shard), **_options()
        )

    # The sockets' side --------------------------------------------------------------

    def aclient(self) -> Any:
        """The client of the running loop (redis.asyncio connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
                self._async_scripts.pop(old, None)
                self._sentinels.pop(old, None)
            client = self._clients[loop] = self._make_async(loop)
            self._async_scripts[loop] = {
                name: client.register_script(source) for name, source in self._async_script_sources.items()
            }
        return client

    def ascript(self, name: str) -> Any:
        """A script of the running loop's client."""
        self.aclient()
        return self._async_scripts[asyncio.get_running_loop()][name]

    def _sentinel(self, loop: asyncio.AbstractEventLoop) -> Any:
        sentinel = self._sentinels.get(loop)
        if sentinel is None:
            sentinel = self._sentinels[loop] = async_sentinel.Sentinel(
                list(self.shard.sentinels),
                sentinel_kwargs={"socket_connect_timeout": 2, "socket_timeout": 2, **self.shard.sentinel_kwargs},
            )
        return sentinel

    def _make_async(self, loop: asyncio.AbstractEventLoop) -> Any:
        import redis.asyncio as aredis

        if not self.shard.is_sentinel:
            pool = BlockingConnectionPool.from_url(
                self.shard.url or "", max_connections=ASYNC_POOL_SIZE, timeout=ASYNC_POOL_TIMEOUT, **_async_options()
            )
            return aredis.Redis.from_pool(pool)
        connection_class = type(
            "AsyncFailoverChecked",
            (_AsyncFailoverCheckedSSL if self.shard.ssl else _AsyncFailoverChecked,),
            {"shard_name": self.name},
        )
        return self._sentinel(loop).master_for(
            self.shard.master_name,
            connection_class=connection_class,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=ASYNC_POOL_SIZE,
            timeout=ASYNC_POOL_TIMEOUT,
            **_master_options(self.shard),
            **_async_options(),
        )

    async def master_address(self) -> tuple[str, int]:
        """Where the pub/sub connection goes: the URL's server, or the master the sentinels name now."""
        if not self.shard.is_sentinel:
            from urllib.parse import urlsplit

            parts = urlsplit(self.shard.url or "")
            return parts.hostname or "localhost", parts.port or 6379
        host, port = await self._sentinel(asyncio.get_running_loop()).discover_master(self.shard.master_name)
        return str(host), int(port)

    def close(self) -> None:
        with self._lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None
            self.scripts.clear()
        self._clients.clear()
        self._async_scripts.clear()
        self._sentinels.clear()
