"""drf-live's settings: the ``DRF_LIVE`` dict, read lazily so ``override_settings`` works."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Seconds a socket may stay unauthenticated before it is closed with 4001.
    "AUTH_TIMEOUT": 10.0,
    # Let sockets without credentials subscribe; the REST API's rules for an
    # anonymous user then decide what they see.
    "ALLOW_ANONYMOUS": False,
    # The DRF authentication class whose authenticate_credentials() checks API
    # tokens, for the Authorization header and the authenticate frame.
    "TOKEN_AUTHENTICATION": "rest_framework.authentication.TokenAuthentication",
    # Where seq counters, epochs and the event history live: None picks Redis
    # when the default channel layer is channels_redis (every one of its hosts,
    # in order, each a shard), and process memory otherwise. Or "memory"; or
    # the shards: a "redis://" (or "rediss://") URL, a Sentinel service
    # ("sentinel://host:26379,host:26379/master_name/db"), comma-separated URLs,
    # a channels_redis-style host dict, or a list of these. Every process must
    # list the same shards in the same order (docs/deployment.md, "Sharding").
    "STORE_URL": None,
    # Prefix of every group name and Redis key drf-live writes.
    "PREFIX": "drf-live",
    # Events kept per target for recovery, and for how long (seconds).
    "HISTORY_LENGTH": 1000,
    "HISTORY_TTL": 3600,
    # Abuse limits. Hard limits close the socket (documented close codes), soft
    # limits answer an error and keep it open.
    # Largest frame read (bytes); larger closes with 1009. Set the ASGI server's
    # own limit too (uvicorn --ws-max-size), which refuses before reading.
    "MAX_FRAME_BYTES": 65536,
    # Subscriptions one socket may hold; more answers `limit_exceeded`.
    "MAX_SUBSCRIPTIONS": 200,
    # Subscribe requests per second per socket (token bucket), and the burst
    # allowed above that rate; more answers `throttled`.
    "SUBSCRIBE_RATE": 20.0,
    "SUBSCRIBE_BURST": 50,
    # Error replies per second per socket, and the burst; more closes with 4008.
    "ERROR_RATE": 20.0,
    "ERROR_BURST": 500,
    # Sockets one user may hold open; more closes the new one with 4029. With
    # a Redis store they are counted in Redis, across every server process; in
    # process memory, per process.
    "MAX_SOCKETS_PER_USER": 50,
    # Seconds a socket stays counted in Redis without its process renewing it
    # (every SOCKET_LEASE / 4): a killed process's sockets stop counting then.
    "SOCKET_LEASE": 60.0,
    # A slow consumer (its client not reading, its TCP and the ASGI server's
    # buffers full) is closed with 4030 when more than SEND_QUEUE_LIMIT frames
    # wait for it, or when no frame went out to it for SEND_TIMEOUT seconds.
    "SEND_QUEUE_LIMIT": 1000,
    "SEND_TIMEOUT": 10.0,
    # Seconds a user stays counted among a target's subscribers after their
    # last socket left it: events are decided for them meanwhile, so a client
    # that reconnects within this window recovers with `since`; later, it gets
    # a fresh snapshot.
    "RESUME_WINDOW": 120.0,
    # The transactional outbox (see notifications/outbox.py). Seconds a row
    # waits for its writing process before any sweeping process takes it; the
    # lease a process holds on rows it is publishing; seconds between sweeps
    # and rows taken per sweep; seconds before rows whose publishing failed
    # (Redis down) are tried again.
    "OUTBOX_GRACE": 1.0,
    # Whether this process sweeps: None sweeps in every process that serves
    # sockets (from its first connection on), True in every process that
    # publishes, False never (a process of yours runs `manage.py drf_live_outbox
    # --sweep` instead, say).
    "OUTBOX_SWEEP": None,
    "OUTBOX_LEASE": 60.0,
    "OUTBOX_SWEEP_INTERVAL": 1.0,
    "OUTBOX_SWEEP_BATCH": 500,
    "OUTBOX_RETRY_DELAY": 1.0,
    # Times a transaction's rows may fail to publish for a reason other than
    # Redis or the database being unreachable (a bug, say) before they are
    # dropped, logged, and their targets' epochs rotated.
    "OUTBOX_MAX_ATTEMPTS": 5,
    # Rows the outbox may hold (Redis down for long). Beyond it the oldest
    # rows are dropped and every stream's epoch rotates once Redis is back, so
    # that clients take fresh snapshots instead of recovering.
    "OUTBOX_LIMIT": 100000,
    # Seconds the relay may wait for, and hold, one stream while it decides an
    # event (another process is deciding one for the same target).
    "CLAIM_TIMEOUT": 10.0,
    # The edges (docs/security.md lists each with its close code) ------------
    # Budget of each action per socket, {"action": [rate per second, burst]},
    # merged over notifications.limits.DEFAULT_ACTION_BUDGETS (ping 2/20,
    # unsubscribe 20/50, authenticate 0.2/3, "*" 5/20 for any other action;
    # subscribe: SUBSCRIBE_RATE/SUBSCRIBE_BURST). Over budget answers
    # `throttled`, which counts as an error (ERROR_BURST, then 4008).
    "ACTION_BUDGETS": {},
    # Sockets not authenticated (yet) in one process, and from one client
    # address; past either the handshake is refused (HTTP 429). None: no cap.
    "MAX_UNAUTHENTICATED_SOCKETS": 100,
    "MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": 10,
    # The client address is the ASGI scope's "client" (what the ASGI server
    # says, e.g. after uvicorn's --forwarded-allow-ips). Name a header here
    # (e.g. "X-Real-IP") only if your proxy sets it and clients cannot reach
    # the server around the proxy; its last comma-separated value is used.
    "CLIENT_ADDRESS_HEADER": None,
    # Failed authentications one socket may make (wrong tokens in
    # `authenticate` frames); the last one closes it with 4008.
    "MAX_AUTH_FAILURES": 3,
    # Failed authentications per client address and process (token bucket:
    # rate per second, burst); past it no token from that address is looked
    # up: a token header is refused (HTTP 429), an `authenticate` frame closes
    # the socket with 4008.
    "AUTH_FAILURE_RATE": 0.1,
    "AUTH_FAILURE_BURST": 20,
    # Seconds between re-validations of a session socket's session (deleted,
    # expired, auth hash changed: closed with 4001), a backstop for what no
    # signal reports (cache or file sessions, QuerySet.update). None: never.
    "SESSION_RECHECK_INTERVAL": 300.0,
    # Client-caused messages of the ASGI server's log ("uvicorn.error":
    # invalid UTF-8, malformed requests, failed handshakes): at most
    # LOG_ABUSE_BURST lines per message per LOG_ABUSE_INTERVAL seconds, without
    # traceback; the rest are counted in the next line. None: no limit.
    "LOG_ABUSE_BURST": 10,
    "LOG_ABUSE_INTERVAL": 60.0,
    # The AsyncAPI document (notifications/asyncapi.py) ----------------------
    # Whether notifications.urls serves it (asyncapi.json, asyncapi.yaml):
    # None serves it when DEBUG is on, True always, False never (404). It
    # names every registered model and action, as an OpenAPI schema would.
    "ASYNCAPI_URL_ENABLED": None,
    # Merged over the document's `info` (title, version, description).
    "ASYNCAPI_INFO": {},
    # The inspector (notifications/views.py, docs/operations.md) -------------
    # Whether the page at notifications.urls' "inspector/" is served at all:
    # None serves it when DEBUG is on, True in any deployment, False never.
    # Served or not, only active staff users get it; everyone else gets 404.
    "INSPECTOR_ENABLED": None,
    # Prometheus metrics (notifications/metrics.py, docs/operations.md) -----
    # True records them (prometheus-client must be installed: the `metrics`
    # extra) and serves them at notifications.metrics_view.metrics_view; off
    # (None, False), nothing is recorded and the endpoint answers 404.
    "METRICS": None,
    # Who may read the endpoint: a request from one of these networks that no
    # proxy forwarded (no Forwarded, X-Forwarded-For or X-Real-IP header), or
    # one with `Authorization: Bearer <METRICS_TOKEN>` when a token is set.
    # Anyone else gets 403. [] and a token: the token only.
    "METRICS_ADDRESSES": ["127.0.0.1/32", "::1/128"],
    "METRICS_TOKEN": None,
}


class LiveSettings:
    """Attribute access to ``settings.DRF_LIVE`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown drf-live setting: {name!r}")
        if name not in self._cache:
            user = getattr(settings, "DRF_LIVE", None)
            if not isinstance(user, dict):
                user = {}  # None, or a value the system check reports (drf_live.E100)
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


live_settings = LiveSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in {"DRF_LIVE", "CHANNEL_LAYERS"}:
        from .streams import reset_store

        live_settings.reload()
        reset_store()
        if setting == "DRF_LIVE":
            from . import metrics

            metrics.configure()


setting_changed.connect(_reload)
