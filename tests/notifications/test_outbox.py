"""The outbox table (``notifications/outbox.py``): who may take which rows, and when.

Rows are written here directly; what a write records is in test_models.py and
how the relay publishes them in test_relay.py.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from notifications import outbox
from notifications.models import OutboxEntry

pytestmark = pytest.mark.django_db

DB = "default"
LEASE = 60.0


def row(
    txn: str, *, age: float = 0.0, kind: str = "update", lease_until: float | None = None, owner: str = ""
) -> OutboxEntry:
    """An outbox row written ``age`` seconds ago."""
    return OutboxEntry.objects.create(
        txn=txn,
        created=time.time() - age,
        kind=kind,
        model="api.task",
        object_id="Xk3Lp9q",
        data={"changed": ["title"]},
        lease_until=lease_until,
        owner=owner,
    )


def ids(rows: list[OutboxEntry]) -> list[int]:
    return [entry.id for entry in rows]


def remaining() -> list[int]:
    return list(OutboxEntry.objects.order_by("id").values_list("id", flat=True))


def test_append_writes_an_unleased_row() -> None:
    before = time.time()

    outbox.append(DB, "t1", "update", "api.task", "Xk3Lp9q", {"changed": ["title"]})

    [entry] = OutboxEntry.objects.all()
    assert (entry.txn, entry.kind, entry.model, entry.object_id) == ("t1", "update", "api.task", "Xk3Lp9q")
    assert entry.data == {"changed": ["title"]}
    assert before <= entry.created <= time.time()
    assert entry.lease_until is None and entry.owner == ""


def test_the_outbox_is_the_drf_live_table() -> None:
    # The app label and table name are part of every deployment's migrations.
    assert OutboxEntry._meta.app_label == "drf_live"
    assert OutboxEntry._meta.db_table == "drf_live_outbox"
    assert outbox.databases() == [DB]


def test_append_with_an_owner_leases_the_row_to_it_as_it_is_written() -> None:
    before = time.time()

    outbox.append(DB, "t1", "update", "api.task", "Xk3Lp9q", {}, owner="writer", lease=1.0)

    [entry] = OutboxEntry.objects.all()
    assert entry.owner == "writer" and entry.attempts == 1
    assert before + 1.0 <= entry.lease_until <= time.time() + 1.0
    # Nobody else takes it within its lease; once it runs out (the writer died), a sweep does.
    assert outbox.claim_stale(DB, "sweeper", LEASE, grace=0.0, limit=100) == []
    OutboxEntry.objects.update(lease_until=time.time() - 0.1)
    [taken] = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)
    assert taken.owner == "sweeper" and taken.attempts == 2


# take_transactions: the writer's own rows, right after its commit ----------------------


def mine(txn: str, *, lease: float = LEASE, owner: str = "me") -> OutboxEntry:
    """A row as ``changes`` writes it: leased to its writer's relay for ``lease`` seconds."""
    return row(txn, lease_until=time.time() + lease, owner=owner)


def test_take_transactions_reads_the_owners_rows_of_those_transactions_only() -> None:
    first, second = mine("t1"), mine("t1")
    mine("t2")
    mine("t1", owner="sweeper")  # its lease ran out and a sweep took it
    row("t1")  # nobody's

    with CaptureQueriesContext(connection) as queries:
        taken = outbox.take_transactions(DB, ["t1"], "me", LEASE, margin=0.5)

    assert ids(taken.rows) == [first.id, second.id] and taken.lost == []
    assert len(queries) == 1  # a read: the rows were leased when written


def test_take_transactions_finds_the_lost_marks_in_the_same_read() -> None:
    mark = row("lost", kind=outbox.LOST)
    first = mine("t1")

    with CaptureQueriesContext(connection) as queries:
        taken = outbox.take_transactions(DB, ["t1"], "me", LEASE, margin=0.5)

    assert ids(taken.rows) == [first.id] and taken.lost == [mark.id]
    assert len(queries) == 1


def test_take_transactions_renews_a_lease_about_to_run_out() -> None:
    # A transaction that took longer than its lease, or a relay that fell behind.
    short = mine("t1", lease=0.1)
    gone = mine("t1", lease=-1.0)
    before = time.time()

    taken = outbox.take_transactions(DB, ["t1"], "me", LEASE, margin=0.5)

    assert ids(taken.rows) == [short.id, gone.id]
    for entry in [short, gone]:
        entry.refresh_from_db()
        assert entry.owner == "me" and before + LEASE <= entry.lease_until <= time.time() + LEASE
    # A sweep cannot take them now.
    assert outbox.claim_stale(DB, "sweeper", LEASE, grace=0.0, limit=100) == []


def test_take_transactions_leaves_rows_a_sweep_took_before_the_renewal() -> None:
    late = mine("t1", lease=-1.0)
    [swept] = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)
    assert swept.id == late.id

    assert outbox.take_transactions(DB, ["t1"], "me", LEASE, margin=0.5).rows == []
    late.refresh_from_db()
    assert late.owner == "sweeper"


def test_renew_extends_only_the_owners_rows_and_says_which() -> None:
    kept, taken = mine("t1", lease=0.1), mine("t1", lease=0.1, owner="sweeper")

    assert outbox.renew(DB, [kept.id, taken.id], "me", LEASE) == {kept.id}
    taken.refresh_from_db()
    assert taken.lease_until < time.time() + 1


def test_take_transactions_of_an_unknown_token_takes_nothing() -> None:
    mine("t1")

    assert outbox.take_transactions(DB, ["nope"], "me", LEASE, margin=0.5).rows == []


# claim_stale: what the sweep takes ----------------------------------------------------


def test_claim_stale_leaves_rows_within_their_grace_to_the_writer() -> None:
    row("fresh", age=0.1)

    assert outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100) == []


def test_claim_stale_takes_unclaimed_rows_older_than_the_grace() -> None:
    fresh = row("fresh", age=0.1)
    old = row("old", age=10.0)

    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)

    assert ids(claimed) == [old.id]
    assert claimed[0].owner == "sweeper" and claimed[0].lease_until > time.time()
    fresh.refresh_from_db()
    assert fresh.owner == "" and fresh.lease_until is None


def test_claim_stale_takes_rows_whose_lease_ran_out_but_not_live_leases() -> None:
    # Leased by a process that died (or failed) vs. one publishing them right now.
    expired = row("expired", age=0.1, lease_until=time.time() - 1, owner="dead")
    live = row("live", age=100.0, lease_until=time.time() + LEASE, owner="busy")

    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)

    assert ids(claimed) == [expired.id]
    live.refresh_from_db()
    assert live.owner == "busy"


def test_claim_stale_takes_whole_transactions() -> None:
    # The limit counts rows, but a transaction is never split: its rows are merged into events.
    first = [row("t1", age=10.0), row("t1", age=10.0), row("t1", age=10.0)]
    row("t2", age=10.0)

    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=1)

    assert ids(claimed) == ids(first)
    assert outbox.claim_stale(DB, "other", LEASE, grace=5.0, limit=1)[0].txn == "t2"


def test_claim_stale_takes_a_long_transaction_whole() -> None:
    # A transaction that ran for ten seconds: its first row is old at its commit, its last is fresh.
    written = [row("long", age=10.0), row("long", age=0.1)]

    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)

    assert ids(claimed) == ids(written)
    assert outbox.take_transactions(DB, ["long"], "writer", LEASE, margin=0.5).rows == []


def test_claim_stale_returns_the_rows_in_the_order_they_were_written() -> None:
    written = [row("t1", age=10.0), row("t2", age=10.0), row("t1", age=10.0), row("t2", age=10.0)]

    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)

    assert ids(claimed) == ids(written)


def test_claim_stale_never_takes_the_lost_mark() -> None:
    mark = row("lost", age=100.0, kind=outbox.LOST)
    stale = row("t1", age=100.0)

    # Not even as the oldest row within the limit: it neither is taken nor takes a place.
    claimed = outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=1)

    assert ids(claimed) == [stale.id]
    mark.refresh_from_db()
    assert mark.owner == "" and mark.lease_until is None


def test_rows_claimed_by_a_sweep_are_not_taken_by_another() -> None:
    row("t1", age=10.0, lease_until=time.time() - 9.0, owner="writer")  # the writer died
    outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)

    assert outbox.claim_stale(DB, "other", LEASE, grace=5.0, limit=100) == []
    assert outbox.take_transactions(DB, ["t1"], "writer", LEASE, margin=0.5).rows == []


# retry_later, delete, backlog ---------------------------------------------------------


def test_retry_later_gives_the_rows_back_after_the_delay() -> None:
    entry = mine("t1")
    before = time.time()

    outbox.retry_later(DB, [entry.id], delay=30.0)

    entry.refresh_from_db()
    assert entry.owner == ""
    assert before + 30.0 <= entry.lease_until <= time.time() + 30.0
    # Nobody takes them before the delay, not even the writer's own relay...
    assert outbox.claim_stale(DB, "sweeper", LEASE, grace=0.0, limit=100) == []
    assert outbox.take_transactions(DB, ["t1"], "me", LEASE, margin=0.5).rows == []
    # ...and any sweeper after it.
    outbox.retry_later(DB, [entry.id], delay=0.0)
    assert ids(outbox.claim_stale(DB, "sweeper", LEASE, grace=5.0, limit=100)) == [entry.id]


def test_retry_later_keeps_what_was_published_on_a_row_that_outlived_the_trim() -> None:
    first, second = mine("t1"), mine("t1")
    kept = [mine("t2")]

    outbox.delete(DB, [first.id])  # trimmed by OUTBOX_LIMIT between the claim and the retry
    outbox.retry_later(DB, [first.id, second.id], delay=0.0, published=["shard-0"])
    outbox.retry_later(DB, ids(kept), delay=0.0, published=["shard-1", "shard-0"])

    assert remaining() == [second.id, *ids(kept)]
    assert outbox.published(OutboxEntry.objects.filter(txn="t2")) == {"shard-0", "shard-1"}
    assert outbox.published(OutboxEntry.objects.filter(txn="t1")) == {"shard-0"}


def test_delete_forgets_only_the_rows_named() -> None:
    first, second, third = row("t1"), row("t1"), row("t2")

    outbox.delete(DB, [first.id, third.id])

    assert remaining() == [second.id]


def test_backlog_of_an_empty_outbox() -> None:
    assert outbox.backlog(DB) == outbox.Backlog(rows=0, oldest_age=None)


def test_backlog_counts_the_rows_and_ages_the_oldest() -> None:
    row("t1", age=30.0)
    row("t2", age=2.0)

    backlog = outbox.backlog(DB)

    assert backlog.rows == 2
    assert backlog.oldest_age is not None and 30.0 <= backlog.oldest_age < 35.0


# trim: OUTBOX_LIMIT --------------------------------------------------------------------


def test_trim_under_the_limit_drops_nothing() -> None:
    written = [row(f"t{n}") for n in range(3)]

    assert outbox.trim(DB, limit=3) == 0
    assert remaining() == ids(written)
    assert outbox.losses(DB) == []


def test_trim_drops_the_oldest_rows_and_leaves_a_lost_mark() -> None:
    written = [row(f"t{n}", age=10.0 - n) for n in range(5)]

    dropped = outbox.trim(DB, limit=3)

    # The mark takes a place too: the outbox holds `limit` rows afterwards.
    assert dropped == 3
    assert OutboxEntry.objects.count() == 3
    [mark] = outbox.losses(DB)
    assert remaining() == [written[3].id, written[4].id, mark]
    lost = OutboxEntry.objects.get(id=mark)
    assert lost.kind == outbox.LOST
    assert lost.data == {"dropped": 3}


def test_trim_keeps_an_earlier_lost_mark() -> None:
    for n in range(5):
        row(f"t{n}")
    outbox.trim(DB, limit=3)
    [first_mark] = outbox.losses(DB)
    for n in range(5, 8):
        row(f"t{n}")

    outbox.trim(DB, limit=3)

    marks = outbox.losses(DB)
    assert first_mark in marks and len(marks) == 2
    assert OutboxEntry.objects.count() == 3
    assert OutboxEntry.objects.exclude(kind=outbox.LOST).get().txn == "t7"


def test_losses_lists_only_lost_marks() -> None:
    row("t1")
    mark = row("lost", kind=outbox.LOST)

    assert outbox.losses(DB) == [mark.id]
