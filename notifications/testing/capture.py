"""``capture_events()``: what a block of code publishes, without sockets, Redis or a channel layer.

Every transaction that writes to drf-live's outbox hands its rows to the relay
when it commits. Inside the block, each hand-off is read first: the relay's own
planning turns the rows into events, one per target (the object, each
collection it was or is in, each object it touches), exactly as it will
publish them. Nothing else changes: the relay still publishes them afterwards.

Under pytest-django's ``db`` fixture (or a ``TestCase``) the block's writes never
commit: their rows are planned when the events are read, and at the end of the
block, as the one transaction they would be if the test's transaction committed.

Who receives an event depends on who may see it when the relay decides it:
``event.frame_for(user)`` decides it for one user, now, from the committed
rows, with the relay's own code (the user's viewset and serializer), and
returns the frame a socket of that user subscribed to the target would get::

    with capture_events() as events:
        task.title = "New title"
        task.save()

    event = events.assert_published("UPDATE_TASK", id=task)
    assert event.changed == ["title"]
    assert event.frame_for(bob)["payload"]["title"] == "New title"
    assert event.payload_for(carol) is None                   # she may not see the task
    events.assert_published("UPDATE_TASK", filter={"project": task.project})
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from channels.db import database_sync_to_async
from django.db import connections

from .. import outbox
from ..plan import Unit, plan
from ..registry import Registry, site
from .captured import CapturedEvent, CapturedEvents


class capture_events:  # noqa: N801 - used like a function: `with capture_events() as events:`
    """Record the events the block's committed writes publish; ``with`` or ``async with``.

    ``async with`` does the same from async code (the ORM reads run in
    ``database_sync_to_async``); the writes themselves may run in any thread.
    """

    def __init__(self, *, registry: Registry = site) -> None:
        self.registry = registry
        self.events = CapturedEvents(self)
        self._lock = threading.Lock()
        self._committed: list[CapturedEvent] = []
        self._seen: set[tuple[str, str]] = set()
        self._starts: dict[str, int] = {}
        self._seqs: dict[str, int] = {}
        self._previous_kick: Any = None
        self._open = False

    # Entering and leaving -------------------------------------------------------------

    def __enter__(self) -> CapturedEvents:
        from ..models import OutboxEntry
        from ..relay import relay

        for using in outbox.databases():
            last = OutboxEntry.objects.using(using).order_by("-id").values_list("id", flat=True).first()
            self._starts[using] = last or 0
        self._previous_kick = relay.__dict__.get("kick")
        forward = relay.kick

        def kick(using: str, token: str) -> None:
            self._capture(using, token)
            forward(using, token)

        relay.kick = kick  # type: ignore[method-assign]
        self._open = True
        return self.events

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        from ..relay import relay

        if self._previous_kick is None:
            relay.__dict__.pop("kick", None)
        else:
            relay.kick = self._previous_kick  # type: ignore[method-assign]
        if kind is None:
            pending = self._uncommitted()
            with self._lock:
                self._committed.extend(pending)
        self._open = False

    async def __aenter__(self) -> CapturedEvents:
        return await database_sync_to_async(self.__enter__)()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await database_sync_to_async(self.__exit__)(kind, error, traceback)

    def snapshot(self) -> list[CapturedEvent]:
        """What was published so far, and (inside the block) what this thread's open transaction would."""
        pending = self._uncommitted(final=False) if self._open and self._in_transaction() else []
        with self._lock:
            return [*self._committed, *pending]

    # Capturing ---------------------------------------------------------------------------

    def _capture(self, using: str, token: str) -> None:
        """A transaction committed: plan its rows before the relay takes them."""
        from ..models import OutboxEntry

        with self._lock:
            if (using, token) in self._seen:
                return
            self._seen.add((using, token))
        rows = list(
            OutboxEntry.objects.using(using).filter(txn=token, id__gt=self._starts.get(using, 0)).order_by("id")
        )
        events = self._plan(rows, using, self._seqs)
        with self._lock:
            self._committed.extend(events)

    def _in_transaction(self) -> bool:
        return any(connections[using].in_atomic_block for using in self._starts)

    def _uncommitted(self, *, final: bool = True) -> list[CapturedEvent]:
        """Rows the block wrote in a transaction still open (the test's own), planned as if it committed now."""
        from ..models import OutboxEntry

        events: list[CapturedEvent] = []
        seqs = self._seqs if final else dict(self._seqs)
        for using, start in self._starts.items():
            rows = OutboxEntry.objects.using(using).filter(id__gt=start).exclude(kind=outbox.LOST).order_by("id")
            by_transaction: dict[str, list[Any]] = {}
            for row in rows:
                if (using, row.txn) not in self._seen:
                    by_transaction.setdefault(row.txn, []).append(row)
            for token, group in by_transaction.items():
                if final:
                    self._seen.add((using, token))
                events.extend(self._plan(group, using, seqs))
        return events

    def _plan(self, rows: list[Any], using: str, seqs: dict[str, int]) -> list[CapturedEvent]:
        members: dict[tuple[str, str], list[dict[str, str]]] = {}
        events = []
        for unit in plan(rows, using):
            with self._lock:
                seqs[unit.target.stream] = seq = seqs.get(unit.target.stream, 0) + 1
            events.append(self._event(unit, using, seq, members))
        return events

    def _event(
        self, unit: Unit, using: str, seq: int, members: dict[tuple[str, str], list[dict[str, str]]]
    ) -> CapturedEvent:
        registration = unit.registration
        target = unit.target
        if unit.kind == "event":
            type_ = unit.event_type
        elif unit.kind == "delete":
            type_ = registration.get_event_type("delete")
        elif not target.is_collection:
            type_ = registration.get_event_type("update")
        else:
            inside = dict(target.filter or ()) in _collections_now(unit, using, members)
            if unit.kind == "create" or (inside and not unit.before):
                type_ = registration.get_event_type("create")
            elif inside:
                type_ = registration.get_event_type("update")
            else:
                type_ = registration.get_event_type("delete")
        return CapturedEvent(
            type=type_,
            kind=unit.kind,
            model=registration.label,
            id=None if target.is_collection else target.id,
            filter=dict(target.filter) if target.filter is not None else None,
            member=unit.object_id if target.is_collection else None,
            changed=list(unit.changed),
            payloads=dict(unit.payloads),
            seq=seq,
            unit=unit,
            using=using,
        )


def _collections_now(
    unit: Unit, using: str, cache: dict[tuple[str, str], list[dict[str, str]]]
) -> list[dict[str, str]]:
    """The collections the changed object is in now (none once it is deleted)."""
    registration = unit.registration
    key = (registration.label, unit.object_id)
    if key not in cache:
        pk = registration.decode_id(unit.object_id)
        row = registration.model._base_manager.using(using).filter(pk=pk).first() if pk is not None else None
        cache[key] = registration.collections_of(registration.filter_values(row)) if row is not None else []
    return cache[key]
