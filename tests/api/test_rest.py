"""The example REST API (``api/``): the rules drf-live reuses for sockets."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from api.models import Project, Task
from tests.pages import results

pytestmark = pytest.mark.django_db


def assert_hashid(value: Any, model: type) -> None:
    """A wire id is the model's hashid string, never the integer behind it."""
    assert isinstance(value, str)
    assert not value.isdigit()
    assert str(model._meta.pk.get_hashid(value)) == value


# Tokens ----------------------------------------------------------------------


def test_token_endpoint_returns_the_users_token(make_user: Any) -> None:
    alice = make_user("alice")

    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "pw"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=alice).key}
    again = APIClient().post("/api/auth/token/", {"username": "alice", "password": "pw"}, format="json")
    assert again.json() == response.json()


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("nobody", "pw"), ("alice", "")])
def test_token_endpoint_refuses_bad_credentials(make_user: Any, username: str, password: str) -> None:
    make_user("alice")

    response = APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json")

    assert response.status_code == 400
    assert "token" not in response.json()
    assert not Token.objects.exists()


def test_the_token_authenticates_requests(make_user: Any) -> None:
    make_user("alice")
    key = APIClient().post("/api/auth/token/", {"username": "alice", "password": "pw"}, format="json").json()["token"]
    client = APIClient()

    assert client.get("/api/users/me/").status_code in {401, 403}
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/users/me/").json()["username"] == "alice"


def test_an_anonymous_request_is_refused(domain: dict[str, Any]) -> None:
    for url in ("/api/users/", "/api/projects/", "/api/tasks/", f"/api/tasks/{domain['task'].pk}/"):
        assert APIClient().get(url).status_code in {401, 403}, url


# Users -----------------------------------------------------------------------


def test_me_includes_the_email(domain: dict[str, Any], client_for: Any) -> None:
    alice = domain["alice"]

    data = client_for(alice).get("/api/users/me/").json()

    assert data == {"id": str(alice.pk), "username": "alice", "display_name": "", "email": "alice@example.com"}
    assert_hashid(data["id"], type(alice))


def test_own_profile_includes_the_email(domain: dict[str, Any], client_for: Any) -> None:
    alice = domain["alice"]

    data = client_for(alice).get(f"/api/users/{alice.pk}/").json()

    assert data["email"] == "alice@example.com"


def test_another_users_profile_omits_the_email(domain: dict[str, Any], client_for: Any) -> None:
    alice, bob = domain["alice"], domain["bob"]

    response = client_for(bob).get(f"/api/users/{alice.pk}/")

    assert response.status_code == 200
    assert response.json() == {"id": str(alice.pk), "username": "alice", "display_name": ""}


def test_users_are_visible_only_when_sharing_a_project(domain: dict[str, Any], client_for: Any) -> None:
    alice, bob, carol = domain["alice"], domain["bob"], domain["carol"]

    listed = {user["username"] for user in results(client_for(bob).get("/api/users/").json())}

    assert listed == {"alice", "bob"}
    assert client_for(bob).get(f"/api/users/{carol.pk}/").status_code == 404
    assert client_for(carol).get(f"/api/users/{alice.pk}/").status_code == 404
    assert {user["username"] for user in results(client_for(carol).get("/api/users/").json())} == {"carol"}


def test_a_user_list_shows_email_only_for_the_requester(domain: dict[str, Any], client_for: Any) -> None:
    users = {user["username"]: user for user in results(client_for(domain["bob"]).get("/api/users/").json())}

    assert users["bob"]["email"] == "bob@example.com"
    assert "email" not in users["alice"]


def test_a_user_may_change_their_own_display_name(domain: dict[str, Any], client_for: Any) -> None:
    alice = domain["alice"]

    response = client_for(alice).patch(f"/api/users/{alice.pk}/", {"display_name": "Alice A."}, format="json")

    assert response.status_code == 200
    assert response.json()["display_name"] == "Alice A."
    alice.refresh_from_db()
    assert alice.display_name == "Alice A."


def test_username_and_email_are_read_only(domain: dict[str, Any], client_for: Any) -> None:
    alice = domain["alice"]

    client_for(alice).patch(
        f"/api/users/{alice.pk}/", {"username": "mallory", "email": "m@evil.example"}, format="json"
    )

    alice.refresh_from_db()
    assert (alice.username, alice.email) == ("alice", "alice@example.com")


def test_a_user_may_not_change_another_user(domain: dict[str, Any], client_for: Any) -> None:
    alice = domain["alice"]

    seen = client_for(domain["bob"]).patch(f"/api/users/{alice.pk}/", {"display_name": "Hacked"}, format="json")
    unseen = client_for(domain["carol"]).patch(f"/api/users/{alice.pk}/", {"display_name": "Hacked"}, format="json")

    assert seen.status_code == 403
    assert unseen.status_code == 404
    alice.refresh_from_db()
    assert alice.display_name == ""


# Projects ----------------------------------------------------------------------


def test_projects_are_visible_to_owner_and_members(domain: dict[str, Any], client_for: Any) -> None:
    website = domain["website"]

    def names(user: Any) -> list[str]:
        return [project["name"] for project in results(client_for(user).get("/api/projects/").json())]

    for name in ("alice", "bob"):
        assert names(domain[name]) == ["Website"]
        assert client_for(domain[name]).get(f"/api/projects/{website.pk}/").status_code == 200
    assert names(domain["carol"]) == ["Secret"]
    assert client_for(domain["carol"]).get(f"/api/projects/{website.pk}/").status_code == 404


def test_a_project_shows_ids_as_hashids(domain: dict[str, Any], client_for: Any) -> None:
    website, alice, bob = domain["website"], domain["alice"], domain["bob"]

    data = client_for(alice).get(f"/api/projects/{website.pk}/").json()

    assert data == {
        "id": str(website.pk),
        "name": "Website",
        "owner": str(alice.pk),
        "members": [str(bob.pk)],
        "open_tasks": 1,
    }
    assert_hashid(data["id"], Project)
    assert_hashid(data["owner"], type(alice))
    assert_hashid(data["members"][0], type(alice))


def test_only_the_owner_may_change_a_project(domain: dict[str, Any], client_for: Any) -> None:
    website = domain["website"]

    by_member = client_for(domain["bob"]).patch(f"/api/projects/{website.pk}/", {"name": "Mine"}, format="json")
    deleted_by_member = client_for(domain["bob"]).delete(f"/api/projects/{website.pk}/")
    by_outsider = client_for(domain["carol"]).patch(f"/api/projects/{website.pk}/", {"name": "Mine"}, format="json")
    by_owner = client_for(domain["alice"]).patch(f"/api/projects/{website.pk}/", {"name": "Site"}, format="json")

    assert by_member.status_code == 403
    assert deleted_by_member.status_code == 403
    assert by_outsider.status_code == 404
    assert by_owner.status_code == 200
    assert Project.objects.get(pk=website.pk).name == "Site"


def test_the_owner_may_delete_a_project(domain: dict[str, Any], client_for: Any) -> None:
    website = domain["website"]

    assert client_for(domain["alice"]).delete(f"/api/projects/{website.pk}/").status_code == 204
    assert not Project.objects.filter(pk=website.pk).exists()


def test_creating_a_project_makes_the_requester_its_owner(domain: dict[str, Any], client_for: Any) -> None:
    bob, carol = domain["bob"], domain["carol"]

    response = client_for(bob).post(
        "/api/projects/", {"name": "Bob's", "owner": str(carol.pk), "members": [str(carol.pk)]}, format="json"
    )

    assert response.status_code == 201
    data = response.json()
    assert data["owner"] == str(bob.pk)
    assert data["members"] == [str(carol.pk)]
    assert_hashid(data["id"], Project)
    assert Project.objects.get(pk=data["id"]).owner == bob


# Tasks -----------------------------------------------------------------------


def test_tasks_are_visible_to_whoever_sees_their_project(domain: dict[str, Any], client_for: Any) -> None:
    task, hidden = domain["task"], domain["hidden"]

    for name in ("alice", "bob"):
        assert [t["id"] for t in results(client_for(domain[name]).get("/api/tasks/").json())] == [str(task.pk)]
        assert client_for(domain[name]).get(f"/api/tasks/{hidden.pk}/").status_code == 404
    assert [t["id"] for t in results(client_for(domain["carol"]).get("/api/tasks/").json())] == [str(hidden.pk)]
    assert client_for(domain["carol"]).get(f"/api/tasks/{task.pk}/").status_code == 404


def test_a_task_shows_ids_as_hashids(domain: dict[str, Any], client_for: Any) -> None:
    task, website = domain["task"], domain["website"]
    task.assignee = domain["bob"]
    task.save()

    data = client_for(domain["bob"]).get(f"/api/tasks/{task.pk}/").json()

    assert data == {
        "id": str(task.pk),
        "project": str(website.pk),
        "title": "Write docs",
        "done": False,
        "assignee": str(domain["bob"].pk),
        "private": False,
    }
    assert_hashid(data["id"], Task)
    assert_hashid(data["project"], Project)


def test_a_bare_integer_id_is_not_found(domain: dict[str, Any], client_for: Any) -> None:
    task = domain["task"]
    raw = Task._meta.pk.get_hashid(task.pk).id

    assert client_for(domain["alice"]).get(f"/api/tasks/{raw}/").status_code == 404
    assert client_for(domain["alice"]).get("/api/tasks/zzzzzzz/").status_code == 404


def test_a_member_may_create_change_and_delete_tasks(domain: dict[str, Any], client_for: Any) -> None:
    bob, website = domain["bob"], domain["website"]
    client = client_for(bob)

    created = client.post(
        "/api/tasks/", {"project": str(website.pk), "title": "New", "assignee": str(bob.pk)}, format="json"
    )
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert_hashid(task_id, Task)
    changed = client.patch(f"/api/tasks/{task_id}/", {"done": True}, format="json")
    assert changed.status_code == 200
    assert changed.json()["done"] is True
    assert Task.objects.get(pk=task_id).done is True

    assert client.delete(f"/api/tasks/{task_id}/").status_code == 204
    assert not Task.objects.filter(pk=task_id).exists()


def test_a_task_cannot_be_created_in_an_invisible_project(domain: dict[str, Any], client_for: Any) -> None:
    response = client_for(domain["bob"]).post(
        "/api/tasks/", {"project": str(domain["secret"].pk), "title": "Sneaky"}, format="json"
    )

    assert response.status_code == 400
    assert "project" in response.json()
    assert not Task.objects.filter(title="Sneaky").exists()


def test_a_task_cannot_be_moved_into_an_invisible_project(domain: dict[str, Any], client_for: Any) -> None:
    task = domain["task"]

    response = client_for(domain["bob"]).patch(
        f"/api/tasks/{task.pk}/", {"project": str(domain["secret"].pk)}, format="json"
    )

    assert response.status_code == 400
    assert Task.objects.get(pk=task.pk).project == domain["website"]


def test_an_outsider_may_not_change_or_delete_a_task(domain: dict[str, Any], client_for: Any) -> None:
    task = domain["task"]
    carol = client_for(domain["carol"])

    assert carol.patch(f"/api/tasks/{task.pk}/", {"title": "Mine"}, format="json").status_code == 404
    assert carol.delete(f"/api/tasks/{task.pk}/").status_code == 404
    assert Task.objects.get(pk=task.pk).title == "Write docs"


def test_tasks_can_be_filtered_by_project(domain: dict[str, Any], client_for: Any) -> None:
    alice, website, task = domain["alice"], domain["website"], domain["task"]
    other = Project.objects.create(name="Other", owner=alice)
    elsewhere = Task.objects.create(project=other, title="Elsewhere")
    client = client_for(alice)

    def ids(**query: str) -> list[str]:
        return [t["id"] for t in results(client.get("/api/tasks/", query).json())]

    assert ids(project=str(website.pk)) == [str(task.pk)]
    assert ids(project=str(other.pk)) == [str(elsewhere.pk)]
    assert set(ids()) == {str(task.pk), str(elsewhere.pk)}


def test_lists_paginate_50_per_page(domain: dict[str, Any], client_for: Any) -> None:
    website = domain["website"]
    Task.objects.bulk_create(Task(project=website, title=f"Item {n:02d}") for n in range(50))
    ids = [str(pk) for pk in Task.objects.filter(project=website).order_by("id").values_list("pk", flat=True)]
    client = client_for(domain["alice"])

    first = client.get("/api/tasks/", {"project": str(website.pk)}).json()
    second = client.get("/api/tasks/", {"project": str(website.pk), "page": 2}).json()

    assert (first["count"], len(first["results"]), first["previous"]) == (51, 50, None)
    assert first["next"] == f"http://testserver/api/tasks/?page=2&project={website.pk}"
    assert (second["count"], len(second["results"]), second["next"]) == (51, 1, None)
    assert second["previous"] == f"http://testserver/api/tasks/?project={website.pk}"
    assert [t["id"] for t in first["results"] + second["results"]] == ids
    assert client.get("/api/tasks/", {"project": str(website.pk), "page": 3}).status_code == 404


def test_filtering_by_an_invisible_project_shows_nothing(domain: dict[str, Any], client_for: Any) -> None:
    response = client_for(domain["bob"]).get("/api/tasks/", {"project": str(domain["secret"].pk)})

    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


@pytest.mark.parametrize("value", ["nonsense", "1"])
def test_filtering_by_something_that_is_not_a_project_id_shows_nothing(
    domain: dict[str, Any], client_for: Any, value: str
) -> None:
    if value == "1":
        value = str(Project._meta.pk.get_hashid(domain["website"].pk).id)  # the bare integer behind the hashid

    response = client_for(domain["alice"]).get("/api/tasks/", {"project": value})

    assert response.status_code == 200
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


# Private tasks and open_tasks (the contract's section 6) ----------------------------------


def test_a_private_task_is_seen_by_its_assignee_and_the_owner_only(domain: dict[str, Any], client_for: Any) -> None:
    website, alice, bob, carol = domain["website"], domain["alice"], domain["bob"], domain["carol"]
    website.members.add(carol)
    private = Task.objects.create(project=website, title="Salaries", private=True, assignee=carol)

    def titles(user: Any) -> list[str]:
        return sorted(task["title"] for task in results(client_for(user).get("/api/tasks/").json()))

    assert titles(alice) == ["Salaries", "Write docs"]  # the owner
    assert titles(carol) == ["Hidden", "Salaries", "Write docs"]  # the assignee (and owner of "Secret")
    assert titles(bob) == ["Write docs"]  # another member
    assert client_for(bob).get(f"/api/tasks/{private.pk}/").status_code == 404
    assert client_for(bob).patch(f"/api/tasks/{private.pk}/", {"title": "x"}, format="json").status_code == 404
    assert client_for(carol).get(f"/api/tasks/{private.pk}/").json()["private"] is True


def test_open_tasks_counts_the_projects_tasks_not_done(domain: dict[str, Any], client_for: Any) -> None:
    website, alice = domain["website"], domain["alice"]
    Task.objects.create(project=website, title="Done already", done=True)
    Task.objects.create(project=website, title="Private and open", private=True)

    def open_tasks() -> int:
        return int(client_for(alice).get(f"/api/projects/{website.pk}/").json()["open_tasks"])

    assert open_tasks() == 2  # "Write docs" and the private one; not the done one
    domain["task"].done = True
    domain["task"].save()
    assert open_tasks() == 1
    created = client_for(alice).post("/api/projects/", {"name": "Fresh"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["open_tasks"] == 0
