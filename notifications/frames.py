"""Wire frames: Flux Standard Actions, encoded once with orjson."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import orjson

ErrorCode = Literal[
    "parse_error",
    "invalid",
    "unknown_action",
    "not_found",
    "not_authenticated",
    "throttled",
    "limit_exceeded",
    "not_allowed",
    "unavailable",
]

ERROR_DETAILS: dict[str, str] = {
    "parse_error": "Send one JSON object per text frame.",
    "invalid": "Some fields are missing or have the wrong type.",
    "unknown_action": "Unknown action: use subscribe, unsubscribe, retrieve, list, authenticate or ping.",
    "not_found": "No such object.",
    "not_authenticated": "Authenticate first: send a token header, a session cookie or an authenticate frame.",
    "throttled": "Too many requests: slow down.",
    "limit_exceeded": "A limit of this socket was reached.",
    "not_allowed": "This action is not enabled for this model.",
    "unavailable": "The server cannot serve this request right now; try again shortly.",
}


class CloseCode:
    """Close codes the server uses (docs/protocol.md lists what a client should do)."""

    #: A frame larger than ``MAX_FRAME_BYTES``.
    FRAME_TOO_LARGE = 1009
    #: Not authenticated in time, or credentials revoked.
    NOT_AUTHENTICATED = 4001
    #: Abuse: too many errors.
    FLOOD = 4008
    #: Too many sockets for this user.
    TOO_MANY_SOCKETS = 4029
    #: Slow consumer: it did not take a frame within ``SEND_TIMEOUT``.
    SLOW_CONSUMER = 4030
    #: The server lost its connection to Redis, or events for this socket: reconnect with ``since``.
    LAYER_LOST = 4031


class Frame(TypedDict):
    type: str
    payload: Any
    meta: dict[str, Any]
    error: NotRequired[bool]


def encode(frame: Frame | dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def reply(type_: str, payload: Any, request_id: Any = None, **meta: Any) -> Frame:
    """A reply to a request: its ``meta`` echoes ``request_id`` when one was sent."""
    if request_id is not None:
        meta = {"request_id": request_id, **meta}
    return {"type": type_, "payload": payload, "meta": meta}


def error(code: ErrorCode, request_id: Any = None, detail: str | None = None, **extra: Any) -> Frame:
    payload = {"code": code, "detail": detail or ERROR_DETAILS[code], **extra}
    frame = reply("ERROR", payload, request_id)
    frame["error"] = True
    return frame


def event_prefix(type_: str, payload: Any, meta: dict[str, Any]) -> str:
    """An event frame encoded up to its seq: ``event_text`` completes it once the seq is known.

    The relay encodes each event once per audience, before the seq is taken;
    every socket then sends the same text, with ``prev`` spliced in only for a
    socket that was sent none of the events just before this one.
    """
    text = encode({"type": type_, "payload": payload, "meta": meta})
    return text[:-2] + (',"seq":' if meta else '"seq":')


def event_text(prefix: str, seq: int, prev: int | None = None) -> str:
    """The frame of ``prefix`` with ``meta.seq`` (and ``meta.prev`` when it is not ``seq - 1``)."""
    if prev is None or prev == seq - 1:
        return f"{prefix}{seq}}}}}"
    return f'{prefix}{seq},"prev":{prev}}}}}'
