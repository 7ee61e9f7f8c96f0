"""The example REST API. drf-live reuses these viewsets' rules for sockets."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Project, Task, User
from .permissions import IsOwnerOrReadOnly, IsSelfOrReadOnly
from .serializers import ProjectSerializer, TaskSerializer, TokenRequestSerializer, UserSerializer


class UserViewSet(
    mixins.RetrieveModelMixin, mixins.UpdateModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet
):
    serializer_class = UserSerializer
    permission_classes = [permissions.IsAuthenticated, IsSelfOrReadOnly]
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[User]:
        return User.objects.visible_to(self.request.user).order_by("username")

    @action(detail=False)
    def me(self, request: Request) -> Response:
        return Response(self.get_serializer(request.user).data)


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer
    permission_classes = [permissions.IsAuthenticated, IsOwnerOrReadOnly]

    def get_queryset(self) -> QuerySet[Project]:
        return Project.objects.visible_to(self.request.user).prefetch_related("members")

    def perform_create(self, serializer: Any) -> None:
        serializer.save(owner=self.request.user)


class TaskViewSet(viewsets.ModelViewSet):
    serializer_class = TaskSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_queryset(self) -> QuerySet[Task]:
        queryset = Task.objects.visible_to(self.request.user)
        project = self.request.query_params.get("project")
        if project:
            # project__id, not project: the hashid field's own lookup matches only a
            # canonical hashid (no bare integers) and turns junk into no rows, not a 500.
            queryset = queryset.filter(project__id=project)
        return queryset


class ObtainTokenView(APIView):
    """``POST`` a username and password, get the DRF token for that user."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]
    serializer_class = TokenRequestSerializer

    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key}, status=status.HTTP_200_OK)
