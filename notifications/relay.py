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

from django.db import DatabaseError, close_old_connections

from . import metrics, outbox
from .audience import decide
from .conf import live_settings
from .models import OutboxEntry
from .plan import CONTROL_KINDS, Unit, plan
from .streams import StoreBusy, control_channel, get_store
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
        self._busy = False
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

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every transaction handed over so far is published (or left for a sweep)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._kicks or self._claimed or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return not (self._kicks or self._claimed or self._busy)
                self._condition.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._kicks and not self._claimed and not self._sweep_due():
                    self._condition.wait(self._sweep_wait())
                kicks = list(self._kicks)
                self._kicks.clear()
                self._busy = True
            try:
                # Lease every transaction handed over so far before publishing the first: a
                # sweeper takes only rows nobody holds, so a busy relay keeps its own, and one
                # writer's transactions go out in the order they committed.
                self._claim(kicks)
                if self._claimed:
                    using, rows = self._claimed.popleft()
                    self._current = (using, rows)
                    try:
                        self.publish_rows(using, rows)
                    finally:
                        self._current = None
                elif self._sweep_due():
                    self._next_sweep = time.monotonic() + float(live_settings.OUTBOX_SWEEP_INTERVAL)
                    self.sweep()
            except Exception:
                logger.exception("The drf-live relay failed; the rows stay in the outbox for the next sweep")
            finally:
                try:
                    close_old_connections()
                except Exception:  # noqa: BLE001 - a broken connection is replaced on next use
                    logger.debug("Could not close the relay's database connections", exc_info=True)
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def release_leases(self) -> None:
        """Give back every row this relay leased and has not published (the process is exiting).

        Without it they would wait out their lease (``OUTBOX_LEASE``) before a
        sweep may take them; given back, the next sweep does.
        """
        with self._condition:
            held = list(self._claimed) + ([self._current] if self._current is not None else [])
            self._claimed.clear()
        for using, rows in held:
            try:
                outbox.retry_later(using, [row.id for row in rows], 0.0)
            except Exception:  # noqa: BLE001 - exiting: the leases run out on their own
                logger.warning("Could not give back outbox rows %s", [row.id for row in rows], exc_info=True)

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
        tokens: dict[str, list[str]] = {}
        for using, token in kicks:
            tokens.setdefault(using, []).append(token)
        lease = float(live_settings.OUTBOX_LEASE)
        for using, batch in tokens.items():
            rows = outbox.claim_transactions(using, batch, self.owner, lease)
            by_token: dict[str, list[OutboxEntry]] = {}
            for row in rows:
                by_token.setdefault(row.txn, []).append(row)
            self._claimed.extend((using, by_token[token]) for token in batch if token in by_token)

    def _sweep_due(self) -> bool:
        return self._sweeping and time.monotonic() >= self._next_sweep

    def _sweep_wait(self) -> float | None:
        return max(self._next_sweep - time.monotonic(), 0.01) if self._sweeping else None

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
            self._settle_losses(using)
            created = max(row.created for row in rows)
            waiting: Exception | None = None
            units = [unit for unit in plan(rows, using) if unit_key(unit) not in done]  # not published before
            streams = {unit.target.stream for unit in units}
            # One question per shard instead of a claim per stream: most of the targets a
            # write concerns (its object, each collection it is in) have nobody subscribed.
            live = get_store().subscribed(streams) if len(streams) > 1 else streams
            for unit in units:
                key = unit_key(unit)
                if unit.target.stream not in live:
                    done.add(key)  # nobody to tell, nothing anyone could recover (as a claim finds)
                    continue
                unit.created = created
                try:
                    self.publish_unit(unit, using, event_id(rows[0].txn, key), retry)
                except Exception as exc:
                    if not _is_transient(exc):
                        raise
                    # Its Redis shard is down (or its stream busy): the events of the other
                    # shards go out now, this one waits in the outbox.
                    waiting = waiting or exc
                else:
                    done.add(key)
                self._claim_handed_over()
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
        outbox.delete(using, ids)

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

    def publish_unit(self, unit: Unit, using: str, event: str = "", retry: bool = False) -> None:
        """Decide and commit one event: claim the stream, read for its subscribers, commit (again if they changed).

        ``event`` names the event across attempts; a ``retry`` (the rows were
        claimed before) does not commit it again if an earlier attempt did.
        """
        store = get_store()
        stream = unit.target.stream
        for _attempt in range(20):
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

    def _log_down(self, message: str, *args: Any) -> None:
        self.stats.failed += 1
        metrics.recorder.publish_failed("transient")
        now = time.monotonic()
        if now - self._logged_down > 30:
            self._logged_down = now
            logger.warning(message, *args)


#: The progress key of a transaction's control messages (``outbox.retry_later``).
CONTROL = "control"


def unit_key(unit: Unit) -> str:
    """How a transaction's progress names one of its events (``outbox.retry_later``)."""
    return f"{unit.target.stream} {unit.kind} {unit.object_id} {unit.event_type}".rstrip()


def event_id(txn: str, key: str) -> str:
    """A name for one event of a transaction, the same at every attempt (kept with it in the history)."""
    return hashlib.blake2b(f"{txn} {key}".encode(), digest_size=9).hexdigest()


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
