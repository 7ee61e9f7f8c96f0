"""``notifications.testing``: the kit for testing your own pushes and declarations."""

from __future__ import annotations

from typing import Any

import pytest

from api.models import Project, Task, User
from api.notifications import TaskRegistration
from notifications.testing import check_subscribable_by

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def test_the_example_declarations_agree_with_their_viewsets(domain: dict[str, Any], make_user: Any) -> None:
    website = domain["website"]
    dana = make_user("dana")
    website.members.add(dana)
    Task.objects.create(project=website, title="Private, unassigned", private=True)
    Task.objects.create(project=website, title="Private, for dana", private=True, assignee=dana)
    Project.objects.create(name="Empty", owner=domain["carol"])

    for model in (Task, Project, User):
        assert check_subscribable_by(model) > 0


class WrongTaskRegistration(TaskRegistration):
    def subscribable_by(self, instance: Task) -> Any:
        project = Project.objects.get(pk=instance.project_id)
        # Forgets that a private task is hidden from the other members.
        return {project.owner_id, *project.members.values_list("pk", flat=True)}


def test_the_checker_names_every_user_a_wrong_declaration_gets_wrong(
    domain: dict[str, Any], replace_registration: Any
) -> None:
    registration = replace_registration(Task, WrongTaskRegistration)
    secret = Task.objects.create(project=domain["website"], title="Private", private=True)

    with pytest.raises(AssertionError) as failure:
        check_subscribable_by(registration)

    message = str(failure.value)
    assert "in 1 of" in message
    assert f"bob may not see api.task {secret.pk} through the viewset, but subscribable_by() names them" in message


def test_the_checker_refuses_a_registration_without_a_declaration(replace_registration: Any) -> None:
    class Undeclared(TaskRegistration):
        def subscribable_by(self, instance: Any) -> None:
            return None

    registration = replace_registration(Task, Undeclared)
    Task.objects.create(project=Project.objects.create(name="P", owner=User.objects.create(username="o")), title="t")

    with pytest.raises(AssertionError, match="declares no subscribable_by"):
        check_subscribable_by(registration)
