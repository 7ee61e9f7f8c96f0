"""A process reuses the user of an API token while one of its sockets holds that token (``Hub.user_of_token``).

A lookup is saved only where the control message that revokes the token, or
deactivates or deletes its user, reaches the process and makes it forget the
answer; otherwise the token is looked up as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from notifications import consumers
from notifications.hub import get_hub

from .test_consumers import deactivate, delete_tokens, request

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens looked up in the database, in order."""
    looked_up: list[str] = []
    original = consumers.authenticate_token

    async def counted(key: str) -> Any:
        looked_up.append(key)
        return await original(key)

    monkeypatch.setattr(consumers, "authenticate_token", counted)
    return looked_up


@pytest.fixture
def alice_key(domain: dict[str, Any], token_for: Any) -> str:
    return token_for(domain["alice"])


@pytest.fixture
def bob_key(domain: dict[str, Any], token_for: Any) -> str:
    return token_for(domain["bob"])


async def authenticate(connect: Any, key: str) -> tuple[Any, dict[str, Any]]:
    socket = await connect()
    reply = await request(socket, {"action": "authenticate", "token": key, "request_id": 1})
    return socket, reply


async def test_sockets_of_one_token_look_it_up_once_while_one_is_open(connect, domain, alice_key, lookups):
    replies = [(await authenticate(connect, alice_key))[1] for _ in range(4)]

    assert [reply["type"] for reply in replies] == ["AUTHENTICATED"] * 4
    assert {reply["payload"]["user"] for reply in replies} == {str(domain["alice"].pk)}
    assert lookups == [alice_key]


async def test_concurrent_sockets_of_one_token_share_one_lookup(connect, domain, alice_key, lookups):
    sockets = [await connect() for _ in range(5)]

    replies = await asyncio.gather(
        *(request(socket, {"action": "authenticate", "token": alice_key, "request_id": 1}) for socket in sockets)
    )

    assert [reply["type"] for reply in replies] == ["AUTHENTICATED"] * 5
    assert lookups == [alice_key]


async def test_each_socket_gets_a_user_object_of_its_own(connect, domain, alice_key):
    first, _ = await authenticate(connect, alice_key)
    second, _ = await authenticate(connect, alice_key)
    hub = get_hub()
    sockets = {member for members in hub.keys.values() for member in members}
    users = [member.user for member in sockets]

    assert len(users) == 2
    assert all(user.pk == domain["alice"].pk for user in users)
    assert len({id(user) for user in users}) == len(users)
    for socket in (first, second):
        assert await socket.receive_nothing(timeout=0.05)


async def test_without_a_socket_of_that_token_it_is_looked_up_again(connect, domain, alice_key, lookups):
    socket, reply = await authenticate(connect, alice_key)
    assert reply["type"] == "AUTHENTICATED"
    await socket.disconnect()

    _again, reply = await authenticate(connect, alice_key)

    assert reply["type"] == "AUTHENTICATED"
    assert lookups == [alice_key, alice_key]


async def test_a_deleted_token_is_refused_to_the_next_socket(connect, domain, alice_key, lookups):
    holder, _ = await authenticate(connect, alice_key)

    await delete_tokens(domain["alice"])
    assert await holder.receive_output(timeout=2) == {"type": "websocket.close", "code": 4001}

    _late, reply = await authenticate(connect, alice_key)
    assert reply["type"] == "ERROR"
    assert reply["payload"]["code"] == "not_authenticated"
    assert lookups == [alice_key, alice_key]


async def test_a_deactivated_user_is_refused_to_the_next_socket(connect, domain, alice_key, bob_key, lookups):
    holder, _ = await authenticate(connect, alice_key)
    bystander, _ = await authenticate(connect, bob_key)

    await deactivate(domain["alice"])
    assert await holder.receive_output(timeout=2) == {"type": "websocket.close", "code": 4001}

    _late, reply = await authenticate(connect, alice_key)
    assert reply["payload"]["code"] == "not_authenticated"
    # Another user's token stays known.
    _other, reply = await authenticate(connect, bob_key)
    assert reply["type"] == "AUTHENTICATED"
    assert lookups == [alice_key, bob_key, alice_key]
    assert await bystander.receive_nothing(timeout=0.1)


async def test_the_revocation_is_forgotten_before_the_sockets_it_closes_are_gone(connect, domain, alice_key):
    from notifications.targets import token_group

    hub = get_hub()
    holder, _ = await authenticate(connect, alice_key)
    looked_up: list[str] = []

    async def lookup(key: str) -> Any:
        looked_up.append(key)
        return None  # the token is gone from the database

    # The control message arrives; the holder's shutdown has not run yet when the next socket asks.
    hub.deliver(_control_channel(), {"type": "close", "to": [token_group(alice_key)], "code": 4001})

    assert await hub.user_of_token(alice_key, lookup) is None
    assert looked_up == [alice_key]
    assert await holder.receive_output(timeout=2) == {"type": "websocket.close", "code": 4001}


async def test_a_token_revoked_while_it_is_looked_up_is_not_remembered(connect, domain, alice_key):
    from notifications.targets import token_group

    hub = get_hub()
    started, finish = asyncio.Event(), asyncio.Event()

    async def slow_lookup(key: str) -> Any:
        started.set()
        await finish.wait()
        return domain["alice"]  # read before the revocation committed

    lookup = asyncio.ensure_future(hub.user_of_token(alice_key, slow_lookup))
    await started.wait()
    # The revocation's control message arrives while the lookup is under way.
    hub.deliver(_control_channel(), {"type": "close", "to": [token_group(alice_key)], "code": 4001})
    finish.set()

    assert (await lookup).pk == domain["alice"].pk
    # The answer may predate the revocation: the next socket looks the token up again.
    assert token_group(alice_key) not in hub.tokens


async def test_the_memory_ends_after_token_memory_seconds(connect, domain, alice_key, lookups, monkeypatch):
    from notifications import hub as hub_module

    monkeypatch.setattr(hub_module, "TOKEN_MEMORY", 0.1)
    _holder, _ = await authenticate(connect, alice_key)
    await asyncio.sleep(0.2)

    _next, reply = await authenticate(connect, alice_key)

    assert reply["type"] == "AUTHENTICATED"
    assert lookups == [alice_key, alice_key]


def _control_channel() -> str:
    from notifications.streams import control_channel

    return control_channel()
