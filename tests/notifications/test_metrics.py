"""Prometheus metrics (``notifications/metrics.py``): nothing while off; each value moving as it should while on.

Sockets run over the full stack with the in-memory store, as in
test_consumers.py. The metrics live in prometheus-client's default registry
for the whole test process, so each test compares values before and after
(``Samples``). The endpoint is tested in test_metrics_view.py, and a real
server's, scraped after real traffic, in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import checks
from django.db import transaction
from prometheus_client.metrics import MetricWrapperBase

from api.models import Task
from notifications import metrics, outbox
from notifications.hub import Hub
from notifications.models import OutboxEntry
from notifications.registry import site
from notifications.relay import relay
from notifications.streams import get_store
from notifications.targets import Target
from notifications.testing import published
from tests.notifications.fakes import Unreachable

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]

DB = "default"


class Samples:
    """The values of drf-live's samples when made; ``moved()`` says which changed since, and by how much."""

    def __init__(self) -> None:
        self.before = samples()

    def moved(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        after = samples()
        return {
            key: round(after.get(key, 0.0) - self.before.get(key, 0.0), 6)
            for key in {*self.before, *after}
            if after.get(key, 0.0) != self.before.get(key, 0.0)
        }


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a drf_live_ metric now, but the outbox's (read from the database) and histogram sums."""
    values = {}
    for family in families():
        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_created", "_bucket")):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def families() -> list[Any]:
    """The metric families the recorder counts into (not the outbox's: they query the database)."""
    recorder = metrics.configure() if metrics._prometheus is None else metrics._prometheus
    return [
        family
        for value in vars(recorder).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.collect()
    ]


def sample_value(name: str) -> float:
    return next((s.value for family in families() for s in family.samples if s.name == name and not s.labels), 0.0)


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


@pytest.fixture
def metrics_on(settings: Any) -> Iterator[None]:
    settings.DRF_LIVE = {"METRICS": True}
    assert metrics.recorder.enabled
    yield


@pytest.fixture
def alice_key(domain: dict[str, Any], token_for: Any) -> str:
    return token_for(domain["alice"])


async def request(socket: WebsocketCommunicator, frame: Any) -> dict[str, Any]:
    await socket.send_json_to(frame)
    return await socket.receive_json_from()


def subscribe_task(task: Any, request_id: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"action": "subscribe", "model": "api.task", "id": str(task.pk), "request_id": request_id, **extra}


@database_sync_to_async
def save_title(task: Any, title: str) -> None:
    task.title = title
    task.save()


# Off --------------------------------------------------------------------------------------


def test_the_setting_picks_the_recorder_and_the_metrics_are_made_once(settings: Any) -> None:
    settings.DRF_LIVE = {}
    assert metrics.recorder is metrics.NOOP
    settings.DRF_LIVE = {"METRICS": True}
    first = metrics.recorder
    assert isinstance(first, metrics.PrometheusRecorder)
    settings.DRF_LIVE = {"METRICS": False}
    assert metrics.recorder is metrics.NOOP
    settings.DRF_LIVE = {"METRICS": True}
    assert metrics.recorder is first  # registered once: no "duplicated timeseries"


@pytest.mark.asyncio
async def test_metrics_off_record_nothing_and_the_fan_out_loop_adds_nothing(
    connect: Any, domain: dict[str, Any], alice_key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DRF_LIVE = {"METRICS": True}
    settings.DRF_LIVE = {}  # the metrics exist, and are off
    assert metrics.recorder is metrics.NOOP

    def counted(*args: Any) -> None:
        raise AssertionError("the counting loop ran with metrics off")

    monkeypatch.setattr(Hub, "_deliver_counted", counted)
    values = Samples()
    socket = await connect(token=alice_key)
    await request(socket, subscribe_task(domain["task"]))
    await save_title(domain["task"], "Unmeasured")
    assert (await socket.receive_json_from())["type"] == "UPDATE_TASK"
    await socket.send_to(text_data="not json")
    assert (await socket.receive_json_from())["payload"]["code"] == "parse_error"
    await socket.disconnect()

    assert values.moved() == {}


# Sockets and subscriptions ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_open_sockets_and_subscriptions_by_model_follow_the_sockets(
    metrics_on: None, connect: Any, domain: dict[str, Any], alice_key: str
) -> None:
    task, website = domain["task"], domain["website"]
    values = Samples()
    first, second = await connect(token=alice_key), await connect(token=alice_key)
    await request(first, subscribe_task(task))
    await request(first, subscribe_task(task, request_id=2))  # the same target again: still one
    await request(first, {"action": "subscribe", "model": "api.project", "id": str(website.pk)})
    await request(second, subscribe_task(task))
    await request(second, {"action": "subscribe", "model": "api.task", "filter": {"project": str(website.pk)}})

    assert values.moved() == {
        key("drf_live_sockets_open"): 2,
        key("drf_live_sockets_opened_total"): 2,
        key("drf_live_subscriptions", model="api.task"): 3,
        key("drf_live_subscriptions", model="api.project"): 1,
    }

    await request(second, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)})
    await first.disconnect()

    assert values.moved() == {
        key("drf_live_sockets_open"): 1,
        key("drf_live_sockets_opened_total"): 2,
        key("drf_live_subscriptions", model="api.task"): 1,
    }
    await second.disconnect()
    assert values.moved() == {key("drf_live_sockets_opened_total"): 2}


@pytest.mark.asyncio
async def test_a_subscribe_that_fails_after_validation_holds_no_subscription(
    metrics_on: None, connect: Any, domain: dict[str, Any], alice_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.consumers import NotificationConsumer
    from notifications.exceptions import RequestError

    def hidden_since(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RequestError("not_found")  # hidden between the access check and the snapshot's read

    monkeypatch.setattr(NotificationConsumer, "_read_snapshot", hidden_since)
    values = Samples()
    socket = await connect(token=alice_key)

    reply = await request(socket, subscribe_task(domain["task"]))

    assert reply["payload"]["code"] == "not_found"
    assert values.moved() == {
        key("drf_live_sockets_open"): 1,
        key("drf_live_sockets_opened_total"): 1,
        key("drf_live_errors_total", code="not_found"): 1,
    }


# Errors, closes, refusals ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_errors_are_counted_by_code_and_closes_by_close_code(
    connect: Any, domain: dict[str, Any], alice_key: str, settings: Any
) -> None:
    settings.DRF_LIVE = {"METRICS": True, "MAX_FRAME_BYTES": 100}
    values = Samples()
    socket = await connect(token=alice_key)

    await socket.send_to(text_data="not json")
    await socket.send_json_to({"action": "explode"})
    await socket.send_json_to({"action": "subscribe"})
    codes = [(await socket.receive_json_from())["payload"]["code"] for _ in range(3)]
    await socket.send_to(text_data="x" * 101)
    assert await socket.receive_output(timeout=3) == {"type": "websocket.close", "code": 1009}
    await socket.disconnect()

    assert codes == ["parse_error", "unknown_action", "invalid"]
    assert values.moved() == {
        key("drf_live_sockets_opened_total"): 1,
        key("drf_live_errors_total", code="parse_error"): 1,
        key("drf_live_errors_total", code="unknown_action"): 1,
        key("drf_live_errors_total", code="invalid"): 1,
        key("drf_live_closes_total", code="1009"): 1,
    }


@pytest.mark.asyncio
async def test_an_unauthenticated_socket_closed_after_auth_timeout_counts_4001(
    metrics_on: None, connect: Any, db: Any, settings: Any
) -> None:
    settings.DRF_LIVE = {"METRICS": True, "AUTH_TIMEOUT": 0.1}
    values = Samples()
    socket = await connect()

    assert await socket.receive_output(timeout=3) == {"type": "websocket.close", "code": 4001}
    assert values.moved()[key("drf_live_closes_total", code="4001")] == 1


@pytest.mark.asyncio
async def test_refused_handshakes_are_counted_by_status(metrics_on: None, connect: Any, db: Any) -> None:
    values = Samples()

    await connect(token="not-a-token", accepted=False)

    assert values.moved() == {key("drf_live_handshakes_refused_total", status="403"): 1}


# Events: published, delivered, recovered ----------------------------------------------------


@pytest.mark.asyncio
async def test_an_event_counts_one_publish_and_a_delivery_per_socket_with_one_latency_per_process(
    metrics_on: None, connect: Any, domain: dict[str, Any], alice_key: str, token_for: Any
) -> None:
    task = domain["task"]
    bob_key = await database_sync_to_async(token_for)(domain["bob"])
    sockets = [await connect(token=alice_key), await connect(token=alice_key), await connect(token=bob_key)]
    for socket in sockets:
        await request(socket, subscribe_task(task))
    values = Samples()
    latency = sample_value("drf_live_commit_to_send_seconds_sum")
    started = time.time()

    await save_title(task, "Measured")
    frames = [await socket.receive_json_from() for socket in sockets]
    await published()  # the relay counts its publish once the commit returns: sockets may be faster

    assert [frame["type"] for frame in frames] == ["UPDATE_TASK"] * 3
    assert values.moved() == {
        key("drf_live_events_published_total", model="api.task", kind="update"): 1,
        key("drf_live_commit_to_publish_seconds_count"): 1,
        key("drf_live_deliveries_total"): 3,
        key("drf_live_commit_to_send_seconds_count"): 1,
    }
    # Measured from the outbox row, written after `started`.
    measured = sample_value("drf_live_commit_to_send_seconds_sum") - latency
    assert 0 < measured <= time.time() - started


@pytest.mark.asyncio
async def test_recoveries_are_counted_true_and_false_and_replayed_frames_are_deliveries(
    metrics_on: None, connect: Any, domain: dict[str, Any], alice_key: str
) -> None:
    task = domain["task"]
    socket = await connect(token=alice_key)
    first = await request(socket, subscribe_task(task))
    since, epoch = first["meta"]["seq"], first["meta"]["epoch"]
    await request(socket, {"action": "unsubscribe", "model": "api.task", "id": str(task.pk)})
    await save_title(task, "one")
    await published()
    await save_title(task, "two")
    await published()
    values = Samples()

    recovered = await request(socket, subscribe_task(task, request_id=2, since=since, epoch=epoch))
    replayed = [await socket.receive_json_from() for _ in range(2)]
    fresh = await request(socket, subscribe_task(task, request_id=3, since=since, epoch="another-epoch"))

    assert recovered["meta"]["recovered"] is True and fresh["meta"]["recovered"] is False
    assert [frame["payload"]["title"] for frame in replayed] == ["one", "two"]
    assert values.moved() == {
        key("drf_live_recoveries_total", recovered="true"): 1,
        key("drf_live_recoveries_total", recovered="false"): 1,
        key("drf_live_deliveries_total"): 2,
        key("drf_live_subscriptions", model="api.task"): 1,
    }


@pytest.mark.asyncio
async def test_events_that_wait_for_a_snapshot_are_counted_when_sent(
    metrics_on: None, connect: Any, domain: dict[str, Any], alice_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event that arrives while the socket reads its snapshot is sent (and counted) after the reply."""
    from notifications.consumers import NotificationConsumer

    task = domain["task"]
    original = NotificationConsumer.send_snapshot

    async def slow_snapshot(self: Any, *args: Any, **kwargs: Any) -> None:
        await save_title(task, "During the snapshot")
        await asyncio.sleep(0.3)  # the relay publishes meanwhile; the event waits
        await original(self, *args, **kwargs)

    monkeypatch.setattr(NotificationConsumer, "send_snapshot", slow_snapshot)
    socket = await connect(token=alice_key)
    values = Samples()

    await request(socket, subscribe_task(task))
    event = await socket.receive_json_from()

    assert event["payload"]["title"] == "During the snapshot"
    assert values.moved()[key("drf_live_deliveries_total")] == 1


# The relay's failures ----------------------------------------------------------------------------


def committed_rows() -> list[OutboxEntry]:
    [token] = set(OutboxEntry.objects.values_list("txn", flat=True))
    return outbox.take_transactions(DB, [token], relay.owner, 60.0, margin=0.5).rows


@pytest.fixture
def no_kicks(domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test publishes its transactions' rows itself."""
    monkeypatch.setattr(relay, "kick", lambda using, token: None)


def test_a_transient_publish_failure_is_counted(
    metrics_on: None, no_kicks: None, domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = domain["task"]
    asyncio.run(get_store().register(Target("api.task", id=str(task.pk)).stream, str(domain["bob"].pk)))
    task.title = "Later"
    task.save()
    values = Samples()

    with monkeypatch.context() as patched:
        patched.setattr("notifications.relay.get_store", Unreachable)
        relay.publish_rows(DB, committed_rows())

    assert values.moved() == {key("drf_live_publish_failures_total", reason="transient"): 1}


def test_an_event_that_cannot_be_decided_is_counted_lost(
    metrics_on: None, no_kicks: None, domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task, website, bob = domain["task"], domain["website"], domain["bob"]
    for target in (Target("api.task", id=str(task.pk)), Target("api.project", id=str(website.pk))):
        asyncio.run(get_store().register(target.stream, str(bob.pk)))

    def broken(instance: Any, user: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the serializer is broken")

    monkeypatch.setattr(site.get(Task), "serialize", broken)
    with transaction.atomic():
        task.title = "Cannot be shown"
        task.save()
        website.name = "Site"
        website.save()
    values = Samples()

    relay.publish_rows(DB, committed_rows())

    moved = values.moved()
    assert moved[key("drf_live_publish_failures_total", reason="lost")] == 1
    assert moved[key("drf_live_events_published_total", model="api.project", kind="update")] == 1


def test_rows_dropped_at_outbox_limit_are_counted(domain: dict[str, Any], settings: Any) -> None:
    settings.DRF_LIVE = {"METRICS": True, "OUTBOX_LIMIT": 3}
    for n in range(5):
        outbox.append(DB, f"old{n}", "update", "api.task", str(domain["task"].pk), {"changed": ["title"]})
    OutboxEntry.objects.update(created=time.time() - 60)
    values = Samples()

    relay.sweep()

    assert values.moved()[key("drf_live_outbox_dropped_rows_total")] == 3


# The outbox, read when scraped -------------------------------------------------------------


def test_the_outbox_backlog_is_read_from_the_database_when_collected(db: Any) -> None:
    collector = metrics.OutboxCollector()
    assert {family.name: family.samples for family in collector.describe()} == {
        "drf_live_outbox_rows": [],
        "drf_live_outbox_oldest_age_seconds": [],
    }
    empty = {family.name: [(s.labels, s.value) for s in family.samples] for family in collector.collect()}
    assert empty == {
        "drf_live_outbox_rows": [({"database": "default"}, 0.0)],
        "drf_live_outbox_oldest_age_seconds": [({"database": "default"}, 0.0)],
    }

    now = time.time()
    for age in (30, 5):
        OutboxEntry.objects.create(txn=f"t{age}", created=now - age, kind="update", model="api.task", object_id="x")
    waiting = {family.name: [(s.labels, s.value) for s in family.samples] for family in collector.collect()}

    assert waiting["drf_live_outbox_rows"] == [({"database": "default"}, 2.0)]
    [(labels, oldest)] = waiting["drf_live_outbox_oldest_age_seconds"]
    assert labels == {"database": "default"} and 30 <= oldest < 40


# Several processes ------------------------------------------------------------------------------


def test_gauges_of_processes_that_died_are_forgotten_and_the_living_kept(tmp_path: Path) -> None:
    dead, alive = 99_999_999, os.getpid()  # above any pid_max: never a live process
    for pid in (dead, alive):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")

    metrics.forget_dead_processes(str(tmp_path))

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"counter_{alive}.db", f"gauge_livesum_{alive}.db"]
    )


# System checks -------------------------------------------------------------------------------------


def test_checks_report_metrics_without_prometheus_client_and_bad_addresses(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.checks import check_metrics

    settings.DRF_LIVE = {"METRICS": None, "METRICS_ADDRESSES": ["nowhere"]}
    assert check_metrics() == []  # off: nothing to check
    settings.DRF_LIVE = {"METRICS": True, "METRICS_ADDRESSES": ["10.0.0.0/8", "::1", "nowhere"], "METRICS_TOKEN": 5}
    assert [(message.id, message.level) for message in check_metrics()] == [
        ("drf_live.E011", checks.ERROR),
        ("drf_live.E011", checks.ERROR),
    ]
    monkeypatch.setitem(__import__("sys").modules, "prometheus_client", None)
    settings.DRF_LIVE = {"METRICS": True}
    assert [message.id for message in check_metrics()] == ["drf_live.E010"]
