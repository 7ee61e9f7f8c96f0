"""Where the store lives: the Redis shards named by ``STORE_URL`` (or the channel layer), and which one holds a stream.

Every stream (its keys, its history and its pub/sub channel) lives on one
shard, chosen by hashing its name as channels_redis chooses a group's host.
Every process must therefore list the same shards in the same order: a process
with another list looks for a stream on another shard, and its events reach no
one (docs/deployment.md, "Sharding").

A shard is a Redis server (``redis://``, ``rediss://``) or a master watched by
Redis Sentinel (``sentinel://``, or a channels_redis host dict with
``sentinels`` and ``master_name``). Nothing here talks to Redis; the store
(``redis_store``) and its clients (``redis_clients``) do.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: How a comma-separated STORE_URL is cut into shards: before each scheme (a Sentinel URL has commas of its own).
_SHARD_SEPARATOR = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


class ShardConfigError(ValueError):
    """``STORE_URL`` (or the channel layer's hosts) names a shard drf-live cannot use."""


@dataclass(frozen=True)
class Shard:
    """One shard: a Redis URL, or a Sentinel service (its sentinels and its master's name)."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    # Connection options for the sentinels themselves (their password, say), as redis-py's Sentinel takes them.
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_sentinel(self) -> bool:
        return self.master_name is not None

    @property
    def name(self) -> str:
        """The shard as logs name it (no password)."""
        if self.is_sentinel:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel://{hosts}/{self.master_name}/{self.db}"
        parts = urlsplit(self.url or "")
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"


def shard_index(name: str, count: int) -> int:
    """The shard of the stream (or key) ``name`` among ``count``: channels_redis's ``_consistent_hash``.

    CRC32 of the name, kept to 12 bits, then cut into ``count`` equal ranges:
    the same in every process and Python version (``hash()`` is not), and the
    function channels_redis uses to place a group on one of its hosts.
    """
    if count == 1:
        return 0
    return int((binascii.crc32(name.encode()) & 0xFFF) / (4096 / count))


def split_urls(value: str) -> list[str]:
    """The shard URLs of a comma-separated string, in order (``redis://a,redis://b``)."""
    return [part for part in _SHARD_SEPARATOR.split(value.strip()) if part]


def parse(value: Any) -> list[Shard]:
    """The shards of a ``STORE_URL`` value: a URL, comma-separated URLs, a dict, or a list of them."""
    if isinstance(value, Shard):
        return [value]
    if isinstance(value, str):
        return [_from_url(url) for url in split_urls(value)]
    if isinstance(value, Mapping):
        return [_from_host(value)]
    if isinstance(value, (list, tuple)):
        shards: list[Shard] = []
        for entry in value:
            shards.extend(parse(entry) if isinstance(entry, (str, Mapping, Shard)) else [_from_host(entry)])
        return shards
    raise ShardConfigError(f"STORE_URL must be a URL, a dict or a list of them, not {value!r}.")


def from_layer(layer: Mapping[str, Any]) -> list[Shard] | None:
    """Every host of a channels_redis layer's config, in order; None for another backend."""
    if "channels_redis" not in layer.get("BACKEND", ""):
        return None
    hosts = layer.get("CONFIG", {}).get("hosts") or ["redis://localhost:6379"]
    if isinstance(hosts, (str, bytes)):
        hosts = [hosts]  # channels_redis refuses a bare string; here it can only mean one host
    return [_from_host(host) for host in hosts]


def channel_layer_hosts(value: str, **options: Any) -> list[dict[str, Any]]:
    """channels_redis ``hosts`` for comma-separated URLs, ``sentinel://`` ones included (a settings helper).

    ``options`` (``socket_timeout``, ``max_connections``, ...) are added to each host.
    """
    hosts: list[dict[str, Any]] = []
    for url in split_urls(value):
        shard = _from_url(url)
        if not shard.is_sentinel:
            hosts.append({"address": url, **options})
            continue
        host: dict[str, Any] = {"sentinels": list(shard.sentinels), "master_name": shard.master_name, "db": shard.db}
        if shard.password is not None:
            host["password"] = shard.password
        if shard.username is not None:
            host["username"] = shard.username
        if shard.sentinel_kwargs:
            host["sentinel_kwargs"] = dict(shard.sentinel_kwargs)
        hosts.append({**host, **options})
    return hosts


def _from_url(url: str) -> Shard:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ShardConfigError(f"{url!r} names no host: write redis://host:6379/0.")
        return Shard(url=url, ssl=scheme == "rediss")
    if scheme == "unix":
        if not parts.path:
            raise ShardConfigError(f"{url!r} names no socket: write unix:///run/redis.sock?db=0.")
        return Shard(url=url)
    if scheme not in ("sentinel", "sentinels"):
        raise ShardConfigError(f"Unknown Redis URL scheme in {url!r}: use redis://, rediss://, unix:// or sentinel://.")
    # sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db][?sentinel_password=...]
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels = tuple(_host_port(item, 26379) for item in hostlist.split(",") if item)
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    if not sentinels or not path:
        raise ShardConfigError(f"{url!r}: write sentinel://host:port[,host:port...]/master_name[/db].")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    sentinel_kwargs = {
        key.removeprefix("sentinel_"): value
        for key, value in query.items()
        if key in ("sentinel_password", "sentinel_username")
    }
    return Shard(
        sentinels=sentinels,
        master_name=path[0],
        db=int(path[1]) if len(path) > 1 else 0,
        username=unquote(username) or None,
        password=unquote(password) if password else None,
        ssl=scheme == "sentinels",
        sentinel_kwargs=sentinel_kwargs,
    )


def _from_host(host: Any) -> Shard:
    """One channels_redis host: a URL, ``(host, port)``, ``{"address": ...}`` or ``{"sentinels", "master_name"}``."""
    if isinstance(host, str):
        return _from_url(host)
    if isinstance(host, (tuple, list)):
        return Shard(url=f"redis://{host[0]}:{host[1]}")
    if not isinstance(host, Mapping):
        raise ShardConfigError(f"Cannot read a Redis host from {host!r}.")
    if host.get("master_name") is not None:
        sentinels = tuple(
            _host_port(item, 26379) if isinstance(item, str) else (str(item[0]), int(item[1]))
            for item in host.get("sentinels") or ()
        )
        if not sentinels:
            raise ShardConfigError(f"The Sentinel host {host.get('master_name')!r} lists no `sentinels`.")
        return Shard(
            sentinels=sentinels,
            master_name=str(host["master_name"]),
            db=int(host.get("db", 0)),
            username=host.get("username"),
            password=host.get("password"),
            ssl=bool(host.get("ssl", False)),
            sentinel_kwargs=dict(host.get("sentinel_kwargs") or {}),
        )
    if "address" in host:
        address = host["address"]
        return _from_host(address) if not isinstance(address, str) else _from_url(address)
    if "host" in host:
        password = host.get("password")
        auth = f":{quote(str(password), safe='')}@" if password else ""
        return Shard(url=f"redis://{auth}{host['host']}:{host.get('port', 6379)}/{host.get('db', 0)}")
    raise ShardConfigError(f"Cannot read a Redis host from {dict(host)!r}: give `address`, or `sentinels`.")


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.strip().rpartition(":") if ":" in value else (value.strip(), "", "")
    return host.strip("[]"), int(port) if port else default_port
