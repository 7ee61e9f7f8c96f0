"""The socket's AsyncAPI 3.0 document, generated from the registry.

``build_document(site)`` describes ``/ws/notifications/`` as the server sees
it: operations with ``action: receive`` are the frames clients send (each with
the replies it may get), those with ``action: send`` are what the server pushes
(events, revocations). Every registered model gets its own messages, so each
payload is what its viewset's serializer returns, mapped to JSON Schema by
drf-spectacular (``notifications.viewset_schemas``); the frames around them are
``notifications.frame_schemas``. Error codes come from
``frames.ErrorCode`` and close codes from ``frames.CloseCode``: AsyncAPI has no
close codes, so they are in the channel's description and its
``x-close-codes`` extension. Served by ``notifications.views`` and written by
``manage.py drf_live_asyncapi``; docs/protocol.md says the same in prose.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, get_args
from urllib.parse import urlsplit

from django.conf import settings

from .actions import REPLY_TYPES, VIEWSET_ACTIONS, WRITE_ACTIONS
from .conf import live_settings
from .frame_schemas import (
    TargetSchemas,
    component_key,
    frame_message,
    object_schema,
    own,
    own_schemas,
    reply_message,
    request_message,
)
from .frames import ERROR_DETAILS, CloseCode, ErrorCode
from .registration import Registration
from .registry import Registry, site
from .viewset_schemas import SchemaMapper, mapping

ASYNCAPI_VERSION = "3.0.0"
#: The WebSocket path (``notifications.routing``) and the channel's key in the document.
ADDRESS = "/ws/notifications/"
CHANNEL = "notifications"
CHANNEL_REF = {"$ref": f"#/channels/{CHANNEL}"}

#: When each error code is answered (docs/protocol.md, section 4).
ERROR_WHEN: dict[str, str] = {
    "parse_error": "the frame is not JSON, not a JSON object, or a binary frame",
    "invalid": "a field is missing or has the wrong type; `payload.fields` names them (DRF's messages in "
    "`payload.errors` for a viewset's validation error)",
    "unknown_action": "`action` names no action (of drf-live, or of any registration)",
    "not_found": "no such model, a malformed id, no such object, or an object you may not see: one answer for "
    "all four, so ids cannot be probed",
    "not_authenticated": "the socket has not authenticated, or the `authenticate` token is wrong",
    "throttled": "too many requests of this action on this socket: wait (its budget refills)",
    "limit_exceeded": "a per-socket limit was reached (`MAX_SUBSCRIPTIONS` subscriptions)",
    "not_allowed": "an action this model's registration has not enabled, or a write the viewset's permissions refuse",
    "unavailable": "the server cannot serve the request now (its event store is down); try again",
}

#: What each close code means and whether to reconnect (docs/protocol.md, section 6).
CLOSE_CODES: dict[int, tuple[str, str]] = {
    CloseCode.FRAME_TOO_LARGE: (
        "a frame larger than the limit (the ASGI server's, or `MAX_FRAME_BYTES`)",
        "yes, after fixing what it sends",
    ),
    CloseCode.NOT_AUTHENTICATED: (
        "not authenticated in time (`AUTH_TIMEOUT`), or credentials revoked (token deleted, user deactivated, "
        "logged out, session ended, password changed)",
        "only with new credentials",
    ),
    CloseCode.FLOOD: (
        "abuse: too many error replies (`ERROR_BURST`, `ERROR_RATE`), or too many wrong tokens "
        "(`MAX_AUTH_FAILURES`, or from this address)",
        "yes, with backoff",
    ),
    CloseCode.TOO_MANY_SOCKETS: ("too many sockets for this user (`MAX_SOCKETS_PER_USER`)", "yes, with backoff"),
    CloseCode.SLOW_CONSUMER: (
        "slow consumer: more than `SEND_QUEUE_LIMIT` frames waited, or none went out for `SEND_TIMEOUT` seconds",
        "yes, at once, resubscribing with `since`",
    ),
    CloseCode.LAYER_LOST: (
        "the server lost its connection to Redis under this socket, or cannot vouch for what the client holds "
        "(an epoch rotated, an event was missed)",
        "yes, with backoff, resubscribing with `since`",
    ),
}


def error_codes() -> list[str]:
    """Every code an ``ERROR`` frame may carry, in ``frames.ErrorCode``'s order."""
    return list(get_args(ErrorCode))


def close_codes() -> dict[str, int]:
    """Every close code of ``frames.CloseCode``, by name."""
    return {name: value for name, value in vars(CloseCode).items() if name.isupper() and isinstance(value, int)}


@dataclass
class _Document:
    """The parts of the document as they are collected."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each registration's object schema (a reference to its serializer's component, as a rule), by label.
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def message(self, key: str, message: dict[str, Any]) -> dict[str, str]:
        """Add a message; returns the reference operations use (the channel's copy, as AsyncAPI requires)."""
        self.messages[key] = message
        return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}

    def receive(self, name: str, messages: list[dict[str, str]], replies: list[dict[str, str]], summary: str) -> None:
        """A client request: the server receives ``messages`` and answers with one of ``replies``."""
        operation = self.operations.setdefault(
            name,
            {
                "action": "receive",
                "channel": CHANNEL_REF,
                "title": name,
                "summary": summary,
                "messages": [],
                "reply": {"channel": CHANNEL_REF, "messages": []},
            },
        )
        for message in messages:
            if message not in operation["messages"]:
                operation["messages"].append(message)
        for reply in replies:
            if reply not in operation["reply"]["messages"]:
                operation["reply"]["messages"].append(reply)

    def send(self, name: str, message: dict[str, str], summary: str) -> None:
        """A frame the server pushes, unasked."""
        self.operations[name] = {
            "action": "send",
            "channel": CHANNEL_REF,
            "title": name,
            "summary": summary,
            "messages": [message],
        }


def build_document(registry: Registry = site, *, server: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the socket for every model of ``registry``.

    ``server`` is the socket server's URL (``ws://host:port`` or ``wss://...``),
    included as the document's server when given. Raises
    ``ImproperlyConfigured`` when drf-spectacular is not installed.
    """
    doc = _Document()
    error = doc.message("ERROR", _error_message())
    _connection_messages(doc, error)
    registrations = sorted(registry, key=lambda registration: registration.label)
    unsubscribed = doc.message("UNSUBSCRIBED", _unsubscribed_message())
    with mapping() as mapper:
        for registration in registrations:
            _registration_messages(doc, registration, mapper, error, unsubscribed)
        components = mapper.components()
    for registration in registrations:
        _name_fields(doc, registration, components)
        _mark_audiences(components, registration, doc.objects[registration.label])
    doc.send("UNSUBSCRIBED.revoked", doc.message("UNSUBSCRIBED.revoked", _revoked_message(registrations)), _REVOKED)
    doc.send("APPLICATION_EVENT", doc.message("APPLICATION_EVENT", _application_event(registrations)), _APPLICATION)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": _info(),
        "defaultContentType": "application/json",
    }
    if server:
        document["servers"] = {"drf-live": _server(server)}
    document["channels"] = {
        CHANNEL: {
            "address": ADDRESS,
            "title": "drf-live notifications",
            "description": _channel_description(),
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in doc.messages},
            "bindings": {"ws": _ws_binding()},
            "x-close-codes": [
                {"code": code, "name": name, "meaning": CLOSE_CODES[code][0], "reconnect": CLOSE_CODES[code][1]}
                for name, code in close_codes().items()
            ],
        }
    }
    document["operations"] = doc.operations
    document["components"] = {
        "schemas": {**own_schemas(), **components},
        "messages": doc.messages,
        "securitySchemes": _security_schemes(),
    }
    return document


# The connection: authenticate, ping, errors ------------------------------------------------------------


def _connection_messages(doc: _Document, error: dict[str, str]) -> None:
    authenticate = doc.message(
        "authenticate",
        request_message(
            "authenticate",
            "Authenticate with an API token (browsers that keep a token rather than a session cookie).",
            {"token": {"type": "string", "minLength": 1, "maxLength": 200, "description": "A DRF API token."}},
            ["token"],
        ),
    )
    authenticated = doc.message(
        "AUTHENTICATED",
        reply_message(
            "AUTHENTICATED",
            "The socket is now authenticated as this user.",
            object_schema({"user": {"type": "string", "description": "The user's id (its primary key, as a string)."}}),
            {},
        ),
    )
    doc.receive("authenticate", [authenticate], [authenticated, error], "Authenticate the socket with a token.")
    ping = doc.message("ping", request_message("ping", "Ask for a PONG: a keep-alive, or a round trip.", {}, []))
    pong = doc.message("PONG", reply_message("PONG", "The answer to ping.", {"type": "null"}, {}))
    doc.receive("ping", [ping], [pong, error], "Ping the server.")


def _error_message() -> dict[str, Any]:
    codes = error_codes()
    table = "\n".join(f"- `{code}`: {ERROR_WHEN.get(code, ERROR_DETAILS[code])}" for code in codes)
    payload = object_schema(
        {
            "code": {"type": "string", "enum": codes, "description": f"What went wrong:\n\n{table}"},
            "detail": {"type": "string", "description": "A sentence for people (not for programs)."},
            "fields": {
                "type": "array",
                "items": {"type": "string"},
                "description": "`invalid`: the request's fields that are missing or wrong.",
            },
            "errors": {"description": "`invalid` from a viewset: DRF's validation errors, as the REST API gives them."},
        },
        ["code", "detail"],
    )
    message = reply_message(
        "ERROR",
        "A request failed. An error never closes the socket; too many of them do (close code 4008).",
        payload,
        {},
    )
    message["payload"]["properties"]["error"] = {"const": True}
    message["payload"]["required"].append("error")
    message["x-error-codes"] = {code: ERROR_WHEN.get(code, ERROR_DETAILS[code]) for code in codes}
    return message


# One registered model -----------------------------------------------------------------------------------


def _registration_messages(
    doc: _Document, registration: Registration, mapper: SchemaMapper, error: dict[str, str], unsubscribed: Any
) -> None:
    label = registration.label
    viewset = registration.viewset
    assert viewset is not None
    retrieved = mapper.action(viewset, "retrieve", name=label)
    obj = retrieved.response if retrieved is not None and retrieved.response else _UNMAPPED
    doc.objects[label] = obj
    listed = mapper.action(viewset, "list", name=label)
    collections = listed is not None and (bool(registration.filter_fields) or registration.allow_unfiltered)
    page = (listed.response if listed is not None else None) or {"type": "array", "items": obj}
    target = TargetSchemas(registration, collections)

    # Subscriptions.
    payload = {"anyOf": [obj, page, {"type": "null"}]} if collections else {"anyOf": [obj, {"type": "null"}]}
    subscribed = doc.message(
        f"{label}.SUBSCRIBED",
        reply_message(
            "SUBSCRIBED",
            f"Subscribed to {label}: the payload is what GET returns to this user (an object, or for a "
            "collection the first page of its REST list), or null when `meta.recovered` is true (the missed "
            "events follow).",
            payload,
            {
                **target.meta(),
                "seq": own("Seq"),
                "epoch": own("Epoch"),
                "recovered": {
                    "type": "boolean",
                    "description": "Present when the request had `since`: whether the missed events follow.",
                },
            },
            ["model", "seq", "epoch"],
            key=label,
        ),
    )
    subscribe = doc.message(
        f"{label}.subscribe",
        request_message(
            "subscribe",
            f"Subscribe to one {label} (`id`) or to a collection (`filter`); `since` and `epoch` recover the "
            "events missed after that seq. A frame without `action` but with `model` is a subscribe.",
            {
                **target.request(),
                "since": {"type": "integer", "minimum": 0, "description": "The last seq the client holds."},
                "epoch": {"type": "string", "maxLength": 100, "description": "The epoch that seq belongs to."},
            },
            target.required(),
            optional_action=True,
            key=label,
        ),
    )
    doc.messages[f"{label}.subscribe"]["payload"].update(
        target.constraints(), dependencies={"since": ["epoch"], "epoch": ["since"]}
    )
    doc.receive("subscribe", [subscribe], [subscribed, error], "Subscribe to an object or a collection.")
    unsubscribe = doc.message(
        f"{label}.unsubscribe",
        request_message(
            "unsubscribe",
            f"Stop receiving events of a {label} target.",
            target.request(),
            target.required(),
            key=label,
        ),
    )
    doc.messages[f"{label}.unsubscribe"]["payload"].update(target.constraints())
    doc.receive("unsubscribe", [unsubscribe], [unsubscribed, error], "Unsubscribe from a target.")

    # Requests the viewset answers.
    _viewset_messages(doc, registration, mapper, target, error, obj, page, listed)

    # Events.
    meta = {**target.meta(), "seq": own("Seq"), "prev": own("Prev")}
    changed = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string"},  # named by _name_fields
        "description": "The fields that changed and that this payload shows.",
    }
    events = [("update", obj, {**meta, "changed": changed}, ["model", "id", "changed", "seq"])]
    if collections:
        events.append(("create", obj, meta, ["model", "filter", "id", "seq"]))
    deleted = object_schema({"id": {"type": "string"}}, ["id"])
    deleted["additionalProperties"] = False
    events.append(("delete", deleted, meta, ["model", "id", "seq"]))
    for kind, event_payload, event_meta, required in events:
        type_ = registration.get_event_type(kind)
        key = f"{label}.{component_key(type_)}"
        message = frame_message(type_, _EVENTS[kind].format(label=label), event_payload, event_meta, required)
        doc.send(key, doc.message(key, message), f"{type_}: {_EVENT_NOUN[kind].format(label=label)}.")


def _viewset_messages(
    doc: _Document,
    registration: Registration,
    mapper: SchemaMapper,
    target: TargetSchemas,
    error: dict[str, str],
    obj: dict[str, Any],
    page: dict[str, Any],
    listed: Any,
) -> None:
    label = registration.label
    viewset = registration.viewset
    custom = registration.custom_actions
    for action in VIEWSET_ACTIONS:
        if action not in registration.socket_actions or action in custom:
            continue
        schemas = listed if action == "list" else mapper.action(viewset, action, name=label)  # type: ignore[arg-type]
        if schemas is None:
            continue  # the viewset has no such action: the request answers not_allowed
        detail = VIEWSET_ACTIONS[action][1]
        properties: dict[str, Any] = {"model": target.model}
        required = ["action", "model"]
        reply_meta: dict[str, Any] = {"model": target.model}
        reply_required = ["model"]
        if detail:
            properties["id"] = target.id
            required.append("id")
            reply_meta["id"] = target.id
            reply_required.append("id")
        if action == "list":
            properties.update(target.list_request(schemas.parameters))
            if not registration.allow_unfiltered:
                required.append("filter")
            reply_meta.update(
                filter=target.filter(),
                page={"type": "integer", "description": "The page asked for."},
                query={"type": "object", "description": "The query asked for."},
            )
            reply_required.append("filter")
        if action in ("list", "retrieve"):
            reply_meta.update(
                seq={
                    **own("Seq"),
                    "description": "When this socket is subscribed to the target: the page or object "
                    "is as of this seq (events up to it came before this reply, later ones follow it).",
                },
                epoch=own("Epoch"),
            )
        if action in WRITE_ACTIONS and action != "destroy":
            properties["data"] = schemas.request or {"type": "object"}
            required.append("data")
        reply_type = REPLY_TYPES[action]
        response = page if action == "list" else (obj if action == "retrieve" else schemas.response)
        request = doc.message(
            f"{label}.{action}",
            request_message(action, _ACTIONS[action].format(label=label), properties, required, key=label),
        )
        reply = doc.message(
            f"{label}.{reply_type}",
            reply_message(
                reply_type,
                _REPLIES[action].format(label=label),
                response or {"type": "null"},
                reply_meta,
                reply_required,
                key=label,
            ),
        )
        doc.receive(action, [request], [reply, error], _OPERATIONS[action])
    for action in sorted(custom):
        if action in _CONSUMER_ACTIONS:
            continue  # drf-live's own action of that name is the one that runs
        key = f"{label}.{component_key(action)}"
        request = doc.message(
            key,
            request_message(
                action,
                f"{action}: an action of {label}'s registration (`{custom[action]}`), with the object named "
                "by `id` if given.",
                {"model": target.model, "id": target.id, "filter": target.filter(), "data": {}},
                ["action", "model"],
                key=label,
            ),
        )
        reply = doc.message(
            f"{key}.reply",
            reply_message(
                {"type": "string", "examples": [f"{action.upper()}_RESULT"]},
                f"The answer to {action}: `{action.upper()}_RESULT` with what the action returned, or the type "
                "and payload of the Reply it returned.",
                {},
                {"model": {"const": label}, "id": target.id, "filter": target.filter()},
                ["model"],
                key=f"{label}.{action}",
            ),
        )
        doc.receive(component_key(action), [request], [reply, error], f"A custom action: {action}.")


def _name_fields(doc: _Document, registration: Registration, components: dict[str, Any]) -> None:
    """``meta.changed`` of the update event names fields of its payload: those of the serializer's component."""
    properties = _component(components, doc.objects[registration.label]).get("properties")
    if properties:
        key = f"{registration.label}.{component_key(registration.get_event_type('update'))}"
        changed = doc.messages[key]["payload"]["properties"]["meta"]["properties"]["changed"]
        changed["items"] = {"type": "string", "enum": list(properties)}


def _component(components: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The component ``schema`` refers to (``{"$ref": "#/components/schemas/Task"}``), or ``{}``."""
    ref = schema.get("$ref", "")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/components/schemas/") else {}


def _mark_audiences(components: dict[str, Any], registration: Registration, obj: dict[str, Any]) -> None:
    """A registration with several audiences: which fields a user gets depends on them, so none is required.

    The serializer's output depends on the user (the example's ``email``,
    shown only to its owner): the document cannot tell which fields each
    audience gets, so it marks every field optional and says why.
    """
    component = _component(components, obj)
    if len(registration.audiences) < 2 or not component:
        return
    component.pop("required", None)
    note = (
        f"Serialized per audience ({', '.join(registration.audiences)}): what a field shows, and whether it is "
        f"there at all, depends on the user, so no field is marked required."
    )
    component["description"] = f"{component['description']}\n\n{note}" if component.get("description") else note
    component["x-drf-live-audiences"] = list(registration.audiences)


# Frames of no single model -------------------------------------------------------------------------------


def _unsubscribed_message() -> dict[str, Any]:
    return reply_message(
        "UNSUBSCRIBED",
        "The answer to unsubscribe, also when the socket was not subscribed to that target.",
        {"type": "null"},
        {
            "model": {"type": "string", "description": "The target's model label, as sent, in lower case."},
            "id": {"type": ["string", "null"]},
            "filter": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        ["model"],
    )


def _revoked_message(registrations: list[Registration]) -> dict[str, Any]:
    return frame_message(
        "UNSUBSCRIBED",
        "This user lost access to a target (a write changed who may see it): nothing more comes from it.",
        {"type": "null"},
        {
            "model": {"type": "string", "enum": [registration.label for registration in registrations]},
            "id": {"type": "string"},
            "filter": {"type": "object", "additionalProperties": {"type": "string"}},
            "reason": {"const": "revoked"},
        },
        ["model", "reason"],
    )


def _application_event(registrations: list[Registration]) -> dict[str, Any]:
    return frame_message(
        {"type": "string", "description": "The application's own type (`TASK_COMMENTED`, say)."},
        "An event the application sends with notifications.publish_event() to an object's or a collection's "
        "subscribers who may see it; numbered and recovered like any other event.",
        {"description": "Whatever the application sends (JSON)."},
        {
            "model": {"type": "string", "enum": [registration.label for registration in registrations]},
            "id": {"type": "string"},
            "filter": {"type": "object", "additionalProperties": {"type": "string"}},
            "seq": own("Seq"),
            "prev": own("Prev"),
        },
        ["model", "seq"],
    )


def _info() -> dict[str, Any]:
    try:
        version = importlib.metadata.version("drf-live")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    info = {
        "title": "drf-live notifications",
        "version": version,
        "description": _INFO,
    }
    info.update(live_settings.ASYNCAPI_INFO or {})
    return info


def _server(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"A server is a ws:// or wss:// URL with a host, not {url!r}.")
    return {
        "host": parts.netloc,
        "protocol": parts.scheme,
        "description": "The ASGI server of the Django project.",
        "security": [
            {"$ref": "#/components/securitySchemes/token"},
            {"$ref": "#/components/securitySchemes/session"},
        ],
    }


def _security_schemes() -> dict[str, Any]:
    return {
        "token": {
            "type": "httpApiKey",
            "name": "Authorization",
            "in": "header",
            "description": "`Authorization: Token <key>` on the handshake: a DRF API token (scripts, apps). A "
            "wrong token refuses the handshake (HTTP 403). Browsers that keep a token send an `authenticate` "
            "frame instead.",
        },
        "session": {
            "type": "httpApiKey",
            "name": settings.SESSION_COOKIE_NAME,
            "in": "cookie",
            "description": "Django's session cookie, only when the handshake's Origin passes Django's CSRF "
            "origin check (a foreign Origin with a cookie is refused with HTTP 403).",
        },
    }


def _ws_binding() -> dict[str, Any]:
    return {
        "method": "GET",
        "headers": object_schema(
            {
                "Authorization": {
                    "type": "string",
                    "pattern": "^Token .+$",
                    "description": "`Token <key>`: a DRF API token (optional: a session cookie, an `authenticate` "
                    "frame, or ALLOW_ANONYMOUS also do).",
                },
                "Origin": {
                    "type": "string",
                    "description": "Sent by browsers: with a session cookie it must pass Django's CSRF origin check.",
                },
            }
        ),
        "bindingVersion": "0.1.0",
    }


def _channel_description() -> str:
    rows = "\n".join(f"| {code} | {CLOSE_CODES[code][0]} | {CLOSE_CODES[code][1]} |" for code in close_codes().values())
    return (
        "One WebSocket per client, JSON text frames, one JSON object per frame. The client sends requests "
        "(`action`); the server answers each one and pushes events for what the client subscribed to.\n\n"
        "**Who the socket is**, decided at the handshake: an `Authorization: Token <key>` header, else the "
        "session cookie (only when the handshake's Origin passes Django's CSRF origin check), else an "
        "`authenticate` frame within `AUTH_TIMEOUT` seconds. Until then only `authenticate` and `ping` are "
        "answered; anything else is `not_authenticated`.\n\n"
        "**Handshakes refused**: HTTP 403 (a session cookie from a foreign Origin, a wrong token header), HTTP 429 "
        "(too many unauthenticated sockets, too many failed authentications from the address), HTTP 404 (any "
        "other path).\n\n"
        "**Close codes** (also in `x-close-codes`; AsyncAPI has no field for them):\n\n"
        "| code | meaning | reconnect? |\n|---|---|---|\n" + rows
    )


_CONSUMER_ACTIONS = ("subscribe", "unsubscribe", "authenticate", "ping")
_UNMAPPED = {"type": "object", "description": "What the viewset's serializer returns (its viewset has no retrieve)."}
_ACTIONS = {
    "retrieve": "Read one {label} as GET of it returns it to this user.",
    "list": "Read a page of {label}'s REST list (narrowed to a collection with `filter`).",
    "create": "Create a {label} through the viewset, as POST does.",
    "update": "Replace a {label} through the viewset, as PUT does.",
    "partial_update": "Change some fields of a {label} through the viewset, as PATCH does.",
    "destroy": "Delete a {label} through the viewset, as DELETE does.",
}
_REPLIES = {
    "retrieve": "The {label} as GET returns it to this user.",
    "list": "A page of {label}'s REST list, in its shape (paginated as the REST list is).",
    "create": "The {label} created, as POST returns it.",
    "update": "The {label} changed, as PUT returns it.",
    "partial_update": "The {label} changed, as PATCH returns it.",
    "destroy": "The {label} was deleted.",
}
_OPERATIONS = {
    "retrieve": "Read one object through its viewset.",
    "list": "Read a page of a REST list through its viewset.",
    "create": "Create an object through its viewset (where the registration enables it).",
    "update": "Replace an object through its viewset (where the registration enables it).",
    "partial_update": "Change an object through its viewset (where the registration enables it).",
    "destroy": "Delete an object through its viewset (where the registration enables it).",
}
_EVENTS = {
    "update": "An object of {label} whose tracked fields changed, as the subscriber's GET shows it after the "
    "commit: to the object's subscribers, and to the collections that showed it and still do.",
    "create": "An object of {label} that entered a collection the user subscribed to (created, moved in, made "
    "visible to them).",
    "delete": "An object of {label} that was deleted, or that left a collection the user subscribed to (moved out, "
    "hidden from them): its id alone.",
}
_EVENT_NOUN = {
    "update": "an object of {label} changed",
    "create": "an object of {label} entered a collection",
    "delete": "an object of {label} was deleted or left a collection",
}
_REVOKED = "A subscription ended because its user lost access to the target."
_APPLICATION = "An application's own event (notifications.publish_event())."
_INFO = (
    "Live updates of a Django REST Framework API over one WebSocket, generated from drf-live's registry: every "
    "registered model's requests, replies and events, with payload schemas mapped from its viewset's serializer "
    "by drf-spectacular.\n\n"
    "The document describes the **server**: operations whose action is `receive` are frames a client sends "
    "(with the replies it may get), those whose action is `send` are frames the server pushes. Every server "
    "frame is a Flux Standard Action, `{type, payload, meta}` plus `error: true` on errors, so a Redux app "
    "can dispatch it unchanged. Every request may carry a `request_id`, echoed in its reply's `meta.request_id`."
)
