"""Who a socket is: ``notifications.auth`` parsing, the Origin check, and the handshake over the full stack."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, override_settings

from notifications.auth import origin_allowed, token_from_header

ALLOWED = {"ALLOWED_HOSTS": ["app.test", ".corp.test"], "CSRF_TRUSTED_ORIGINS": []}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """The fixtures' users get passwords; hashing them properly is the slowest part of a test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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


# origin_allowed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.test", True),
        ("http://app.test", True),
        ("https://app.test:8443", True),
        ("https://corp.test", True),
        ("https://intranet.corp.test:8000", True),
        ("https://evil.example", False),
        ("https://app.test.evil.example", False),
        ("https://evilapp.test", False),
        ("https://evilcorp.test", False),
        ("ftp://app.test", False),
        ("ws://app.test", False),
        ("file://app.test", False),
        ("null", False),
        ("", False),
        ("app.test", False),
        ("https://", False),
    ],
)
def test_origin_allowed_follows_allowed_hosts(origin, allowed):
    with override_settings(**ALLOWED):
        assert origin_allowed(origin) is allowed


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
        assert origin_allowed(origin) is allowed


def test_origin_allowed_with_exact_trusted_origin_with_port():
    with override_settings(ALLOWED_HOSTS=[], DEBUG=False, CSRF_TRUSTED_ORIGINS=["https://partner.test:8443"]):
        assert origin_allowed("https://partner.test:8443") is True
        assert origin_allowed("https://partner.test") is False
        assert origin_allowed("http://partner.test:8443") is False


def test_origin_allowed_accepts_any_host_when_allowed_hosts_is_a_wildcard():
    with override_settings(ALLOWED_HOSTS=["*"], CSRF_TRUSTED_ORIGINS=[]):
        assert origin_allowed("https://anything.test") is True
        assert origin_allowed("ftp://anything.test") is False


@pytest.mark.parametrize(
    ("debug", "origin", "allowed"),
    [
        (True, "http://localhost:8000", True),
        (True, "http://app.localhost", True),
        (True, "http://127.0.0.1:8000", True),
        (True, "http://[::1]:8000", True),
        (True, "https://evil.example", False),
        (False, "http://localhost:8000", False),
    ],
)
def test_origin_allowed_with_empty_allowed_hosts_is_local_only_in_debug(debug, origin, allowed):
    with override_settings(ALLOWED_HOSTS=[], CSRF_TRUSTED_ORIGINS=[], DEBUG=debug):
        assert origin_allowed(origin) is allowed


# The handshake, over the full stack ---------------------------------------------------------

GOOD_ORIGIN = (b"origin", b"http://testserver")
EVIL_ORIGIN = (b"origin", b"https://evil.example")


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

    socket = await connect(headers=[await session_cookie(alice), GOOD_ORIGIN])

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
    socket = await connect(headers=[(b"cookie", b"sessionid=nosuchsession0000000000000000000"), GOOD_ORIGIN])

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
    socket = await connect(headers=[(b"cookie", f"sessionid={key}".encode()), GOOD_ORIGIN])

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
        token=await database_sync_to_async(token_for)(bob), headers=[await session_cookie(alice), GOOD_ORIGIN]
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
        headers=[(b"authorization", b"Token wrong"), await session_cookie(domain["alice"]), GOOD_ORIGIN], accepted=False
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
    by_session = await connect(headers=[cookie, GOOD_ORIGIN])
    by_token = await connect(token=await database_sync_to_async(token_for)(alice))
    await assert_authenticated_as(by_session, alice)

    await log_out(client)

    assert await by_session.receive_output(timeout=1) == {"type": "websocket.close", "code": 4001}
    assert await by_token.receive_nothing(timeout=0.2)
    await assert_authenticated_as(by_token, alice)
