"""drf-live's HTTP views: the inspector (a staff-only page, docs/operations.md) and the AsyncAPI document."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django.views.generic import TemplateView

from .conf import live_settings
from .registration import Registration
from .registry import Registry, site

#: The kinds of events a registration names (``Registration.get_event_type``).
EVENT_KINDS = ("create", "update", "delete")


def inspector_enabled() -> bool:
    """Whether the inspector is served: ``INSPECTOR_ENABLED``, or ``DEBUG`` when that is None."""
    enabled = live_settings.INSPECTOR_ENABLED
    return bool(settings.DEBUG if enabled is None else enabled)


@dataclass(frozen=True)
class ModelDescription:
    """What the inspector shows of one registration (and hands its script, as JSON)."""

    label: str
    viewset: str
    event_types: dict[str, str]
    filter_fields: list[str]
    audiences: list[str]
    socket_actions: list[str]
    custom_actions: list[str]
    allow_unfiltered: bool
    tracked_fields: list[str]
    access_fields: list[str]


def describe(registration: Registration) -> ModelDescription:
    viewset = registration.viewset
    return ModelDescription(
        label=registration.label,
        viewset=f"{viewset.__module__}.{viewset.__qualname__}" if viewset is not None else "",
        event_types={kind: registration.get_event_type(kind) for kind in EVENT_KINDS},
        filter_fields=list(registration.filter_fields),
        audiences=list(registration.audiences),
        socket_actions=list(registration.socket_actions),
        custom_actions=list(registration.custom_actions),
        allow_unfiltered=registration.allow_unfiltered,
        tracked_fields=registration.get_tracked_fields(),
        access_fields=list(registration.access_fields),
    )


@method_decorator(never_cache, name="dispatch")
class InspectorView(TemplateView):
    """The inspector page: the registry, a subscribe form, a raw frame box and every frame, live.

    The page's socket is the staff user's own (their session cookie): it sees
    what the registered viewsets show that user, and nothing more.
    """

    template_name = "notifications/inspector.html"
    #: The registry shown and offered for subscriptions.
    registry: Registry = site
    #: The WebSocket path, on this page's host (``notifications.routing``).
    socket_path = "/ws/notifications/"
    #: Frames the page keeps on show; older ones are dropped.
    max_frames = 500

    def has_permission(self, request: HttpRequest) -> bool:
        """Who may open the page when it is enabled: active staff users. Override to narrow it."""
        user = request.user
        return bool(user.is_active and user.is_staff)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # 404 rather than 403 or a redirect to a login page: to anyone else, the page does not exist.
        if not inspector_enabled() or not self.has_permission(request):
            raise Http404("No inspector here.")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        models = sorted((describe(registration) for registration in self.registry), key=lambda m: m.label)
        context["models"] = models
        context["max_frames"] = self.max_frames
        context["inspector_config"] = {
            "socketPath": self.socket_path,
            "maxFrames": self.max_frames,
            "models": [asdict(model) for model in models],
        }
        return context


# The AsyncAPI document ------------------------------------------------------------------


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
    from .asyncapi import build_document  # drf-spectacular is an optional extra

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
