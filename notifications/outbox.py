"""Collects a transaction's changes and publishes them once it commits.

A rolled-back transaction publishes nothing, and several saves of one row in
one transaction publish one event with the final state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, transaction

from .publisher import publisher

if TYPE_CHECKING:
    from django.db import models

    from .registration import Registration

logger = logging.getLogger("notifications.outbox")


@dataclass
class Change:
    """What one transaction did to one object, merged over all its writes."""

    registration: Registration
    instance: models.Model | None
    wire_id: str
    kind: str | None  # "create", "update", "delete", or None when created then deleted
    changed: list[str] = field(default_factory=list)
    previous: dict[str, str | None] | None = None
    revoked_users: set[Any] = field(default_factory=set)
    published: bool = False

    def merge(
        self, kind: str, instance: models.Model | None, changed: list[str], previous: dict[str, str | None] | None
    ) -> None:
        # The filter values the object had when the transaction began are the
        # ones its collections' subscribers last saw.
        for name, value in (previous or {}).items():
            self.previous = self.previous or {}
            self.previous.setdefault(name, value)
        if kind == "delete":
            self.kind = None if self.kind == "create" else "delete"
        elif self.kind is None or self.kind == "delete":
            self.kind = kind
        if instance is not None:
            self.instance = instance
        self.changed.extend(name for name in changed if name not in self.changed)

    def publish(self) -> None:
        if self.published or self.kind is None:
            return
        self.published = True
        publisher.publish(
            self.registration.get_deliveries(
                self.instance, self.wire_id, self.kind, self.changed, self.previous, self.revoked_users
            )
        )


def record(
    registration: Registration,
    instance: models.Model | None,
    kind: str,
    changed: list[str],
    *,
    wire_id: str | None = None,
    previous: dict[str, str | None] | None = None,
    revoked_users: Iterable[Any] = (),
    using: str | None = None,
) -> None:
    """Publish ``kind`` for ``instance`` when the current transaction commits."""
    using = using or DEFAULT_DB_ALIAS
    wire_id = wire_id if wire_id is not None else registration.wire_id(instance)
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        _publish_safely(Change(registration, instance, wire_id, kind, list(changed), previous, set(revoked_users)))
        return
    pending: dict[tuple[str, str], Change] = connection.__dict__.setdefault("_drf_live_pending", {})
    if not connection.run_on_commit:
        # No callback is waiting, so whatever is here belongs to a transaction
        # that ended (or a savepoint that rolled back): start afresh.
        pending.clear()
    key = (registration.label, wire_id)
    change = pending.get(key)
    if change is None or change.published:
        change = pending[key] = Change(registration, instance, wire_id, kind, list(changed), previous)
    else:
        change.merge(kind, instance, changed, previous)
    change.revoked_users.update(revoked_users)
    # One callback per write, all bound to the same Change: the first that
    # survives (its savepoint was not rolled back) publishes the merged change.
    transaction.on_commit(partial(_on_commit, pending, key, change), using=using)


def _on_commit(pending: dict[tuple[str, str], Change], key: tuple[str, str], change: Change) -> None:
    if pending.get(key) is change:
        del pending[key]
    _publish_safely(change)


def _publish_safely(change: Change) -> None:
    # The write has committed; a failure to publish must not turn it into an error.
    try:
        change.publish()
    except Exception:
        publisher.stats.failed += 1
        logger.exception("Could not publish a change of %s %s", change.registration.label, change.wire_id)
