"""The example domain of the demo and the tests: users, projects and tasks."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.db.models import Q
from hashid_field import HashidAutoField
from model_utils import FieldTracker

from notifications.models import LiveModel


class UserQuerySet(models.QuerySet["User"]):
    def visible_to(self, user: User) -> UserQuerySet:
        """Users see themselves and everyone they share a project with."""
        if not user.is_authenticated:
            return self.none()
        shared = Project.objects.visible_to(user)
        members = Project.members.through.objects.filter(project__in=shared).values("user")
        return self.filter(Q(pk=user.pk) | Q(pk__in=shared.values("owner")) | Q(pk__in=members))


class ProjectQuerySet(models.QuerySet["Project"]):
    def visible_to(self, user: User) -> ProjectQuerySet:
        """A project is visible to its owner and its members."""
        if not user.is_authenticated:
            return self.none()
        # The user's own memberships, by the index on the user: not a join over every membership.
        memberships = self.model.members.through.objects.filter(user=user).values("project")
        return self.filter(Q(owner=user) | Q(pk__in=memberships))


class TaskQuerySet(models.QuerySet["Task"]):
    def visible_to(self, user: User) -> TaskQuerySet:
        """A task is visible to whoever sees its project; a private one only to its assignee and the owner."""
        if not user.is_authenticated:
            return self.none()
        shared = self.filter(project__in=Project.objects.visible_to(user))
        return shared.filter(Q(private=False) | Q(assignee=user) | Q(project__owner=user))


class ExampleUserManager(UserManager.from_queryset(UserQuerySet)):  # type: ignore[misc]
    pass


class User(LiveModel, AbstractUser):
    id = HashidAutoField(primary_key=True)
    display_name = models.CharField(max_length=150, blank=True)

    objects = ExampleUserManager()  # type: ignore[misc]  # AbstractUser declares it as a ClassVar

    tracker = FieldTracker(fields=["username", "display_name", "email", "is_active"])

    def __str__(self) -> str:
        return self.display_name or self.username


class Project(LiveModel):
    id = HashidAutoField(primary_key=True)
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="owned_projects")
    members = models.ManyToManyField(User, related_name="projects", blank=True)

    objects = ProjectQuerySet.as_manager()

    tracker = FieldTracker(fields=["name", "owner"])

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Task(LiveModel):
    id = HashidAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    assignee = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks")
    # Seen only by its assignee and the project's owner.
    private = models.BooleanField(default=False)

    objects = TaskQuerySet.as_manager()

    tracker = FieldTracker(fields=["project", "title", "done", "assignee", "private"])

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.title
