"""What a committed write records in the outbox: ``LiveModel``, the receivers and ``Touch``.

The relay is told nothing here (``relay.kick`` is replaced by a recorder), so
the rows a transaction wrote stay in the outbox for the test to read, and
``relay.plan`` shows the events the relay would make of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.db import transaction

from api.models import Project, Task, User
from notifications.models import OutboxEntry
from notifications.plan import Unit, plan
from notifications.registry import site
from notifications.relay import control_messages, relay
from notifications.targets import Target, user_group
from tests.notifications.fakes import Unreachable

pytestmark = [pytest.mark.django_db(transaction=True)]

DB = "default"


class Kicks:
    """Stands in for ``relay.kick``: keeps each call, with how many rows its transaction left."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, using: str, token: str) -> None:
        # Called by the writer's on_commit: the rows must be there already, for the relay to claim.
        self.calls.append((using, token, OutboxEntry.objects.using(using).filter(txn=token).count()))

    @property
    def tokens(self) -> list[str]:
        """The distinct tokens kicked, in order."""
        return list(dict.fromkeys(token for _using, token, _rows in self.calls))


@pytest.fixture
def kicks(domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Kicks]:
    """Replaces ``relay.kick`` once the example domain is committed and published."""
    recorder = Kicks()
    monkeypatch.setattr(relay, "kick", recorder)
    yield recorder


@pytest.fixture
def live(domain: dict[str, Any], kicks: Kicks) -> dict[str, Any]:
    """The committed example domain, published: the outbox is empty and nothing was kicked yet."""
    assert not OutboxEntry.objects.exists()
    assert kicks.calls == []
    return domain


def recorded() -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every outbox row as (kind, model, object id, data), in the order written."""
    return [(row.kind, row.model, row.object_id, row.data) for row in OutboxEntry.objects.order_by("id")]


def transactions() -> list[str]:
    return list(dict.fromkeys(OutboxEntry.objects.order_by("id").values_list("txn", flat=True)))


def planned() -> list[Unit]:
    """The events the relay makes of the one committed transaction in the outbox."""
    [token] = transactions()
    units = plan(list(OutboxEntry.objects.filter(txn=token).order_by("id")), DB)
    # Not the unfiltered collection's (filter ``()``, where a registration has one): these
    # tests are about objects and filtered collections.
    return [unit for unit in units if unit.target.filter != ()]


def described(units: list[Unit]) -> list[tuple[Target, str, str, list[str], bool]]:
    return [(unit.target, unit.kind, unit.object_id, unit.changed, unit.before) for unit in units]


def wire(instance: Any) -> str:
    return str(instance.pk)


def task_target(task: Task) -> Target:
    return Target("api.task", id=wire(task))


def tasks_of(project: Project) -> Target:
    return Target.collection("api.task", {"project": wire(project)})


def project_target(project: Project) -> Target:
    return Target("api.project", id=wire(project))


def user_target(user: User) -> Target:
    return Target("api.user", id=wire(user))


def open_tasks_of(project: Project) -> list[Any]:
    return ["api.project", wire(project), ["open_tasks"]]


# Nothing changed, nothing recorded ------------------------------------------------


def test_save_without_change_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    task = Task.objects.get(pk=live["task"].pk)

    task.save()
    with transaction.atomic():
        task.save()

    assert recorded() == []
    assert kicks.calls == []


def test_setting_a_field_to_its_current_value_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Write docs"
    task.save()

    assert recorded() == []


def test_change_of_an_untracked_field_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    alice, bob = live["alice"], live["bob"]

    alice.first_name = "Alice"
    alice.save()
    bob.last_name = "B"
    bob.save(update_fields=["last_name"])

    assert recorded() == []
    assert kicks.calls == []


def test_deactivating_a_user_records_only_the_closing_of_their_sockets(kicks: Kicks, live: dict[str, Any]) -> None:
    # is_active is in User's FieldTracker but not in its registration's tracked_fields: no UPDATE_USER.
    bob = live["bob"]

    bob.is_active = False
    bob.save()

    assert recorded() == [("close", "", "", {"to": [user_group(bob.pk)], "code": 4001})]


# Creates and updates --------------------------------------------------------------


def test_create_records_every_tracked_field_and_touches_its_project(kicks: Kicks, live: dict[str, Any]) -> None:
    website = live["website"]
    tracked = ["assignee", "done", "private", "project", "title"]

    task = Task.objects.create(project=website, title="New")

    [(kind, model, object_id, data)] = recorded()
    assert (kind, model, object_id) == ("create", "api.task", wire(task))
    assert sorted(data.pop("changed")) == tracked
    assert data == {"current": {"project": wire(website)}, "touched": [open_tasks_of(website)]}
    # No object event (nobody can hold a subscription to it yet): its collection, and its project's count.
    units = planned()
    assert [(unit.target, unit.kind, unit.object_id, sorted(unit.changed), unit.before) for unit in units] == [
        (tasks_of(website), "create", wire(task), tracked, False),
        (project_target(website), "touch", wire(website), ["open_tasks"], True),
    ]


def test_update_records_only_the_changed_tracked_fields(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    task.title = "Write the docs"
    task.save()

    assert recorded() == [
        ("update", "api.task", wire(task), {"changed": ["title"], "current": {"project": wire(website)}})
    ]
    assert described(planned()) == [
        (task_target(task), "update", wire(task), ["title"], True),
        (tasks_of(website), "update", wire(task), ["title"], True),
    ]


def test_each_committed_transaction_kicks_the_relay_with_its_token_after_its_rows_are_written(
    kicks: Kicks, live: dict[str, Any]
) -> None:
    task = live["task"]

    task.title = "Autocommit"
    task.save()
    with transaction.atomic():
        task.title = "In a block"
        task.save()
        task.done = True
        task.save()
        assert len(kicks.tokens) == 1  # not before the commit

    assert kicks.tokens == transactions()
    assert len(kicks.tokens) == 2
    # Each kick came after its commit: the relay finds the transaction's rows.
    assert all(using == DB and rows > 0 for using, _token, rows in kicks.calls)
    assert OutboxEntry.objects.filter(txn=kicks.tokens[1]).count() == 2


def test_a_committed_transaction_kicks_the_relay_once(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    with transaction.atomic():
        task.title = "First"
        task.save()
        task.done = True
        task.save()
        live["website"].members.add(live["carol"])

    assert [token for _using, token, _rows in kicks.calls] == transactions()


def test_a_transaction_that_rolls_back_records_nothing_and_kicks_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            task.title = "Never committed"
            task.save()
            raise RuntimeError("roll back")

    assert recorded() == []
    assert kicks.calls == []
    assert Task.objects.get(pk=task.pk).title == "Write docs"


def test_a_rolled_back_delete_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            live["website"].delete()
            raise RuntimeError("roll back")

    assert recorded() == []
    assert kicks.calls == []


def test_the_transaction_after_one_that_rolled_back_starts_afresh(kicks: Kicks, live: dict[str, Any]) -> None:
    pk = live["task"].pk
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            live["task"].delete()
            raise RuntimeError("roll back")
    task = Task.objects.get(pk=pk)

    with transaction.atomic():
        task.title = "After"
        task.save()

    assert [(kind, object_id, data["changed"]) for kind, _model, object_id, data in recorded()] == [
        ("update", wire(task), ["title"])
    ]
    assert kicks.tokens == transactions()
    assert [(unit.target, unit.kind) for unit in planned()] == [
        (task_target(task), "update"),
        (tasks_of(live["website"]), "update"),
    ]


def test_a_save_in_a_rolled_back_savepoint_then_in_the_outer_transaction_records_the_second(
    kicks: Kicks, live: dict[str, Any]
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
        # The tracker was reset by the rolled-back save: only a real change of the row is recorded.
        task.title = "Kept"
        task.save()

    assert len(recorded()) == 1
    assert recorded()[0][2:] == (wire(task), {"changed": ["title"], "current": {"project": wire(live["website"])}})
    assert kicks.tokens == transactions()
    assert Task.objects.get(pk=task.pk).title == "Kept"


def test_a_save_only_in_a_rolled_back_savepoint_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
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

    assert [(kind, model, object_id) for kind, model, object_id, _data in recorded()] == [
        ("update", "api.project", wire(website))
    ]
    assert kicks.tokens == transactions()


def test_several_saves_in_one_transaction_become_one_event_per_target(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    with transaction.atomic():
        task.title = "First"
        task.save()
        task.done = True
        task.save()
        task.title = "Final"
        task.save()

    assert len(recorded()) == 3
    assert described(planned()) == [
        (task_target(task), "update", wire(task), ["title", "done"], True),
        (tasks_of(website), "update", wire(task), ["title", "done"], True),
        (project_target(website), "touch", wire(website), ["open_tasks"], True),
    ]


def test_saves_of_two_rows_in_one_transaction_make_one_event_each(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    with transaction.atomic():
        task.title = "Renamed"
        task.save()
        website.name = "Site"
        website.save()
        task.done = True
        task.save()

    units = planned()
    assert [(unit.target, unit.kind, unit.changed) for unit in units if unit.target == task_target(task)] == [
        (task_target(task), "update", ["title", "done"])
    ]
    assert [(unit.kind, unit.changed) for unit in units if unit.target == project_target(website)] == [
        ("update", ["name"]),
        ("touch", ["open_tasks"]),
    ]


def test_a_row_created_and_deleted_in_one_transaction_makes_no_event_of_its_own(
    kicks: Kicks, live: dict[str, Any]
) -> None:
    with transaction.atomic():
        task = Task.objects.create(project=live["website"], title="Fleeting")
        wire_id = wire(task)
        task.title = "Still fleeting"
        task.save()
        task.delete()

    units = planned()
    assert [unit for unit in units if unit.registration.label == "api.task"] == []
    assert all(unit.object_id != wire_id for unit in units)


# update_fields ----------------------------------------------------------------


def test_update_fields_limits_changed(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Renamed"
    task.done = True
    task.save(update_fields=["title"])

    # done was not saved: neither in `changed` nor a touch of the project's open_tasks.
    assert recorded() == [
        ("update", "api.task", wire(task), {"changed": ["title"], "current": {"project": wire(live["website"])}})
    ]
    assert Task.objects.get(pk=task.pk).done is False


def test_update_fields_without_a_tracked_change_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Renamed"
    task.save(update_fields=["done"])

    assert recorded() == []


def test_update_fields_naming_the_column_records_the_move(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website, secret = live["task"], live["website"], live["secret"]

    task.project = secret
    task.save(update_fields=["project_id"])

    assert Task.objects.get(pk=task.pk).project_id == secret.pk
    assert [(kind, data.get("previous"), data.get("current")) for kind, _model, _id, data in recorded()] == [
        ("update", {"project": wire(website)}, {"project": wire(secret)})
    ]


# Deletes ----------------------------------------------------------------------


def test_delete_records_the_collections_it_left_and_touches_its_project(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]
    wire_id = wire(task)

    task.delete()

    assert recorded() == [
        (
            "delete",
            "api.task",
            wire_id,
            {"changed": [], "current": {"project": wire(website)}, "touched": [open_tasks_of(website)]},
        )
    ]
    assert described(planned()) == [
        (Target("api.task", id=wire_id), "delete", wire_id, [], True),
        (tasks_of(website), "delete", wire_id, [], True),
        (project_target(website), "touch", wire(website), ["open_tasks"], True),
    ]


def test_deleting_a_project_records_deletes_for_its_tasks(kicks: Kicks, live: dict[str, Any]) -> None:
    website, task, hidden = live["website"], live["task"], live["hidden"]
    second = Task.objects.create(project=website, title="Second")
    OutboxEntry.objects.all().delete()
    project, tasks, collection = project_target(website), [task_target(task), task_target(second)], tasks_of(website)

    with transaction.atomic():
        website.delete()

    deleted = {Target(model, id=object_id) for kind, model, object_id, _data in recorded() if kind == "delete"}
    assert deleted == {project, *tasks}
    units = planned()
    assert {unit.target for unit in units if unit.kind == "delete"} == {project, *tasks, collection}
    # The deleted project is not "touched" by its deleted tasks: its delete says it all.
    assert [unit for unit in units if unit.target == project and unit.kind == "touch"] == []
    assert all(task_target(hidden) != unit.target for unit in units)


def test_queryset_delete_records_a_delete_for_each_row(kicks: Kicks, live: dict[str, Any]) -> None:
    second = Task.objects.create(project=live["website"], title="Second")
    OutboxEntry.objects.all().delete()

    Task.objects.filter(project=live["website"]).delete()

    assert sorted((kind, object_id) for kind, model, object_id, _data in recorded() if model == "api.task") == sorted(
        [("delete", wire(live["task"])), ("delete", wire(second))]
    )


def test_deleting_a_user_records_the_tasks_whose_assignee_it_nulls(
    kicks: Kicks, live: dict[str, Any], make_user: Any
) -> None:
    task, dave = live["task"], make_user("dave")
    task.assignee = dave
    task.save()
    OutboxEntry.objects.all().delete()

    dave.delete()

    assert Task.objects.get(pk=task.pk).assignee_id is None
    assert [(kind, data["changed"]) for kind, model, object_id, data in recorded() if model == "api.task"] == [
        ("update", ["assignee"])
    ]


# Many-to-many -----------------------------------------------------------------


def members_row(project: Project, *, revoked: Sequence[User] = (), touched: Sequence[User] = ()) -> Any:
    """The row of an edit of ``project.members``, its touches as a set.

    Who shares a project changed: the users added or removed (``touched``), and
    every member, the owner and every task of the project (api/notifications.py).
    """
    data: dict[str, Any] = {"changed": ["members"]}
    if revoked:
        data["revoked"] = sorted(wire(user) for user in revoked)
    users = {wire(user) for user in touched} | {wire(user) for user in project.members.all()} | {wire(project.owner)}
    tasks = {wire(task) for task in project.tasks.all()}
    data["touched"] = {("api.user", pk) for pk in users} | {("api.task", pk) for pk in tasks}
    return ("update", "api.project", wire(project), data)


def as_sets(rows: list[Any]) -> list[Any]:
    """``recorded()`` with each row's touches as a set of (label, id): their order is no promise."""
    return [
        (kind, model, object_id, {**data, "touched": {(label, pk) for label, pk, _derived in data.get("touched", [])}})
        for kind, model, object_id, data in rows
    ]


def test_adding_a_member_records_members_changed_and_touches_the_user(kicks: Kicks, live: dict[str, Any]) -> None:
    website, carol = live["website"], live["carol"]

    website.members.add(carol)

    assert as_sets(recorded()) == [members_row(website, touched=[carol])]
    # Whom carol now shares a project with (and so who sees her, and whom she sees) changed.
    described_units = described(planned())
    assert described_units[0] == (project_target(website), "update", wire(website), ["members"], True)
    assert (user_target(carol), "touch", wire(carol), [], True) in described_units


def test_removing_a_member_revokes_the_user_and_touches_them(kicks: Kicks, live: dict[str, Any]) -> None:
    website, bob = live["website"], live["bob"]

    website.members.remove(bob)

    assert as_sets(recorded()) == [members_row(website, revoked=[bob], touched=[bob])]
    # Every subscription of bob's is re-checked, not only the project's.
    [token] = transactions()
    assert control_messages(OutboxEntry.objects.filter(txn=token)) == [
        {"type": "recheck", "to": [user_group(wire(bob))]}
    ]


def test_clearing_members_revokes_every_member(kicks: Kicks, live: dict[str, Any]) -> None:
    website, bob, carol = live["website"], live["bob"], live["carol"]
    website.members.add(carol)
    OutboxEntry.objects.all().delete()

    website.members.clear()

    [(kind, model, object_id, data)] = recorded()
    assert (kind, model, object_id, data["changed"]) == ("update", "api.project", wire(website), ["members"])
    assert data["revoked"] == sorted([wire(bob), wire(carol)])
    touched_users = {item[1] for item in data["touched"] if item[0] == "api.user"}
    assert touched_users == {wire(bob), wire(carol), wire(website.owner)}


def test_adding_from_the_reverse_side_records_the_same(kicks: Kicks, live: dict[str, Any]) -> None:
    website, carol = live["website"], live["carol"]

    carol.projects.add(website)

    assert as_sets(recorded()) == [members_row(website, touched=[carol])]


def test_removing_and_clearing_from_the_reverse_side_revoke_the_user(kicks: Kicks, live: dict[str, Any]) -> None:
    website, bob = live["website"], live["bob"]

    bob.projects.remove(website)
    removed = recorded()
    website.members.add(bob)
    OutboxEntry.objects.all().delete()
    bob.projects.clear()
    cleared = recorded()

    assert as_sets(removed) == [members_row(website, revoked=[bob], touched=[bob])]
    assert as_sets(cleared) == [members_row(website, revoked=[bob], touched=[bob])]


def test_clearing_from_the_reverse_side_records_each_project(kicks: Kicks, live: dict[str, Any]) -> None:
    bob, website = live["bob"], live["website"]
    other = Project.objects.create(name="Other", owner=live["carol"])
    other.members.add(bob)
    OutboxEntry.objects.all().delete()

    bob.projects.clear()

    assert sorted(object_id for _kind, _model, object_id, _data in recorded()) == sorted([wire(website), wire(other)])
    assert all(data["revoked"] == [wire(bob)] for _kind, _model, _id, data in recorded())


def test_a_member_change_and_a_rename_in_one_transaction_make_one_event(kicks: Kicks, live: dict[str, Any]) -> None:
    website = live["website"]

    with transaction.atomic():
        website.name = "Site"
        website.save()
        website.members.add(live["carol"])

    [project_unit] = [unit for unit in planned() if unit.target == project_target(website)]
    assert (project_unit.kind, project_unit.changed) == ("update", ["name", "members"])


def test_adding_an_existing_member_records_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    live["website"].members.add(live["bob"])
    live["bob"].projects.add(live["website"])

    assert recorded() == []
    assert kicks.calls == []


# Access fields ---------------------------------------------------------------------


def test_a_new_owner_revokes_the_previous_one_and_touches_both(kicks: Kicks, live: dict[str, Any]) -> None:
    website, alice, carol = live["website"], live["alice"], live["carol"]

    website.owner = carol
    website.save()

    [(kind, _model, object_id, data)] = recorded()
    assert (kind, object_id, data["changed"]) == ("update", wire(website), ["owner"])
    assert data["revoked"] == [wire(alice)]
    # The previous owner and the new one; every member and task, since who shares the project changed.
    touched = {(label, pk) for label, pk, _derived in data["touched"]}
    members = {("api.user", wire(user)) for user in website.members.all()}
    tasks = {("api.task", wire(task)) for task in website.tasks.all()}
    assert touched == {("api.user", wire(alice)), ("api.user", wire(carol))} | members | tasks


def test_a_new_assignee_revokes_the_previous_one(kicks: Kicks, live: dict[str, Any]) -> None:
    task, alice, bob = live["task"], live["alice"], live["bob"]
    task.assignee = alice
    task.save()
    assert "revoked" not in recorded()[0][3]  # nobody was assigned before
    OutboxEntry.objects.all().delete()

    task.assignee = bob
    task.save()

    [(_kind, _model, _id, data)] = recorded()
    assert data["changed"] == ["assignee"]
    assert data["revoked"] == [wire(alice)]


# Touch --------------------------------------------------------------------------


def test_ticking_a_task_touches_its_project_open_tasks(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website = live["task"], live["website"]

    task.done = True
    task.save()

    assert recorded()[0][3]["touched"] == [open_tasks_of(website)]
    assert (project_target(website), "touch", wire(website), ["open_tasks"], True) in described(planned())


def test_a_change_outside_touch_when_touches_nothing(kicks: Kicks, live: dict[str, Any]) -> None:
    task = live["task"]

    task.title = "Renamed"
    task.private = True
    task.save()

    assert "touched" not in recorded()[0][3]
    assert all(unit.registration.label == "api.task" for unit in planned())


def test_moving_a_task_touches_both_projects_and_both_collections(kicks: Kicks, live: dict[str, Any]) -> None:
    task, website, secret = live["task"], live["website"], live["secret"]

    task.project = secret
    task.save()

    [(_kind, _model, _id, data)] = recorded()
    assert data["previous"] == {"project": wire(website)}
    assert data["current"] == {"project": wire(secret)}
    assert data["touched"] == [open_tasks_of(website), open_tasks_of(secret)]
    assert described(planned()) == [
        (task_target(task), "update", wire(task), ["project"], True),
        (tasks_of(website), "update", wire(task), ["project"], True),
        (tasks_of(secret), "update", wire(task), ["project"], False),
        (project_target(website), "touch", wire(website), ["open_tasks"], True),
        (project_target(secret), "touch", wire(secret), ["open_tasks"], True),
    ]


def test_moving_a_task_away_and_back_in_one_transaction_stays_in_its_collection(
    kicks: Kicks, live: dict[str, Any]
) -> None:
    task, website = live["task"], live["website"]

    with transaction.atomic():
        task.project = live["secret"]
        task.save()
        task.project = website
        task.save()

    collections = [unit for unit in planned() if unit.target.is_collection]
    assert [(unit.target, unit.before) for unit in collections] == [(tasks_of(website), True)]


def test_ticking_two_tasks_in_one_transaction_touches_their_project_once(kicks: Kicks, live: dict[str, Any]) -> None:
    website = live["website"]
    second = Task.objects.create(project=website, title="Second")
    OutboxEntry.objects.all().delete()

    with transaction.atomic():
        for task in (live["task"], second):
            task.done = True
            task.save()

    touches = [unit for unit in planned() if unit.kind == "touch"]
    assert [(unit.target, unit.changed) for unit in touches] == [(project_target(website), ["open_tasks"])]


def test_deleting_a_project_touches_its_owner_and_members(kicks: Kicks, live: dict[str, Any]) -> None:
    website, alice, bob = live["website"], live["alice"], live["bob"]

    website.delete()

    # The members were read before their rows went (pre_delete).
    project_rows = [data for kind, model, _id, data in recorded() if model == "api.project"]
    assert sorted(item[1] for item in project_rows[0]["touched"]) == sorted([wire(alice), wire(bob)])
    touched = {unit.target for unit in planned() if unit.kind == "touch"}
    assert touched == {user_target(alice), user_target(bob)}


# Registration options ------------------------------------------------------------


def test_a_model_unregistered_at_runtime_records_nothing(
    kicks: Kicks, live: dict[str, Any], replace_registration: Any
) -> None:
    replace_registration(Task, type(site.get(Task)))
    site.unregister(Task)
    task = live["task"]

    task.title = "Renamed"
    task.save()
    task.delete()

    assert recorded() == []
    assert kicks.calls == []


def test_tracked_fields_of_the_registration_decide_what_is_recorded(
    kicks: Kicks, live: dict[str, Any], replace_registration: Any
) -> None:
    replace_registration(Task, type(site.get(Task)), tracked_fields=["done"])
    task = live["task"]

    task.title = "Not tracked now"
    task.save()
    assert recorded() == []

    task.done = True
    task.save()
    assert [data["changed"] for _kind, _model, _id, data in recorded()] == [["done"]]


# Django's test helpers ------------------------------------------------------------


@pytest.mark.django_db
def test_capture_on_commit_callbacks_hands_the_transaction_to_the_relay(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any, make_user: Any
) -> None:
    # A TestCase-style test never commits: the helper runs the on_commit kick explicitly.
    # (The relay is not told before, so it does not wait for the test's uncommitted rows.)
    kicks = Kicks()
    monkeypatch.setattr(relay, "kick", kicks)
    project = Project.objects.create(name="Website", owner=make_user("alice"))
    task = Task.objects.create(project=project, title="Write docs")
    assert kicks.calls == []

    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            task.done = True
            task.save()

    [token] = kicks.tokens
    assert OutboxEntry.objects.filter(txn=token).order_by("id").last().data["changed"] == ["done"]


# Failures -------------------------------------------------------------------------


def test_an_unreachable_store_does_not_fail_the_save_and_the_row_waits(
    domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("notifications.relay.get_store", Unreachable)
    failed = relay.stats.failed
    task = domain["task"]

    with transaction.atomic():
        task.title = "Saved anyway"
        task.save()
    assert relay.flush(timeout=5)

    assert Task.objects.get(pk=task.pk).title == "Saved anyway"
    [row] = OutboxEntry.objects.all()
    assert row.data["changed"] == ["title"]
    assert row.owner == ""  # given back, for any sweeper to retry
    assert relay.stats.failed == failed + 1
