"""What a change touches: other registered objects whose representation, or who sees them, depends on it.

A registration lists its ``touches``; the writer's side (``changes``,
``receivers``) names the touched objects in the change's outbox row, read in
the writer's transaction, and the relay sends each of them an event of its own,
decided afresh from the committed rows: an ``UPDATE_*`` with the derived fields
in ``meta.changed`` (an annotated count), or, with none, only new verdicts on
who may see them (revocations, members entering or leaving collections).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from .registration import Registration


@dataclass(frozen=True)
class Touch:
    """A change of this model that changes what another registered model shows.

    ``field`` names a relation to the touched objects: a foreign key, a
    many-to-many field, or a reverse relation (``"tasks"`` on a project).
    Creating or deleting an object touches them, and so does a change of any
    field named in ``when``. Their subscribers then get an ``UPDATE_*`` read
    afresh through their viewset, with ``changed`` (fields the viewset derives,
    such as an annotated count) in ``meta.changed``; with no ``changed``, only
    who may see them is decided again (a user who no longer shares a project
    with you, the tasks of a project you just joined).

    A foreign key touches the object it points at, before and after the change.
    A many-to-many edit touches the objects added or removed; with
    ``every=True``, and for a reverse relation, every related object is touched
    (for a many-to-many edit, those removed too).
    """

    field: str
    when: Sequence[str] = ()
    changed: Sequence[str] = ()
    every: bool = False


def _relation(registration: Registration, touch: Touch) -> Any:
    return registration.model._meta.get_field(touch.field)


def _to_many(relation: Any) -> bool:
    return bool(relation.many_to_many or relation.one_to_many)


def _related_pks(instance: models.Model, relation: Any) -> list[Any]:
    accessor = relation.get_accessor_name() if relation.auto_created else relation.name
    return list(getattr(instance, accessor).values_list("pk", flat=True))


def wire(registration: Registration, touch: Touch, value: Any) -> list[Any] | None:
    """``[label, wire id, derived fields]`` of the object ``value`` (a pk or an object), if registered."""
    if value is None:
        return None
    if isinstance(value, models.Model):
        value = value.pk
    related_model = _relation(registration, touch).related_model
    related = registration.registry.get_for(related_model) if isinstance(related_model, type) else None
    if related is None:
        return None
    return [related.label, related.wire_id(value), list(touch.changed)]


def by_save(
    registration: Registration, instance: models.Model, changed: Sequence[str], *, previous: bool, kind: str = "update"
) -> list[list[Any]]:
    """The objects a save touches.

    ``previous=True`` names the objects the foreign keys pointed at before the
    save (called before it, while the tracker still knows them).
    """
    touched: list[list[Any]] = []
    tracker_field = registration.get_tracker()
    tracker = getattr(instance, tracker_field.name) if tracker_field is not None else None
    for touch in registration.touches:
        if kind == "update" and not set(touch.when) & set(changed):
            continue
        relation = _relation(registration, touch)
        if _to_many(relation):
            if previous or not (touch.every or relation.one_to_many):
                continue  # a save changes no such relation: its own edits come from m2m_changed
            values: Iterable[Any] = _related_pks(instance, relation)
        elif previous:
            if tracker is None or touch.field not in tracker.fields or not tracker.has_changed(touch.field):
                continue
            values = [tracker.previous(touch.field)]
        else:
            values = [getattr(instance, relation.attname)]
        touched.extend(found for found in (wire(registration, touch, value) for value in values) if found)
    return touched


def by_m2m(registration: Registration, instance: models.Model, name: str, pks: Iterable[Any]) -> list[list[Any]]:
    """The objects a many-to-many edit of ``name`` on ``instance`` (adding or removing ``pks``) touches."""
    pks = list(pks)
    touched: list[list[Any]] = []
    for touch in registration.touches:
        if touch.field != name and name not in touch.when:
            continue
        relation = _relation(registration, touch)
        if _to_many(relation):
            values: list[Any] = list(pks) if touch.field == name else []
            if touch.every or relation.one_to_many:
                values += [pk for pk in _related_pks(instance, relation) if pk not in values]
        else:
            values = [getattr(instance, relation.attname)]
        touched.extend(found for found in (wire(registration, touch, value) for value in values) if found)
    return touched


def by_delete(registration: Registration, instance: models.Model) -> list[list[Any]]:
    """The objects a delete of ``instance`` touches (read before its rows go)."""
    touched: list[list[Any]] = []
    for touch in registration.touches:
        relation = _relation(registration, touch)
        if relation.one_to_many:
            continue  # deleted (or rewritten) with it: they send events of their own
        if relation.many_to_many:
            values: Iterable[Any] = _related_pks(instance, relation)
        else:
            values = [getattr(instance, relation.attname)]
        touched.extend(found for found in (wire(registration, touch, value) for value in values) if found)
    return touched
