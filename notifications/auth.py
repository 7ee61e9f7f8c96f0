"""Who a socket is: a token header, or a session cookie behind an Origin check.

The Origin check guards the cookie, not the socket: a browser always sends
``Origin`` on a WebSocket handshake, so a cross-site page could ride the
victim's session cookie (cross-site WebSocket hijacking). Such a handshake is
refused with HTTP 403 before ``accept``. A client that sends no ``Origin`` (not
a browser) is not refused; it authenticates by token.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain
from django.utils.module_loading import import_string
from rest_framework import exceptions


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


def origin_allowed(origin: str) -> bool:
    """Whether a browser page at ``origin`` may use this site's session cookie."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        # Django's CSRF wildcard form: "https://*.example.com", matched as
        # CsrfViewMiddleware matches it (the domain itself and its subdomains).
        trusted_parts = urlsplit(trusted)
        if trusted_parts.scheme == parts.scheme and trusted_parts.netloc.startswith("*."):
            if is_same_domain(parts.netloc, trusted_parts.netloc[1:]):
                return True
    domain, _port = split_domain_port(parts.netloc)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


@database_sync_to_async
def authenticate_token(key: str) -> Any | None:
    """The active user of an API token, by the REST API's own authentication class."""
    from .conf import live_settings

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
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["user"] = AnonymousUser()
        scope["drf_live_credentials"] = None
        key = token_from_header(header(scope, b"authorization"))
        if key is not None:
            user = await authenticate_token(key)
            if user is None:
                return await _deny(receive, send)
            scope["user"] = user
            scope["drf_live_credentials"] = ("token", key)
        elif (session := _session(scope)) is not None and session.session_key:
            scope["session"] = session
            origin = header(scope, b"origin")
            if origin is not None and not origin_allowed(origin):
                return await _deny(receive, send)
            user = await get_user(scope)
            if user.is_authenticated:
                scope["user"] = user
                scope["drf_live_credentials"] = ("session", scope["session"].session_key)
        return await self.app(scope, receive, send)


async def _deny(receive: Any, send: Any) -> None:
    # Closing before accepting makes the ASGI server answer the handshake with 403.
    message = await receive()
    if message["type"] == "websocket.connect":
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
