"""drf-live's pages: with ``path("drf-live/", include("notifications.urls"))``, /drf-live/inspector/ and
/drf-live/asyncapi.json (and .yaml).

The inspector is served to staff users when ``DEBUG`` is on or
``DRF_LIVE["INSPECTOR_ENABLED"]`` says so, the AsyncAPI document when ``DEBUG``
is on or ``DRF_LIVE["ASYNCAPI_URL_ENABLED"]`` says so; otherwise they answer 404.
"""

from django.urls import path

from .views import InspectorView, asyncapi_document

app_name = "drf_live"

urlpatterns = [
    path("inspector/", InspectorView.as_view(), name="inspector"),
    path("asyncapi.json", asyncapi_document, {"format": "json"}, name="asyncapi"),
    path("asyncapi.yaml", asyncapi_document, {"format": "yaml"}, name="asyncapi-yaml"),
]
