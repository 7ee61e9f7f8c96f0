"""The writer's side: what a save, a delete or a many-to-many edit changed, written to the outbox.

Everything here runs inside the writer's transaction and only records; nothing
is serialized or sent until the transaction has committed (``relay``). The
payload of an event is never taken from the writer's objects: the relay reads
the committed row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, models, transaction

from . import touches

if TYPE_CHECKING:
    from .registration import Registration

# The key, in a connection's __dict__, of the current transaction's token.
_TOKEN = "_drf_live_txn"


@dataclass
class Before:
    """What a tracked instance looked like before a save: read from its tracker, which resets on save."""

    adding: bool
    changed: list[str] = field(default_factory=list)
    previous: dict[str, str | None] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    touched: list[list[Any]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        registration: Registration,
        instance: models.Model,
        update_fields: Iterable[str] | None,
        *,
        using: str = DEFAULT_DB_ALIAS,
    ) -> Before:
        """Called in the save's transaction, before the row is written."""
        if instance._state.adding:
            return cls(adding=True)
        changed = registration.changed_fields(instance)
        if update_fields is not None:
            # Django takes field names and column names alike (update_fields=["project_id"]).
            by_attname = {getattr(field, "attname", field.name): field.name for field in instance._meta.concrete_fields}
            names = {by_attname.get(name, name) for name in update_fields}
            changed = [name for name in changed if name in names]
        elif not changed:
            return cls.against_row(registration, instance, using)
        if not changed:
            return cls(adding=False)
        return cls(
            adding=False,
            changed=changed,
            previous=registration.previous_filter_values(instance),
            revoked=[str(pk) for pk in registration.revoked_users(instance)],
            touched=touches.by_save(registration, instance, changed, previous=True),
        )

    @classmethod
    def against_row(cls, registration: Registration, instance: models.Model, using: str) -> Before:
        """A full save its tracker sees no change in, compared with the row itself.

        The instance may have been loaded before another process committed: a
        full save then writes its old values back, and only the row can tell.
        One query, for the saves the tracker calls unchanged; the row stays
        locked until the save commits where the database can lock rows.
        """
        concrete: list[Any] = [
            field
            for field in (instance._meta.get_field(name) for name in registration.get_tracked_fields())
            if isinstance(field, models.Field) and not field.many_to_many
        ]
        rows = registration.model._base_manager.using(using).filter(pk=instance.pk)
        if transaction.get_connection(using).features.has_select_for_update:
            rows = rows.select_for_update()
        row = rows.values(*[field.attname for field in concrete]).first()
        if row is None:
            return cls(adding=False)
        changed = [field for field in concrete if row[field.attname] != getattr(instance, field.attname)]
        if not changed:
            return cls(adding=False)
        names = [field.name for field in changed]
        user_model = get_user_model()
        return cls(
            adding=False,
            changed=names,
            previous={
                field.name: registration.wire_value(field.name, row[field.attname])
                for field in changed
                if field.name in registration.filter_fields
            },
            revoked=[
                str(row[field.attname])
                for field in changed
                if field.name in registration.access_fields
                and field.related_model is user_model
                and row[field.attname] is not None
            ],
            touched=[
                wire
                for touch in registration.touches
                for field in changed
                if field.name == touch.field and field.many_to_one and set(touch.when) & set(names)
                for wire in [touches.wire(registration, touch, row[field.attname])]
                if wire is not None
            ],
        )


def record_save(registration: Registration, instance: models.Model, before: Before, *, using: str) -> None:
    """Record a save of ``instance`` (a create, or an update of ``before.changed``)."""
    kind = "create" if before.adding else "update"
    changed = registration.get_tracked_fields() if before.adding else before.changed
    touched = before.touched + touches.by_save(registration, instance, changed, previous=False, kind=kind)
    record(
        registration,
        registration.wire_id(instance),
        kind,
        changed=changed,
        previous=before.previous,
        current=registration.filter_values(instance),
        revoked=before.revoked,
        touched=touched,
        using=using,
    )


def record(
    registration: Registration,
    wire_id: str,
    kind: str,
    *,
    changed: Sequence[str] = (),
    previous: dict[str, str | None] | None = None,
    current: dict[str, str | None] | None = None,
    revoked: Iterable[Any] = (),
    touched: Sequence[Sequence[Any]] = (),
    using: str | None = None,
) -> None:
    """Record one change of one object in the current transaction's outbox entries."""
    data: dict[str, Any] = {"changed": list(changed)}
    if previous:
        data["previous"] = previous
    if current:
        data["current"] = current
    revoked_keys = sorted({str(pk) for pk in revoked})
    if revoked_keys:
        data["revoked"] = revoked_keys
    if touched:
        data["touched"] = _unique(touched)
    append(kind, registration.label, wire_id, data, using=using)


def record_event(
    registration: Registration,
    event_type: str,
    payloads: dict[str, Any],
    *,
    wire_id: str | None = None,
    filter: dict[str, str] | None = None,
    using: str | None = None,
) -> None:
    """Record an application event for an object's (``wire_id``) or a collection's (``filter``) subscribers."""
    data: dict[str, Any] = {"type": event_type, "payloads": payloads}
    if filter is not None:
        data["filter"] = filter
    append("event", registration.label, wire_id or "", data, using=using)


def record_control(kind: str, data: dict[str, Any], *, using: str | None = None) -> None:
    """Record a message for sockets by key ("close" or "recheck"), sent once the transaction commits."""
    append(kind, "", "", data, using=using)


def append(kind: str, model: str, object_id: str, data: dict[str, Any], *, using: str | None = None) -> None:
    """Write one outbox entry in the current transaction; the relay is told once it commits."""
    from . import outbox  # not at import time: the app's models load after the package
    from .conf import live_settings
    from .relay import relay

    using = using or DEFAULT_DB_ALIAS
    # In a block of its own when none is open (a logout, a signal outside a
    # transaction): the relay is told on commit, after the row exists. The row
    # is leased to this process's relay as it is written, so that the relay
    # needs no claim of its own (a write) after the commit.
    with transaction.atomic(using=using, savepoint=False):
        outbox.append(
            using,
            transaction_token(using),
            kind,
            model,
            object_id,
            data,
            owner=relay.owner,
            lease=float(live_settings.OUTBOX_GRACE),
        )


def transaction_token(using: str) -> str:
    """The token of the current transaction on ``using``, and a hand-off to the relay on its commit.

    A token left behind by a transaction that rolled back is reused by the
    next one: its entries are gone with the rollback, so nothing mixes.
    """
    connection = transaction.get_connection(using)
    token = connection.__dict__.get(_TOKEN)
    if token is None:
        token = connection.__dict__[_TOKEN] = uuid.uuid4().hex
    # One callback per entry, not per transaction: a callback registered in a
    # savepoint that rolls back is dropped with it. The relay ignores repeats.
    transaction.on_commit(partial(_committed, connection, using, token), using=using)
    return str(token)


def _committed(connection: Any, using: str, token: str) -> None:
    # Every entry registered a callback; the first one to run hands the transaction over.
    if connection.__dict__.get(_TOKEN) != token:
        return
    del connection.__dict__[_TOKEN]
    from .relay import relay

    relay.kick(using, token)


def _unique(items: Sequence[Sequence[Any]]) -> list[list[Any]]:
    seen: dict[tuple[str, str], list[Any]] = {}
    for label, wire_id, derived in items:
        entry = seen.setdefault((label, wire_id), [label, wire_id, []])
        entry[2].extend(name for name in derived if name not in entry[2])
    return list(seen.values())
