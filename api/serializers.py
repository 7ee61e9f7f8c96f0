"""REST representations of the example domain (also what drf-live pushes)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from hashid_field.rest import HashidSerializerCharField
from rest_framework import serializers

from .models import Project, Task, User


def hashid_field(model: type, **kwargs: Any) -> HashidSerializerCharField:
    return HashidSerializerCharField(source_field=f"api.{model.__name__}.id", **kwargs)


class UserSerializer(serializers.ModelSerializer):
    """A user; ``email`` is shown only to that user."""

    id = hashid_field(User, read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "display_name", "email"]
        read_only_fields = ["username", "email"]

    def to_representation(self, instance: User) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        viewer = getattr(request, "user", None)
        if viewer is None or viewer.pk != instance.pk:
            data.pop("email", None)
        return data


class ProjectSerializer(serializers.ModelSerializer):
    id = hashid_field(Project, read_only=True)
    owner = serializers.PrimaryKeyRelatedField(read_only=True, pk_field=hashid_field(User))
    members = serializers.PrimaryKeyRelatedField(
        many=True, queryset=User.objects.all(), pk_field=hashid_field(User), required=False
    )
    open_tasks = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "owner", "members", "open_tasks"]

    def get_open_tasks(self, project: Project) -> int:
        # The viewset's queryset annotates it; a project just created was not read through it.
        annotated = getattr(project, "open_tasks", None)
        return int(annotated) if annotated is not None else project.tasks.filter(done=False).count()


class TaskSerializer(serializers.ModelSerializer):
    id = hashid_field(Task, read_only=True)
    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all(), pk_field=hashid_field(Project))
    assignee = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.all(), pk_field=hashid_field(User), allow_null=True, required=False
    )

    class Meta:
        model = Task
        fields = ["id", "project", "title", "done", "assignee", "private"]

    def validate_project(self, project: Project) -> Project:
        # A task may only be filed under a project the requester can see.
        request = self.context["request"]
        if not Project.objects.visible_to(request.user).filter(pk=project.pk).exists():
            raise serializers.ValidationError("No such project.")
        return project


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = authenticate(
            request=self.context.get("request"),
            username=attrs["username"],
            password=attrs["password"],
        )
        if user is None:
            raise serializers.ValidationError("Unable to log in with these credentials.")
        attrs["user"] = user
        return attrs
