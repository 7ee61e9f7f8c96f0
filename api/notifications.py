"""Which models of the example domain push live updates, and to whom."""

from __future__ import annotations

from typing import Any

import notifications

from .models import Project, Task, User
from .views import ProjectViewSet, TaskViewSet, UserViewSet


@notifications.register(User)
class UserRegistration(notifications.Registration):
    viewset = UserViewSet
    tracked_fields = ["username", "display_name", "email"]
    # The REST API shows `email` only to the user themself.
    audiences = ("self", "others")

    def get_audience(self, user: Any, instance: User) -> str:
        return "self" if user.pk == instance.pk else "others"

    def get_audience_user(self, audience: str, instance: User) -> Any:
        return instance if audience == "self" else super().get_audience_user(audience, instance)


@notifications.register(Project)
class ProjectRegistration(notifications.Registration):
    viewset = ProjectViewSet
    m2m_fields = ["members"]
    # Owner and members see a project (and its tasks, and each other).
    access_fields = ["owner", "members"]


@notifications.register(Task)
class TaskRegistration(notifications.Registration):
    viewset = TaskViewSet
    # A task is visible to whoever sees its project: moving it may hide it.
    access_fields = ["project"]
    # {"filter": {"project": "<id>"}}: the tasks of one project, visible to whoever sees it.
    filter_fields = ["project"]
