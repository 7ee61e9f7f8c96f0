"""A URLconf for tests that route the paginated task viewset (tests/notifications/test_actions.py)."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from api.urls import urlpatterns as api_urlpatterns
from tests.notifications.test_actions import PagedTaskViewSet

router = DefaultRouter()
router.register("tasks", PagedTaskViewSet, basename="paged-task")

urlpatterns = [path("paged/", include(router.urls)), path("api/", include(api_urlpatterns))]
