"""Session sockets end when Django ends the session (``notifications.sessions`` and its receivers).

Each way Django stops accepting a session cookie on a request (its row deleted,
flushed, cycled, cleared when expired; the user's session auth hash changed by
a password change) closes that session's sockets with 4001, after commit;
token sockets of the same user, and sessions that stay valid, are untouched.
What no signal reports is found by the periodic re-validation.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.http import HttpRequest
from django.test import Client, override_settings
from django.utils import timezone

from notifications import sessions

pytestmark = [pytest.mark.django_db(transaction=True)]

HOST = (b"host", b"testserver")
ORIGIN = (b"origin", b"http://testserver")
CLOSED = {"type": "websocket.close", "code": 4001}


@database_sync_to_async
def log_in(user: Any) -> str:
    """A new session of ``user`` (as Django's login makes one); its key."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def cookie(key: str) -> tuple[bytes, bytes]:
    return (b"cookie", f"sessionid={key}".encode())


async def session_socket(connect: Any, key: str) -> Any:
    socket = await connect(headers=[cookie(key), ORIGIN, HOST])
    await assert_open(socket)
    return socket


async def assert_open(socket: Any) -> None:
    await socket.send_json_to({"action": "ping", "request_id": "open?"})
    assert await socket.receive_json_from(timeout=3) == {
        "type": "PONG",
        "payload": None,
        "meta": {"request_id": "open?"},
    }


async def assert_closed(socket: Any, timeout: float = 2) -> None:
    assert await socket.receive_output(timeout=timeout) == CLOSED
    assert await socket.receive_nothing(timeout=0.1)


def expire(key: str) -> None:
    Session.objects.filter(pk=key).update(expire_date=timezone.now() - datetime.timedelta(days=1))


def flush(key: str) -> None:
    store = SessionStore(key)
    store.load()
    store.flush()


def cycle(key: str) -> None:
    store = SessionStore(key)
    store.load()
    store.cycle_key()


def clear_expired(key: str) -> None:
    expire(key)
    call_command("clearsessions")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "end_session",
    [lambda key: Session.objects.filter(pk=key).delete(), flush, cycle, clear_expired],
    ids=["deleted", "flushed", "cycled", "expired-and-cleared"],
)
async def test_ending_the_session_row_closes_its_sockets_with_4001(connect, domain, token_for, end_session):
    alice = domain["alice"]
    key, other_key = await log_in(alice), await log_in(alice)
    first, second = await session_socket(connect, key), await session_socket(connect, key)
    other_session = await session_socket(connect, other_key)
    by_token = await connect(token=await database_sync_to_async(token_for)(alice))

    await database_sync_to_async(end_session)(key)

    await assert_closed(first)
    await assert_closed(second)
    assert await other_session.receive_nothing(timeout=0.2)
    await assert_open(other_session)
    await assert_open(by_token)


@pytest.mark.asyncio
async def test_changing_the_password_closes_every_session_socket_of_the_user_but_no_token_socket(
    connect, domain, token_for
):
    alice, bob = domain["alice"], domain["bob"]
    sockets = [await session_socket(connect, await log_in(alice)) for _ in range(2)]
    by_token = await connect(token=await database_sync_to_async(token_for)(alice))
    bobs = await session_socket(connect, await log_in(bob))

    @database_sync_to_async
    def change_password() -> None:
        user = type(alice).objects.get(pk=alice.pk)
        user.set_password("a new one")
        user.save()

    await change_password()

    for socket in sockets:
        await assert_closed(socket)
    await assert_open(by_token)  # DRF tokens outlive a password change, in REST too
    await assert_open(bobs)
    # A session made after the change is valid, and its socket stays open.
    fresh = await session_socket(connect, await log_in(alice))
    assert await fresh.receive_nothing(timeout=0.2)


@pytest.mark.asyncio
async def test_the_session_that_changed_the_password_continues_under_its_new_key(connect, domain):
    alice = domain["alice"]
    key = await log_in(alice)
    old = await session_socket(connect, key)

    @database_sync_to_async
    def change_password_as_django_views_do() -> str:
        # PasswordChangeView: form.save() (set_password, save), then update_session_auth_hash().
        user = type(alice).objects.get(pk=alice.pk)
        request = HttpRequest()
        request.session = SessionStore(key)
        request.user = user
        user.set_password("a new one")
        user.save()
        update_session_auth_hash(request, user)
        return request.session.session_key

    new_key = await change_password_as_django_views_do()

    # The old cookie is refused by Django (cycle_key() deleted its row): so is its socket.
    await assert_closed(old)
    renewed = await session_socket(connect, new_key)
    assert await renewed.receive_nothing(timeout=0.2)


@pytest.mark.asyncio
async def test_saving_the_user_without_changing_the_password_closes_nothing(connect, domain):
    alice = domain["alice"]
    socket = await session_socket(connect, await log_in(alice))

    @database_sync_to_async
    def rename() -> None:
        user = type(alice).objects.get(pk=alice.pk)
        user.display_name = "Alice"
        user.save()
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])

    await rename()

    assert await socket.receive_nothing(timeout=0.3)
    await assert_open(socket)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "invalidate",
    [
        lambda user, key: type(user).objects.filter(pk=user.pk).update(password=make_password("changed")),
        lambda user, key: type(user).objects.filter(pk=user.pk).update(is_active=False),
        lambda user, key: expire(key),
    ],
    ids=["password-by-update", "deactivated-by-update", "expired"],
)
async def test_periodic_recheck_closes_a_session_socket_that_no_signal_reported(connect, domain, settings, invalidate):
    settings.DRF_LIVE = {"SESSION_RECHECK_INTERVAL": 0.3}
    alice = domain["alice"]
    key, other_key = await log_in(alice), await log_in(domain["bob"])
    socket, other = await session_socket(connect, key), await session_socket(connect, other_key)

    await database_sync_to_async(invalidate)(alice, key)

    await assert_closed(socket, timeout=3)
    assert await other.receive_nothing(timeout=0.5)  # re-checked at least once, and still valid
    await assert_open(other)


@pytest.mark.asyncio
async def test_cache_session_engine_relies_on_the_periodic_recheck(connect, domain, settings):
    settings.DRF_LIVE = {"SESSION_RECHECK_INTERVAL": 0.3}
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache"):
        key = await log_in(domain["alice"])
        socket = await session_socket(connect, key)

        @database_sync_to_async
        def log_out_everywhere() -> None:
            from django.contrib.sessions.backends.cache import SessionStore as CacheStore

            CacheStore(key).delete()  # no signal: no row

        await log_out_everywhere()

        await assert_closed(socket, timeout=3)


@pytest.mark.asyncio
async def test_without_recheck_an_unsignalled_change_keeps_the_socket(connect, domain, settings):
    # The other side of the setting: None turns the backstop off (docs/security.md says so).
    settings.DRF_LIVE = {"SESSION_RECHECK_INTERVAL": None}
    alice = domain["alice"]
    key = await log_in(alice)
    socket = await session_socket(connect, key)

    await database_sync_to_async(expire)(key)

    assert await socket.receive_nothing(timeout=0.5)


@pytest.mark.asyncio
async def test_a_session_signed_before_a_secret_key_rotation_is_accepted_and_not_flushed(connect, domain, settings):
    # Django accepts a session whose auth hash was made with one of SECRET_KEY_FALLBACKS;
    # channels' get_user() would flush it, logging the browser out of the REST API too.
    settings.DRF_LIVE = {"SESSION_RECHECK_INTERVAL": 0.2}
    alice = domain["alice"]
    key = await log_in(alice)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-this-test-only-0123456789"

    socket = await connect(headers=[cookie(key), ORIGIN, HOST])
    await socket.send_json_to({"action": "subscribe", "model": "api.user", "id": str(alice.pk), "request_id": 1})
    reply = await socket.receive_json_from(timeout=3)

    assert reply["type"] == "SUBSCRIBED" and reply["payload"]["email"] == alice.email, reply
    assert await socket.receive_nothing(timeout=0.8)  # re-validated a few times, and still valid
    assert await database_sync_to_async(Session.objects.filter(pk=key).exists)()


def test_replaced_key_names_the_hash_a_user_had_when_loaded(domain):
    alice = type(domain["alice"]).objects.get(pk=domain["alice"].pk)
    before = sessions.user_key(alice)
    assert sessions.replaced_key(alice) is None

    alice.display_name = "Alice"
    assert sessions.replaced_key(alice) is None
    alice.set_password("changed")
    assert sessions.replaced_key(alice) == before != sessions.user_key(alice)

    unsaved = type(alice)(username="new")
    assert sessions.replaced_key(unsaved) is None
