from django.contrib import admin
from django.urls import include, path

from api.views import DemoView

urlpatterns = [
    path("", DemoView.as_view(), name="demo"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    # drf-live's AsyncAPI document, /api/asyncapi.json and .yaml (in DEBUG, or as DRF_LIVE says).
    path("api/", include("notifications.urls")),
    path("api/", include("api.urls")),
]
