"""Who a socket is: ``notifications.auth`` parsing, the Origin check, and the handshake over the full stack."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.test import Client, override_settings

from notifications.auth import client_address, origin_allowed, token_from_header

ALLOWED = {"ALLOWED_HOSTS": ["app.test", ".corp.test"], "CSRF_TRUSTED_ORIGINS": []}


# token_from_header ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("Token abc123", "abc123"),
        ("token abc123", "abc123"),
        ("TOKEN abc123", "abc123"),
        ("  Token   abc123  ", "abc123"),
        (None, None),
        ("", None),
        ("Token", None),
        ("Token    ", None),
        ("Tokenabc123", None),
        ("Bearer abc123", None),
        ("Basic YWxpY2U6cHc=", None),
        ("abc123", None),
    ],
)
def test_token_from_header_reads_only_the_token_keyword(value, key):
    assert token_from_header(value) == key


# origin_allowed: Django's CSRF Origin rule -------------------------------------------------


def handshake(host: str | None = "app.test", scheme: str = "ws", **headers: str) -> dict[str, Any]:
    """The scope of a handshake to ``host`` over ``scheme``, with more headers (``x_forwarded_proto=...``)."""
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    if host is not None:
        raw.insert(0, (b"host", host.encode()))
    return {"type": "websocket", "scheme": scheme, "server": ("10.0.0.9", 8000), "headers": raw}


@pytest.mark.parametrize(
    ("scheme", "host", "origin", "allowed"),
    [
        ("ws", "app.test", "http://app.test", True),
        ("ws", "app.test", "https://app.test", False),  # another scheme is another origin
        ("wss", "app.test", "https://app.test", True),
        ("wss", "app.test", "http://app.test", False),
        ("ws", "app.test:8000", "http://app.test:8000", True),
        ("ws", "app.test:8000", "http://app.test:9999", False),  # another port too
        ("ws", "app.test:8000", "http://app.test", False),
        ("ws", "app.test", "http://app.test:80", False),  # Django compares the strings
        ("ws", "intranet.corp.test", "http://intranet.corp.test", True),
        ("ws", "app.test", "http://intranet.corp.test", False),  # allowed host, but not this one
        ("ws", "app.test", "https://evil.example", False),
        ("ws", "app.test", "http://app.test.evil.example", False),
        ("ws", "evil.example", "http://evil.example", False),  # a Host outside ALLOWED_HOSTS
        ("ws", None, "http://10.0.0.9:8000", False),  # no Host: the server's address, not allowed
        ("ws", "app.test", "null", False),
        ("ws", "app.test", "", False),
        ("ws", "app.test", "app.test", False),
        ("ws", "app.test", "ws://app.test", False),
    ],
)
def test_origin_allowed_is_the_handshakes_own_origin(scheme, host, origin, allowed):
    with override_settings(**ALLOWED):
        assert origin_allowed(handshake(host, scheme), origin) is allowed


def test_origin_allowed_with_allowed_hosts_wildcard_still_needs_the_handshakes_own_origin():
    with override_settings(ALLOWED_HOSTS=["*"], CSRF_TRUSTED_ORIGINS=[]):
        assert origin_allowed(handshake("app.test"), "http://app.test") is True
        assert origin_allowed(handshake("app.test"), "https://evil.example") is False
        assert origin_allowed(handshake("evil.example"), "https://evil.example") is False


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://partner.test:8443", True),
        ("https://partner.test", False),
        ("http://partner.test", False),
        ("https://partner.test:9999", False),
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", True),  # Django's CSRF check: *.example.com covers the domain itself.
        ("https://app.example.com:8443", False),  # as in Django's CSRF check: the wildcard names no port
        ("http://app.example.com", False),
        ("https://evilexample.com", False),
        ("https://example.com.evil.test", False),
        ("ftp://app.example.com", False),
    ],
)
def test_origin_allowed_follows_csrf_trusted_origins(origin, allowed):
    trusted = ["https://partner.test:8443", "https://*.example.com"]
    with override_settings(ALLOWED_HOSTS=["app.test"], CSRF_TRUSTED_ORIGINS=trusted):
        assert origin_allowed(handshake("app.test"), origin) is allowed


def test_origin_allowed_honours_secure_proxy_ssl_header_only_when_configured():
    behind_tls = handshake("app.test", "ws", x_forwarded_proto="https")
    with override_settings(**ALLOWED):
        assert origin_allowed(behind_tls, "https://app.test") is False
        assert origin_allowed(behind_tls, "http://app.test") is True
    with override_settings(**ALLOWED, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert origin_allowed(behind_tls, "https://app.test") is True
        assert origin_allowed(behind_tls, "http://app.test") is False
        assert origin_allowed(handshake("app.test", "ws", x_forwarded_proto="http"), "https://app.test") is False


def test_origin_allowed_honours_x_forwarded_host_only_when_configured():
    proxied = handshake("10.0.0.9:8000", "ws", x_forwarded_host="app.test")
    with override_settings(**ALLOWED):
        assert origin_allowed(proxied, "http://app.test") is False
    with override_settings(**ALLOWED, USE_X_FORWARDED_HOST=True):
        assert origin_allowed(proxied, "http://app.test") is True


@pytest.mark.parametrize(
    ("debug", "host", "origin", "allowed"),
    [
        (True, "localhost:8000", "http://localhost:8000", True),
        (True, "app.localhost", "http://app.localhost", True),
        (True, "127.0.0.1:8000", "http://127.0.0.1:8000", True),
        (True, "[::1]:8000", "http://[::1]:8000", True),
        (True, "localhost:8000", "http://localhost:3000", False),
        (True, "localhost:8000", "https://evil.example", False),
        (False, "localhost:8000", "http://localhost:8000", False),
    ],
)
def test_origin_allowed_with_empty_allowed_hosts_is_local_only_in_debug(debug, host, origin, allowed):
    with override_settings(ALLOWED_HOSTS=[], CSRF_TRUSTED_ORIGINS=[], DEBUG=debug):
        assert origin_allowed(handshake(host), origin) is allowed


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("host", ["app.test", "app.test:8000", "intranet.corp.test", "evil.example"])
@pytest.mark.parametrize(
    "origin",
    [
        "http://app.test",
        "https://app.test",
        "http://app.test:8000",
        "https://app.test:8000",
        "http://intranet.corp.test",
        "https://evil.example",
        "http://evil.example",
        "https://partner.test:8443",
        "https://x.example.com",
        "https://example.com:8443",
        "null",
    ],
)
@pytest.mark.parametrize("allowed_hosts", [["app.test", ".corp.test"], ["*"]])
def test_origin_allowed_agrees_with_djangos_csrf_check(rf, secure, host, origin, allowed_hosts):
    trusted = ["https://partner.test:8443", "https://*.example.com"]
    with override_settings(ALLOWED_HOSTS=allowed_hosts, CSRF_TRUSTED_ORIGINS=trusted):
        request = rf.post("/", HTTP_HOST=host, HTTP_ORIGIN=origin, secure=secure)
        django_says = CsrfViewMiddleware(lambda request: HttpResponse())._origin_verified(request)

        assert origin_allowed(handshake(host, "wss" if secure else "ws"), origin) is django_says


# client_address ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "address"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("2001:db8:1:2:3:4:5:6", 50000), "2001:db8:1:2::/64"),  # a host holds a whole /64
        (("::ffff:203.0.113.7", 50000), "203.0.113.7"),
        (None, "unknown"),
        (("not an address", 0), "not an address"),
    ],
)
def test_client_address_is_the_scopes_client(client, address):
    assert client_address({"type": "websocket", "client": client, "headers": []}) == address


def test_client_address_reads_a_proxy_header_only_when_a_setting_names_it(settings):
    scope = {
        "client": ("10.0.0.2", 50000),
        "headers": [(b"x-real-ip", b"203.0.113.7"), (b"x-forwarded-for", b"198.51.100.1, 203.0.113.8")],
    }
    assert client_address(scope) == "10.0.0.2"
    settings.DRF_LIVE = {"CLIENT_ADDRESS_HEADER": "X-Real-IP"}
    assert client_address(scope) == "203.0.113.7"
    # The last value is the one the nearest proxy added: the others are the client's word.
    settings.DRF_LIVE = {"CLIENT_ADDRESS_HEADER": "X-Forwarded-For"}
    assert client_address(scope) == "203.0.113.8"
    settings.DRF_LIVE = {"CLIENT_ADDRESS_HEADER": "X-Missing"}
    assert client_address(scope) == "10.0.0.2"


# The handshake, over the full stack ---------------------------------------------------------

GOOD_ORIGIN = (b"origin", b"http://testserver")
EVIL_ORIGIN = (b"origin", b"https://evil.example")
HOST = (b"host", b"testserver")  # what a browser sends: GOOD_ORIGIN is this handshake's own origin


@pytest.fixture
def session_cookie(db: Any) -> Any:
    """``await session_cookie(user)``: a ``Cookie`` handshake header carrying a logged-in session of ``user``."""

    @database_sync_to_async
    def cookie(user: Any) -> tuple[bytes, bytes]:
        client = Client()
        client.force_login(user)
        key = client.cookies[settings.SESSION_COOKIE_NAME].value
        return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode())

    return cookie


async def request(communicator: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await communicator.send_json_to(frame)
    return await communicator.receive_json_from()


async def whoami(communicator: Any, user: Any) -> dict[str, Any]:
    """Subscribe to ``user``: the reply shows ``email`` only if the socket is that user."""
    return await request(
        communicator, {"action": "subscribe", "model": "api.user", "id": str(user.pk), "request_id": 1}
    )


@database_sync_to_async
def log_out(client: Client) -> None:
    client.logout()


async def assert_authenticated_as(communicator: Any, user: Any) -> None:
    reply = await whoami(communicator, user)
    assert reply["type"] == "SUBSCRIBED", reply
    assert reply["payload"]["id"] == str(user.pk)
    assert reply["payload"]["email"] == user.email


async def assert_not_authenticated(communicator: Any, user: Any) -> None:
    reply = await whoami(communicator, user)
    assert reply["type"] == "ERROR"
    assert reply["payload"]["code"] == "not_authenticated"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_cookie_with_allowed_origin_authenticates(connect, domain, session_cookie):
    alice = domain["alice"]

    socket = await connect(headers=[await session_cookie(alice), GOOD_ORIGIN, HOST])

    await assert_authenticated_as(socket, alice)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_cookie_with_trusted_wildcard_origin_authenticates(connect, domain, session_cookie):
    alice = domain["alice"]

    with override_settings(ALLOWED_HOSTS=["testserver"], CSRF_TRUSTED_ORIGINS=["https://*.example.com"]):
        socket = await connect(headers=[await session_cookie(alice), (b"origin", b"https://app.example.com")])

    await assert_authenticated_as(socket, alice)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_cookie_with_foreign_origin_is_refused(connect, domain, session_cookie):
    socket = await connect(headers=[await session_cookie(domain["alice"]), EVIL_ORIGIN], accepted=False)

    assert await socket.receive_nothing()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_cookie_without_origin_authenticates(connect, domain, session_cookie):
    alice = domain["alice"]

    socket = await connect(headers=[await session_cookie(alice)])

    await assert_authenticated_as(socket, alice)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_unknown_session_cookie_is_accepted_but_not_authenticated(connect, domain):
    socket = await connect(headers=[(b"cookie", b"sessionid=nosuchsession0000000000000000000"), GOOD_ORIGIN, HOST])

    await assert_not_authenticated(socket, domain["alice"])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_session_without_a_user_is_not_authenticated(connect, domain):
    @database_sync_to_async
    def anonymous_session() -> str:
        session = SessionStore()
        session["something"] = "else"
        session.create()
        return session.session_key

    key = await anonymous_session()
    socket = await connect(headers=[(b"cookie", f"sessionid={key}".encode()), GOOD_ORIGIN, HOST])

    await assert_not_authenticated(socket, domain["alice"])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", [b"Token wrong", b"Token ", b"Token a b"])
async def test_wrong_token_header_is_refused(connect, domain, token_for, value):
    await database_sync_to_async(token_for)(domain["alice"])

    socket = await connect(headers=[(b"authorization", value)], accepted=value == b"Token ")

    if value == b"Token ":
        # No key at all is no token header: an anonymous socket, as without the header.
        await assert_not_authenticated(socket, domain["alice"])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_token_header_of_inactive_user_is_refused(connect, domain, token_for):
    alice = domain["alice"]
    key = await database_sync_to_async(token_for)(alice)
    alice.is_active = False
    await database_sync_to_async(alice.save)()

    await connect(token=key, accepted=False)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_token_header_authenticates(connect, domain, token_for):
    bob = domain["bob"]

    socket = await connect(token=await database_sync_to_async(token_for)(bob))

    await assert_authenticated_as(socket, bob)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_token_header_wins_over_session_cookie(connect, domain, token_for, session_cookie):
    alice, bob = domain["alice"], domain["bob"]

    socket = await connect(
        token=await database_sync_to_async(token_for)(bob), headers=[await session_cookie(alice), GOOD_ORIGIN, HOST]
    )

    await assert_authenticated_as(socket, bob)
    as_alice_seen_by_bob = await request(
        socket, {"action": "subscribe", "model": "api.user", "id": str(alice.pk), "request_id": 2}
    )
    assert as_alice_seen_by_bob["type"] == "SUBSCRIBED"
    assert "email" not in as_alice_seen_by_bob["payload"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_wrong_token_header_is_refused_even_with_a_good_session_cookie(connect, domain, session_cookie):
    await connect(
        headers=[(b"authorization", b"Token wrong"), await session_cookie(domain["alice"]), GOOD_ORIGIN, HOST],
        accepted=False,
    )


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_token_header_with_foreign_origin_is_accepted(connect, domain, token_for):
    # The Origin check guards the session cookie; a token is not sent by a browser on its own.
    bob = domain["bob"]

    socket = await connect(token=await database_sync_to_async(token_for)(bob), headers=[EVIL_ORIGIN])

    await assert_authenticated_as(socket, bob)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_logging_out_closes_the_sessions_sockets_with_4001(connect, domain, token_for):
    alice = domain["alice"]

    @database_sync_to_async
    def logged_in_client() -> Client:
        client = Client()
        client.force_login(alice)
        return client

    client = await logged_in_client()
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    by_session = await connect(headers=[cookie, GOOD_ORIGIN, HOST])
    by_token = await connect(token=await database_sync_to_async(token_for)(alice))
    await assert_authenticated_as(by_session, alice)

    await log_out(client)

    assert await by_session.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
    assert await by_token.receive_nothing(timeout=0.2)
    await assert_authenticated_as(by_token, alice)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin", [b"http://testserver:9999", b"https://testserver", b"http://localhost:3000", b"http://evil.testserver"]
)
async def test_session_cookie_from_another_port_scheme_or_host_of_this_site_is_refused(
    connect, domain, session_cookie, origin
):
    # Each names a host in ALLOWED_HOSTS (or under one), but is not this handshake's own origin.
    with override_settings(ALLOWED_HOSTS=["testserver", "localhost", ".testserver"]):
        socket = await connect(
            headers=[await session_cookie(domain["alice"]), (b"origin", origin), HOST], accepted=False
        )

    assert await socket.receive_nothing()
