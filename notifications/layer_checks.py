"""System checks of the channel layers next to drf-live, and of where its store finds Redis.

drf-live sends its events through its own Redis connections, not through a
channel layer; but a project that keeps a channels_redis layer for consumers of
its own inherits redis-py's defaults, which fail under many sockets, and
without ``STORE_URL`` drf-live's store reads its Redis URL from that layer.

========================  ===================================================================
drf_live.W201             a channels_redis host with redis-py's 5 s socket timeout
drf_live.W202             a channels_redis host with redis-py's pool of 100 connections
drf_live.E203             no ``STORE_URL``, and a default channels_redis layer without a URL to read
========================  ===================================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core import checks

#: Where docs/deployment.md explains the channels_redis options.
CHANNEL_LAYER_DOCS = "docs/deployment.md, section 'A channels_redis layer next to drf-live'"

#: channels_redis' core layer blocks in BZPOPMIN for this many seconds (``RedisChannelLayer.brpop_timeout``).
CHANNELS_REDIS_BLOCK = 5
#: redis-py's defaults for a connection pool's connections.
REDIS_PY_SOCKET_TIMEOUT = 5
REDIS_PY_MAX_CONNECTIONS = 100

_HOST_HINT = (
    'Give each host as a dict: {"address": "redis://...", "socket_timeout": None, "max_connections": 1000, '
    f'"socket_connect_timeout": 5, "health_check_interval": 30}} (see {CHANNEL_LAYER_DOCS}).'
)


@checks.register("drf_live")
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """channels_redis core layers left on redis-py's defaults, and a store that cannot find its Redis."""
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if not isinstance(layers, dict):
        return []
    messages: list[checks.CheckMessage] = []
    for alias, layer in layers.items():
        if not isinstance(layer, dict) or "channels_redis.core" not in str(layer.get("BACKEND", "")):
            continue
        hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
        if not isinstance(hosts, (list, tuple)):
            continue
        for index, host in enumerate(hosts):
            messages.extend(_check_host(alias, index, host))
    messages.extend(_check_store_host())
    return messages


def _host_options(host: Any) -> dict[str, Any] | None:
    """The connection options a channels_redis host gives redis-py (a URL's query included), or None if unknown."""
    if isinstance(host, dict):
        options = dict(host)
        address = options.get("address")
    elif isinstance(host, str):
        options, address = {}, host
    elif isinstance(host, (list, tuple)):
        return {}
    else:
        return None
    if isinstance(address, str):
        for name, values in parse_qs(urlsplit(address).query).items():
            options.setdefault(name, values[-1])
    return options


def _check_host(alias: str, index: int, host: Any) -> list[checks.CheckMessage]:
    options = _host_options(host)
    if options is None:
        return []
    where = f'CHANNEL_LAYERS["{alias}"] host {index + 1}'
    messages: list[checks.CheckMessage] = []
    timeout = options.get("socket_timeout", REDIS_PY_SOCKET_TIMEOUT)
    try:
        short = timeout is not None and float(timeout) <= CHANNELS_REDIS_BLOCK
    except (TypeError, ValueError):
        short = False
    if short:
        messages.append(
            checks.Warning(
                f"{where} has a socket timeout of {timeout} s (redis-py's default is {REDIS_PY_SOCKET_TIMEOUT}): "
                f"channels_redis blocks {CHANNELS_REDIS_BLOCK} s in BZPOPMIN waiting for messages, so on a quiet "
                "socket the read times out and the layer fails with timeouts.",
                hint='Set "socket_timeout": None (a dead server is noticed anyway: its connections close). '
                + _HOST_HINT,
                id="drf_live.W201",
            )
        )
    if "max_connections" not in options:
        messages.append(
            checks.Warning(
                f"{where} keeps redis-py's pool of {REDIS_PY_MAX_CONNECTIONS} connections: every concurrent "
                "group_add, group_send and receive of a process takes one, and past them redis-py raises "
                "MaxConnectionsError (a few hundred sockets subscribing at once, after a deploy, are enough).",
                hint=f'Set "max_connections" for the sockets one process holds, e.g. 1000. {_HOST_HINT}',
                id="drf_live.W202",
            )
        )
    return messages


def _check_store_host() -> list[checks.CheckMessage]:
    from .conf import live_settings
    from .streams import store_shards

    if live_settings.STORE_URL is not None:
        return []
    try:
        store_shards()
    except ValueError as error:
        return [
            checks.Error(
                f"drf-live's store has no Redis URL: {error}",
                hint='Set DRF_LIVE["STORE_URL"] = "redis://host:6379/0" to the Redis every process shares.',
                id="drf_live.E203",
            )
        ]
    return []
