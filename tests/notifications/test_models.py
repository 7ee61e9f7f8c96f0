"""Committed writes become events: ``LiveModel``, the outbox and the receivers.

The publisher is replaced by a recorder, so these tests see exactly what a
transaction hands over for delivery, and when.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from api.models import Project, Task, User
from api.serializers import UserSerializer
from notifications.publisher import Delivery, publisher
from notifications.registry import site
from notifications.targets import Target

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


class Recorder:
    """Stands in for ``publisher.publish``: keeps every call's deliveries."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def __call__(self, deliveries: list[Any]) -> None:
        self.calls.append(list(deliveries))

    def clear(self) -> None:
        self.calls.clear()

    @property
    def deliveries(self) -> list[Delivery]:
        return [item for call in self.calls for item in call if isinstance(item, Delivery)]

    def to(self, target: Target) -> list[Delivery]:
        """The deliveries addressed to one target, in order."""
        return [delivery for delivery in self.deliveries if delivery.target == target]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    monkeypatch.setattr(publisher, "publish", recorder)
    yield recorder


@pytest.fixture
def live(sent: Recorder, domain: dict[str, Any]) -> dict[str, Any]:
    """The committed example domain, with nothing recorded yet."""
    sent.clear()
    return domain


def task_target(task: Task) -> Target:
    return Target("api.task", id=str(task.pk))


def project_target(project: Project) -> Target:
    return Target("api.project", id=str(project.pk))


# Nothing changed, nothing sent -------------------------------------------------


def test_save_without_change_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    task = Task.objects.get(pk=live["task"].pk)

    task.save()
    with transaction.atomic():
        task.save()

    assert sent.calls == []


def test_setting_a_field_to_its_current_value_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Write docs"
    task.save()

    assert sent.calls == []


def test_change_of_an_untracked_field_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    alice = live["alice"]

    alice.first_name = "Alice"
    alice.save()
    # is_active is in the model's FieldTracker but not in the registration's tracked_fields.
    bob = live["bob"]
    bob.last_name = "B"
    bob.save(update_fields=["last_name"])

    assert sent.calls == []


# One committed change, one event -----------------------------------------------------


def test_changed_field_sends_one_update_in_autocommit(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Write the docs"
    task.save()

    assert len(sent.calls) == 1
    [update] = sent.to(task_target(task))
    assert update.type == "UPDATE_TASK"
    assert update.meta == {"changed": ["title"]}
    assert update.payloads == {
        "all": {
            "id": str(task.pk),
            "project": str(live["website"].pk),
            "title": "Write the docs",
            "done": False,
            "assignee": None,
        }
    }


def test_changed_field_sends_one_update_after_the_atomic_block_commits(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    with transaction.atomic():
        task.title = "Write the docs"
        task.save()
        assert sent.calls == []  # not before the commit

    assert len(sent.calls) == 1
    [update] = sent.to(task_target(task))
    assert update.type == "UPDATE_TASK"
    assert update.meta["changed"] == ["title"]
    assert update.payloads["all"]["title"] == "Write the docs"


def test_changed_field_is_sent_with_capture_on_commit_callbacks(
    django_capture_on_commit_callbacks: Any, sent: Recorder, live: dict[str, Any]
) -> None:
    task = live["task"]

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            task.done = True
            task.save()

    [update] = sent.to(task_target(task))
    assert update.meta["changed"] == ["done"]
    assert update.payloads["all"]["done"] is True


def test_rolled_back_save_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            task.title = "Never committed"
            task.save()
            raise RuntimeError("roll back")

    assert sent.calls == []
    assert Task.objects.get(pk=task.pk).title == "Write docs"


def test_rolled_back_delete_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            live["website"].delete()
            raise RuntimeError("roll back")

    assert sent.calls == []


def test_several_saves_in_one_transaction_send_one_event_with_the_final_state(
    sent: Recorder, live: dict[str, Any]
) -> None:
    task = live["task"]

    with transaction.atomic():
        task.title = "First"
        task.save()
        task.done = True
        task.save()
        task.title = "Final"
        task.save()

    assert len(sent.calls) == 1
    [update] = sent.to(task_target(task))
    assert update.type == "UPDATE_TASK"
    assert update.meta["changed"] == ["title", "done"]
    assert update.payloads["all"]["title"] == "Final"
    assert update.payloads["all"]["done"] is True


def test_saves_of_two_rows_in_one_transaction_send_one_event_each(sent: Recorder, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    with transaction.atomic():
        task.title = "Renamed"
        task.save()
        website.name = "Site"
        website.save()
        task.done = True
        task.save()

    assert [delivery.type for delivery in sent.to(task_target(task))] == ["UPDATE_TASK"]
    assert [delivery.type for delivery in sent.to(project_target(website))] == ["UPDATE_PROJECT"]
    assert sent.to(project_target(website))[0].meta["changed"] == ["name"]


def test_a_save_in_a_rolled_back_savepoint_then_in_the_outer_transaction_sends_one_event(
    sent: Recorder, live: dict[str, Any]
) -> None:
    task = live["task"]

    with transaction.atomic():
        try:
            with transaction.atomic():
                task.title = "Rolled back"
                task.save()
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        task.title = "Kept"
        task.save()

    [update] = sent.to(task_target(task))
    assert update.type == "UPDATE_TASK"
    assert update.meta["changed"] == ["title"]
    assert update.payloads["all"]["title"] == "Kept"
    assert len(sent.calls) == 1


def test_a_save_only_in_a_rolled_back_savepoint_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    with transaction.atomic():
        try:
            with transaction.atomic():
                task.title = "Rolled back"
                task.save()
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        website.name = "Site"
        website.save()

    assert sent.to(task_target(task)) == []
    assert [delivery.type for delivery in sent.to(project_target(website))] == ["UPDATE_PROJECT"]


def test_a_row_created_and_deleted_in_one_transaction_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    with transaction.atomic():
        task = Task.objects.create(project=live["website"], title="Fleeting")
        task.title = "Still fleeting"
        task.save()
        task.delete()

    assert sent.deliveries == []


def test_the_transaction_after_one_that_was_rolled_back_starts_afresh(sent: Recorder, live: dict[str, Any]) -> None:
    pk = live["task"].pk
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            live["task"].delete()
            raise RuntimeError("roll back")
    task = Task.objects.get(pk=pk)

    with transaction.atomic():
        task.title = "After"
        task.save()

    [update] = sent.to(task_target(task))
    assert update.type == "UPDATE_TASK"
    assert update.meta["changed"] == ["title"]


# Deletes ----------------------------------------------------------------------


def test_delete_sends_delete_with_only_the_id(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]
    wire_id = str(task.pk)

    task.delete()

    [delete] = sent.to(Target("api.task", id=wire_id))
    assert delete.type == "DELETE_TASK"
    assert delete.payloads == {"all": {"id": wire_id}}


def test_deleting_a_project_sends_delete_for_its_tasks(sent: Recorder, live: dict[str, Any]) -> None:
    website, task, hidden = live["website"], live["task"], live["hidden"]
    second = Task.objects.create(project=website, title="Second")
    website_target = project_target(website)
    sent.clear()

    with transaction.atomic():
        website.delete()

    assert [delivery.type for delivery in sent.to(website_target)] == ["DELETE_PROJECT"]
    for child in (task, second):
        [delete] = sent.to(task_target(child))
        assert delete.type == "DELETE_TASK"
        assert delete.payloads == {"all": {"id": str(child.pk)}}
    assert sent.to(task_target(hidden)) == []


def test_queryset_delete_sends_delete_for_each_row(sent: Recorder, live: dict[str, Any]) -> None:
    second = Task.objects.create(project=live["website"], title="Second")
    sent.clear()

    Task.objects.filter(project=live["website"]).delete()

    assert {delivery.target for delivery in sent.deliveries if delivery.target.id is not None} == {
        task_target(live["task"]),
        task_target(second),
    }
    assert {delivery.type for delivery in sent.deliveries} == {"DELETE_TASK"}


# Many-to-many -----------------------------------------------------------------


def members(delivery: Delivery) -> set[str]:
    return set(delivery.payloads["all"]["members"])


def test_adding_a_member_sends_update_project_with_members_changed(sent: Recorder, live: dict[str, Any]) -> None:
    website, carol = live["website"], live["carol"]

    website.members.add(carol)

    [update] = sent.to(project_target(website))
    assert update.type == "UPDATE_PROJECT"
    assert update.meta["changed"] == ["members"]
    assert members(update) == {str(live["bob"].pk), str(carol.pk)}


def test_removing_a_member_sends_update_project_with_members_changed(sent: Recorder, live: dict[str, Any]) -> None:
    website = live["website"]

    website.members.remove(live["bob"])

    [update] = sent.to(project_target(website))
    assert update.type == "UPDATE_PROJECT"
    assert update.meta["changed"] == ["members"]
    assert members(update) == set()


def test_clearing_members_sends_update_project(sent: Recorder, live: dict[str, Any]) -> None:
    website = live["website"]

    website.members.clear()

    [update] = sent.to(project_target(website))
    assert update.meta["changed"] == ["members"]
    assert members(update) == set()


def test_adding_from_the_reverse_side_sends_update_project(sent: Recorder, live: dict[str, Any]) -> None:
    website, carol = live["website"], live["carol"]

    carol.projects.add(website)

    [update] = sent.to(project_target(website))
    assert update.type == "UPDATE_PROJECT"
    assert update.meta["changed"] == ["members"]
    assert members(update) == {str(live["bob"].pk), str(carol.pk)}


def test_removing_and_clearing_from_the_reverse_side_send_update_project(sent: Recorder, live: dict[str, Any]) -> None:
    website, bob = live["website"], live["bob"]

    bob.projects.remove(website)
    [removed] = sent.to(project_target(website))
    website.members.add(bob)
    sent.clear()
    bob.projects.clear()
    [cleared] = sent.to(project_target(website))

    assert removed.meta["changed"] == ["members"] and members(removed) == set()
    assert cleared.meta["changed"] == ["members"] and members(cleared) == set()


def test_a_member_change_and_a_rename_in_one_transaction_send_one_event(sent: Recorder, live: dict[str, Any]) -> None:
    website = live["website"]

    with transaction.atomic():
        website.name = "Site"
        website.save()
        website.members.add(live["carol"])

    [update] = sent.to(project_target(website))
    assert update.meta["changed"] == ["name", "members"]
    assert update.payloads["all"]["name"] == "Site"
    assert str(live["carol"].pk) in members(update)


def test_adding_an_existing_member_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    live["website"].members.add(live["bob"])
    live["bob"].projects.add(live["website"])

    assert sent.calls == []


# update_fields and registration options ----------------------------------------------


def test_update_fields_limits_changed(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Renamed"
    task.done = True
    task.save(update_fields=["title"])

    [update] = sent.to(task_target(task))
    assert update.meta["changed"] == ["title"]
    assert Task.objects.get(pk=task.pk).done is False


def test_update_fields_without_a_tracked_change_sends_nothing(sent: Recorder, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Renamed"
    task.save(update_fields=["done"])

    assert sent.calls == []


def test_event_types_rename_the_events(sent: Recorder, live: dict[str, Any], replace_registration: Any) -> None:
    original = site.get(Task)
    replace_registration(Task, type(original), event_types={"update": "TASK_CHANGED", "delete": "TASK_GONE"})
    task = live["task"]
    wire_id = str(task.pk)

    task.title = "Renamed"
    task.save()
    task.delete()

    assert [delivery.type for delivery in sent.to(Target("api.task", id=wire_id))] == ["TASK_CHANGED", "TASK_GONE"]


def test_a_model_unregistered_at_runtime_sends_nothing(
    sent: Recorder, live: dict[str, Any], replace_registration: Any
) -> None:
    replace_registration(Task, type(site.get(Task)))
    site.unregister(Task)
    task = live["task"]

    task.title = "Renamed"
    task.save()
    task.delete()

    assert sent.calls == []


# Per-audience payloads -----------------------------------------------------------


def test_user_payloads_are_serialized_once_per_audience(
    sent: Recorder, live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[Any] = []
    original = UserSerializer.to_representation

    def counting(self: UserSerializer, instance: User) -> dict[str, Any]:
        runs.append(instance.pk)
        return original(self, instance)

    monkeypatch.setattr(UserSerializer, "to_representation", counting)
    alice = live["alice"]

    alice.display_name = "Alice A."
    alice.save()

    [update] = sent.to(Target("api.user", id=str(alice.pk)))
    assert update.type == "UPDATE_USER"
    assert update.meta["changed"] == ["display_name"]
    assert set(update.payloads) == {"self", "others"}
    assert update.payloads["self"] == {
        "id": str(alice.pk),
        "username": "alice",
        "display_name": "Alice A.",
        "email": "alice@example.com",
    }
    assert update.payloads["others"] == {"id": str(alice.pk), "username": "alice", "display_name": "Alice A."}
    assert runs == [alice.pk, alice.pk]


# Failures -----------------------------------------------------------------------


def test_a_failing_publish_does_not_fail_the_save(live: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(deliveries: list[Any]) -> None:
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(publisher, "publish", broken)
    failed = publisher.stats.failed
    task = live["task"]

    with transaction.atomic():
        task.title = "Saved anyway"
        task.save()
    task.done = True
    task.save()

    assert Task.objects.get(pk=task.pk).title == "Saved anyway"
    assert publisher.stats.failed == failed + 2
