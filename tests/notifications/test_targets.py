"""Targets, their stream names (the channel events travel on) and the socket groups (``notifications/targets.py``)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from channels.layers import BaseChannelLayer
from django.contrib.auth.models import AnonymousUser
from django.test import override_settings

from notifications.streams import control_channel
from notifications.targets import ANONYMOUS, Target, session_group, token_group, user_group, user_key

LAYER = BaseChannelLayer()
VALID = re.compile(r"^[a-zA-Z\d\-_.]+$")


def assert_valid(name: str) -> None:
    assert VALID.match(name), name
    assert len(name) < 100, name
    assert LAYER.require_valid_group_name(name)


ODD_VALUES = [
    "Xk3Lp9q",
    "",
    " ",
    "a b",
    "a/b",
    "a.b",
    "a_b",
    "ä",
    "💥",
    "x" * 40,
    "x" * 41,
    "x" * 500,
    "../../etc/passwd",
    "drf-live.api.task.o.x",
    "*",
    "\n",
]


def test_object_stream_name_is_readable() -> None:
    assert Target("api.task", id="Xk3Lp9q").stream == "drf-live.api.task.o.Xk3Lp9q"


def test_collection_stream_name_is_readable() -> None:
    target = Target.collection("api.task", {"project": "a8Bn2Qz"})

    assert target.stream == "drf-live.api.task.c.project-a8Bn2Qz"


@pytest.mark.parametrize("value", ODD_VALUES)
def test_stream_names_of_odd_ids_are_valid(value: str) -> None:
    assert_valid(Target("api.task", id=value).stream)


@pytest.mark.parametrize("value", ODD_VALUES)
def test_stream_names_of_odd_filter_values_are_valid(value: str) -> None:
    target = Target.collection("api.task", {"project": value, "assignee": value})

    assert_valid(target.stream)


def test_stream_names_of_many_long_filters_are_valid() -> None:
    target = Target.collection("api.task", {f"field{i}": "v" * 40 for i in range(10)})

    assert_valid(target.stream)


@override_settings(DRF_LIVE={"PREFIX": "p" * 150})
def test_names_are_valid_with_a_long_prefix() -> None:
    assert_valid(Target("api.task", id="Xk3Lp9q").stream)
    assert_valid(Target.collection("api.task", {"project": "a8Bn2Qz"}).stream)
    assert_valid(user_group("a8Bn2Qz"))
    assert_valid(token_group("k" * 40))
    assert_valid(session_group("s" * 32))


@override_settings(DRF_LIVE={"PREFIX": "my-app"})
def test_prefix_setting_is_read_lazily() -> None:
    assert Target("api.task", id="Xk3Lp9q").stream == "my-app.api.task.o.Xk3Lp9q"
    assert user_group("a8Bn2Qz") == "my-app.user.a8Bn2Qz"
    assert control_channel() == "my-app.control"


@override_settings(DRF_LIVE={"PREFIX": "my app!"})
def test_an_invalid_prefix_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="PREFIX"):
        Target("api.task", id="Xk3Lp9q").stream  # noqa: B018
    with pytest.raises(ValueError, match="PREFIX"):
        user_group("a8Bn2Qz")


def all_targets() -> list[Target]:
    targets = [Target("api.task", id=value) for value in ODD_VALUES]
    targets += [Target("api.project", id=value) for value in ODD_VALUES]
    targets += [Target.collection("api.task", {"project": value}) for value in ODD_VALUES]
    targets += [Target.collection("api.task", {"assignee": value}) for value in ODD_VALUES]
    targets += [
        Target.collection("api.task", {"project": a, "assignee": b})
        for a, b in itertools.product(ODD_VALUES[:6], repeat=2)
    ]
    # Long values that differ only at their end.
    targets += [Target("api.task", id="y" * 200 + str(i)) for i in range(20)]
    targets += [Target.collection("api.task", {"project": "z" * 200 + str(i)}) for i in range(20)]
    return targets


def test_distinct_targets_never_share_a_stream() -> None:
    targets = all_targets()

    names = [target.stream for target in targets]

    assert len(set(targets)) == len(targets)
    assert len(set(names)) == len(names)


def test_no_stream_is_the_control_channel_or_a_socket_group() -> None:
    # Streams, the control channel and the groups that address sockets by key share one namespace.
    streams = {target.stream for target in all_targets()}
    others = {control_channel()}
    others |= {user_group(value) for value in ODD_VALUES}
    others |= {token_group(value) for value in ODD_VALUES}
    others |= {session_group(value) for value in ODD_VALUES}

    assert streams.isdisjoint(others)


def test_an_id_that_looks_like_a_shortened_one_does_not_collide() -> None:
    # "a/b" is not a valid name part, so it is shortened to a stand-in; an id that
    # spells that very stand-in must still get a stream of its own.
    odd = Target("api.task", id="a/b").stream
    stand_in = odd.removeprefix("drf-live.api.task.o.")

    assert stand_in != "a/b"
    assert Target("api.task", id=stand_in).stream != odd


def test_a_collection_and_an_object_have_different_streams() -> None:
    obj = Target("api.task", id="project-a8Bn2Qz")
    collection = Target.collection("api.task", {"project": "a8Bn2Qz"})

    assert obj.stream != collection.stream


def test_filter_order_does_not_matter() -> None:
    one = Target.collection("api.task", {"project": "a", "assignee": "b"})
    other = Target.collection("api.task", {"assignee": "b", "project": "a"})

    assert one == other
    assert one.stream == other.stream


def test_target_meta_names_the_target_on_the_wire() -> None:
    assert Target("api.task", id="Xk3").meta() == {"model": "api.task", "id": "Xk3"}
    assert Target.collection("api.task", {"project": "a8B"}).meta() == {
        "model": "api.task",
        "filter": {"project": "a8B"},
    }
    assert Target.collection("api.task", {"project": "a8B"}).is_collection
    assert not Target("api.task", id="Xk3").is_collection


def test_user_group_is_valid_and_names_the_user() -> None:
    name = user_group("a8Bn2Qz")

    assert_valid(name)
    assert name == "drf-live.user.a8Bn2Qz"
    assert user_group("other") != name


@pytest.mark.parametrize("make", [token_group, session_group])
def test_credential_groups_are_valid_and_do_not_contain_the_secret(make: Any) -> None:
    secret = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"

    name = make(secret)

    assert_valid(name)
    assert secret not in name
    assert secret[:8] not in name
    assert make(secret) == name
    assert make(secret[:-1] + "c") != name


def test_token_and_session_groups_of_one_value_differ() -> None:
    assert token_group("abc") != session_group("abc")


# User keys: how the stream store counts subscribers --------------------------------


class FakeUser:
    is_authenticated = True

    def __init__(self, pk: Any) -> None:
        self.pk = pk


def test_user_key_of_an_authenticated_user_is_their_primary_key_as_text() -> None:
    assert user_key(FakeUser(42)) == "42"
    assert user_key(FakeUser("a8Bn2Qz")) == "a8Bn2Qz"


@pytest.mark.parametrize("user", [AnonymousUser(), None])
def test_user_key_of_an_anonymous_socket_is_anonymous(user: Any) -> None:
    assert user_key(user) == ANONYMOUS


@pytest.mark.django_db
def test_no_user_of_the_example_domain_has_the_anonymous_key(make_user: Any) -> None:
    # A hashid never contains "-": an anonymous socket never counts as a user.
    users = [make_user(f"user{n}") for n in range(20)]

    assert ANONYMOUS not in {user_key(user) for user in users}
    assert all(user_key(user) == str(user.pk) for user in users)
