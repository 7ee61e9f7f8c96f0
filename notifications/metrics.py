"""Prometheus metrics: what each process counts as it goes, and the outbox, read when scraped.

Off unless ``DRF_LIVE["METRICS"]`` is True. While off, ``recorder`` is
``NOOP``, whose methods do nothing, and prometheus-client is never imported: an
instrumented line costs an attribute lookup and an empty call, and the fan-out
loop (``Hub.deliver``) runs exactly as without metrics. On, ``recorder`` is a
``PrometheusRecorder``, made once per process on first use, whose metrics live
in prometheus-client's default registry (so an application that exposes that
registry already shows them too). Label values are bounded: registered model
labels, event kinds, error and close codes, HTTP statuses, database aliases;
never a user, a token or a target.

The fan-out counts per event and process, not per socket: ``Hub.deliver`` adds
up the frames its sockets took and calls ``delivered`` once, which also
observes the event's commit-to-send latency once. The outbox's backlog is read
from the database by whichever process answers the scrape (``OutboxCollector``).

With several worker processes on a host, set ``PROMETHEUS_MULTIPROC_DIR``:
prometheus-client then keeps each process's values in files there, and
``registry()`` adds up every process's (docs/operations.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .conf import live_settings

logger = logging.getLogger("notifications.metrics")

#: Seconds, for commit-to-publish and commit-to-send: a few milliseconds when all is well, about
#: OUTBOX_GRACE (1 s) when a sweep published what its writer left, minutes after a Redis outage.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


#: The kinds of events (``plan.Unit.kind``) and the statuses of refused handshakes (``auth.deny``).
EVENT_KINDS = ("create", "update", "delete", "touch", "event")
REFUSALS = (403, 404, 429)


class Recorder:
    """What drf-live records, one method per fact; this one records nothing (metrics are off)."""

    enabled = False

    def socket_opened(self) -> None:
        """A socket was accepted."""

    def socket_closed(self) -> None:
        """An accepted socket ended, whoever closed it."""

    def subscribed(self, model: str) -> None:
        """A socket holds one more subscription to a target of ``model``."""

    def unsubscribed(self, model: str) -> None:
        """A socket holds one subscription fewer to a target of ``model``."""

    def error(self, code: str) -> None:
        """A socket was answered an ``ERROR`` frame with ``code``."""

    def closed(self, code: int) -> None:
        """The server closed a socket with ``code``."""

    def refused(self, status: int) -> None:
        """A handshake was refused with HTTP ``status``."""

    def recovery(self, recovered: bool) -> None:
        """A subscribe with ``since`` was answered ``recovered: true`` (replayed) or ``false`` (a snapshot)."""

    def delivered(self, frames: int, created: float | None = None) -> None:
        """``frames`` event frames were handed to sockets; ``created``: when their change was recorded."""

    def published(self, model: str, kind: str, created: float | None = None) -> None:
        """This process's relay committed an event to a stream; ``created`` as for ``delivered``."""

    def publish_failed(self, reason: str) -> None:
        """Publishing failed: ``"transient"`` (tried again) or ``"lost"`` (an event that cannot be decided)."""

    def outbox_dropped(self, rows: int) -> None:
        """The outbox reached ``OUTBOX_LIMIT`` and its ``rows`` oldest rows were dropped."""


NOOP = Recorder()

#: The recorder in force; ``configure`` sets it (at start-up, and when ``DRF_LIVE`` changes).
recorder: Recorder = NOOP


class PrometheusRecorder(Recorder):
    """Records into prometheus-client metrics; label children are bound once and kept."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        # Gauges add up the live processes' values in multiprocess mode (a dead
        # process's count is no longer open); in one process the mode is ignored.
        self.sockets_open = Gauge(
            "drf_live_sockets_open", "WebSocket connections open now.", multiprocess_mode="livesum"
        )
        self.sockets_opened = Counter("drf_live_sockets_opened_total", "WebSocket connections accepted.")
        self.subscriptions = Gauge(
            "drf_live_subscriptions",
            "Subscriptions sockets hold now, by model.",
            ["model"],
            multiprocess_mode="livesum",
        )
        self.events_published = Counter(
            "drf_live_events_published_total",
            "Events this process's relay committed to their streams, by model and kind.",
            ["model", "kind"],
        )
        self.deliveries = Counter("drf_live_deliveries_total", "Event frames handed to sockets (live and replayed).")
        self.publish_failures = Counter(
            "drf_live_publish_failures_total",
            "Failed publishing attempts: transient (Redis or the database unreachable: the rows wait and are "
            "tried again) or lost (an event that could not be decided: its streams' epochs rotate).",
            ["reason"],
        )
        self.outbox_dropped_rows = Counter(
            "drf_live_outbox_dropped_rows_total", "Outbox rows dropped because the outbox reached OUTBOX_LIMIT."
        )
        self.errors = Counter("drf_live_errors_total", "ERROR frames sent to sockets, by code.", ["code"])
        self.closes = Counter("drf_live_closes_total", "Sockets the server closed, by close code.", ["code"])
        self.refusals = Counter(
            "drf_live_handshakes_refused_total", "WebSocket handshakes refused, by HTTP status.", ["status"]
        )
        self.recoveries = Counter(
            "drf_live_recoveries_total",
            "Subscribes with `since`: recovered (replayed) or not (a fresh snapshot).",
            ["recovered"],
        )
        self.commit_to_publish = Histogram(
            "drf_live_commit_to_publish_seconds",
            "From a change's outbox row to its event committed to the stream, per event (the relay's lag).",
            buckets=LATENCY_BUCKETS,
        )
        self.commit_to_send = Histogram(
            "drf_live_commit_to_send_seconds",
            "From a change's outbox row to its frame handed to the sockets, once per event and server process.",
            buckets=LATENCY_BUCKETS,
        )
        # Every label value known now is bound (and shown, at 0) from the start: a rate over a
        # series that appears only with its first error would miss that error.
        from .frames import ERROR_DETAILS, CloseCode
        from .registry import site

        models = [registration.label for registration in site]
        self._recovered = {True: self.recoveries.labels("true"), False: self.recoveries.labels("false")}
        self._failures = {reason: self.publish_failures.labels(reason) for reason in ("transient", "lost")}
        self._subscriptions: dict[str, Any] = {model: self.subscriptions.labels(model) for model in models}
        self._published: dict[tuple[str, str], Any] = {
            (model, kind): self.events_published.labels(model, kind) for model in models for kind in EVENT_KINDS
        }
        self._errors: dict[str, Any] = {code: self.errors.labels(code) for code in ERROR_DETAILS}
        codes = [value for name, value in vars(CloseCode).items() if name.isupper() and isinstance(value, int)]
        self._closes: dict[int, Any] = {code: self.closes.labels(str(code)) for code in codes}
        self._refusals: dict[int, Any] = {status: self.refusals.labels(str(status)) for status in REFUSALS}
        if multiprocess_dir() is None:
            REGISTRY.register(OutboxCollector())

    def socket_opened(self) -> None:
        self.sockets_open.inc()
        self.sockets_opened.inc()

    def socket_closed(self) -> None:
        self.sockets_open.dec()

    def subscribed(self, model: str) -> None:
        child = self._subscriptions.get(model)
        if child is None:
            child = self._subscriptions[model] = self.subscriptions.labels(model)
        child.inc()

    def unsubscribed(self, model: str) -> None:
        child = self._subscriptions.get(model)
        if child is None:
            child = self._subscriptions[model] = self.subscriptions.labels(model)
        child.dec()

    def error(self, code: str) -> None:
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = self.errors.labels(code)
        child.inc()

    def closed(self, code: int) -> None:
        child = self._closes.get(code)
        if child is None:
            child = self._closes[code] = self.closes.labels(str(code))
        child.inc()

    def refused(self, status: int) -> None:
        child = self._refusals.get(status)
        if child is None:
            child = self._refusals[status] = self.refusals.labels(str(status))
        child.inc()

    def recovery(self, recovered: bool) -> None:
        self._recovered[recovered].inc()

    def delivered(self, frames: int, created: float | None = None) -> None:
        if frames <= 0:
            return
        self.deliveries.inc(frames)
        if created is not None:
            # Clocks of two hosts may disagree by a little: never a negative latency.
            self.commit_to_send.observe(max(time.time() - created, 0.0))

    def published(self, model: str, kind: str, created: float | None = None) -> None:
        key = (model, kind)
        child = self._published.get(key)
        if child is None:
            child = self._published[key] = self.events_published.labels(model, kind)
        child.inc()
        if created is not None:
            self.commit_to_publish.observe(max(time.time() - created, 0.0))

    def publish_failed(self, reason: str) -> None:
        self._failures[reason].inc()

    def outbox_dropped(self, rows: int) -> None:
        self.outbox_dropped_rows.inc(rows)


_prometheus: PrometheusRecorder | None = None


def configure() -> Recorder:
    """Put the recorder the settings ask for in force; returns it."""
    global recorder, _prometheus
    if not live_settings.METRICS:
        recorder = NOOP
        return recorder
    if _prometheus is None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            # The system check drf_live.E010 says so at start-up; record nothing rather than fail.
            logger.error("DRF_LIVE['METRICS'] is on but prometheus-client is not installed: nothing is recorded.")
            recorder = NOOP
            return recorder
        try:
            _prometheus = PrometheusRecorder()
        except OSError as exc:  # multiprocess mode: its files cannot be made
            raise ImproperlyConfigured(
                f"PROMETHEUS_MULTIPROC_DIR={multiprocess_dir()!r} cannot hold the metrics' files ({exc}): "
                "create it, empty and writable, before starting the processes (docs/operations.md)."
            ) from exc
    recorder = _prometheus
    return recorder


# Scraping -------------------------------------------------------------------------------


class OutboxCollector:
    """The outbox's backlog, read from each outbox database when scraped (two indexed queries each)."""

    def describe(self) -> Iterator[Any]:
        # Known without a query: registering the collector must not touch the database.
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        from django.db import DatabaseError

        from . import outbox

        rows, age = self._families()
        for using in outbox.databases():
            try:
                backlog = outbox.backlog(using)
            except DatabaseError:
                logger.warning("Could not read the outbox backlog of %r for the metrics", using, exc_info=True)
                continue
            rows.add_metric([using], backlog.rows)
            age.add_metric([using], backlog.oldest_age or 0.0)
        yield rows
        yield age

    def _families(self) -> tuple[Any, Any]:
        from prometheus_client.core import GaugeMetricFamily

        rows = GaugeMetricFamily(
            "drf_live_outbox_rows", "Outbox rows waiting to be published, by database.", labels=["database"]
        )
        age = GaugeMetricFamily(
            "drf_live_outbox_oldest_age_seconds",
            "Age of the oldest outbox row (0 when the outbox is empty), by database.",
            labels=["database"],
        )
        return rows, age


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when set: every process of the host writes there."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


def registry() -> Any:
    """What the endpoint exposes: this process's registry, or every process's (multiprocess mode)."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    forget_dead_processes(path)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path)
    merged.register(OutboxCollector())
    return merged


def forget_dead_processes(path: str) -> None:
    """Drop the gauges of processes that died without saying so (killed, crashed): they hold no socket.

    A process that stops cleanly forgets its own (``forget_this_process``, at
    lifespan shutdown); counters of dead processes stay, as counters must.
    """
    from prometheus_client.multiprocess import mark_process_dead

    pids: set[int] = set()
    for name in os.listdir(path):
        if name.startswith("gauge_live") and name.endswith(".db"):
            digits = name[:-3].rsplit("_", 1)[-1]
            if digits.isdigit():
                pids.add(int(digits))
    for pid in pids:
        if not _alive(pid):
            mark_process_dead(pid, path)


def forget_this_process() -> None:
    """At shutdown, in multiprocess mode: this process's sockets and subscriptions no longer count."""
    path = multiprocess_dir()
    if path is None or _prometheus is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(os.getpid(), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Someone else's process: alive.
    return True
