"""Who receives an event, and what they receive: decided from the committed rows.

The relay calls ``decide`` for one target, with the users subscribed to it, in
one read-only database transaction that starts after the change committed. For
each distinct user (never each socket) the registration's viewset says whether
that user may see the object, exactly as a ``GET`` would, and the object as the
viewset reads it for them (annotations included) is serialized once per
audience. The verdicts travel with the event, so a socket never needs to ask
again, and replay honours the same verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import connections, models, transaction
from django.db.models import QuerySet

from . import frames
from .messages import Entry
from .plan import Unit
from .registration import Registration
from .targets import ANONYMOUS

logger = logging.getLogger("notifications.relay")


@dataclass
class Decision:
    """The event to commit (None: nothing to send), and users who lose the target without one."""

    entry: Entry | None
    revoked: list[str] = field(default_factory=list)


def decide(unit: Unit, users: Sequence[str], using: str) -> Decision:
    """The event of ``unit`` for ``users``, read from the database as committed now."""
    if unit.kind == "delete":
        return Decision(_delete_entry(unit))
    with read_snapshot(using):
        accounts = load_users(users, using)
        if unit.target.is_collection:
            return _decide_member(unit, users, accounts, using)
        return _decide_object(unit, users, accounts, using)


@contextmanager
def read_snapshot(using: str) -> Iterator[None]:
    """One consistent read of committed data (REPEATABLE READ on PostgreSQL, a deferred transaction on SQLite).

    On SQLite a transaction begun ``IMMEDIATE`` (the example project's
    ``transaction_mode``, so that writers wait for each other instead of
    failing) would hold the database's write lock while the relay decides:
    every writer would wait for it. A deferred one only reads.
    """
    connection = connections[using]
    outermost = not connection.in_atomic_block
    mode = getattr(connection, "transaction_mode", None)
    if outermost and connection.vendor == "sqlite" and mode is not None:
        connection.ensure_connection()  # a new connection would read the mode from the settings again
        connection.transaction_mode = "DEFERRED"  # type: ignore[attr-defined]
        try:
            with transaction.atomic(using=using):
                connection.transaction_mode = mode  # type: ignore[attr-defined]
                yield
        finally:
            connection.transaction_mode = mode  # type: ignore[attr-defined]
        return
    with transaction.atomic(using=using):
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def load_users(keys: Sequence[str], using: str) -> dict[str, Any]:
    """The active users named by ``keys`` (``ANONYMOUS`` for anonymous sockets); missing ones are absent."""
    from .conf import live_settings

    user_model = get_user_model()
    pks = [key for key in keys if key != ANONYMOUS]
    accounts: dict[str, Any] = {}
    if pks:
        for user in user_model._default_manager.using(using).filter(pk__in=pks):
            if getattr(user, "is_active", True):
                accounts[str(user.pk)] = user
    if ANONYMOUS in keys and live_settings.ALLOW_ANONYMOUS:
        accounts[ANONYMOUS] = AnonymousUser()
    return accounts


def _decide_object(unit: Unit, users: Sequence[str], accounts: dict[str, Any], using: str) -> Decision:
    registration = unit.registration
    pk = registration.decode_id(unit.object_id)
    row = registration.model._base_manager.using(using).filter(pk=pk).first() if pk is not None else None
    if row is None:
        return Decision(None)  # Deleted since: its delete event follows.
    declared = _declared(registration, row, accounts)
    shown: dict[str, str] = {}
    seen: dict[str, tuple[Any, models.Model | None]] = {}  # audience -> a user of it, and the object they read
    denied: list[str] = []
    for key in users:
        user = accounts.get(key)
        obj: models.Model | None = None
        if user is not None and declared is not None:
            visible = key in declared and registration.has_permission(registration.get_view(user))
        elif user is not None:
            obj = registration.get_visible(user, pk, equalised=False)
            visible = obj is not None
        else:
            visible = False
        if not visible:
            denied.append(key)
            continue
        audience = registration.get_audience(user, obj if obj is not None else row)
        shown[key] = audience
        seen.setdefault(audience, (user, obj))
    payloads = _payloads(registration, pk, seen, shown, denied)
    prefixes: dict[str, str] = {}
    meta = unit.target.meta()
    if unit.kind == "event":
        for audience in payloads:
            prefixes[audience] = frames.event_prefix(unit.event_type, unit.payloads.get(audience), meta)
        variant = "event"
    else:
        for audience, payload in payloads.items():
            changed = _visible_changes(unit.changed, payload)
            if changed:
                event_type = registration.get_event_type("update")
                prefixes[audience] = frames.event_prefix(event_type, payload, {**meta, "changed": changed})
        variant = "update"
    if not prefixes:
        return Decision(None, denied)
    entry: Entry = {"stream": unit.target.stream, "kind": unit.kind, "frames": {variant: prefixes}, "shown": shown}
    if denied:
        entry["revoked"] = denied
    return Decision(entry)


def _decide_member(unit: Unit, users: Sequence[str], accounts: dict[str, Any], using: str) -> Decision:
    registration = unit.registration
    filter = dict(unit.target.filter or ())
    pk = registration.decode_id(unit.object_id)
    shown: dict[str, str] = {}
    seen: dict[str, tuple[Any, models.Model | None]] = {}
    denied: list[str] = []
    revoked: list[str] = []
    declared = _declared_member(unit, accounts, using)
    if declared is not None:
        _sort_declared(unit, users, accounts, declared, shown, seen, denied, revoked)
        _read_members(registration, filter, pk, seen, shown, denied)
    else:
        for key in users:
            user = accounts.get(key)
            queryset = registration.get_visible_collection(user, filter, equalised=False) if user is not None else None
            if queryset is None:
                revoked.append(key)
                continue
            if unit.kind == "event":
                audience = registration.get_collection_audience(user, filter)
                shown[key] = audience
                seen.setdefault(audience, (user, None))
                continue
            member = queryset.filter(pk=pk).first() if pk is not None else None
            if member is None:
                denied.append(key)
                continue
            audience = registration.get_audience(user, member)
            shown[key] = audience
            seen.setdefault(audience, (user, member))
    meta = {**unit.target.meta(), "id": unit.object_id}
    variants: dict[str, dict[str, str]] = {}
    if unit.kind == "event":
        variants["event"] = {
            audience: frames.event_prefix(unit.event_type, unit.payloads.get(audience), unit.target.meta())
            for audience in seen
        }
    else:
        payloads = {audience: registration.serialize(obj, user) for audience, (user, obj) in seen.items() if obj}
        variants["create"] = {
            audience: frames.event_prefix(registration.get_event_type("create"), payload, meta)
            for audience, payload in payloads.items()
        }
        # A member the client holds changes only if a field its payload shows did; one it does
        # not hold yet enters as a create whatever changed.
        variants["update"] = {}
        for audience, payload in payloads.items():
            changed = _visible_changes(unit.changed, payload)
            if changed:
                variants["update"][audience] = frames.event_prefix(
                    registration.get_event_type("update"), payload, {**meta, "changed": changed}
                )
        gone = {"id": unit.object_id}
        variants["delete"] = {"*": frames.event_prefix(registration.get_event_type("delete"), gone, meta)}
    if not shown and not denied:
        return Decision(None, revoked)
    entry: Entry = {
        "stream": unit.target.stream,
        "kind": unit.kind,
        "member": unit.object_id,
        "before": unit.before,
        "frames": variants,
        "shown": shown,
        "denied": denied,
    }
    if revoked:
        entry["revoked"] = revoked
    return Decision(entry)


def _delete_entry(unit: Unit) -> Entry:
    registration = unit.registration
    meta = unit.target.meta()
    if unit.target.is_collection:
        meta = {**meta, "id": unit.object_id}
    text = frames.event_prefix(registration.get_event_type("delete"), {"id": unit.object_id}, meta)
    entry: Entry = {"stream": unit.target.stream, "kind": "delete", "frames": {"delete": {"*": text}}, "shown": None}
    if unit.target.is_collection:
        entry["member"] = unit.object_id
        entry["before"] = unit.before
    return entry


def _declared(registration: Registration, row: models.Model, accounts: dict[str, Any]) -> set[str] | None:
    """The subscribers ``subscribable_by()`` names for ``row`` (None: it declares nothing).

    A queryset of users (or of their primary keys) is narrowed to the
    subscribers in the database, so that its cost follows them, not everyone
    who may see the row.
    """
    declared = registration.subscribable_by(row)
    if declared is None:
        return None
    if isinstance(declared, QuerySet) and declared.model is get_user_model():
        pks = [user.pk for user in accounts.values() if user.is_authenticated]
        declared = declared.filter(pk__in=pks).values_list("pk", flat=True)
    return {str(pk) for pk in declared}


def _declared_member(
    unit: Unit, accounts: dict[str, Any], using: str
) -> tuple[set[str], set[str], models.Model] | None:
    """Who may see the collection and who may see the member, by declarations; None if one is missing.

    A collection is visible to whoever may see every object its filter names,
    so the declarations of those objects' registrations answer for it; the
    member's own registration answers for the member.
    """
    if unit.kind == "event":
        return None  # an application event names no member to decide on
    registration = unit.registration
    pk = registration.decode_id(unit.object_id)
    row = registration.model._base_manager.using(using).filter(pk=pk).first() if pk is not None else None
    if row is None:
        return None
    member = _declared(registration, row, accounts)
    if member is None:
        return None
    collection = set(accounts)
    lookups: dict[str, Any] = {}
    for name, value in dict(unit.target.filter or ()).items():
        related = registration._related_registration(name)
        related_pk = related.decode_id(value) if related is not None else None
        if related is None or related_pk is None:
            return None
        lookups[name] = related_pk
        named = related.model._base_manager.using(using).filter(pk=related_pk).first()
        viewers = _declared(related, named, accounts) if named is not None else set()
        if viewers is None:
            return None
        collection &= {
            key for key in viewers if key in accounts and related.has_permission(related.get_view(accounts[key]))
        }
    if lookups and not registration.model._base_manager.using(using).filter(pk=pk, **lookups).exists():
        member = set()  # The row left the collection: a member to no one.
    return collection, member, row


def _sort_declared(
    unit: Unit,
    users: Sequence[str],
    accounts: dict[str, Any],
    declared: tuple[set[str], set[str], models.Model],
    shown: dict[str, str],
    seen: dict[str, tuple[Any, models.Model | None]],
    denied: list[str],
    revoked: list[str],
) -> None:
    """The verdict of each subscriber of a collection from the declarations: no query per user."""
    registration = unit.registration
    collection, member, row = declared
    for key in users:
        user = accounts.get(key)
        if (
            user is None
            or key not in collection
            or not registration.has_permission(registration.get_view(user, action="list"))
        ):
            revoked.append(key)
        elif key not in member:
            denied.append(key)
        else:
            audience = registration.get_audience(user, row)
            shown[key] = audience
            seen.setdefault(audience, (user, None))


def _read_members(
    registration: Registration,
    filter: dict[str, str],
    pk: Any,
    seen: dict[str, tuple[Any, models.Model | None]],
    shown: dict[str, str],
    denied: list[str],
) -> None:
    """The member as each audience's list reads it (one user of each); disagreeing declarations deny."""
    for audience, (user, _obj) in list(seen.items()):
        queryset = registration.get_visible_collection(user, filter, equalised=False)
        obj = queryset.filter(pk=pk).first() if queryset is not None else None
        if obj is not None:
            seen[audience] = (user, obj)
            continue
        logger.warning(
            "%s.subscribable_by() disagrees with its viewset about %s; those users get nothing", registration, pk
        )
        del seen[audience]
        for key in [key for key, value in shown.items() if value == audience]:
            del shown[key]
            denied.append(key)


def _payloads(
    registration: Registration,
    pk: Any,
    seen: dict[str, tuple[Any, models.Model | None]],
    shown: dict[str, str],
    denied: list[str],
) -> dict[str, Any]:
    """One serializer run per audience, on the object as one of its users reads it."""
    payloads = {}
    for audience, (user, obj) in seen.items():
        if obj is None:
            obj = registration.get_visible(user, pk, equalised=False)
        if obj is None:
            # subscribable_by() named users the viewset does not show it to.
            logger.warning(
                "%s.subscribable_by() disagrees with its viewset about %s; those users get nothing",
                registration,
                pk,
            )
            for key in [key for key, value in shown.items() if value == audience]:
                del shown[key]
                denied.append(key)
            continue
        payloads[audience] = registration.serialize(obj, user)
    return payloads


def _visible_changes(changed: Sequence[str], payload: Any) -> list[str]:
    """The changed fields this audience's payload shows: no one learns of a field they cannot see."""
    if not isinstance(payload, dict):
        return list(changed)
    return [name for name in changed if name in payload]
