"""JSON Schemas of drf-live's frames: requests, replies and events as Flux Standard Actions, and the targets they name.

The pieces ``notifications.asyncapi`` builds its messages from. A message's
``payload`` is the whole frame (a WebSocket frame has no headers): for a
server frame ``{"type", "payload", "meta"}``, for a request ``{"action",
"request_id", ...}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .registration import Registration

#: drf-live's own schemas in ``components.schemas``, apart from the serializers' (named by drf-spectacular).
OWN = "drf_live."


def own(name: str) -> dict[str, str]:
    """A reference to one of ``own_schemas()``."""
    return {"$ref": f"#/components/schemas/{OWN}{name}"}


def own_schemas() -> dict[str, dict[str, Any]]:
    """The schemas every frame shares: ``request_id``, ``seq``, ``prev`` and ``epoch``."""
    return {
        f"{OWN}RequestId": {
            "type": ["string", "number"],
            "maxLength": 100,
            "description": "Any JSON string (at most 100 characters) or number the client chooses; the reply to "
            "the request carries it back in `meta.request_id`.",
        },
        f"{OWN}Seq": {
            "type": "integer",
            "minimum": 0,
            "description": "The position in the target's event stream: every event of a target carries the next.",
        },
        f"{OWN}Prev": {
            "type": "integer",
            "minimum": 0,
            "description": "The seq of the last event this subscriber was sent, when it is not seq - 1 (events "
            "in between were not for it). Apply the event when this (or seq - 1) is the last seq you hold.",
        },
        f"{OWN}Epoch": {
            "type": "string",
            "description": "Names the stream's history: a seq means something only together with its epoch.",
        },
    }


def object_schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """A JSON object with these ``properties``, of which ``required`` must be there."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def described(parameter: dict[str, Any]) -> dict[str, Any]:
    """The description of an OpenAPI parameter, as schema keywords."""
    return {"description": str(parameter["description"])} if parameter.get("description") else {}


def request_message(
    action: str,
    summary: str,
    properties: dict[str, Any],
    required: list[str],
    *,
    optional_action: bool = False,
    key: str | None = None,
) -> dict[str, Any]:
    """A frame a client sends: ``{"action": ..., "request_id": ..., ...}``."""
    required = [name for name in required if name != "action"]
    payload = object_schema(
        {"action": {"const": action}, **properties, "request_id": own("RequestId")},
        required if optional_action else ["action", *required],
    )
    return {
        "name": action,
        "title": f"{action} ({key})" if key else action,
        "summary": summary,
        "payload": payload,
        "correlationId": {"location": "$message.payload#/request_id"},
    }


def reply_message(
    type_: str | dict[str, Any],
    summary: str,
    payload: dict[str, Any],
    meta: dict[str, Any],
    required: list[str] | None = None,
    *,
    key: str | None = None,
) -> dict[str, Any]:
    """A reply: its ``meta.request_id`` echoes the request's."""
    message = frame_message(type_, summary, payload, {"request_id": own("RequestId"), **meta}, required or [])
    message["title"] = f"{message['name']} ({key})" if key else message["name"]
    message["correlationId"] = {"location": "$message.payload#/meta/request_id"}
    return message


def frame_message(
    type_: str | dict[str, Any], summary: str, payload: dict[str, Any], meta: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    """A server frame: a Flux Standard Action ``{"type", "payload", "meta"}``."""
    type_schema = {"const": type_} if isinstance(type_, str) else type_
    name = type_ if isinstance(type_, str) else "reply"
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "payload": object_schema(
            {"type": type_schema, "payload": payload, "meta": object_schema(meta, required)},
            ["type", "payload", "meta"],
        ),
    }


def component_key(name: str) -> str:
    """``name`` as a component key (letters, digits, ``.-_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


@dataclass
class TargetSchemas:
    """The schemas that name the targets of one registration, in requests and in ``meta``.

    ``collections``: whether the registration has any (filter fields, or the
    unfiltered collection, and a ``list`` in its viewset).
    """

    registration: Registration
    collections: bool

    @property
    def model(self) -> dict[str, Any]:
        label = self.registration.label
        app_label, name = label.split(".")
        letters = "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in name)
        return {
            "type": "string",
            "pattern": f"^{re.escape(app_label)}\\.{letters}$",
            "description": f"`{label}`: a model label as Django's apps.get_model accepts it (the model name in "
            "any case). Replies and events use the lower case form.",
            "examples": [label],
        }

    @property
    def id(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": 100, "description": "The object's id as the REST API shows it."}

    def filter(self) -> dict[str, Any]:
        fields = self.registration.filter_fields
        schema = object_schema(
            {name: {"type": "string", "maxLength": 100, "description": f"The id of the {name}."} for name in fields}
        )
        schema["additionalProperties"] = False
        if fields:
            schema["description"] = (
                f"A collection: the objects whose {', '.join(fields)} is the given id, as the viewset lists them "
                "for this user" + ("; {} is every object it shows them." if self.registration.allow_unfiltered else ".")
            )
        else:
            schema["description"] = "The unfiltered collection ({}): every object the viewset shows this user."
        if not self.registration.allow_unfiltered:
            schema["minProperties"] = 1
        return schema

    def request(self) -> dict[str, Any]:
        """The target's fields in a subscribe or unsubscribe."""
        properties = {"model": self.model, "id": self.id}
        if self.collections:
            properties["filter"] = self.filter()
        return properties

    def required(self) -> list[str]:
        return ["model"] if self.collections else ["model", "id"]

    def constraints(self) -> dict[str, Any]:
        """What a subscribe or unsubscribe must name besides ``model``: an ``id`` or a ``filter``, not both."""
        if not self.collections:
            return {}
        constraints: dict[str, Any] = {"not": {"required": ["id", "filter"]}}
        if not self.registration.allow_unfiltered:
            constraints["anyOf"] = [{"required": ["id"]}, {"required": ["filter"]}]
        return constraints

    def list_request(self, parameters: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``filter``, ``page`` and ``query`` of a ``list`` (``query``: the REST list's query parameters)."""
        query = object_schema(
            {
                name: {"type": "string", "maxLength": 1000, **described(parameter)}
                for name, parameter in parameters.items()
                if name != "page"
            }
        )
        query["additionalProperties"] = {"type": "string", "maxLength": 1000}
        query["description"] = "Query parameters the viewset's filter backends read, as in the REST list's URL."
        return {
            "filter": self.filter(),
            "page": {"type": "integer", "minimum": 1, "description": "The page of the REST list."},
            "query": query,
        }

    def meta(self) -> dict[str, Any]:
        """The target in a frame's ``meta``: ``model``, and ``id`` or ``filter`` (both for a collection's member)."""
        meta: dict[str, Any] = {"model": {"const": self.registration.label}, "id": self.id}
        if self.collections:
            meta["filter"] = {
                **self.filter(),
                "description": "Present for a collection (and its members' events): the collection's filter.",
            }
            meta["filter"].pop("minProperties", None)
        return meta
