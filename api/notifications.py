"""Which models of the example domain push live updates, and to whom."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Q

import notifications
from notifications import Touch

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

    def subscribable_by(self, instance: User) -> Iterable[Any]:
        # Themself, and everyone who shares a project with them (UserQuerySet.visible_to). A
        # queryset: drf-live narrows it to the subscribers in the database.
        projects = Project.objects.filter(Q(owner=instance) | Q(members=instance))
        sharing = Q(pk=instance.pk) | Q(owned_projects__in=projects) | Q(projects__in=projects)
        return User.objects.filter(sharing).values_list("pk", flat=True)


@notifications.register(Project)
class ProjectRegistration(notifications.Registration):
    viewset = ProjectViewSet
    m2m_fields = ["members"]
    # Owner and members see a project (and its tasks, and each other).
    access_fields = ["owner", "members"]
    # Who shares a project decides who sees whom, and who sees its tasks: a
    # member added or removed, or a new owner, changes that for every member
    # (and the one removed) and for every task of the project.
    touches = [
        Touch("members", when=["members", "owner"], every=True),
        Touch("owner", when=["owner", "members"]),
        Touch("tasks", when=["members", "owner"], every=True),
    ]

    def subscribable_by(self, instance: Project) -> Iterable[Any]:
        return User.objects.filter(Q(owned_projects=instance) | Q(projects=instance)).values_list("pk", flat=True)


@notifications.register(Task)
class TaskRegistration(notifications.Registration):
    viewset = TaskViewSet
    # Moving a task may hide it; a new assignee may see a private task the old one no longer does.
    access_fields = ["project", "assignee"]
    # {"filter": {"project": "<id>"}}: the tasks of one project, as each subscriber may see them.
    filter_fields = ["project"]
    # A project shows how many of its tasks are open (ProjectViewSet annotates it).
    touches = [Touch("project", when=["done", "project"], changed=["open_tasks"])]

    def subscribable_by(self, instance: Task) -> Iterable[Any]:
        # Whoever sees its project; a private one, of them, only its assignee and the owner.
        project = Project.objects.filter(pk=instance.project_id)
        viewers = User.objects.filter(Q(owned_projects__in=project) | Q(projects__in=project))
        if instance.private:
            viewers = viewers.filter(Q(pk=instance.assignee_id) | Q(owned_projects__in=project))
        return viewers.values_list("pk", flat=True)
