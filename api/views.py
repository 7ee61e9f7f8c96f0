"""The example REST API. drf-live reuses these viewsets' rules for sockets."""

from __future__ import annotations

from typing import Any

from django.contrib.staticfiles import finders
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .management.commands.load_demo import PASSWORD, USERS
from .models import Project, Task, User
from .permissions import IsOwnerOrReadOnly, IsSelfOrReadOnly
from .serializers import ProjectSerializer, TaskSerializer, TokenRequestSerializer, UserSerializer


class UserViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = UserSerializer
    permission_classes = [permissions.IsAuthenticated, IsSelfOrReadOnly]
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self) -> QuerySet[User]:
        return User.objects.visible_to(self.request.user).order_by("username")

    @action(detail=False)
    def me(self, request: Request) -> Response:
        return Response(self.get_serializer(request.user).data)


def with_open_tasks(projects: QuerySet[Project]) -> QuerySet[Project]:
    """Annotate each project with ``open_tasks``: how many of its tasks are not done."""
    counts = (
        Task.objects.filter(project=OuterRef("pk"), done=False)
        .order_by()
        .values("project")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return projects.annotate(open_tasks=Coalesce(Subquery(counts, output_field=IntegerField()), 0))


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer
    permission_classes = [permissions.IsAuthenticated, IsOwnerOrReadOnly]

    def get_queryset(self) -> QuerySet[Project]:
        return with_open_tasks(Project.objects.visible_to(self.request.user)).prefetch_related("members")

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


@method_decorator(ensure_csrf_cookie, name="dispatch")
class DemoView(TemplateView):
    """The demo page at ``/``: a sign-in form, or the user's projects and tasks, live (api/static/api/demo.js)."""

    template_name = "api/demo.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # The page writes through the REST API with the csrftoken cookie, hence ensure_csrf_cookie.
        context["demo_users"] = [username for username, _, _ in USERS]
        context["demo_password"] = PASSWORD
        # redux comes from node_modules (see STATICFILES_DIRS); `npm ci` has not run when it is missing.
        context["redux_available"] = finders.find("vendor/redux/redux.browser.mjs") is not None
        return context
