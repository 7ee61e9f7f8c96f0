"""The AsyncAPI document over HTTP, for the projects that include ``notifications.urls``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from .asyncapi import build_document
from .conf import live_settings
from .registry import site


def asyncapi_enabled() -> bool:
    """Whether the document is served: ``ASYNCAPI_URL_ENABLED``, or when that is None, ``DEBUG``."""
    enabled = live_settings.ASYNCAPI_URL_ENABLED
    return bool(settings.DEBUG if enabled is None else enabled)


@require_GET
def asyncapi_document(request: HttpRequest, format: str = "json") -> HttpResponse:
    """The socket's AsyncAPI 3.0 document, as JSON or YAML; 404 unless it is enabled.

    Its server is the host this request reached, with ``wss`` behind HTTPS.
    """
    if not asyncapi_enabled():
        raise Http404("The AsyncAPI document is not served here (DRF_LIVE['ASYNCAPI_URL_ENABLED']).")
    scheme = "wss" if request.is_secure() else "ws"
    document = build_document(site, server=f"{scheme}://{request.get_host()}")
    if format == "yaml":
        return HttpResponse(to_yaml(document), content_type="application/yaml; charset=utf-8")
    return JsonResponse(document, json_dumps_params={"indent": 2})


def to_yaml(document: dict[str, Any]) -> str:
    """``document`` as YAML, in its own key order (PyYAML comes with drf-spectacular)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # the document shares schema objects: write each out, not as &id001 / *id001

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        # Descriptions (Markdown, tables) as literal blocks, readable as they are written.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return str(yaml.dump(document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120))
