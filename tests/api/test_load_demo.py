"""``manage.py load_demo`` (api/management/commands/load_demo.py): the demo data, loaded once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from api.models import Project, Task, User

pytestmark = pytest.mark.django_db


def load_demo(*args: str) -> str:
    out = StringIO()
    call_command("load_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, object]:
    """Everything the demo data is made of, in a form two runs can be compared by."""
    return {
        "users": sorted(User.objects.values_list("username", flat=True)),
        "projects": sorted(
            (project.name, project.owner.username, sorted(project.members.values_list("username", flat=True)))
            for project in Project.objects.all()
        ),
        "tasks": sorted(Task.objects.values_list("project__name", "title", "done", "assignee__username", "private")),
    }


def test_first_run_loads_the_demo_users_projects_and_tasks() -> None:
    load_demo("--quiet")

    assert snapshot() == {
        "users": ["alice", "bob", "carol"],
        "projects": [("Mobile app", "carol", ["alice"]), ("Website", "alice", ["bob"])],
        "tasks": [
            ("Mobile app", "Sketch the login screen", False, None, False),
            ("Website", "Choose a colour scheme", False, None, False),
            ("Website", "Write the landing page", False, None, False),
        ],
    }
    assert User.objects.get(username="bob").check_password("demo-password")


def test_a_second_run_keeps_what_the_user_changed() -> None:
    load_demo("--quiet")
    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    website = Project.objects.get(name="Website")
    # What a user of the demo page does between two `make run`s: rename, tick, delete, reassign,
    # rename a project and change its members.
    Task.objects.filter(title="Write the landing page").update(title="Write the landing page today", done=True)
    Task.objects.filter(title="Sketch the login screen").delete()
    Task.objects.create(project=website, title="Order business cards", assignee=bob, private=True)
    website.name = "Company website"
    website.save()
    website.members.remove(bob)
    Project.objects.create(name="Garden", owner=alice)
    before = snapshot()

    load_demo("--quiet")

    assert snapshot() == before
    assert Task.objects.filter(title__in=["Write the landing page", "Sketch the login screen"]).count() == 0
    assert Project.objects.filter(name="Website").count() == 0


def test_a_second_run_recreates_a_deleted_demo_user_but_no_data() -> None:
    load_demo("--quiet")
    User.objects.get(username="carol").delete()  # her project Mobile app and its task go with her
    before = snapshot()

    load_demo("--quiet")

    after = snapshot()
    assert after["users"] == ["alice", "bob", "carol"]
    assert after["projects"] == before["projects"]
    assert after["tasks"] == before["tasks"]
    assert User.objects.get(username="carol").check_password("demo-password")


def test_it_prints_the_demo_page_with_the_port_it_is_given() -> None:
    first = load_demo("--port", "8123")
    second = load_demo("--port", "8123")

    assert "Demo page http://127.0.0.1:8123/  (sign in as alice, bob, carol; password 'demo-password')" in first
    assert "Demo data loaded" in first
    assert "Demo data kept as you left it" in second
    assert ":8000" not in first + second
    task = Task.objects.get(title="Write the landing page")
    assert f"/api/tasks/{task.pk}/" in second


def test_it_prints_a_placeholder_when_the_demo_tasks_are_gone() -> None:
    load_demo("--quiet")
    Task.objects.all().delete()

    output = load_demo("--port", "9000")

    assert "/api/tasks/<task id>/" in output
