"""JSON Schemas of what a registered viewset reads and returns, mapped by drf-spectacular.

drf-live's AsyncAPI document (``notifications.asyncapi``) describes payloads as
the REST API's own OpenAPI description would: drf-spectacular's ``AutoSchema``
is run on each viewset action exactly as its ``SchemaGenerator`` runs it on a
URL (so ``@extend_schema`` on the viewset, pagination, ``PATCH`` making every
field optional and the project's ``SPECTACULAR_SETTINGS`` all apply), and only
the request and response bodies are kept. Schemas come out as JSON Schema
(drf-spectacular's OpenAPI 3.1 mode), which AsyncAPI's default schema format
accepts; their components are collected for ``components.schemas``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .actions import VIEWSET_ACTIONS

#: drf-spectacular settings for the mapping: JSON Schema types (``["string", "null"]``, not OpenAPI
#: 3.0's ``nullable``), and request bodies apart from responses (read-only fields left out).
SPECTACULAR_PATCHES = {"OAS_VERSION": "3.1.0", "COMPONENT_SPLIT_REQUEST": True}
JSON = "application/json"


def require_spectacular() -> None:
    """Raise ``ImproperlyConfigured`` with what to install when drf-spectacular is missing."""
    try:
        import drf_spectacular  # noqa: F401
    except ImportError as exc:
        raise ImproperlyConfigured(
            "drf-live's AsyncAPI document maps serializers to JSON Schema with drf-spectacular, "
            "which is not installed: pip install 'drf-live[asyncapi]' (or drf-spectacular)."
        ) from exc


@dataclass
class ActionSchemas:
    """The bodies of one viewset action: what it reads (``request``) and returns (``response``)."""

    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    #: The query parameters the action reads (``list``: its filter backends and paginator), by name.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


class SchemaMapper:
    """Maps viewset actions to JSON Schemas, collecting the components they refer to.

    Use it inside ``mapping()``: drf-spectacular's settings are patched for
    as long as the mapper is in use.
    """

    def __init__(self) -> None:
        require_spectacular()
        from drf_spectacular.generators import SchemaGenerator

        self.generator = SchemaGenerator()
        self._schemas: list[Any] = []  # views hold their schema weakly (drf-spectacular's own care)

    def action(self, viewset: type, action: str, *, name: str) -> ActionSchemas | None:
        """The schemas of ``action`` (a key of ``VIEWSET_ACTIONS``) of ``viewset``; None if it has no such action.

        ``name`` stands in for the URL (in operation ids and warnings); the
        bodies do not depend on it.
        """
        from drf_spectacular.drainage import add_trace_message
        from drf_spectacular.openapi import AutoSchema
        from drf_spectacular.settings import spectacular_settings

        method, detail = VIEWSET_ACTIONS[action]
        if not hasattr(viewset, action) or method not in getattr(viewset, "http_method_names", [method]):
            return None
        view = self.generator.create_view(viewset.as_view({method: action}), method.upper())  # type: ignore[attr-defined]
        if not isinstance(view.schema, AutoSchema):
            # The project's DEFAULT_SCHEMA_CLASS is DRF's own (or another library's): map with drf-spectacular's.
            schema = AutoSchema()
            self._schemas.append(schema)
            view.schema = schema
        lookup = getattr(viewset, "lookup_url_kwarg", None) or getattr(viewset, "lookup_field", "pk")
        path = f"/{name}/{{{lookup}}}/" if detail else f"/{name}/"
        path_regex = f"^{name}/(?P<{lookup}>[^/.]+)/$" if detail else f"^{name}/$"
        view.request = spectacular_settings.GET_MOCK_REQUEST(method.upper(), path, view, None)
        with add_trace_message(viewset):
            operation = view.schema.get_operation(path, path_regex, "^/", method.upper(), self.generator.registry)
        if operation is None:  # excluded with @extend_schema(exclude=True)
            return None
        responses = operation.get("responses", {})
        success: dict[str, Any] = next((responses[code] for code in sorted(responses) if code.startswith("2")), {})
        parameters = {
            parameter["name"]: parameter
            for parameter in operation.get("parameters", [])
            if parameter.get("in") == "query"
        }
        return ActionSchemas(_body(operation.get("requestBody")), _body(success), parameters)

    def components(self) -> dict[str, dict[str, Any]]:
        """Every schema component the mapped actions refer to, by name (``#/components/schemas/<name>``)."""
        from drf_spectacular.plumbing import normalize_result_object

        built = normalize_result_object(self.generator.registry.build({}))
        return {name: json_schema(schema) for name, schema in built.get("schemas", {}).items()}


@contextlib.contextmanager
def mapping() -> Iterator[SchemaMapper]:
    """A ``SchemaMapper``, with drf-spectacular's settings patched for JSON Schema while it is in use."""
    require_spectacular()
    from drf_spectacular.settings import patched_settings

    with patched_settings(SPECTACULAR_PATCHES):
        yield SchemaMapper()


def _body(holder: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of a request body or response (its JSON media type's), or None."""
    content = (holder or {}).get("content") or {}
    media = content.get(JSON) or next(iter(content.values()), None)
    return json_schema(media["schema"]) if media and "schema" in media else None


def json_schema(schema: Any) -> Any:
    """``schema`` with what OpenAPI adds to JSON Schema rewritten as JSON Schema.

    drf-spectacular's 3.1 mode writes nullable fields as type lists already;
    what DRF writes itself (a paginator's ``next``, ``"nullable": true``) and
    OpenAPI's ``example`` are rewritten here.
    """
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: json_schema(value) for key, value in schema.items() if key not in ("nullable", "example")}
    if "example" in schema and "examples" not in schema:
        result["examples"] = [schema["example"]]
    if schema.get("nullable"):
        kind = result.get("type")
        if isinstance(kind, str) and kind != "null":
            result["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            result["type"] = [*kind, "null"]
        elif kind is None:
            result = {"oneOf": [result, {"type": "null"}]}
    return result
