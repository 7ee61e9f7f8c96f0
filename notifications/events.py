"""Publishing by hand: after bulk writes that send no signals, and application events.

``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` bypass ``save()``
and send no signals, so nothing is published for them until you say so, in
the same transaction::

    with transaction.atomic():
        Task.objects.filter(project=project).update(done=True)
        notifications.publish_changes(Task.objects.filter(project=project), changed=["done"])

An application event (a comment was added, a job finished) goes to the
subscribers of an object or of a collection who may see it when it is
published::

    notifications.publish_event("TASK_COMMENTED", task, payload={"comment": comment.text})

Both are recorded in the outbox and published when the transaction commits,
and nothing if it rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, models, router, transaction

from . import changes, touches
from .registry import Registry, site


def publish_changes(
    objects: Iterable[models.Model],
    *,
    changed: Iterable[str] | None = None,
    kind: str = "update",
    registry: Registry = site,
    using: str | None = None,
) -> int:
    """Record ``kind`` ("update" or "create") for each object; returns how many.

    Pass the objects given to ``bulk_create()`` / ``bulk_update()``, or a
    queryset after a ``QuerySet.update()``. Call it in the same transaction as
    the write (``transaction.atomic()``), so that the events are recorded
    exactly when the write commits. ``changed`` names the fields that changed
    (default: all tracked fields). Moves between collections cannot be seen
    after the fact: for those, save the objects one by one.
    """
    if kind not in {"update", "create"}:
        raise ValueError('kind must be "update" or "create"; deletes send post_delete on their own.')
    count = 0
    for obj in objects:
        registration = registry.get(type(obj))
        if obj.pk is None:
            raise ValueError(f"{obj!r} has no primary key yet: publish after it is saved.")
        names = list(changed) if changed is not None else registration.get_tracked_fields()
        db = using or obj._state.db or router.db_for_write(type(obj), instance=obj)
        touched = touches.by_save(registration, obj, names, previous=False, kind=kind)
        changes.record(
            registration,
            registration.wire_id(obj),
            kind,
            changed=names,
            current=registration.filter_values(obj),
            touched=touched,
            using=db,
        )
        count += 1
    return count


def publish_event(
    event_type: str,
    instance: models.Model | None = None,
    *,
    model: type[models.Model] | None = None,
    filter: dict[str, Any] | None = None,
    payload: Any = None,
    registry: Registry = site,
    using: str | None = None,
) -> None:
    """Send an application event of ``event_type`` to an object's or a collection's subscribers.

    Name an object with ``instance``, or a collection with ``model`` and
    ``filter`` (the same filter a client subscribes with). ``payload`` is any
    JSON-serializable value, or a callable taking the audience name and
    returning one, for registrations whose audiences see different things. The
    event goes to the subscribers who may still see the target when it is
    published, takes the target's next ``seq`` and is kept in its history, so a
    client recovers it like any other.
    """
    if (instance is None) == (model is None or filter is None):
        raise TypeError("Name an object (instance=...) or a collection (model=..., filter=...).")
    make: Callable[[str], Any] = payload if callable(payload) else (lambda audience: payload)
    if instance is not None:
        registration = registry.get(instance.__class__)
        payloads = {audience: make(audience) for audience in registration.audiences}
        db = using or instance._state.db or DEFAULT_DB_ALIAS
        with transaction.atomic(using=db, savepoint=False):
            changes.record_event(registration, event_type, payloads, wire_id=registration.wire_id(instance), using=db)
        return
    assert model is not None and filter is not None
    registration = registry.get(model)
    unknown = set(filter) - set(registration.filter_fields)
    if unknown:
        raise ValueError(f"Not a filter of {registration.label}: {', '.join(sorted(unknown))}.")
    payloads = {audience: make(audience) for audience in registration.audiences}
    wire_filter = {name: _wire(value) for name, value in filter.items()}
    db = using or DEFAULT_DB_ALIAS
    with transaction.atomic(using=db, savepoint=False):
        changes.record_event(registration, event_type, payloads, filter=wire_filter, using=db)


def _wire(value: Any) -> str:
    return str(value.pk if isinstance(value, models.Model) else value)
