"""The messages servers exchange through the stream store, as typed dictionaries.

They travel as JSON on Redis pub/sub channels (and in each stream's history),
so every value is a plain JSON type. A stream's channel carries ``Event``,
``Revoke`` and ``Rotate``; the control channel carries ``Close``, ``Recheck``
and ``RotateAll``, addressed to sockets by key (``targets.user_group`` and
friends).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class Entry(TypedDict):
    """An event as the relay decided it, before the store numbers it."""

    stream: str
    #: "create", "update", "delete", "touch" (derived fields) or "event" (an application event).
    kind: str
    #: Frame prefixes (``frames.event_prefix``) by variant ("update", "create", "delete", "event")
    #: and audience ("*" for the one delete frame).
    frames: dict[str, dict[str, str]]
    #: The audience of each user who may see it; None: every subscriber (a delete).
    shown: dict[str, str] | None
    #: Collections: the users who may see the collection but not this member now.
    denied: NotRequired[list[str]]
    #: Users who lost the target itself.
    revoked: NotRequired[list[str]]
    #: Collections: the member's id, and whether it belonged to the collection before the change.
    member: NotRequired[str]
    before: NotRequired[bool]
    #: When the change was recorded in the outbox (``time.time()``): servers measure commit-to-send from it.
    created: NotRequired[float]


class Event(Entry):
    """An ``Entry`` numbered and published by the store."""

    seq: int
    epoch: str


class Revoke(TypedDict):
    """Users who lost a target, with no event (nothing they could see changed)."""

    type: Literal["revoke"]
    users: list[str]


class Rotate(TypedDict):
    """A stream's epoch changed: its sockets cannot vouch for what their clients hold."""

    type: Literal["rotate"]
    epoch: str


class Close(TypedDict):
    """Close the sockets attached under these keys (revoked credentials)."""

    type: Literal["close"]
    to: list[str]
    code: int


class Recheck(TypedDict):
    """The sockets attached under these keys re-check every subscription (a membership ended)."""

    type: Literal["recheck"]
    to: list[str]


class RotateAll(TypedDict):
    """Every epoch changed (the outbox dropped rows): every socket recovers."""

    type: Literal["rotate-all"]
