"""The registry (``notifications/registry.py``) and the system checks that guard it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.test.utils import isolate_apps
from model_utils import FieldTracker

import notifications
from api.models import Project, Task, User
from api.views import TaskViewSet
from notifications.checks import check_registrations
from notifications.exceptions import AlreadyRegistered, NotRegistered
from notifications.models import LiveModel
from notifications.registration import Registration, Touch
from notifications.registry import Registry, site


class TaskRegistration(Registration):
    viewset = TaskViewSet


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def on_site() -> Any:
    """Register models on ``site`` for one test, and unregister them afterwards."""
    added: list[type[models.Model]] = []

    def register(
        model: type[models.Model], registration_class: type[Registration] | None = None, **options: Any
    ) -> Registration:
        registration = site.register(model, registration_class, **options)
        added.append(model)
        return registration

    yield register
    for model in added:
        if site.is_registered(model):
            site.unregister(model)


def error_ids(model: type[models.Model]) -> set[str]:
    return {message.id for message in check_registrations() if message.obj is model}


def test_register_then_get_returns_the_registration(registry: Registry) -> None:
    registration = registry.register(Task, TaskRegistration)

    assert isinstance(registration, TaskRegistration)
    assert registry.is_registered(Task)
    assert registry.get(Task) is registration
    assert registry.get_for(Task) is registration
    assert registration.model is Task
    assert registration.label == "api.task"
    assert list(registry) == [registration]


def test_unregister_forgets_the_model(registry: Registry) -> None:
    registry.register(Task, TaskRegistration)

    registry.unregister(Task)

    assert not registry.is_registered(Task)
    assert registry.get_for(Task) is None
    assert registry.get_by_label("api.task") is None


def test_registering_twice_raises_already_registered(registry: Registry) -> None:
    first = registry.register(Task, TaskRegistration)

    with pytest.raises(AlreadyRegistered, match="api.Task"):
        registry.register(Task, TaskRegistration)
    assert registry.get(Task) is first


def test_unregistering_an_unregistered_model_raises_not_registered(registry: Registry) -> None:
    with pytest.raises(NotRegistered):
        registry.unregister(Task)


def test_get_of_an_unregistered_model_raises_not_registered(registry: Registry) -> None:
    registry.register(Task, TaskRegistration)

    with pytest.raises(NotRegistered, match="api.Project"):
        registry.get(Project)
    assert registry.get_for(Project) is None


@pytest.mark.parametrize("label", ["api.task", "api.Task", "api.TASK"])
def test_get_by_label_accepts_labels_as_get_model_does(registry: Registry, label: str) -> None:
    registration = registry.register(Task, TaskRegistration)

    assert registry.get_by_label(label) is registration


@pytest.mark.parametrize(
    "label",
    [
        None,
        5,
        1.5,
        ["api.task"],
        {"api": "task"},
        b"api.task",
        "",
        "x",
        "api",
        "api.",
        ".task",
        "a.b.c",
        "api.task.extra",
        "api.nope",
        "nope.task",
        "auth.group",
        "api.project",
    ],
)
def test_get_by_label_returns_none_for_anything_not_registered(registry: Registry, label: Any) -> None:
    registry.register(Task, TaskRegistration)

    assert registry.get_by_label(label) is None


def test_the_default_site_has_the_example_models() -> None:
    assert site.get_by_label("api.task").model is Task
    assert site.get_by_label("api.Project").model is Project
    assert site.get_by_label("api.user").model is User


def test_decorator_registers_and_returns_the_class_unchanged(registry: Registry) -> None:
    class Decorated(Registration):
        viewset = TaskViewSet

    result = notifications.register(Task, site=registry)(Decorated)

    assert result is Decorated
    assert type(registry.get(Task)) is Decorated
    assert type(site.get(Task)) is not Decorated


def test_register_with_options_sets_them_on_a_subclass(registry: Registry) -> None:
    registration = registry.register(Task, viewset=TaskViewSet, event_types={"update": "TASK_CHANGED"})

    assert registration.viewset is TaskViewSet
    assert registration.get_event_type("update") == "TASK_CHANGED"
    assert registration.get_event_type("delete") == "DELETE_TASK"
    # The base class is left alone.
    assert Registration.viewset is None
    assert Registration.event_types == {}


def test_register_options_extend_the_given_registration_class(registry: Registry) -> None:
    registration = registry.register(Task, TaskRegistration, audiences=("a", "b"))

    assert isinstance(registration, TaskRegistration)
    assert registration.audiences == ("a", "b")
    assert TaskRegistration.audiences == ("all",)


def test_an_abstract_model_is_refused(registry: Registry) -> None:
    with pytest.raises(TypeError, match="abstract"):
        registry.register(LiveModel, TaskRegistration)
    assert list(registry) == []


def test_a_registration_without_viewset_is_improperly_configured(registry: Registry) -> None:
    with pytest.raises(ImproperlyConfigured, match="viewset"):
        registry.register(Task)
    assert not registry.is_registered(Task)


def test_registries_are_independent(registry: Registry) -> None:
    registry.register(Task, TaskRegistration)

    assert registry.get(Task) is not site.get(Task)
    registry.unregister(Task)
    assert site.is_registered(Task)


# System checks --------------------------------------------------------------
#
# Each check gets a wrong registration of an example model (swapped in for one
# test) and the example's own registration of the same model, which passes.


def test_checks_pass_for_the_example_domain() -> None:
    assert check_registrations() == []


def test_the_checks_run_with_django_checks() -> None:
    # `manage.py check` (and every server start) runs them: the tag is registered.
    assert checks.registry.registry.tag_exists("drf_live")
    assert [message for message in checks.run_checks(tags=["drf_live"]) if message.id.startswith("drf_live.")] == []


def test_check_flags_a_registered_model_without_live_model(on_site: Any) -> None:
    on_site(Group, viewset=TaskViewSet, tracked_fields=["name"])

    # Without LiveModel there is no FieldTracker either: "name" would go unseen (E006).
    assert error_ids(Group) == {"drf_live.E001", "drf_live.E006"}


@isolate_apps("api")
def test_check_flags_a_registered_model_without_field_tracker(on_site: Any) -> None:
    class Untracked(LiveModel):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "api"

    on_site(Untracked, viewset=TaskViewSet)

    assert error_ids(Untracked) == {"drf_live.E002"}


@isolate_apps("api")
def test_check_accepts_a_model_with_live_model_and_field_tracker(on_site: Any) -> None:
    class Tracked(LiveModel):
        name = models.CharField(max_length=10)
        tracker = FieldTracker(fields=["name"])

        class Meta:
            app_label = "api"

    on_site(Tracked, viewset=TaskViewSet)

    assert error_ids(Tracked) == set()


WRONG_REGISTRATIONS = [
    pytest.param(Task, {"m2m_fields": ["title", "nope"]}, ["drf_live.E003", "drf_live.E003"], id="m2m-not-m2m"),
    pytest.param(Task, {"filter_fields": ["title"]}, ["drf_live.E004"], id="filter-not-a-foreign-key"),
    pytest.param(Task, {"filter_fields": ["nope"]}, ["drf_live.E004"], id="filter-unknown"),
    pytest.param(Task, {"access_fields": ["project", "nope"]}, ["drf_live.E005"], id="access-unknown"),
    pytest.param(User, {"tracked_fields": ["username", "nope"]}, ["drf_live.E006"], id="tracked-unknown"),
    # first_name is a field, but the FieldTracker does not track it: its changes would go unseen.
    pytest.param(User, {"tracked_fields": ["username", "first_name"]}, ["drf_live.E006"], id="tracked-untracked"),
    pytest.param(Task, {"touches": [Touch("title")]}, ["drf_live.E007"], id="touch-not-a-relation"),
    pytest.param(Task, {"touches": [Touch("nope")]}, ["drf_live.E007"], id="touch-unknown"),
    pytest.param(Task, {"touches": [Touch("project", when=["nope"])]}, ["drf_live.E007"], id="touch-when-unknown"),
    # Project's registration tracks name and owner (its FieldTracker) and members: not `id`.
    pytest.param(Project, {"touches": [Touch("owner", when=["id"])]}, ["drf_live.E007"], id="touch-when-untracked"),
    pytest.param(
        Project,
        {"m2m_fields": [], "touches": [Touch("members")]},
        ["drf_live.E007"],
        id="touch-m2m-not-in-m2m-fields",
    ),
]


@pytest.mark.parametrize(("model", "options", "expected"), WRONG_REGISTRATIONS)
def test_check_flags_a_wrong_registration_and_passes_the_examples(
    replace_registration: Any, model: type[models.Model], options: dict[str, Any], expected: list[str]
) -> None:
    example = site.get(model)
    assert error_ids(model) == set()

    replace_registration(model, type(example), **options)
    messages = [message for message in check_registrations() if message.obj is model]

    assert sorted(message.id for message in messages) == expected
    assert all(message.level == checks.ERROR and message.hint for message in messages)
    assert all(message.msg.startswith(f"{model._meta.label}: ") for message in messages)


def test_check_names_the_wrong_field_and_what_to_do(replace_registration: Any) -> None:
    replace_registration(Task, type(site.get(Task)), access_fields=["project", "projct"])

    [message] = [message for message in check_registrations() if message.obj is Task]

    assert "'projct'" in message.msg
    assert "access_fields" in message.msg
    assert "List the fields" in message.hint


def test_check_flags_a_filter_on_a_model_that_is_not_registered(replace_registration: Any) -> None:
    # Who may see a collection is whoever may see the object its filter names: that needs a registration.
    replace_registration(Task, type(site.get(Task)), touches=[])
    replace_registration(Project, type(site.get(Project)))
    assert error_ids(Task) == set()

    site.unregister(Project)
    [message] = [message for message in check_registrations() if message.obj is Task]

    assert message.id == "drf_live.E004"
    assert "api.Project" in message.msg and "not registered" in message.msg


def test_check_flags_a_touch_of_a_model_that_is_not_registered(replace_registration: Any) -> None:
    replace_registration(Task, type(site.get(Task)), filter_fields=[])
    replace_registration(Project, type(site.get(Project)))
    assert error_ids(Task) == set()

    site.unregister(Project)
    [message] = [message for message in check_registrations() if message.obj is Task]

    assert message.id == "drf_live.E007"
    assert "'project'" in message.msg and "api.Project" in message.msg


def test_check_flags_event_types_for_a_kind_of_change_that_does_not_exist(replace_registration: Any) -> None:
    replace_registration(Task, type(site.get(Task)), event_types={"updated": "TASK_CHANGED", "delete": "TASK_GONE"})

    [message] = [message for message in check_registrations() if message.obj is Task]

    assert message.id == "drf_live.E008"
    assert message.level == checks.ERROR
    assert "'updated'" in message.msg
    assert message.hint.startswith("Did you mean 'update'?")


@pytest.mark.parametrize(
    ("name", "meant"),
    [("filter_field", "filter_fields"), ("acces_fields", "access_fields"), ("subscribeable_by", "subscribable_by")],
)
def test_check_warns_about_an_option_or_hook_one_letter_away_from_drf_lives(
    replace_registration: Any, name: str, meant: str
) -> None:
    replace_registration(Task, type(site.get(Task)), **{name: ["project"]})

    [message] = [message for message in check_registrations() if message.obj is Task]

    assert message.id == "drf_live.W009"
    assert message.level == checks.WARNING
    assert f"'{name}'" in message.msg and "never reads" in message.msg
    assert message.hint.startswith(f"Did you mean '{meant}'?")


def test_check_leaves_a_registrations_own_helpers_alone(replace_registration: Any) -> None:
    def project_members(self: Any, task: Task) -> list[Any]:
        return []

    replace_registration(Task, type(site.get(Task)), project_members=project_members, label_prefix="t")

    assert error_ids(Task) == set()
