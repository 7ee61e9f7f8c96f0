from django.contrib import admin
from django.urls import include, path

from api.views import DemoView

urlpatterns = [
    path("", DemoView.as_view(), name="demo"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/", include("api.urls")),
    # drf-live's pages (served when DEBUG is on, or as DRF_LIVE says): the inspector at
    # /drf-live/inspector/ (staff only, docs/operations.md) and the socket's AsyncAPI document
    # at /drf-live/asyncapi.json and .yaml.
    path("drf-live/", include("notifications.urls")),
]
