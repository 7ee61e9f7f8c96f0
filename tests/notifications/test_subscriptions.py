"""The serializers that validate subscribe and unsubscribe requests (``notifications/subscriptions.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from api.models import Project, Task
from notifications.registry import site
from notifications.subscriptions import SubscriptionSerializer, TargetSerializer, error_code
from notifications.targets import Target

pytestmark = [pytest.mark.django_db]


def subscribe(user: Any, **data: Any) -> SubscriptionSerializer:
    serializer = SubscriptionSerializer(data=data, context={"user": user, "registry": site})
    serializer.is_valid()
    return serializer


def raw_id(model: type, hashid: str) -> int:
    """The integer key behind a hashid, as a client must never send it."""
    return model._meta.pk.get_hashid(hashid).id


# invalid --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({}, ["model"]),
        ({"id": "Xk3Lp9q"}, ["model"]),
        ({"model": 5, "id": "Xk3Lp9q"}, ["model"]),
        ({"model": None, "id": "Xk3Lp9q"}, ["model"]),
        ({"model": ["api.task"], "id": "Xk3Lp9q"}, ["model"]),
        ({"model": "api.task", "id": 123}, ["id"]),
        ({"model": "api.task", "id": []}, ["id"]),
        ({"model": "api.task", "id": {"pk": 1}}, ["id"]),
        ({"model": "api.task", "id": ""}, ["id"]),
        ({"model": "api.task", "id": "x" * 101}, ["id"]),
        ({"model": "api.task", "filter": "x"}, ["filter"]),
        ({"model": "api.task", "filter": {"project": 5}}, ["filter"]),
        ({"model": "api.task", "id": "Xk3Lp9q", "filter": {"project": "a8Bn2Qz"}}, ["filter", "id"]),
        ({"model": "api.task", "id": "TASK", "since": "3", "epoch": "e"}, ["since"]),
        ({"model": "api.task", "id": "TASK", "since": True, "epoch": "e"}, ["since"]),
        ({"model": "api.task", "id": "TASK", "since": -1, "epoch": "e"}, ["since"]),
        ({"model": "api.task", "id": "TASK", "since": 1.5, "epoch": "e"}, ["since"]),
        ({"model": "api.task", "id": "TASK", "since": 3, "epoch": 7}, ["epoch"]),
        ({"model": "api.task", "id": "TASK", "epoch": "e"}, ["epoch", "since"]),
        ({"model": "api.task", "id": "TASK", "since": 3}, ["epoch", "since"]),
    ],
)
def test_malformed_requests_are_invalid_and_name_their_fields(
    domain: dict[str, Any], data: dict[str, Any], fields: list[str]
) -> None:
    if data.get("id") == "TASK":
        data = {**data, "id": domain["task"].pk}

    serializer = subscribe(domain["alice"], **data)

    assert error_code(serializer.errors) == ("invalid", fields)


@pytest.mark.parametrize("data", [{"model": "api.task"}, {"model": "api.task", "filter": {}}])
def test_neither_id_nor_filter_names_the_unfiltered_collection(domain: dict[str, Any], data: dict[str, Any]) -> None:
    serializer = subscribe(domain["bob"], **data)

    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["target"] == Target.collection("api.task", {})
    assert serializer.get_group_name() == "drf-live.api.task.all"
    assert list(serializer.validated_data["instance"]) == [domain["task"]]


def test_filter_on_an_undeclared_field_is_invalid(domain: dict[str, Any]) -> None:
    serializer = subscribe(domain["alice"], model="api.task", filter={"title": "Write docs"})

    assert error_code(serializer.errors) == ("invalid", ["filter"])
    assert "title" in str(serializer.errors["filter"])


# not_found: one answer for every way of naming nothing ----------------------------


def not_found_cases(domain: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    deleted = Task.objects.create(project=domain["website"], title="Gone")
    deleted_id = deleted.pk
    deleted.delete()
    return {
        "unknown model": (domain["bob"], {"model": "api.nope", "id": domain["task"].pk}),
        "unregistered model": (domain["bob"], {"model": "auth.group", "id": domain["task"].pk}),
        "junk label": (domain["bob"], {"model": "a.b.c", "id": domain["task"].pk}),
        "bad hashid": (domain["bob"], {"model": "api.task", "id": "zzzzzzz"}),
        "bare integer": (domain["bob"], {"model": "api.task", "id": str(raw_id(Task, domain["task"].pk))}),
        "missing object": (domain["bob"], {"model": "api.task", "id": deleted_id}),
        "forbidden project": (domain["bob"], {"model": "api.project", "id": domain["secret"].pk}),
        "forbidden task": (domain["bob"], {"model": "api.task", "id": domain["hidden"].pk}),
        "forbidden user": (domain["bob"], {"model": "api.user", "id": domain["carol"].pk}),
    }


def test_every_way_of_naming_nothing_gives_the_same_not_found(domain: dict[str, Any]) -> None:
    results = {name: subscribe(user, **data) for name, (user, data) in not_found_cases(domain).items()}

    for name, serializer in results.items():
        assert not serializer.is_valid(), name
        assert error_code(serializer.errors) == ("not_found", []), name
    # Not only the code: the whole answer is the same, so nothing can be told apart.
    answers = {repr(serializer.errors) for serializer in results.values()}
    assert len(answers) == 1


def test_the_bare_integer_of_a_visible_object_is_not_found(domain: dict[str, Any]) -> None:
    task = domain["task"]

    serializer = subscribe(domain["alice"], model="api.task", id=str(raw_id(Task, task.pk)))

    assert error_code(serializer.errors) == ("not_found", [])
    assert subscribe(domain["alice"], model="api.task", id=task.pk).is_valid()


def test_the_owner_sees_the_project_the_outsider_does_not(domain: dict[str, Any]) -> None:
    secret = domain["secret"]

    assert subscribe(domain["carol"], model="api.project", id=secret.pk).is_valid()
    assert error_code(subscribe(domain["alice"], model="api.project", id=secret.pk).errors) == ("not_found", [])


# valid ----------------------------------------------------------------------


@pytest.mark.parametrize("label", ["api.task", "api.Task"])
def test_a_valid_subscription_carries_instance_target_and_group(domain: dict[str, Any], label: str) -> None:
    task = domain["task"]

    serializer = subscribe(domain["bob"], model=label, id=task.pk, request_id=1)

    assert serializer.is_valid(), serializer.errors
    data = serializer.validated_data
    assert data["instance"] == task
    assert data["target"] == Target("api.task", id=task.pk)
    # The group is the target's stream channel: one for every audience (the relay picks frames per user).
    assert data["group"] == Target("api.task", id=task.pk).stream
    assert data["group"] == f"drf-live.api.task.o.{task.pk}"
    assert data["registration"] is site.get(Task)
    assert serializer.get_group_name() == data["group"]


def test_since_and_epoch_are_accepted_together(domain: dict[str, Any]) -> None:
    serializer = subscribe(domain["alice"], model="api.project", id=domain["website"].pk, since=0, epoch="abc")

    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["since"] == 0
    assert serializer.validated_data["epoch"] == "abc"
    assert serializer.validated_data["instance"] == domain["website"]


def test_get_group_name_before_is_valid_says_what_to_do(domain: dict[str, Any]) -> None:
    serializer = SubscriptionSerializer(
        data={"model": "api.task", "id": domain["task"].pk}, context={"user": domain["alice"]}
    )

    with pytest.raises(AssertionError, match="is_valid"):
        serializer.get_group_name()


def test_a_user_and_others_listen_on_the_same_channel(domain: dict[str, Any]) -> None:
    alice = domain["alice"]

    own = subscribe(alice, model="api.user", id=alice.pk)
    other = subscribe(domain["bob"], model="api.user", id=alice.pk)

    assert own.is_valid(), own.errors
    assert other.is_valid(), other.errors
    # Audiences no longer split channels: each event carries one frame per audience.
    assert own.get_group_name() == other.get_group_name() == f"drf-live.api.user.o.{alice.pk}"


def test_the_registry_comes_from_the_context(domain: dict[str, Any]) -> None:
    from notifications.registry import Registry

    serializer = SubscriptionSerializer(
        data={"model": "api.task", "id": domain["task"].pk}, context={"user": domain["alice"], "registry": Registry()}
    )

    assert not serializer.is_valid()
    assert error_code(serializer.errors) == ("not_found", [])


# TargetSerializer (unsubscribe) ----------------------------------------------------


def test_target_serializer_names_a_target_without_looking_it_up(domain: dict[str, Any]) -> None:
    serializer = TargetSerializer(data={"model": "api.Project", "id": domain["secret"].pk}, context={"registry": site})

    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["target"] == Target("api.project", id=domain["secret"].pk)
    assert serializer.validated_data["registration"] is site.get(Project)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"id": "Xk3Lp9q"}, ("invalid", ["model"])),
        ({"model": "api.task", "id": 5}, ("invalid", ["id"])),
        ({"model": "api.nope", "id": "Xk3Lp9q"}, ("not_found", [])),
        ({"model": 5, "id": "Xk3Lp9q"}, ("invalid", ["model"])),
    ],
)
def test_target_serializer_errors(data: dict[str, Any], expected: tuple[str, list[str]]) -> None:
    serializer = TargetSerializer(data=data, context={"registry": site})

    assert not serializer.is_valid()
    assert error_code(serializer.errors) == expected


# Collections ---------------------------------------------------------------------


def test_a_valid_collection_subscription_carries_the_visible_queryset(domain: dict[str, Any]) -> None:
    website, task = domain["website"], domain["task"]

    serializer = subscribe(domain["bob"], model="api.task", filter={"project": website.pk})

    assert serializer.is_valid(), serializer.errors
    data = serializer.validated_data
    assert list(data["instance"]) == [task]
    assert data["target"] == Target.collection("api.task", {"project": website.pk})
    assert serializer.get_group_name() == f"drf-live.api.task.c.project-{website.pk}"


def test_every_way_of_naming_no_collection_gives_the_same_not_found(domain: dict[str, Any]) -> None:
    bob = domain["bob"]
    cases = [
        subscribe(bob, model="api.task", filter={"project": domain["secret"].pk}),
        subscribe(bob, model="api.task", filter={"project": "zzzzzzz"}),
        subscribe(bob, model="api.task", filter={"project": str(raw_id(Project, domain["website"].pk))}),
        subscribe(bob, model="api.nope", filter={"project": domain["website"].pk}),
    ]
    answers = {repr(serializer.errors) for serializer in cases}

    assert [error_code(serializer.errors) for serializer in cases] == [("not_found", [])] * 4
    assert answers == {repr(subscribe(bob, model="api.task", id="zzzzzzz").errors)}
