"""URLs of drf-live's AsyncAPI document: ``path("api/", include("notifications.urls"))``.

Served when ``DEBUG`` is on, or when ``DRF_LIVE["ASYNCAPI_URL_ENABLED"]`` says so;
otherwise they answer 404.
"""

from django.urls import path

from .views import asyncapi_document

urlpatterns = [
    path("asyncapi.json", asyncapi_document, {"format": "json"}, name="drf-live-asyncapi"),
    path("asyncapi.yaml", asyncapi_document, {"format": "yaml"}, name="drf-live-asyncapi-yaml"),
]
