"""The transactional outbox: changes written with the data, claimed and deleted by the relay.

Rows are appended in the writer's transaction (``changes``), so they exist
exactly when the write committed. The writing process leases them to its own
relay as it writes them, for ``OUTBOX_GRACE`` seconds (renewed if the relay
needs longer), and its relay publishes them right after the commit; a row whose
lease ran out (its writer or claimer died or failed), or that nobody leased, is
claimed by any process that sweeps once ``OUTBOX_GRACE`` seconds have passed.
A claim is a lease, not a lock: on PostgreSQL ``SELECT ... FOR UPDATE SKIP
LOCKED`` keeps two sweepers off the same rows, and a row is deleted only once
published.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F, Min, Q

from .models import OutboxEntry

#: The kind of the row that marks dropped rows: every epoch must rotate before anything newer goes out.
LOST = "lost"
#: The key of a row's data that lists what of its transaction was published already.
PUBLISHED = "_published"


def append(
    using: str,
    token: str,
    kind: str,
    model: str,
    object_id: str,
    data: dict[str, Any],
    *,
    owner: str = "",
    lease: float | None = None,
) -> None:
    """Write one row; with ``owner``, leased to that relay for ``lease`` seconds from now, as one claim.

    The writing process leases its own rows in its transaction, so that its
    relay needs no claim of its own after the commit: it reads them
    (``take_transactions``). Should the process die before publishing them,
    the lease runs out and a sweep takes them.
    """
    now = time.time()
    connection = connections[using]
    values = {
        "txn": token,
        "created": now,
        "kind": kind,
        "model": model,
        "object_id": object_id,
        "data": data,
        "owner": owner,
        "lease_until": None if not owner or lease is None else now + lease,
        "attempts": 1 if owner else 0,
    }
    # One INSERT as the ORM would write it, without a model instance and its save() around it:
    # this runs in every tracked write's transaction, so its cost is the writer's.
    params = [field.get_db_prep_save(values[field.name], connection) for field in _insert_fields()]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection.vendor, connection.ops.quote_name), params)


@functools.cache
def _insert_fields() -> list[Any]:
    return [OutboxEntry._meta.get_field(name) for name in _INSERT_COLUMNS]


_INSERT_COLUMNS = ("txn", "created", "lease_until", "owner", "kind", "model", "object_id", "data", "attempts")
_insert_sql_cache: dict[str, str] = {}


def _insert_sql(vendor: str, quote: Any) -> str:
    sql = _insert_sql_cache.get(vendor)
    if sql is None:
        columns = ", ".join(quote(field.column) for field in _insert_fields())
        marks = ", ".join(["%s"] * len(_INSERT_COLUMNS))
        sql = _insert_sql_cache[vendor] = (
            f"INSERT INTO {quote(OutboxEntry._meta.db_table)} ({columns}) VALUES ({marks})"
        )
    return sql


@dataclass
class Taken:
    """What ``take_transactions`` found: the rows, and the marks of rows the outbox dropped."""

    rows: list[OutboxEntry]
    lost: list[int]


def take_transactions(using: str, tokens: list[str], owner: str, lease: float, margin: float) -> Taken:
    """The rows of these committed transactions that ``owner`` leased when writing them, in the order written.

    One ``SELECT``, which also finds the ``LOST`` marks to settle first. A lease
    that runs out within ``margin`` seconds (a long transaction, a busy relay)
    is renewed to ``lease`` seconds, unless a sweep took its rows meanwhile:
    those are left to the sweep.
    """
    entries = OutboxEntry.objects.using(using)
    now = time.time()
    found = list(entries.filter(Q(txn__in=tokens, owner=owner) | Q(kind=LOST)).order_by("id"))
    lost = [row.id for row in found if row.kind == LOST]
    rows = [row for row in found if row.kind != LOST]
    short = {row.id for row in rows if row.lease_until is None or row.lease_until < now + margin}
    if short:
        kept = renew(using, sorted(short), owner, lease)
        rows = [row for row in rows if row.id in kept or row.id not in short]
        for row in rows:
            if row.id in kept:
                row.lease_until = now + lease
    return Taken(rows, lost)


def renew(using: str, ids: Sequence[int], owner: str, lease: float) -> set[int]:
    """Extend ``owner``'s lease on these rows to ``lease`` seconds from now; the ids it still held."""
    entries = OutboxEntry.objects.using(using).filter(id__in=list(ids), owner=owner)
    entries.update(lease_until=time.time() + lease)
    return set(entries.values_list("id", flat=True))


def claim_stale(using: str, owner: str, lease: float, grace: float, limit: int) -> list[OutboxEntry]:
    """Whole transactions nobody is publishing (about ``limit`` rows' worth), now leased to ``owner``.

    A transaction is taken when one of its rows waited ``grace`` seconds, or a
    lease on one ran out; then all of its rows are taken, so that its changes
    still merge into one event per object.
    """
    now = time.time()
    claimable = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    stale = Q(lease_until__isnull=True, created__lt=now - grace) | Q(lease_until__lt=now)
    entries = OutboxEntry.objects.using(using).exclude(kind=LOST)
    tokens = {txn for (txn,) in entries.filter(stale).order_by("id").values_list("txn")[:limit]}
    if not tokens:
        return []
    with transaction.atomic(using=using):
        rows = entries.filter(claimable, txn__in=tokens)
        if connections[using].features.has_select_for_update_skip_locked:
            # Another sweeper's claim in flight holds these rows: leave them to it.
            rows = rows.select_for_update(skip_locked=True)
        ids = list(rows.values_list("id", flat=True))
        entries.filter(claimable, id__in=ids).update(lease_until=now + lease, owner=owner, attempts=F("attempts") + 1)
    return list(entries.filter(id__in=ids, owner=owner).order_by("id"))


def delete(using: str, ids: Sequence[int]) -> None:
    """Forget published rows."""
    OutboxEntry.objects.using(using).filter(id__in=list(ids)).delete()


def retry_later(using: str, ids: Sequence[int], delay: float, published: Collection[str] = ()) -> None:
    """Give rows back: any sweeper may claim them again after ``delay`` seconds.

    ``published`` names what of the transaction went out already (its events
    on the Redis shards that were up): whoever takes the rows next publishes
    only the rest, instead of repeating those events at every retry.
    """
    entries = OutboxEntry.objects.using(using)
    if published and ids:
        # On the first row still there (OUTBOX_LIMIT may have trimmed some), by an UPDATE that finds
        # nothing to change if that row goes too before it runs.
        first = entries.filter(id__in=list(ids)).order_by("id").values_list("id", "data").first()
        if first is not None:
            entries.filter(id=first[0]).update(data={**first[1], PUBLISHED: sorted(published)})
    entries.filter(id__in=list(ids)).update(lease_until=time.time() + delay, owner="")


def release(using: str, owner: str) -> int:
    """Give back every row ``owner`` holds: any sweeper may take them at once; how many."""
    return OutboxEntry.objects.using(using).filter(owner=owner).update(lease_until=time.time(), owner="")


def published(rows: Iterable[OutboxEntry]) -> set[str]:
    """What of these rows' transaction an earlier attempt published (``retry_later``)."""
    return {key for row in rows for key in row.data.get(PUBLISHED, ())}


@dataclass(frozen=True)
class Backlog:
    rows: int
    oldest_age: float | None


def backlog(using: str) -> Backlog:
    """How many rows wait, and the age in seconds of the oldest."""
    entries = OutboxEntry.objects.using(using)
    result = entries.aggregate(oldest=Min("created"))
    oldest = result["oldest"]
    return Backlog(entries.count(), None if oldest is None else max(time.time() - oldest, 0.0))


def trim(using: str, limit: int) -> int:
    """Keep at most ``limit`` rows: delete the oldest beyond it, and leave a ``LOST`` mark; how many went."""
    entries = OutboxEntry.objects.using(using)
    excess = entries.count() - limit
    if excess <= 0:
        return 0
    with transaction.atomic(using=using):
        ids = list(entries.exclude(kind=LOST).order_by("id").values_list("id", flat=True)[: excess + 1])
        entries.filter(id__in=ids).delete()
        entries.create(txn="lost", created=time.time(), kind=LOST, data={"dropped": len(ids)})
    return len(ids)


def losses(using: str) -> list[int]:
    """The ids of ``LOST`` marks waiting to be settled."""
    return list(OutboxEntry.objects.using(using).filter(kind=LOST).values_list("id", flat=True))


def databases() -> list[str]:
    """The databases that hold an outbox table (those the router lets the app migrate to)."""
    return [alias for alias in connections if router.allow_migrate_model(alias, OutboxEntry)]
