"""What ``capture_events()`` hands a test: the events of a block, and the assertions on them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from django.db import models

from ..delivery import REVOKE, Subscription, Verdict, outcome
from ..frames import event_text
from ..plan import Unit
from ..registry import Registry, site
from ..targets import user_key

if TYPE_CHECKING:
    from .capture import capture_events

_ANY: Any = object()


@dataclass
class CapturedEvent:
    """One event a target's subscribers are sent, as the relay planned it."""

    #: The frame's ``type`` for a subscriber who may see the object: ``UPDATE_TASK``;
    #: in a collection ``CREATE_*`` for a member that entered it and ``DELETE_*`` for one
    #: that left it; an application event's own type.
    type: str
    #: "create", "update", "delete", "touch" (derived fields of a touched object) or "event".
    kind: str
    #: The model's label ("api.task").
    model: str
    #: The object's id, for events to the object's own subscribers; None for a collection.
    id: str | None
    #: The collection's filter ({"project": "<id>"}; {} for every object), or None.
    filter: dict[str, str] | None
    #: The member a collection event is about (the changed object's id), or None.
    member: str | None
    #: The fields that changed (for a touch: the derived fields).
    changed: list[str]
    #: An application event's payload by audience ({"all": ...}); {} for changes.
    payloads: dict[str, Any]
    #: Events of one target are numbered from 1 in the order the block published them.
    seq: int
    unit: Unit = field(repr=False)
    using: str = field(repr=False, default="default")

    @property
    def payload(self) -> Any:
        """An application event's payload (for its first audience); None for changes (see ``frame_for``)."""
        return next(iter(self.payloads.values()), None)

    def frame_for(self, user: Any) -> dict[str, Any] | None:
        """The frame a socket of ``user`` subscribed to this target gets, decided now; None for nothing.

        ``UNSUBSCRIBED`` (``meta.reason: "revoked"``) when ``user`` may not see
        the target: a subscriber loses it. None when nothing is sent (no field
        the user sees changed, a member they may not see). In a collection, the
        client is taken to hold the member if it was in the collection before
        the change. Reads the database: from async code,
        ``await database_sync_to_async(event.frame_for)(user)``.
        """
        from ..audience import decide

        key = user_key(user)
        unit = self.unit
        decision = decide(unit, [key], self.using)
        if decision.entry is None:
            return _revoked(unit) if key in decision.revoked else None
        subscription = Subscription(unit.target, unit.registration, key)
        if unit.target.is_collection:
            subscription.members = {unit.object_id: True} if unit.before else {}
        result = outcome(subscription, dict(decision.entry))
        if result is REVOKE:
            return _revoked(unit)
        if result is None or isinstance(result, Verdict):
            return None
        frame: dict[str, Any] = orjson.loads(event_text(result, self.seq))
        return frame

    def payload_for(self, user: Any) -> Any:
        """The payload ``frame_for(user)`` carries: None when nothing is sent, or the target is taken away."""
        frame = self.frame_for(user)
        return None if frame is None else frame.get("payload")

    def matches(
        self,
        type: str | None = None,
        *,
        model: Any = None,
        id: Any = _ANY,
        filter: Any = _ANY,
        member: Any = _ANY,
        kind: str | None = None,
        changed: list[str] | None = None,
    ) -> bool:
        registration = self.unit.registration
        if type is not None and self.type != type:
            return False
        if kind is not None and self.kind != kind:
            return False
        if model is not None and self.model != _label(model):
            return False
        if id is not _ANY and self.id != (None if id is None else registration.wire_id(id)):
            return False
        if member is not _ANY and self.member != (None if member is None else registration.wire_id(member)):
            return False
        if filter is not _ANY:
            wanted = (
                None
                if filter is None
                else {name: registration.wire_value(name, value) for name, value in filter.items()}
            )
            if self.filter != wanted:
                return False
        return changed is None or self.changed == list(changed)

    def __str__(self) -> str:
        target = f"id={self.id}" if self.id is not None else f"filter={self.filter} member={self.member}"
        return f"{self.type} {self.model} {target} changed={self.changed}"


def _revoked(unit: Unit) -> dict[str, Any]:
    return {"type": "UNSUBSCRIBED", "payload": None, "meta": {**unit.target.meta(), "reason": "revoked"}}


def _label(model: Any) -> str:
    return model.lower() if isinstance(model, str) else str(model._meta.label_lower)


class CapturedEvents(Sequence[CapturedEvent]):
    """The events of a ``capture_events()`` block, in the order they were published.

    While the block runs, it also shows what the rows of a transaction still
    open on this thread (the test's own, under pytest-django's ``db``) would
    publish if it committed now.
    """

    def __init__(self, capture: capture_events) -> None:
        self._capture = capture

    def _events(self) -> list[CapturedEvent]:
        return self._capture.snapshot()

    def __getitem__(self, index: Any) -> Any:
        return self._events()[index]

    def __len__(self) -> int:
        return len(self._events())

    def __iter__(self) -> Iterator[CapturedEvent]:
        return iter(self._events())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, CapturedEvents)):
            return self._events() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"CapturedEvents({self._events()!r})"

    def matching(self, type: str | None = None, **match: Any) -> list[CapturedEvent]:
        """The events that match: ``type``, ``model``, ``id`` (the object's own target), ``filter``
        (a collection), ``member``, ``kind``, ``changed``. Objects, pks and wire ids are all accepted."""
        return [event for event in self._events() if event.matches(type, **match)]

    @property
    def types(self) -> list[str]:
        return [event.type for event in self._events()]

    def assert_published(self, type: str | None = None, **match: Any) -> CapturedEvent:
        """The one event that matches; fails (listing what was published) if none or several do."""
        events = self._events()
        found = [event for event in events if event.matches(type, **match)]
        if len(found) != 1:
            wanted = ", ".join([f"type={type!r}"] * (type is not None) + [f"{k}={v!r}" for k, v in match.items()])
            raise AssertionError(
                f"Expected one event with {wanted}, found {len(found)} among {len(events)}:\n  "
                + ("\n  ".join(str(event) for event in events) or "(nothing was published)")
            )
        return found[0]

    def assert_nothing_published(self, type: str | None = None, **match: Any) -> None:
        """No event matches (with no arguments: nothing was published at all)."""
        found = self.matching(type, **match)
        if found:
            raise AssertionError("Expected no such event, found:\n  " + "\n  ".join(str(event) for event in found))


def wire_id(instance: models.Model, registry: Registry = site) -> str:
    """The id of ``instance`` as frames and captured events name it."""
    return registry.get(type(instance)).wire_id(instance)
