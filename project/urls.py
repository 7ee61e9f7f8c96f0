from django.contrib import admin
from django.urls import include, path, re_path

from api.views import DemoView
from notifications.metrics_view import metrics_view

urlpatterns = [
    path("", DemoView.as_view(), name="demo"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/", include("api.urls")),
    # drf-live's pages (served when DEBUG is on, or as DRF_LIVE says): the inspector at
    # /drf-live/inspector/ (staff only, docs/operations.md) and the socket's AsyncAPI document
    # at /drf-live/asyncapi.json and .yaml.
    path("drf-live/", include("notifications.urls")),
    # Prometheus metrics: 404 unless DRF_LIVE["METRICS"] is on (docs/operations.md).
    re_path(r"^metrics/?$", metrics_view, name="drf-live-metrics"),
]
