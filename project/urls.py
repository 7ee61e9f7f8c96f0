from django.contrib import admin
from django.urls import include, path

from api.views import DemoView

urlpatterns = [
    path("", DemoView.as_view(), name="demo"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/", include("api.urls")),
    # drf-live's inspector at /drf-live/inspector/: staff only, served when DEBUG is on (docs/operations.md).
    path("drf-live/", include("notifications.urls")),
]
