"""drf-live's pages: with ``path("drf-live/", include("notifications.urls"))``, /drf-live/inspector/."""

from django.urls import path

from .views import InspectorView

app_name = "drf_live"

urlpatterns = [
    path("inspector/", InspectorView.as_view(), name="inspector"),
]
