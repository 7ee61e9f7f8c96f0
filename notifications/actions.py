"""Requests over the socket answered by the registered viewset, exactly as the REST API answers them.

``retrieve`` and ``list`` run the viewset's own ``retrieve()`` and ``list()``
through DRF's dispatch, as the socket's user (forced authentication): the same
queryset, filter backends (query parameters come as an object), permission and
throttle classes, serializer and pagination class, so a reply's payload is what
the same user's ``GET`` returns. Writes (``create``, ``update``,
``partial_update``, ``destroy``) run the viewset's ``perform_*`` code the same
way, so a write by socket records and publishes exactly like the same write by
REST; they are opt-in per registration. Custom actions are plain methods of the
registration, named in its ``custom_actions`` mapping.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.http import HttpRequest, QueryDict
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework import exceptions as drf_exceptions

from .exceptions import RequestError

if TYPE_CHECKING:
    from .registration import Registration

#: Built-in actions: the viewset method each runs, and the HTTP method DRF dispatches it as.
VIEWSET_ACTIONS: dict[str, tuple[str, bool]] = {
    # action: (HTTP method, acts on one object)
    "retrieve": ("get", True),
    "list": ("get", False),
    "create": ("post", False),
    "update": ("put", True),
    "partial_update": ("patch", True),
    "destroy": ("delete", True),
}
WRITE_ACTIONS = ("create", "update", "partial_update", "destroy")
REPLY_TYPES = {
    "retrieve": "RETRIEVED",
    "list": "LISTED",
    "create": "CREATED",
    "update": "UPDATED",
    "partial_update": "UPDATED",
    "destroy": "DESTROYED",
}


@dataclass(frozen=True)
class Origin:
    """Where the socket's client reached the server: the host and scheme REST links are built with."""

    host: str
    secure: bool = False


@dataclass
class Reply:
    """What a custom action answers: an FSA ``type`` and its ``payload``."""

    type: str
    payload: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SocketRequest:
    """A custom action's request: who asks, about what, with what, and the viewset set up for them."""

    user: Any
    registration: Registration
    action: str
    data: Any
    instance: Any | None
    view: Any


def run(
    registration: Registration,
    action: str,
    user: Any,
    origin: Origin,
    *,
    pk: Any = None,
    lookups: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    data: Any = None,
) -> Reply:
    """Dispatch ``action`` through the registration's viewset as ``user``; the reply, or a ``RequestError``.

    ``lookups`` narrow a ``list`` to a collection (``{"project": pk}``), after
    the viewset's own queryset and filter backends.
    """
    method, detail = VIEWSET_ACTIONS[action]
    assert registration.viewset is not None
    viewset = registration.viewset
    view = _view_function(viewset, method, action)
    if view is None:
        raise RequestError("not_allowed", f"{registration.label} has no {action} in its viewset.")
    kwargs = {}
    if detail:
        kwargs[viewset.lookup_url_kwarg or viewset.lookup_field] = pk
    http = _http_request(method, _path(viewset, detail, kwargs), origin, user, query or {}, data)
    http._drf_live_lookups = lookups or {}  # type: ignore[attr-defined]
    response = view(http, **kwargs)
    status = int(response.status_code)
    if 200 <= status < 300:
        return Reply(REPLY_TYPES[action], response.data if status != 204 else None)
    raise _error(status, getattr(response, "data", None), write=action in WRITE_ACTIONS)


def call_custom(
    registration: Registration,
    action: str,
    user: Any,
    origin: Origin,
    *,
    pk: Any = None,
    data: Any = None,
) -> Reply:
    """Run the registration's method named for ``action`` in ``custom_actions``."""
    method: Callable[[SocketRequest], Any] = getattr(registration, registration.custom_actions[action])
    view = registration.get_view(user, action=action, host=origin.host)
    instance = None
    if pk is not None:
        instance = registration.get_visible(user, pk, host=origin.host)
        if instance is None:
            raise RequestError("not_found")
    try:
        result = method(SocketRequest(user, registration, action, data, instance, view))
    except drf_exceptions.APIException as exc:
        raise _error(exc.status_code, exc.detail, write=True) from None
    # Not the action's name alone: "update_title" would read as an UPDATE_* event to a reducer.
    return result if isinstance(result, Reply) else Reply(f"{action.upper()}_RESULT", result)


def _error(status: int, data: Any, *, write: bool) -> RequestError:
    """The wire error for a refused viewset request."""
    detail = _detail(data)
    if status == 400:
        fields = sorted(name for name in data if name != "non_field_errors") if isinstance(data, dict) else []
        return RequestError("invalid", detail or None, fields=fields, errors=_plain(data))
    if status == 429:
        return RequestError("throttled", detail or None)
    if status in (401, 403) and write:
        # The user sees the object (or the list) but may not change it.
        return RequestError("not_allowed", detail or None)
    if status in (401, 403, 404):
        return RequestError("not_found")  # what the user may not see stays indistinguishable from absent
    if status == 405:
        return RequestError("not_allowed", detail or None)
    return RequestError("unavailable")


def _detail(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return str(data["detail"])
    return ""


def _plain(data: Any) -> Any:
    """DRF's error structure as plain JSON values (ErrorDetail strings become str)."""
    return json.loads(json.dumps(data, default=str))


class _SocketHttpRequest(HttpRequest):
    """A request as DRF would see it over HTTP, with the scheme of the socket's own connection."""

    secure = False

    def _get_scheme(self) -> str:
        return "https" if self.secure else "http"


def _http_request(method: str, path: str, origin: Origin, user: Any, query: dict[str, Any], data: Any) -> HttpRequest:
    http = _SocketHttpRequest()
    http.secure = origin.secure
    http.method = method.upper()
    http.path = http.path_info = path
    query_string = urlencode({key: value for key, value in query.items()}, doseq=True)
    http.META["QUERY_STRING"] = query_string
    http.GET = QueryDict(query_string)
    host, _, port = origin.host.partition(":")
    http.META["HTTP_HOST"] = origin.host
    http.META["SERVER_NAME"] = host
    http.META["SERVER_PORT"] = port or ("443" if origin.secure else "80")
    if data is not None:
        body = json.dumps(data).encode()
        http.META["CONTENT_TYPE"] = "application/json"
        http.META["CONTENT_LENGTH"] = str(len(body))
        http._stream = io.BytesIO(body)  # what HttpRequest.read() reads, as under a server
        http._read_started = False  # type: ignore[attr-defined]
    # DRF's Request authenticates these without looking at headers (as APIRequestFactory does).
    http._force_auth_user = user  # type: ignore[attr-defined]
    http._force_auth_token = None  # type: ignore[attr-defined]
    http._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    return http


@functools.cache
def _view_function(viewset: type, method: str, action: str) -> Callable[..., Any] | None:
    if not hasattr(viewset, action) or method not in getattr(viewset, "http_method_names", [method]):
        return None
    return _narrowed(viewset).as_view({method: action})  # type: ignore[attr-defined]


@functools.cache
def _narrowed(viewset: type) -> type:
    """``viewset``, whose ``filter_queryset`` also applies the collection lookups of a socket's ``list``."""

    class Narrowed(viewset):
        def filter_queryset(self, queryset: Any) -> Any:
            queryset = super().filter_queryset(queryset)
            lookups = getattr(self.request._request, "_drf_live_lookups", None)
            return queryset.filter(**lookups) if lookups else queryset

    Narrowed.__name__ = Narrowed.__qualname__ = viewset.__name__
    Narrowed.__module__ = viewset.__module__
    return Narrowed


def _path(viewset: type, detail: bool, kwargs: dict[str, Any]) -> str:
    """The REST URL of this request, so that links the viewset builds (pagination) are the REST API's."""
    name = _route_names(viewset).get("detail" if detail else "list")
    if name is None:
        return "/"
    try:
        return reverse(name, kwargs={key: str(value) for key, value in kwargs.items()})
    except Exception:  # noqa: BLE001 - an odd route: links fall back to the site root
        return "/"


@functools.cache
def _route_names(viewset: type) -> dict[str, str]:
    """The URL names under which the project's URLconf routes ``viewset``'s list and detail views."""
    names: dict[str, str] = {}

    def walk(patterns: list[Any], namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                callback = pattern.callback
                if getattr(callback, "cls", None) is viewset:
                    get = (getattr(callback, "actions", {}) or {}).get("get")
                    kind = {"list": "list", "retrieve": "detail"}.get(get or "")
                    if kind is not None:
                        names.setdefault(kind, f"{namespace}{pattern.name}")

    walk(get_resolver().url_patterns, "")
    return names
