"""Who a socket is: a token header, or a session cookie behind an Origin check.

The Origin check guards the cookie, not the socket: a browser always sends
``Origin`` on a WebSocket handshake, so a cross-site page could ride the
victim's session cookie (cross-site WebSocket hijacking). Such a handshake is
refused with HTTP 403 before ``accept``, by the rule Django's CSRF check applies
to a REST ``POST``. A client that sends no ``Origin`` (not a browser) is not
refused; it authenticates by token.
"""

from __future__ import annotations

import ipaddress
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string
from rest_framework import exceptions

from . import metrics
from .conf import live_settings
from .hub import get_hub
from .limits import auth_failures, strangers
from .sessions import session_user
from .trips import database_trip


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def token_from_header(value: str | None) -> str | None:
    """The key of an ``Authorization: Token <key>`` header, or None."""
    if not value:
        return None
    keyword, _, key = value.strip().partition(" ")
    return key.strip() or None if keyword.lower() == "token" else None


class HandshakeRequest(HttpRequest):
    """The WebSocket handshake as a Django ``HttpRequest``: enough for ``get_host()`` and ``is_secure()``.

    The headers become ``META`` as Django's ``ASGIRequest`` makes them, so
    ``ALLOWED_HOSTS``, ``USE_X_FORWARDED_HOST`` and ``SECURE_PROXY_SSL_HEADER``
    apply exactly as on an HTTP request; ``ws`` counts as ``http`` and ``wss``
    as ``https``.
    """

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        self.scope_scheme = "https" if scope.get("scheme") in {"wss", "https"} else "http"
        server = scope.get("server") or ("unknown", "0")
        self.META = {"SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1] or "0")}
        for name, value in scope.get("headers", ()):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text

    def _get_scheme(self) -> str:
        return self.scope_scheme


def origin_allowed(scope: dict[str, Any], origin: str) -> bool:
    """Whether a browser page at ``origin`` may use this site's session cookie on this handshake.

    Django's CSRF rule (``CsrfViewMiddleware._origin_verified``): the origin is
    the handshake's own (scheme, host and port, the host allowed by
    ``ALLOWED_HOSTS``) or a ``CSRF_TRUSTED_ORIGINS`` entry, wildcards included.
    """
    request = HandshakeRequest(scope)
    try:
        good_host = request.get_host()
    except DisallowedHost:
        pass
    else:
        if origin == f"{'https' if request.is_secure() else 'http'}://{good_host}":
            return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in {entry for entry in trusted if "*" not in entry}:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parts.netloc, domain.netloc.lstrip("*"))
        for domain in (urlsplit(entry) for entry in trusted if "*" in entry)
        if domain.scheme == parts.scheme
    )


def client_address(scope: dict[str, Any]) -> str:
    """Who the client is for per-address limits: its IP address (an IPv6 client by its /64).

    The ASGI scope's ``client``, or the last value of ``CLIENT_ADDRESS_HEADER``
    when that setting names a header and the handshake carries it.
    """
    raw = ""
    name = live_settings.CLIENT_ADDRESS_HEADER
    value = header(scope, str(name).lower().encode("latin-1")) if name else None
    if value:
        raw = value.rsplit(",", 1)[-1].strip()
    else:
        client = scope.get("client")
        raw = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        return raw[:100] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # One host holds a whole /64: counting addresses in it would count nothing.
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@database_trip
def authenticate_token(key: str) -> Any | None:
    """The active user of an API token, by the REST API's own authentication class."""
    if "\x00" in key:
        # No key holds a NUL, and PostgreSQL refuses one in a query parameter
        # (DataError): an `authenticate` frame could turn that into a server error.
        return None
    authentication = import_string(live_settings.TOKEN_AUTHENTICATION)()
    try:
        user, _token = authentication.authenticate_credentials(key)
    except exceptions.AuthenticationFailed:
        return None
    return user


class LiveAuthMiddleware:
    """Sets ``scope["user"]`` and ``scope["drf_live_credentials"]`` for the consumer.

    It reads the session cookie itself rather than sit behind channels'
    ``SessionMiddleware``: that middleware wraps ``send`` to save a modified
    session, which it only ever does on ``http.response.start``, so on a
    WebSocket the wrapper does nothing but look at the session on every frame
    (a fifth of the fan-out's CPU, see docs/benchmarks.md). The socket never
    changes the session, so here ``send`` stays the ASGI server's own.

    It also keeps strangers in check before a consumer exists: a wrong token
    spends the client address's budget of failures (``AUTH_FAILURE_BURST``),
    an address without budget has no token looked up, and a socket that is not
    authenticated holds one of the few places ``limits.strangers`` allows,
    until it authenticates (the consumer gives the place back) or ends.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"] = AnonymousUser()
        scope["drf_live_credentials"] = None
        address = scope["drf_live_address"] = client_address(scope)
        key = token_from_header(header(scope, b"authorization"))
        if key is not None:
            if not auth_failures.allows(address):
                return await deny(scope, receive, send, TOO_MANY_REQUESTS)
            user = await get_hub().user_of_token(key, authenticate_token)
            if user is None:
                auth_failures.spend(address)
                return await deny(scope, receive, send)
            scope["user"] = user
            scope["drf_live_credentials"] = ("token", key)
        elif (session := _session(scope)) is not None and session.session_key:
            scope["session"] = session
            origin = header(scope, b"origin")
            if origin is not None and not origin_allowed(scope, origin):
                return await deny(scope, receive, send)
            user = await database_sync_to_async(session_user)(session)
            if user is not None:
                scope["user"] = user
                scope["drf_live_credentials"] = ("session", scope["session"].session_key)
        if scope["user"].is_authenticated:
            return await self.app(scope, receive, send)
        stranger = strangers.admit(address)
        if stranger is None:
            return await deny(scope, receive, send, TOO_MANY_REQUESTS)
        scope["drf_live_stranger"] = stranger
        try:
            return await self.app(scope, receive, send)
        finally:
            stranger.release()


FORBIDDEN = 403
TOO_MANY_REQUESTS = 429


async def deny(scope: dict[str, Any], receive: Any, send: Any, status: int = FORBIDDEN) -> None:
    """Refuse the handshake: HTTP ``status`` where the ASGI server can send one (uvicorn can), else 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    metrics.recorder.refused(status)
    if status != FORBIDDEN and "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        # Closing before accepting makes the ASGI server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 4003})


def _session(scope: dict[str, Any]) -> Any | None:
    """The session named by the handshake's cookie (not loaded until read), or None."""
    if scope.get("session") is not None:  # An outer SessionMiddleware already made one.
        return scope["session"]
    cookies = parse_cookie(header(scope, b"cookie") or "")
    key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    return import_module(settings.SESSION_ENGINE).SessionStore(key)


def LiveAuthMiddlewareStack(app: Any) -> Any:
    """drf-live's authentication (token header or session cookie) in front of ``app``."""
    return LiveAuthMiddleware(app)
