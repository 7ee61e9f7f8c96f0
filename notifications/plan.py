"""What one committed transaction publishes: one ``Unit`` per target, from its outbox rows.

A transaction's rows about one object merge into one change (created then
updated is a create; created then deleted is nothing); a change becomes an
event for the object's own subscribers, for each collection the object was in
before the transaction or is in after it, and for each object it touches
(``registration.Touch``). Control rows (close, recheck) are sent as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import outbox
from .models import OutboxEntry
from .registration import Registration
from .registry import site
from .targets import Target

#: Rows that address sockets by key rather than describe a change.
CONTROL_KINDS = {"close", "recheck"}


@dataclass
class Unit:
    """One event to decide: a change as one target's subscribers will see it."""

    registration: Registration
    target: Target
    kind: str  # "create", "update", "delete", "touch" (derived fields or visibility) or "event"
    object_id: str  # the changed object's wire id (a collection's member)
    changed: list[str] = field(default_factory=list)
    before: bool = True  # collections: the object was a member before the change
    event_type: str = ""
    payloads: dict[str, Any] = field(default_factory=dict)
    created: float | None = None  # when its transaction's last change was recorded (time.time(); for metrics)

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.target, self.kind, self.object_id, self.event_type)


@dataclass
class Change:
    """The rows of one transaction about one object, merged."""

    model: str
    object_id: str
    kind: str | None  # None: created and deleted in the same transaction
    changed: list[str]
    previous: dict[str, str | None]
    current: dict[str, str | None]
    touched: list[list[Any]]

    def merge(self, row: OutboxEntry) -> None:
        data = row.data
        if row.kind == "delete":
            self.kind = None if self.kind == "create" else "delete"
        elif self.kind is None or self.kind == "delete":
            self.kind = row.kind
        self.changed += [name for name in data.get("changed", []) if name not in self.changed]
        for name, value in data.get("previous", {}).items():
            self.previous.setdefault(name, value)  # the values the collections last showed
        self.current = data.get("current", self.current)
        self.touched += data.get("touched", [])


def plan(rows: Iterable[OutboxEntry], using: str) -> list[Unit]:
    """The events of one transaction's rows, target by target, in the order they were written."""
    changes: dict[tuple[str, str], Change] = {}
    units: list[Unit] = []
    for row in rows:
        if row.kind in CONTROL_KINDS or row.kind == outbox.LOST:
            continue
        if row.kind == "event":
            unit = _event_unit(row)
            if unit is not None:
                units.append(unit)
            continue
        key = (row.model, row.object_id)
        change = changes.get(key)
        if change is None:
            data = row.data
            changes[key] = Change(
                row.model,
                row.object_id,
                row.kind,
                list(data.get("changed", [])),
                dict(data.get("previous", {})),
                dict(data.get("current", {})),
                list(data.get("touched", [])),
            )
        else:
            change.merge(row)
    touched: dict[tuple[str, str], list[str]] = {}
    for change in changes.values():
        units.extend(_units(change))
        if change.kind is None:
            continue  # Created and deleted in one transaction: it touched nothing anyone saw.
        for label, wire_id, derived in change.touched:
            names = touched.setdefault((label, wire_id), [])
            names.extend(name for name in derived if name not in names)
    for (label, wire_id), derived in touched.items():
        if (label, wire_id) in changes and changes[(label, wire_id)].kind == "delete":
            continue
        units.extend(_touch_units(label, wire_id, derived, using))
    unique: dict[tuple[Any, ...], Unit] = {}
    for unit in units:
        unique.setdefault(unit.key, unit)
    return list(unique.values())


def _units(change: Change) -> list[Unit]:
    registration = site.get_by_label(change.model)
    if registration is None or change.kind is None:
        return []
    units = []
    if change.kind != "create":
        units.append(
            Unit(
                registration,
                Target(registration.label, id=change.object_id),
                change.kind,
                change.object_id,
                change.changed,
            )
        )
    at_start = {**change.current, **change.previous}
    before = registration.collections_of(at_start) if change.kind != "create" else []
    after = registration.collections_of(change.current) if change.kind != "delete" else []
    for filter in before + [filter for filter in after if filter not in before]:
        units.append(
            Unit(
                registration,
                Target.collection(registration.label, filter),
                change.kind,
                change.object_id,
                change.changed,
                before=filter in before,
            )
        )
    return units


def _touch_units(label: str, wire_id: str, derived: list[str], using: str) -> list[Unit]:
    registration = site.get_by_label(label)
    if registration is None:
        return []
    units = [Unit(registration, Target(label, id=wire_id), "touch", wire_id, derived)]
    values: dict[str, str | None] = {}
    if registration.filter_fields:
        pk = registration.decode_id(wire_id)
        instance = registration.model._base_manager.using(using).filter(pk=pk).first() if pk is not None else None
        if instance is None:
            return units
        values = registration.filter_values(instance)
    for filter in registration.collections_of(values):
        units.append(Unit(registration, Target.collection(label, filter), "touch", wire_id, derived))
    return units


def _event_unit(row: OutboxEntry) -> Unit | None:
    registration = site.get_by_label(row.model)
    if registration is None:
        return None
    data = row.data
    if "filter" in data:
        target = Target.collection(registration.label, data["filter"])
    else:
        target = Target(registration.label, id=row.object_id)
    return Unit(
        registration,
        target,
        "event",
        row.object_id,
        event_type=data["type"],
        payloads=data.get("payloads", {}),
    )
