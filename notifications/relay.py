"""The relay: from committed outbox rows to published events, in one thread per process.

The writing process hands each committed transaction to its relay at once (the
fast path). A process that sweeps (every server process; see ``start``) also
takes, every ``OUTBOX_SWEEP_INTERVAL`` seconds, rows nobody published: their
writer died, Redis was down, or publishing failed. Nothing is lost between a
commit and the stream but with the database; a row is deleted only once its
events are published, so a crash in between publishes them twice, and clients
drop the repeat by its seq.

For each target a change concerns, the relay claims the target's stream (so
that its events are decided and numbered one at a time, in seq order), reads
the committed rows for every user subscribed (``audience.decide``), and commits
the event: seq, history and publication in one step.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections

from . import metrics, outbox
from .audience import decide
from .conf import live_settings
from .models import OutboxEntry
from .plan import CONTROL_KINDS, Unit, plan
from .streams import Claim, Claims, StoreBusy, control_channel, get_store
from .targets import user_group

logger = logging.getLogger("notifications.relay")


@dataclass
class Stats:
    """Counters a deployment can read from ``relay.stats``."""

    published: int = 0  # events committed to a stream
    failed: int = 0  # attempts that will be retried (Redis or the database unreachable)
    lost: int = 0  # events that could not be decided (a serializer raised): their streams' epochs rotate
    trimmed: int = 0  # rows dropped because the outbox reached OUTBOX_LIMIT


class Transient(Exception):
    """Publishing cannot go on now (Redis or the database is unreachable): the rows wait."""


class Relay:
    def __init__(self) -> None:
        self.stats = Stats()
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._kicks: deque[tuple[str, str]] = deque()
        # Transactions leased by this relay and not yet published, in the order they committed,
        # and the one being published.
        self._claimed: deque[tuple[str, list[OutboxEntry]]] = deque()
        self._current: tuple[str, list[OutboxEntry]] | None = None
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        # Renews leases while one transaction takes long to publish (``_keep_leases``).
        self._keeper: threading.Thread | None = None
        self._publishing = threading.Event()
        self._busy = False
        # Published rows not deleted yet (``_forget``): deleted together, a little later.
        self._published: dict[str, list[OutboxEntry]] = {}
        self._published_since: float | None = None
        # LOST marks seen by ``take_transactions``: settled before anything newer goes out.
        self._lost: dict[str, list[int]] = {}
        self._flushing = 0
        # Whether the thread holds database connections, and when it last used them.
        self._connected = False
        self._last_work = 0.0
        self._sweeping = False
        self._next_sweep = 0.0
        self._logged_down = 0.0

    # Control --------------------------------------------------------------------

    def kick(self, using: str, token: str) -> None:
        """A transaction with outbox rows committed on ``using``: publish them soon."""
        with self._condition:
            self._kicks.append((using, token))
            self._ensure_thread()
            self._condition.notify()

    def start(self, *, sweep: bool = True) -> None:
        """Run the relay thread now; with ``sweep``, this process also publishes rows others left."""
        with self._condition:
            self._sweeping = self._sweeping or sweep
            self._ensure_thread()
            self._condition.notify()

    def stop_sweeping(self) -> None:
        """Sweep no more (until ``start`` again): ``notifications.testing`` does, before a test's database goes."""
        with self._condition:
            self._sweeping = False

    def _ensure_thread(self) -> None:
        if live_settings.OUTBOX_SWEEP is True:
            self._sweeping = True
        elif live_settings.OUTBOX_SWEEP is False:
            self._sweeping = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="drf-live-relay", daemon=True)
            self._thread.start()
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep_leases, name="drf-live-relay-leases", daemon=True)
            self._keeper.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every transaction handed over so far is published (or left for a sweep)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._flushing += 1
            self._condition.notify_all()
            try:
                while self._kicks or self._claimed or self._busy or self._published or self._connected:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                        return not (self._kicks or self._claimed or self._busy)
                    self._condition.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (
                    self._kicks or self._claimed or self._sweep_due() or self._deletes_due() or self._release_due()
                ):
                    self._condition.wait(self._wait())
                kicks = list(self._kicks)
                self._kicks.clear()
                self._busy = True
                worked = bool(kicks or self._claimed or self._sweep_due() or self._deletes_due())
            failed = False
            try:
                # Take every transaction handed over so far before publishing the first: a
                # sweeper takes only rows nobody holds, so a busy relay keeps its own, and one
                # writer's transactions go out in the order they committed.
                self._claim(kicks)
                self._renew_leases()
                if self._deletes_due():
                    self._delete_published()
                if self._claimed:
                    with self._condition:
                        using, rows = self._claimed.popleft()
                        self._current = (using, rows)
                    try:
                        # Unless a sweep took them when their lease ran out: it publishes them.
                        if all(row.owner == self.owner for row in rows):
                            self._publishing.set()
                            self.publish_rows(using, rows)
                    finally:
                        self._publishing.clear()
                        with self._condition:
                            self._current = None
                elif self._sweep_due():
                    self._next_sweep = time.monotonic() + float(live_settings.OUTBOX_SWEEP_INTERVAL)
                    self.sweep()
            except Exception:
                failed = True
                logger.exception("The drf-live relay failed; the rows stay in the outbox for the next sweep")
            finally:
                if self._flushing:
                    self._delete_published()
                # The thread keeps its database connection while work keeps coming (opening
                # one costs more than the relay's own work for a write nobody is subscribed
                # to), and lets it go after a failure, when idle, and when flushed.
                if failed or self._flushing or (not worked and self._release_due()):
                    try:
                        connections.close_all()
                    except Exception:  # noqa: BLE001 - a broken connection is replaced on next use
                        logger.debug("Could not close the relay's database connections", exc_info=True)
                    self._connected = False
                elif worked:
                    self._connected = True
                    self._last_work = time.monotonic()
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def release_leases(self) -> None:
        """Give back every row this relay holds and has not published (the process is exiting).

        That is, the rows of transactions handed over and not published yet, and
        those being published. Without it they would wait out their lease before
        a sweep may take them; given back, the next sweep does.
        """
        with self._condition:
            self._claimed.clear()
            self._kicks.clear()
        self._delete_published()
        for using in outbox.databases():
            try:
                outbox.release(using, self.owner)
            except Exception:  # noqa: BLE001 - exiting: the leases run out on their own
                logger.warning("Could not give back the outbox rows of %r", using, exc_info=True)

    def _claim_handed_over(self) -> None:
        """Lease what was handed over meanwhile, between two events: a long backlog keeps its rows."""
        if threading.current_thread() is not self._thread:
            return
        with self._condition:
            kicks = list(self._kicks)
            self._kicks.clear()
        if kicks:
            self._claim(kicks)

    def _claim(self, kicks: list[tuple[str, str]]) -> None:
        """Take the rows of the transactions handed over: leased to this relay since they were written."""
        tokens: dict[str, list[str]] = {}
        for using, token in kicks:
            tokens.setdefault(using, []).append(token)
        for using, batch in tokens.items():
            taken = outbox.take_transactions(using, batch, self.owner, float(live_settings.OUTBOX_LEASE), _margin())
            if taken.lost:
                self._lost[using] = taken.lost
            by_token: dict[str, list[OutboxEntry]] = {}
            for row in taken.rows:
                by_token.setdefault(row.txn, []).append(row)
            with self._condition:
                self._claimed.extend((using, by_token[token]) for token in batch if token in by_token)

    def _held(self) -> list[tuple[str, list[OutboxEntry]]]:
        """The transactions this relay holds and has not published: the one in hand, and those waiting."""
        with self._condition:
            return ([self._current] if self._current is not None else []) + list(self._claimed)

    def _renew_leases(self) -> None:
        """Renew the leases of every transaction held here if the first runs out soon (a backlog, a slow event).

        The relay's thread does between two transactions, and the keeper's
        thread while one takes long. Rows a sweep took meanwhile (their lease
        had run out) are marked, and left to it.
        """
        held = self._held()
        if not held or min(row.lease_until or 0.0 for _using, rows in held for row in rows) - time.time() >= _margin():
            return
        lease = float(live_settings.OUTBOX_LEASE)
        ids: dict[str, list[int]] = {}
        for using, rows in held:
            ids.setdefault(using, []).extend(row.id for row in rows)
        kept = {using: outbox.renew(using, batch, self.owner, lease) for using, batch in ids.items()}
        until = time.time() + lease
        for using, rows in held:
            for row in rows:
                if row.id in kept[using]:
                    row.lease_until = until
                else:
                    row.owner = ""

    def _keep_leases(self) -> None:
        """The keeper's thread: while the relay publishes, renew what it holds before a lease runs out."""
        while True:
            self._publishing.wait()
            try:
                self._renew_leases()
            except Exception:  # noqa: BLE001 - the relay's thread renews too, between transactions
                logger.warning("Could not renew the relay's outbox leases", exc_info=True)
            finally:
                connections.close_all()
            time.sleep(min(_margin() / 4, 0.25))

    def _forget(self, using: str, rows: list[OutboxEntry]) -> None:
        """Published rows: deleted soon, with others (one ``DELETE`` for many transactions).

        From another thread than the relay's (a test, a command), at once. A row
        whose delete never comes (the process died) is taken by a sweep when its
        lease runs out, and a retried event is not committed twice.
        """
        if threading.current_thread() is not self._thread:
            outbox.delete(using, [row.id for row in rows])
            return
        with self._condition:
            self._published.setdefault(using, []).extend(rows)
            if self._published_since is None:
                self._published_since = time.monotonic()

    def _deletes_due(self) -> bool:
        if not self._published or self._published_since is None:
            return False
        if self._flushing or time.monotonic() - self._published_since >= DELETE_DELAY:
            return True
        pending = [row for rows in self._published.values() for row in rows]
        if len(pending) >= DELETE_BATCH:
            return True
        # Before a lease runs out: a sweep would take the rows and publish them again.
        return min(row.lease_until or 0.0 for row in pending) - time.time() < _margin()

    def _delete_published(self) -> None:
        with self._condition:
            published = self._published
            self._published = {}
            self._published_since = None
        try:
            for using, rows in published.items():
                outbox.delete(using, [row.id for row in rows])
        except Exception:
            # Published but still in the outbox: a sweep takes them once their lease runs out,
            # and the history keeps their events from being committed twice.
            logger.warning("Could not delete published outbox rows", exc_info=True)
        finally:
            with self._condition:
                self._condition.notify_all()

    def _sweep_due(self) -> bool:
        return self._sweeping and time.monotonic() >= self._next_sweep

    def _release_due(self) -> bool:
        """Whether the thread should close its database connections: flushed, or idle for a while."""
        return self._connected and (bool(self._flushing) or time.monotonic() - self._last_work >= CONNECTION_IDLE)

    def _wait(self) -> float | None:
        """How long the thread may sleep: until the next sweep, until published rows are due for
        deletion, or until its idle database connections are due to close."""
        waits = []
        if self._connected:
            waits.append(max(self._last_work + CONNECTION_IDLE - time.monotonic(), 0.01))
        if self._sweeping:
            waits.append(max(self._next_sweep - time.monotonic(), 0.01))
        if self._published_since is not None:
            waits.append(max(self._published_since + DELETE_DELAY - time.monotonic(), 0.01))
        return min(waits) if waits else None

    # Publishing -------------------------------------------------------------------

    def sweep(self) -> int:
        """Publish rows nobody published; returns how many rows were taken."""
        taken = 0
        for using in outbox.databases():
            try:
                self._trim(using)
                self._settle_losses(using)
                rows = outbox.claim_stale(
                    using,
                    self.owner,
                    float(live_settings.OUTBOX_LEASE),
                    float(live_settings.OUTBOX_GRACE),
                    int(live_settings.OUTBOX_SWEEP_BATCH),
                )
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                self._log_down("Could not sweep the outbox of database %r: %r", using, exc)
                continue
            by_transaction: dict[str, list[OutboxEntry]] = {}
            for row in rows:
                by_transaction.setdefault(row.txn, []).append(row)
            for group in by_transaction.values():
                self.publish_rows(using, group)
            taken += len(rows)
        return taken

    def publish_rows(self, using: str, rows: list[OutboxEntry]) -> None:
        """Publish the rows of one transaction, then delete them; on a failure, leave them for a retry."""
        if not rows:
            return
        ids = [row.id for row in rows]
        done = outbox.published(rows)
        # Claimed before: an earlier attempt may have committed events whose replies it never read.
        retry = max(row.attempts for row in rows) > 1
        try:
            # Rows dropped at OUTBOX_LIMIT are announced (every epoch rotates) before anything newer.
            self._settle_seen_losses(using)
            created = max(row.created for row in rows)
            waiting: Exception | None = None
            units = [unit for unit in plan(rows, using) if unit_key(unit) not in done]  # not published before
            # One round trip per shard holds every stream someone is subscribed to: most of
            # the targets a write concerns (its object, each collection it is in) have nobody.
            claims = get_store().claim_all(unit.target.stream for unit in units) if units else Claims({})
            held = dict(claims.held)
            live = claims.live
            try:
                for unit in units:
                    key = unit_key(unit)
                    if unit.target.stream not in live:
                        done.add(key)  # nobody to tell, nothing anyone could recover (as a claim finds)
                        continue
                    unit.created = created
                    try:
                        self.publish_unit(
                            unit, using, event_id(rows[0].txn, key), retry, held.pop(unit.target.stream, None)
                        )
                    except Exception as exc:
                        if not _is_transient(exc):
                            raise
                        # Its Redis shard is down (or its stream busy): the events of the other
                        # shards go out now, this one waits in the outbox.
                        waiting = waiting or exc
                    else:
                        done.add(key)
                    self._claim_handed_over()
            finally:
                _release(held.values())
            if CONTROL not in done:
                for message in control_messages(rows):
                    get_store().publish(control_channel(), message)
                done.add(CONTROL)
            if waiting is not None:
                raise waiting
        except Exception as exc:
            if _is_transient(exc):
                self._log_down("Could not publish (%r); the events wait in the outbox", exc)
                outbox.retry_later(using, ids, float(live_settings.OUTBOX_RETRY_DELAY), done)
                return
            attempts = max(row.attempts for row in rows)
            if attempts < int(live_settings.OUTBOX_MAX_ATTEMPTS):
                logger.exception("Could not publish outbox rows %s (attempt %d); trying again", ids, attempts)
                outbox.retry_later(using, ids, float(live_settings.OUTBOX_RETRY_DELAY), done)
                return
            self._give_up(using, rows, attempts)
        self._forget(using, rows)

    def _give_up(self, using: str, rows: list[OutboxEntry], attempts: int) -> None:
        """Rows that failed every attempt: say so with new epochs, so that no client recovers across them."""
        self.stats.lost += 1
        metrics.recorder.publish_failed("lost")
        logger.exception(
            "Gave up on outbox rows %s after %d attempts; rotating the epochs of their targets",
            [row.id for row in rows],
            attempts,
        )
        try:
            get_store().rotate(unit.target.stream for unit in plan(rows, using))
        except Exception:  # noqa: BLE001 - not even planning works: rotate everything
            get_store().rotate_all()

    def publish_unit(
        self, unit: Unit, using: str, event: str = "", retry: bool = False, held: Claim | None = None
    ) -> None:
        """Decide and commit one event: claim the stream, read for its subscribers, commit (again if they changed).

        ``event`` names the event across attempts; a ``retry`` (the rows were
        claimed before) does not commit it again if an earlier attempt did.
        ``held``: the stream is held already (``claim_all``).
        """
        store = get_store()
        stream = unit.target.stream
        for _attempt in range(20):
            claim, held = held, None
            if claim is None:
                try:
                    claim = store.claim(stream)
                except StoreBusy:
                    raise Transient(stream) from None
            if claim is None:
                return  # Nobody subscribed: nobody to tell, nothing anyone could recover.
            try:
                decision = decide(unit, claim.users, using)
            except Exception as exc:
                store.release(claim)
                if _is_transient(exc):
                    raise
                # A serializer or a hook raised: this event cannot be decided. Say so
                # with a new epoch, so that no client is told it recovered across it.
                self.stats.lost += 1
                metrics.recorder.publish_failed("lost")
                logger.exception("Could not decide %s for %s; rotating its epoch", unit.kind, stream)
                store.rotate([stream])
                return
            if decision.entry is None:
                message = {"type": "revoke", "users": decision.revoked} if decision.revoked else None
                store.release(claim, message)
                return
            entry = decision.entry
            if unit.created is not None:
                entry["created"] = unit.created
            if store.commit(claim, entry, event, retry) is not None:
                self.stats.published += 1
                metrics.recorder.published(unit.target.model, unit.kind, unit.created)
                return
        raise Transient(f"{stream}: subscribers kept changing")

    def _trim(self, using: str) -> None:
        """Keep the outbox under ``OUTBOX_LIMIT`` (Redis down for long): drop the oldest, mark the loss."""
        dropped = outbox.trim(using, int(live_settings.OUTBOX_LIMIT))
        if dropped:
            self.stats.trimmed += dropped
            metrics.recorder.outbox_dropped(dropped)
            logger.error(
                "The outbox of %r held more than OUTBOX_LIMIT=%s rows: dropped the %d oldest. Every "
                "stream's epoch rotates once Redis is reachable, so that clients take fresh snapshots.",
                using,
                live_settings.OUTBOX_LIMIT,
                dropped,
            )

    def _settle_losses(self, using: str) -> None:
        """Rotate every epoch for rows the outbox dropped, before anything newer is published."""
        lost = outbox.losses(using)
        if lost:
            get_store().rotate_all()
            outbox.delete(using, lost)
        self._lost.pop(using, None)

    def _settle_seen_losses(self, using: str) -> None:
        """``_settle_losses`` for the marks the last ``take_transactions`` saw, without a query of its own.

        Publishing from another thread (a test, a command), it looks itself.
        """
        if threading.current_thread() is not self._thread or self._lost.get(using):
            self._settle_losses(using)

    def _log_down(self, message: str, *args: Any) -> None:
        self.stats.failed += 1
        metrics.recorder.publish_failed("transient")
        now = time.monotonic()
        if now - self._logged_down > 30:
            self._logged_down = now
            logger.warning(message, *args)


#: The progress key of a transaction's control messages (``outbox.retry_later``).
CONTROL = "control"

#: Seconds published rows wait to be deleted together, and how many are deleted at once at most.
DELETE_DELAY = 0.2
DELETE_BATCH = 500
#: Seconds without work after which the relay's thread closes its database connections.
CONNECTION_IDLE = 1.0


def _margin() -> float:
    """A lease that runs out sooner than this is renewed before publishing (or its rows deleted first)."""
    return float(live_settings.OUTBOX_GRACE) / 2


def unit_key(unit: Unit) -> str:
    """How a transaction's progress names one of its events (``outbox.retry_later``)."""
    return f"{unit.target.stream} {unit.kind} {unit.object_id} {unit.event_type}".rstrip()


def event_id(txn: str, key: str) -> str:
    """A name for one event of a transaction, the same at every attempt (kept with it in the history)."""
    return hashlib.blake2b(f"{txn} {key}".encode(), digest_size=9).hexdigest()


def _release(claims: Iterable[Claim]) -> None:
    """Release holds ``claim_all`` took and nothing used (a unit failed first); they run out on their own anyway."""
    for claim in claims:
        try:
            get_store().release(claim)
        except Exception:  # noqa: BLE001 - the hold runs out after CLAIM_TIMEOUT
            logger.debug("Could not release the hold on %s", claim.stream, exc_info=True)


def control_messages(rows: Iterable[OutboxEntry]) -> list[dict[str, Any]]:
    """The control-channel messages of one transaction, sent after its events.

    Users taken out of an access field (a member removed) re-check every
    subscription at once, so that the targets that depend on it (the project's
    tasks, its collections) end without waiting for an event of their own.
    """
    messages = [
        {"type": row.kind, **{key: value for key, value in row.data.items() if key != outbox.PUBLISHED}}
        for row in rows
        if row.kind in CONTROL_KINDS
    ]
    revoked = sorted({pk for row in rows for pk in row.data.get("revoked", ())} if rows else set())
    if revoked:
        messages.insert(0, {"type": "recheck", "to": [user_group(pk) for pk in revoked]})
    return messages


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (Transient, DatabaseError, ConnectionError, TimeoutError, OSError)):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


relay = Relay()


@atexit.register
def _flush_at_exit() -> None:
    # A management command that saved objects exits right after: publish first.
    # Whatever is still in the outbox then is published by a server's sweep.
    if not relay.flush(timeout=5.0):
        relay.release_leases()
