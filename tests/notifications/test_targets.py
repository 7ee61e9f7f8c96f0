"""Targets and the group names built from them (``notifications/targets.py``)."""

from __future__ import annotations

import itertools
import re

import pytest
from channels.layers import BaseChannelLayer
from django.test import override_settings

from notifications.targets import Target, group_name, session_group, token_group, user_group

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
    "drf-live.api.task.o.x.all",
    "*",
    "\n",
]


def test_object_group_name_is_readable() -> None:
    assert group_name(Target("api.task", id="Xk3Lp9q"), "all") == "drf-live.api.task.o.Xk3Lp9q.all"


def test_collection_group_name_is_readable() -> None:
    target = Target.collection("api.task", {"project": "a8Bn2Qz"})

    assert group_name(target, "all") == "drf-live.api.task.c.project-a8Bn2Qz.all"


def test_stream_name_is_the_group_name_without_audience() -> None:
    target = Target("api.task", id="Xk3Lp9q")

    assert target.stream == "drf-live.api.task.o.Xk3Lp9q"
    assert group_name(target, "self") == f"{target.stream}.self"


@pytest.mark.parametrize("value", ODD_VALUES)
def test_group_names_of_odd_ids_are_valid(value: str) -> None:
    assert_valid(group_name(Target("api.task", id=value), "all"))


@pytest.mark.parametrize("value", ODD_VALUES)
def test_group_names_of_odd_filter_values_are_valid(value: str) -> None:
    target = Target.collection("api.task", {"project": value, "assignee": value})

    assert_valid(group_name(target, "all"))


@pytest.mark.parametrize("audience", ["all", "self", "others", "a b", "x" * 300, "é"])
def test_group_names_of_odd_audiences_are_valid(audience: str) -> None:
    assert_valid(group_name(Target("api.task", id="Xk3Lp9q"), audience))


def test_group_names_of_many_long_filters_are_valid() -> None:
    target = Target.collection("api.task", {f"field{i}": "v" * 40 for i in range(10)})

    assert_valid(group_name(target, "x" * 90))


@override_settings(DRF_LIVE={"PREFIX": "p" * 150})
def test_group_names_are_valid_with_a_long_prefix() -> None:
    assert_valid(group_name(Target("api.task", id="Xk3Lp9q"), "all"))
    assert_valid(group_name(Target.collection("api.task", {"project": "a8Bn2Qz"}), "others"))
    assert_valid(user_group("a8Bn2Qz"))
    assert_valid(token_group("k" * 40))
    assert_valid(session_group("s" * 32))


@override_settings(DRF_LIVE={"PREFIX": "my-app"})
def test_prefix_setting_is_read_lazily() -> None:
    assert group_name(Target("api.task", id="Xk3Lp9q"), "all") == "my-app.api.task.o.Xk3Lp9q.all"
    assert user_group("a8Bn2Qz") == "my-app.user.a8Bn2Qz"


@override_settings(DRF_LIVE={"PREFIX": "my app!"})
def test_an_invalid_prefix_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="PREFIX"):
        group_name(Target("api.task", id="Xk3Lp9q"), "all")


def test_distinct_targets_never_share_a_group() -> None:
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

    names = [group_name(target, "all") for target in targets]

    assert len(set(targets)) == len(targets)
    assert len(set(names)) == len(names)


def test_an_id_that_looks_like_a_shortened_one_does_not_collide() -> None:
    # "a/b" is not a valid name part, so it is shortened to a stand-in; an id that
    # spells that very stand-in must still get a group of its own.
    odd = group_name(Target("api.task", id="a/b"), "all")
    stand_in = odd.removeprefix("drf-live.api.task.o.").removesuffix(".all")

    assert group_name(Target("api.task", id=stand_in), "all") != odd


def test_a_collection_and_an_object_have_different_streams() -> None:
    obj = Target("api.task", id="project-a8Bn2Qz")
    collection = Target.collection("api.task", {"project": "a8Bn2Qz"})

    assert obj.stream != collection.stream
    assert group_name(obj, "all") != group_name(collection, "all")


def test_audiences_of_one_target_have_different_groups() -> None:
    target = Target("api.user", id="a8Bn2Qz")

    assert group_name(target, "self") != group_name(target, "others")


def test_filter_order_does_not_matter() -> None:
    one = Target.collection("api.task", {"project": "a", "assignee": "b"})
    other = Target.collection("api.task", {"assignee": "b", "project": "a"})

    assert one == other
    assert group_name(one, "all") == group_name(other, "all")


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
def test_credential_groups_are_valid_and_do_not_contain_the_secret(make: object) -> None:
    secret = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"

    name = make(secret)  # type: ignore[operator]

    assert_valid(name)
    assert secret not in name
    assert secret[:8] not in name
    assert make(secret) == name  # type: ignore[operator]
    assert make(secret[:-1] + "c") != name  # type: ignore[operator]


def test_token_and_session_groups_of_one_value_differ() -> None:
    assert token_group("abc") != session_group("abc")
