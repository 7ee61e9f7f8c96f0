"""The relay (``notifications/relay.py``): from committed outbox rows to events committed to their streams.

These run on the in-memory stream store, whose ``publish`` is recorded (the
``bus`` fixture): an event committed to a stream is published on the stream's
channel with its seq. Users are subscribed in the store directly, as a
server process does for its sockets. Delivery to sockets is tested elsewhere;
one sweep test here goes as far as the socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.test import APIClient

import notifications
from api.models import Project, Task
from api.serializers import UserSerializer
from notifications import changes, outbox, streams
from notifications import relay as relay_module
from notifications.frames import event_text
from notifications.models import OutboxEntry
from notifications.plan import Unit, plan
from notifications.redis_store import RedisStreamStore
from notifications.registry import site
from notifications.relay import control_messages, relay
from notifications.streams import Claims, MemoryStreamStore, Position, control_channel, get_store
from notifications.targets import Target, user_group
from tests.notifications.fakes import Busy, Unreachable
from tests.servers import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True)]

DB = "default"


# Fixtures and helpers ----------------------------------------------------------------


class Bus:
    """Every message the in-memory store published, as (channel, message)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.threads: list[str] = []

    def on(self, channel: str) -> list[dict[str, Any]]:
        return [message for name, message in self.messages if name == channel]

    def events(self, channel: str) -> list[dict[str, Any]]:
        """The events committed to a stream (those with a seq)."""
        return [message for message in self.on(channel) if "seq" in message]

    def wait_for_event(self, channel: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events(channel)
            if events:
                return events[0]
            time.sleep(0.02)
        raise AssertionError(f"no event on {channel} within {timeout} s")


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bus]:
    recorder = Bus()
    original = MemoryStreamStore.publish

    def publish(self: MemoryStreamStore, channel: str, message: dict[str, Any]) -> None:
        recorder.messages.append((channel, message))
        recorder.threads.append(threading.current_thread().name)
        original(self, channel, message)

    monkeypatch.setattr(MemoryStreamStore, "publish", publish)
    yield recorder


@pytest.fixture
def kicks(domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Keeps the relay thread off this test's transactions: the test publishes their rows itself."""
    assert not OutboxEntry.objects.exists()
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(relay, "kick", lambda using, token: calls.append((using, token)))
    yield calls


@pytest.fixture
def sweeping() -> Iterator[None]:
    """Stops this process's sweep after the test, before its database goes."""
    yield
    relay.stop_sweeping()
    relay.flush(timeout=10)


def subscribe(target: Target, *users: Any) -> Position:
    """Count ``users`` among the target's subscribers, as a server process does for its sockets."""
    position = None
    for user in users:
        position = asyncio.run(get_store().register(target.stream, str(user.pk)))
    assert position is not None
    return position


def position(target: Target, user: Any) -> Position:
    """The stream's seq and epoch now, read by registering ``user`` (a subscriber already) again."""
    return asyncio.run(get_store().register(target.stream, str(user.pk)))


def committed_rows() -> list[OutboxEntry]:
    """The rows of the one transaction in the outbox, claimed as the writer's relay claims them."""
    [token] = set(OutboxEntry.objects.values_list("txn", flat=True))
    return outbox.take_transactions(DB, [token], relay.owner, 60.0, margin=0.5).rows


def frame(message: dict[str, Any], variant: str, audience: str) -> dict[str, Any]:
    """The frame a socket of ``audience`` sends for a committed event (as its first, no ``prev``)."""
    return json.loads(event_text(message["frames"][variant][audience], message["seq"]))


def rest_get(user: Any, url: str) -> Any:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def wire(instance: Any) -> str:
    return str(instance.pk)


def task_target(task: Task) -> Target:
    return Target("api.task", id=wire(task))


def project_target(project: Project) -> Target:
    return Target("api.project", id=wire(project))


def tasks_of(project: Project) -> Target:
    return Target.collection("api.task", {"project": wire(project)})


# plan: rows -> units (notifications/plan.py, which the relay runs on each transaction) -------


def entry(kind: str, object_id: str = "T1", model: str = "api.task", **data: Any) -> OutboxEntry:
    return OutboxEntry(txn="t", kind=kind, model=model, object_id=object_id, data=data)


def planned(rows: list[OutboxEntry]) -> list[Unit]:
    """The units of ``rows``, but for the unfiltered collection's (filter ``()``, where a registration has one).

    These tests are about objects and filtered collections.
    """
    return [unit for unit in plan(rows, DB) if unit.target.filter != ()]


def described(units: list[Any]) -> list[tuple[Target, str, str, list[str], bool]]:
    return [(unit.target, unit.kind, unit.object_id, unit.changed, unit.before) for unit in units]


TASK = Target("api.task", id="T1")
IN_P1 = Target.collection("api.task", {"project": "P1"})
IN_P2 = Target.collection("api.task", {"project": "P2"})


def test_plan_of_an_update_is_the_object_and_its_collection() -> None:
    rows = [entry("update", changed=["title"], current={"project": "P1"})]

    assert described(planned(rows)) == [
        (TASK, "update", "T1", ["title"], True),
        (IN_P1, "update", "T1", ["title"], True),
    ]


def test_plan_of_a_move_is_the_object_and_the_collections_before_and_after() -> None:
    rows = [entry("update", changed=["project"], previous={"project": "P1"}, current={"project": "P2"})]

    assert described(planned(rows)) == [
        (TASK, "update", "T1", ["project"], True),
        (IN_P1, "update", "T1", ["project"], True),  # it was a member: DELETE for whoever held it
        (IN_P2, "update", "T1", ["project"], False),  # it was not: CREATE for whoever sees it
    ]


def test_plan_of_a_move_across_saves_starts_from_the_first_collection() -> None:
    rows = [
        entry("update", changed=["project"], previous={"project": "P1"}, current={"project": "P2"}),
        entry("update", changed=["project"], previous={"project": "P2"}, current={"project": "P3"}),
    ]

    collections = [(unit.target, unit.before) for unit in planned(rows) if unit.target.is_collection]

    assert collections == [(IN_P1, True), (Target.collection("api.task", {"project": "P3"}), False)]


def test_plan_of_a_create_has_no_object_unit() -> None:
    rows = [entry("create", changed=["title", "project"], current={"project": "P1"})]

    assert described(planned(rows)) == [(IN_P1, "create", "T1", ["title", "project"], False)]


def test_plan_of_a_create_then_updates_is_one_create() -> None:
    rows = [
        entry("create", changed=["title"], current={"project": "P1"}),
        entry("update", changed=["done"], current={"project": "P1"}),
    ]

    assert described(planned(rows)) == [(IN_P1, "create", "T1", ["title", "done"], False)]


def test_plan_of_a_delete_is_the_object_and_the_collection_it_left() -> None:
    rows = [entry("delete", current={"project": "P1"})]

    assert described(planned(rows)) == [(TASK, "delete", "T1", [], True), (IN_P1, "delete", "T1", [], True)]


def test_plan_of_an_update_then_a_delete_is_the_delete() -> None:
    rows = [entry("update", changed=["title"], current={"project": "P1"}), entry("delete", current={"project": "P1"})]

    assert [(unit.target, unit.kind) for unit in planned(rows)] == [(TASK, "delete"), (IN_P1, "delete")]


def test_plan_of_a_create_and_a_delete_in_one_transaction_is_nothing() -> None:
    rows = [
        entry("create", changed=["title"], current={"project": "P1"}),
        entry("update", changed=["title"], current={"project": "P1"}),
        entry("delete", current={"project": "P1"}),
    ]

    assert plan(rows, DB) == []


def test_plan_keeps_the_order_the_objects_were_written_in() -> None:
    rows = [
        entry("update", "T2", changed=["title"]),
        entry("update", "P1", model="api.project", changed=["name"]),
        entry("update", "T1", changed=["title"]),
        entry("update", "T2", changed=["done"]),
    ]

    assert [(unit.target, unit.changed) for unit in planned(rows)] == [
        (Target("api.task", id="T2"), ["title", "done"]),
        (Target("api.project", id="P1"), ["name"]),
        (TASK, ["title"]),
    ]


def test_plan_touches_each_object_once_with_every_derived_field() -> None:
    project = Target("api.project", id="P1")
    rows = [
        entry("update", "T1", changed=["done"], touched=[["api.project", "P1", ["open_tasks"]]]),
        entry("update", "T2", changed=["done"], touched=[["api.project", "P1", ["open_tasks"]]]),
        entry("update", "T3", changed=["title"], touched=[["api.project", "P1", ["task_titles"]]]),
    ]

    touches = [unit for unit in planned(rows) if unit.kind == "touch"]

    assert described(touches) == [(project, "touch", "P1", ["open_tasks", "task_titles"], True)]


def test_plan_does_not_touch_an_object_deleted_in_the_same_transaction() -> None:
    rows = [
        entry("delete", "T1", touched=[["api.project", "P1", ["open_tasks"]]]),
        entry("delete", "P1", model="api.project"),
    ]

    assert [unit for unit in planned(rows) if unit.kind == "touch"] == []


def test_plan_touches_a_touched_objects_collections_too(domain: dict[str, Any]) -> None:
    # A touched model with filter fields: its collections show it too, read from the database.
    task, website = domain["task"], domain["website"]
    rows = [entry("update", "P9", model="api.project", changed=["name"], touched=[["api.task", wire(task), ["x"]]])]

    touches = [unit for unit in planned(rows) if unit.kind == "touch"]

    assert [(unit.target, unit.changed) for unit in touches] == [(task_target(task), ["x"]), (tasks_of(website), ["x"])]


def test_plan_of_application_events() -> None:
    rows = [
        entry("event", "T1", type="TASK_COMMENTED", payloads={"all": {"text": "Hi"}}),
        entry("event", "", type="PROJECT_ARCHIVED", payloads={"all": {}}, filter={"project": "P1"}),
    ]

    units = planned(rows)

    assert [(unit.target, unit.kind, unit.event_type, unit.payloads) for unit in units] == [
        (TASK, "event", "TASK_COMMENTED", {"all": {"text": "Hi"}}),
        (IN_P1, "event", "PROJECT_ARCHIVED", {"all": {}}),
    ]


def test_plan_skips_control_rows_lost_marks_and_models_no_longer_registered() -> None:
    rows = [
        OutboxEntry(txn="t", kind="close", data={"to": ["drf-live.user.x"], "code": 4001}),
        OutboxEntry(txn="t", kind="recheck", data={"to": ["drf-live.user.x"]}),
        OutboxEntry(txn="lost", kind=outbox.LOST, data={"dropped": 3}),
        entry("update", "G1", model="auth.group", changed=["name"]),
        entry("event", "G1", model="auth.group", type="X", payloads={}),
    ]

    assert plan(rows, DB) == []


def test_control_messages_follow_the_rows_and_revoked_users_recheck_first() -> None:
    rows = [
        OutboxEntry(txn="t", kind="close", data={"to": ["k1"], "code": 4001}),
        entry("update", "P1", model="api.project", changed=["members"], revoked=["U2", "U1"]),
        entry("update", "P2", model="api.project", changed=["members"], revoked=["U1"]),
    ]

    assert control_messages(rows) == [
        {"type": "recheck", "to": [user_group("U1"), user_group("U2")]},
        {"type": "close", "to": ["k1"], "code": 4001},
    ]
    assert control_messages([entry("update", changed=["title"])]) == []


# publish_rows: deciding and committing ---------------------------------------------------


def test_published_rows_are_committed_to_the_stream_and_deleted(kicks: Any, domain: dict[str, Any], bus: Bus) -> None:
    task, bob = domain["task"], domain["bob"]
    start = subscribe(task_target(task), bob)
    published = relay.stats.published
    task.title = "Write the docs"
    task.save()

    relay.publish_rows(DB, committed_rows())

    assert not OutboxEntry.objects.exists()
    [event] = bus.events(task_target(task).stream)
    assert (event["seq"], event["epoch"], event["kind"]) == (start.seq + 1, start.epoch, "update")
    assert event["shown"] == {wire(bob): "all"}
    # The payload is the committed row as bob's GET of it returns it.
    assert frame(event, "update", "all") == {
        "type": "UPDATE_TASK",
        "payload": rest_get(bob, f"/api/tasks/{task.pk}/"),
        "meta": {"model": "api.task", "id": wire(task), "changed": ["title"], "seq": start.seq + 1},
    }
    assert relay.stats.published == published + 1


def test_consecutive_transactions_take_consecutive_seqs(kicks: Any, domain: dict[str, Any], bus: Bus) -> None:
    task, bob = domain["task"], domain["bob"]
    start = subscribe(task_target(task), bob)

    for title in ("First", "Second"):
        task.title = title
        task.save()
        relay.publish_rows(DB, committed_rows())

    events = bus.events(task_target(task).stream)
    assert [event["seq"] for event in events] == [start.seq + 1, start.seq + 2]
    assert [frame(event, "update", "all")["payload"]["title"] for event in events] == ["First", "Second"]
    # Kept for recovery: a client at start.seq replays both.
    replay = asyncio.run(get_store().replay(task_target(task).stream, start.seq, start.epoch))
    assert [message["seq"] for message in replay.messages or []] == [start.seq + 1, start.seq + 2]


def test_only_the_streams_someone_is_subscribed_to_are_claimed(
    kicks: Any, domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, bob = domain["task"], domain["bob"]
    claimed: list[str] = []
    original, original_all = MemoryStreamStore.claim, MemoryStreamStore.claim_all

    def claim(self: MemoryStreamStore, stream: str) -> Any:
        claimed.append(stream)
        return original(self, stream)

    def claim_all(self: MemoryStreamStore, streams: Iterable[str]) -> Any:
        claims = original_all(self, streams)
        claimed.extend(claims.held)
        return claims

    monkeypatch.setattr(MemoryStreamStore, "claim", claim)
    monkeypatch.setattr(MemoryStreamStore, "claim_all", claim_all)

    def write(title: str) -> list[str]:
        claimed.clear()
        task.title = title
        task.save()
        rows = committed_rows()
        assert len({unit.target.stream for unit in plan(rows, DB)}) > 1  # the task and its collections
        relay.publish_rows(DB, rows)
        return sorted(claimed)

    # Nobody subscribed: nothing claimed, nothing committed.
    assert write("Unwatched") == []
    # One of the write's targets subscribed: only that one is claimed and gets the event.
    subscribe(task_target(task), bob)
    assert write("Watched") == [task_target(task).stream]
    subscribe(tasks_of(task.project), bob)
    assert write("Watched twice") == sorted([task_target(task).stream, tasks_of(task.project).stream])
    assert [frame(event, "update", "all")["payload"]["title"] for event in bus.events(task_target(task).stream)] == [
        "Watched",
        "Watched twice",
    ]
    assert len(bus.events(tasks_of(task.project).stream)) == 1
    assert not OutboxEntry.objects.exists()


def test_an_event_nobody_is_subscribed_to_is_not_committed(kicks: Any, domain: dict[str, Any], bus: Bus) -> None:
    task = domain["task"]
    published = relay.stats.published
    task.title = "Unwatched"
    task.save()

    relay.publish_rows(DB, committed_rows())

    assert not OutboxEntry.objects.exists()
    assert bus.messages == []
    assert relay.stats.published == published
    # Nobody can recover across it either: the stream did not move.
    assert position(task_target(task), domain["bob"]).seq == 0


def test_each_audience_is_serialized_for_once_and_users_get_their_own(
    kicks: Any, domain: dict[str, Any], bus: Bus, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, dave = domain["alice"], domain["bob"], make_user("dave")
    domain["website"].members.add(dave)
    OutboxEntry.objects.all().delete()
    target = Target("api.user", id=wire(alice))
    subscribe(target, alice, bob, dave)
    runs: list[Any] = []
    original = UserSerializer.to_representation

    def counting(self: UserSerializer, instance: Any) -> Any:
        runs.append(self.context["request"].user.pk)
        return original(self, instance)

    monkeypatch.setattr(UserSerializer, "to_representation", counting)
    alice.display_name = "Alice A."
    alice.save()

    relay.publish_rows(DB, committed_rows())

    [event] = bus.events(target.stream)
    assert event["shown"] == {wire(alice): "self", wire(bob): "others", wire(dave): "others"}
    # Once for alice ("self"), once for one of bob and dave ("others").
    assert len(runs) == 2 and alice.pk in runs
    assert frame(event, "update", "self")["payload"] == rest_get(alice, f"/api/users/{alice.pk}/")
    assert frame(event, "update", "others")["payload"] == rest_get(bob, f"/api/users/{alice.pk}/")
    assert "email" not in frame(event, "update", "others")["payload"]


def test_event_types_rename_the_events(kicks: Any, domain: dict[str, Any], bus: Bus, replace_registration: Any) -> None:
    replace_registration(Task, type(site.get(Task)), event_types={"update": "TASK_CHANGED", "delete": "TASK_GONE"})
    task, bob = domain["task"], domain["bob"]
    target = task_target(task)
    subscribe(target, bob)

    task.title = "Renamed"
    task.save()
    relay.publish_rows(DB, committed_rows())
    task.delete()
    relay.publish_rows(DB, committed_rows())

    update, delete = bus.events(target.stream)
    assert frame(update, "update", "all")["type"] == "TASK_CHANGED"
    # A delete carries only the id, the same for everyone.
    assert frame(delete, "delete", "*") == {
        "type": "TASK_GONE",
        "payload": {"id": target.id},
        "meta": {"model": "api.task", "id": target.id, "seq": delete["seq"]},
    }


def test_a_subscriber_who_arrives_while_the_event_is_decided_is_decided_for(
    kicks: Any, domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, alice, bob = domain["task"], domain["alice"], domain["bob"]
    target = task_target(task)
    subscribe(target, bob)
    store = get_store()
    real_claim, real_claim_all = store.claim, store.claim_all
    claims: list[tuple[str, ...]] = []

    def seen(claim: Any) -> None:
        claims.append(claim.users)
        if len(claims) == 1:
            subscribe(target, alice)  # after the claim, before the commit

    def claim_then_alice_subscribes(stream: str) -> Any:
        claim = real_claim(stream)
        if stream == target.stream:
            seen(claim)
        return claim

    def claim_all_then_alice_subscribes(streams: Iterable[str]) -> Any:
        found = real_claim_all(streams)
        if target.stream in found.held:
            seen(found.held[target.stream])
        return found

    monkeypatch.setattr(store, "claim", claim_then_alice_subscribes)
    monkeypatch.setattr(store, "claim_all", claim_all_then_alice_subscribes)
    task.title = "Seen by both"
    task.save()

    relay.publish_rows(DB, committed_rows())

    # The first decision did not know alice: it was not committed, and the event was decided again.
    assert claims == [(wire(bob),), tuple(sorted([wire(alice), wire(bob)]))]
    [event] = bus.events(target.stream)
    assert event["shown"] == {wire(alice): "all", wire(bob): "all"}


def test_control_messages_are_published_after_the_events(kicks: Any, domain: dict[str, Any], bus: Bus) -> None:
    website, bob = domain["website"], domain["bob"]
    subscribe(project_target(website), domain["alice"])

    website.members.remove(bob)
    relay.publish_rows(DB, committed_rows())

    kinds = [(channel, message.get("type")) for channel, message in bus.messages]
    assert kinds[-1] == (control_channel(), "recheck")
    assert bus.on(control_channel()) == [{"type": "recheck", "to": [user_group(wire(bob))]}]
    assert len(bus.events(project_target(website).stream)) == 1


# Failures ---------------------------------------------------------------------------


def test_an_event_whose_commit_reply_was_lost_is_not_published_twice(
    kicks: Any, domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch, settings: Any, redis_server: RedisServer
) -> None:
    # Redis ran the commit, then the connection broke before its reply came back (a timeout, a
    # failover): the rows go back to the outbox, and whoever claims them next must not commit the
    # event again under a new seq.
    settings.DRF_LIVE = {"STORE_URL": redis_server.url, "OUTBOX_RETRY_DELAY": 0.0}
    streams.reset_store()
    task, bob = domain["task"], domain["bob"]
    target = task_target(task)
    start = subscribe(target, bob)
    task.title = "Committed once"
    task.save()
    rows = committed_rows()
    original = RedisStreamStore.commit
    lost: list[int | None] = []

    def commit_then_lose_the_reply(self: RedisStreamStore, *args: Any, **kwargs: Any) -> int | None:
        lost.append(original(self, *args, **kwargs))
        raise RedisTimeoutError("Timeout reading from socket")

    with monkeypatch.context() as patched:
        patched.setattr(RedisStreamStore, "commit", commit_then_lose_the_reply)
        relay.publish_rows(DB, rows)
    assert lost == [start.seq + 1]
    [row] = OutboxEntry.objects.all()
    assert row.owner == ""

    # Another process sweeps the rows up (the same happens when the first one was killed
    # between its commit and the outbox's delete).
    rows = outbox.claim_stale(DB, "another process", 60.0, grace=0.0, limit=100)
    assert [entry.id for entry in rows] == [row.id]
    relay.publish_rows(DB, rows)

    assert not OutboxEntry.objects.exists()
    replay = asyncio.run(get_store().replay(target.stream, start.seq, start.epoch))
    assert replay.position == Position(start.seq + 1, start.epoch)
    [event] = replay.messages or []
    assert frame(event, "update", "all")["payload"]["title"] == "Committed once"
    # The next event follows it directly.
    task.title = "And then this"
    task.save()
    relay.publish_rows(DB, committed_rows())
    replay = asyncio.run(get_store().replay(target.stream, start.seq, start.epoch))
    assert [message["seq"] for message in replay.messages or []] == [start.seq + 1, start.seq + 2]


def test_a_transient_failure_leaves_the_rows_for_a_retry(
    kicks: Any, domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.DRF_LIVE = {"OUTBOX_RETRY_DELAY": 0.3}
    task, bob = domain["task"], domain["bob"]
    start = subscribe(task_target(task), bob)
    failed = relay.stats.failed
    task.title = "Published later"
    task.save()
    rows = committed_rows()

    with monkeypatch.context() as patched:
        patched.setattr("notifications.relay.get_store", Unreachable)
        before = time.time()
        relay.publish_rows(DB, rows)

    [row] = OutboxEntry.objects.all()
    assert row.owner == ""
    assert before + 0.3 <= row.lease_until <= time.time() + 0.3
    assert relay.stats.failed == failed + 1
    assert bus.messages == []
    # Redis is back: once the delay is over, a sweep publishes it.
    time.sleep(0.4)
    assert relay.sweep() == 1
    [event] = bus.events(task_target(task).stream)
    assert event["seq"] == start.seq + 1
    assert frame(event, "update", "all")["payload"]["title"] == "Published later"
    assert not OutboxEntry.objects.exists()


class HalfDown(MemoryStreamStore):
    """A store one of whose Redis shards is down: the streams in ``down`` cannot be claimed."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()

    def claim(self, stream: str) -> Any:
        if stream in self.down:
            raise ConnectionError("this stream's shard is down")
        return super().claim(stream)

    def claim_all(self, streams: Iterable[str]) -> Claims:
        streams = list(streams)
        # The down shard cannot be asked: its streams are left to ``claim``.
        up = super().claim_all(stream for stream in streams if stream not in self.down)
        return Claims(up.held, up.pending | {stream for stream in streams if stream in self.down})


def test_a_shard_down_delays_only_its_own_events_and_the_others_go_out_once(
    kicks: Any, domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.DRF_LIVE = {"OUTBOX_RETRY_DELAY": 0.2}
    store = HalfDown()
    monkeypatch.setattr(streams, "_store", store)
    task, website, alice, bob = domain["task"], domain["website"], domain["alice"], domain["bob"]
    subscribe(task_target(task), alice)
    subscribe(project_target(website), alice)
    with transaction.atomic():
        task.title = "On the shard that is down"
        task.save()
        website.name = "On the shard that is up"
        website.save()
        website.members.remove(bob)
    store.down = {task_target(task).stream}

    relay.publish_rows(DB, committed_rows())

    # The project's event and the transaction's control message went out; the task's waits.
    assert len(bus.events(project_target(website).stream)) == 1
    assert bus.on(control_channel()) == [{"type": "recheck", "to": [user_group(wire(bob))]}]
    assert bus.events(task_target(task).stream) == []
    rows = OutboxEntry.objects.count()
    assert rows == 3  # the task's, the project's and the recheck: kept until every event is out
    # Retries while the shard stays down repeat nothing.
    time.sleep(0.25)
    assert relay.sweep() == rows
    assert len(bus.events(project_target(website).stream)) == 1
    assert len(bus.on(control_channel())) == 1

    # The shard is back: the task's event goes out, and only it.
    store.down = set()
    time.sleep(0.25)
    assert relay.sweep() == rows
    [event] = bus.events(task_target(task).stream)
    assert frame(event, "update", "all")["payload"]["title"] == "On the shard that is down"
    assert len(bus.events(project_target(website).stream)) == 1
    assert len(bus.on(control_channel())) == 1
    assert not OutboxEntry.objects.exists()


def test_a_stream_held_elsewhere_for_too_long_leaves_the_rows_for_a_retry(
    kicks: Any, domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = domain["task"]
    task.title = "Waits"
    task.save()
    monkeypatch.setattr("notifications.relay.get_store", Busy)

    relay.publish_rows(DB, committed_rows())

    [row] = OutboxEntry.objects.all()
    assert row.owner == "" and row.lease_until is not None


def test_an_event_that_cannot_be_decided_is_lost_loudly_and_the_others_go_on(
    kicks: Any,
    domain: dict[str, Any],
    bus: Bus,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task, website, bob = domain["task"], domain["website"], domain["bob"]
    stream = task_target(task).stream
    start = subscribe(task_target(task), bob)
    subscribe(project_target(website), bob)

    def broken(instance: Any, user: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the serializer is broken")

    monkeypatch.setattr(site.get(Task), "serialize", broken)
    lost = relay.stats.lost
    with transaction.atomic():
        task.title = "Cannot be shown"
        task.save()
        website.name = "Site"
        website.save()

    with caplog.at_level(logging.ERROR, logger="notifications.relay"):
        relay.publish_rows(DB, committed_rows())

    assert relay.stats.lost == lost + 1
    [record] = [record for record in caplog.records if record.name == "notifications.relay"]
    assert stream in record.getMessage() and record.exc_info is not None
    # Its stream's epoch rotates: nobody is told they recovered across the lost event.
    assert [message["type"] for message in bus.on(stream)] == ["rotate"]
    now = position(task_target(task), bob)
    assert now.epoch != start.epoch
    assert asyncio.run(get_store().replay(stream, start.seq, start.epoch)).messages is None
    # The project's event of the same transaction went out, and the rows are done with.
    [event] = bus.events(project_target(website).stream)
    assert frame(event, "update", "all")["payload"]["name"] == "Site"
    assert not OutboxEntry.objects.exists()


# flush ------------------------------------------------------------------------------


def test_flush_with_nothing_handed_over_returns_true_at_once() -> None:
    started = time.monotonic()

    assert relay.flush(timeout=1) is True
    assert time.monotonic() - started < 0.5


def test_flush_waits_until_the_committed_transaction_is_published(domain: dict[str, Any], bus: Bus) -> None:
    task, bob = domain["task"], domain["bob"]
    subscribe(task_target(task), bob)

    task.title = "Flushed"
    task.save()

    assert relay.flush(timeout=5) is True
    assert not OutboxEntry.objects.exists()
    assert len(bus.events(task_target(task).stream)) == 1
    # The writer only wrote its row: the relay thread published, never the writer's thread.
    assert set(bus.threads) == {"drf-live-relay"}


def test_the_writers_relay_publishes_without_claiming_and_deletes_in_one_statement(
    domain: dict[str, Any], bus: Bus, settings: Any, statements: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows are leased to this process's relay as they are written: after the commit it
    # only reads them. Published rows are deleted together, later (here: at the flush).
    settings.DRF_LIVE = {"OUTBOX_GRACE": 30.0}
    monkeypatch.setattr(relay_module, "DELETE_DELAY", 30.0)
    task, bob = domain["task"], domain["bob"]
    subscribe(task_target(task), bob)
    statements.clear()

    for n in range(5):
        task.title = f"Write {n}"
        task.save()
    deadline = time.monotonic() + 5
    while len(bus.events(task_target(task).stream)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(bus.events(task_target(task).stream)) == 5
    assert OutboxEntry.objects.count() == 5  # published, not deleted yet
    assert relay.flush(timeout=5) is True

    assert not OutboxEntry.objects.exists()
    of_relay = [sql.lstrip().split(None, 1)[0].upper() for sql in statements.of_relay()]
    outbox_writes = [
        sql
        for sql in statements.of_relay()
        if "drf_live_outbox" in sql and not sql.lstrip().upper().startswith("SELECT")
    ]
    assert "UPDATE" not in of_relay
    assert len(outbox_writes) == 1 and outbox_writes[0].lstrip().upper().startswith("DELETE")


def test_an_event_slower_to_publish_than_its_lease_keeps_its_rows_from_a_sweep(
    domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows were leased for OUTBOX_GRACE (1 s) as they were written; deciding takes 1.5 s.
    task, bob = domain["task"], domain["bob"]
    target = task_target(task)
    subscribe(target, bob)
    original = relay.publish_unit
    started = threading.Event()

    def slow(unit: Unit, using: str, event: str = "", retry: bool = False, held: Any = None) -> None:
        started.set()
        time.sleep(1.5)
        original(unit, using, event, retry, held)

    monkeypatch.setattr(relay, "publish_unit", slow)
    task.title = "Slow to decide"
    task.save()
    assert started.wait(5)
    time.sleep(1.2)

    # Another process sweeping now finds the lease renewed.
    assert outbox.claim_stale(DB, "another process", 60.0, grace=1.0, limit=100) == []
    assert relay.flush(timeout=10) is True
    assert [frame(event, "update", "all")["payload"]["title"] for event in bus.events(target.stream)] == [
        "Slow to decide"
    ]


def test_rows_published_but_not_yet_deleted_when_the_process_died_are_not_published_again(
    domain: dict[str, Any], bus: Bus, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DRF_LIVE = {"OUTBOX_GRACE": 30.0}
    monkeypatch.setattr(relay_module, "DELETE_DELAY", 30.0)
    task, bob = domain["task"], domain["bob"]
    target = task_target(task)
    start = subscribe(target, bob)
    task.title = "Published once"
    task.save()
    bus.wait_for_event(target.stream)
    [row] = OutboxEntry.objects.all()  # its delete was still to come when the process was killed
    monkeypatch.setattr(relay, "_published", {})
    OutboxEntry.objects.update(lease_until=time.time() - 1)

    # Another process's sweep takes the row once its lease ran out.
    rows = outbox.claim_stale(DB, "another process", 60.0, grace=30.0, limit=100)
    assert [entry.id for entry in rows] == [row.id]
    relay.publish_rows(DB, rows)

    assert not OutboxEntry.objects.exists()
    replay = asyncio.run(get_store().replay(target.stream, start.seq, start.epoch))
    assert [frame(event, "update", "all")["payload"]["title"] for event in replay.messages or []] == ["Published once"]
    assert len(bus.events(target.stream)) == 1


def test_a_busy_relay_leases_what_it_was_handed_so_a_sweep_cannot_reorder_it(
    domain: dict[str, Any], bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, bob = domain["task"], domain["bob"]
    subscribe(task_target(task), bob)
    original = relay.publish_unit
    started = threading.Event()

    def slow(unit: Unit, using: str, event: str = "", retry: bool = False, held: Any = None) -> None:
        started.set()
        time.sleep(0.2)  # a relay that falls seconds behind its writer
        original(unit, using, event, retry, held)

    monkeypatch.setattr(relay, "publish_unit", slow)

    for n in range(10):
        notifications.publish_event("NUMBERED", task, payload={"n": n})
    assert started.wait(5)
    time.sleep(1.5)
    # Another process sweeping now finds rows older than OUTBOX_GRACE (1 s), but all leased.
    assert outbox.claim_stale(DB, "another process", 60.0, grace=1.0, limit=100) == []

    assert relay.flush(timeout=10) is True
    events = bus.events(task_target(task).stream)
    assert [
        json.loads(event_text(event["frames"]["event"]["all"], event["seq"]))["payload"]["n"] for event in events
    ] == list(range(10))


def test_an_exiting_process_gives_back_the_rows_it_leased_but_did_not_publish(
    domain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    task = domain["task"]
    release = threading.Event()

    def stuck(using: str, rows: list[OutboxEntry]) -> None:
        release.wait(5)  # a relay still busy when its process exits

    monkeypatch.setattr(relay, "publish_rows", stuck)
    try:
        for n in range(3):
            notifications.publish_event("NUMBERED", task, payload={"n": n})
        assert relay.flush(timeout=0.5) is False
        leased = OutboxEntry.objects.filter(owner=relay.owner).count()
        assert leased >= 1  # the one it is stuck on, at least

        relay.release_leases()

        # A sweep takes every row at once, not after a 60 s lease.
        taken = outbox.claim_stale(DB, "a server", 60.0, grace=0.0, limit=100)
        assert len(taken) == 3
    finally:
        release.set()
        relay.flush(timeout=5)


def test_flush_returns_false_while_the_relay_is_still_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    taken: list[tuple[str, str]] = []

    def slow(kicks: list[tuple[str, str]]) -> None:
        taken.extend(kicks)
        release.wait(5)

    monkeypatch.setattr(relay, "_claim", slow)
    try:
        relay.kick(DB, "slow")

        assert relay.flush(timeout=0.3) is False
    finally:
        release.set()
    assert relay.flush(timeout=5) is True
    assert taken == [(DB, "slow")]


# Sweeping ---------------------------------------------------------------------------


def write_without_kick(task: Task, title: str) -> None:
    """A committed write whose writer died before telling its relay: only a sweep can publish it."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(relay, "kick", lambda using, token: None)
        with transaction.atomic():
            Task.objects.filter(pk=task.pk).update(title=title)
            changes.append(
                "update", "api.task", wire(task), {"changed": ["title"], "current": {"project": str(task.project_id)}}
            )


def test_a_row_nobody_kicked_is_published_by_the_sweep(
    domain: dict[str, Any], bus: Bus, settings: Any, sweeping: None
) -> None:
    settings.DRF_LIVE = {"OUTBOX_GRACE": 0.2, "OUTBOX_SWEEP_INTERVAL": 0.1}
    task, bob = domain["task"], domain["bob"]
    subscribe(task_target(task), bob)
    write_without_kick(task, "Swept")
    assert relay.flush(timeout=5)
    assert OutboxEntry.objects.count() == 1  # nobody told the relay

    relay.start(sweep=True)

    event = bus.wait_for_event(task_target(task).stream)
    assert frame(event, "update", "all")["payload"]["title"] == "Swept"
    deadline = time.monotonic() + 5
    while OutboxEntry.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not OutboxEntry.objects.exists()


def test_with_outbox_sweep_false_this_process_never_sweeps(
    domain: dict[str, Any], bus: Bus, settings: Any, sweeping: None
) -> None:
    settings.DRF_LIVE = {"OUTBOX_SWEEP": False, "OUTBOX_GRACE": 0.1, "OUTBOX_SWEEP_INTERVAL": 0.05}
    task = domain["task"]
    subscribe(task_target(task), domain["bob"])
    write_without_kick(task, "Left for another process")

    relay.start(sweep=True)
    time.sleep(0.5)

    assert OutboxEntry.objects.count() == 1
    assert bus.events(task_target(task).stream) == []


def test_the_sweep_leaves_rows_within_outbox_grace_to_their_writer(
    domain: dict[str, Any], bus: Bus, settings: Any
) -> None:
    settings.DRF_LIVE = {"OUTBOX_GRACE": 0.5}
    task = domain["task"]
    subscribe(task_target(task), domain["bob"])
    write_without_kick(task, "Fresh")

    assert relay.sweep() == 0
    assert OutboxEntry.objects.count() == 1

    time.sleep(0.6)
    assert relay.sweep() == 1
    assert not OutboxEntry.objects.exists()
    assert len(bus.events(task_target(task).stream)) == 1


@pytest.mark.asyncio
async def test_a_row_nobody_kicked_reaches_a_socket_through_the_sweep(
    domain: dict[str, Any], token_for: Any, connect: Any, settings: Any, sweeping: None
) -> None:
    # A server process sweeps from its first socket on (OUTBOX_SWEEP None).
    settings.DRF_LIVE = {"OUTBOX_GRACE": 0.2, "OUTBOX_SWEEP_INTERVAL": 0.1}
    task = domain["task"]
    socket = await connect(token=await database_sync_to_async(token_for)(domain["bob"]))
    await socket.send_json_to({"action": "subscribe", "model": "api.task", "id": wire(task), "request_id": 1})
    subscribed = await socket.receive_json_from(timeout=5)
    assert subscribed["type"] == "SUBSCRIBED"

    await database_sync_to_async(write_without_kick)(task, "Swept to the socket")

    event = await socket.receive_json_from(timeout=5)
    assert event["type"] == "UPDATE_TASK"
    assert event["payload"]["title"] == "Swept to the socket"
    assert event["meta"] == {
        "model": "api.task",
        "id": wire(task),
        "changed": ["title"],
        "seq": subscribed["meta"]["seq"] + 1,
    }
    assert await socket.receive_nothing(timeout=0.3)


# OUTBOX_LIMIT: dropped rows rotate every epoch --------------------------------------------


def old_rows(count: int, task: Task) -> None:
    for n in range(count):
        outbox.append(DB, f"old{n}", "update", "api.task", wire(task), {"changed": ["title"]})
    OutboxEntry.objects.update(created=time.time() - 60)


def test_settle_losses_rotates_every_epoch_and_removes_the_mark(kicks: Any, domain: dict[str, Any], bus: Bus) -> None:
    task, website, bob = domain["task"], domain["website"], domain["bob"]
    before = [subscribe(task_target(task), bob), subscribe(project_target(website), bob)]
    OutboxEntry.objects.create(txn="lost", created=time.time(), kind=outbox.LOST, data={"dropped": 7})

    relay._settle_losses(DB)

    assert outbox.losses(DB) == []
    assert bus.on(control_channel()) == [{"type": "rotate-all"}]
    after = [position(task_target(task), bob), position(project_target(website), bob)]
    assert all(new.epoch != old.epoch for new, old in zip(after, before, strict=True))


def test_a_sweep_over_outbox_limit_drops_the_oldest_and_rotates_every_epoch(
    domain: dict[str, Any], bus: Bus, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.DRF_LIVE = {"OUTBOX_LIMIT": 3}
    task, bob = domain["task"], domain["bob"]
    start = subscribe(task_target(task), bob)
    old_rows(5, task)
    trimmed = relay.stats.trimmed

    with caplog.at_level(logging.ERROR, logger="notifications.relay"):
        relay.sweep()

    assert relay.stats.trimmed == trimmed + 3
    assert any("OUTBOX_LIMIT=3" in record.getMessage() for record in caplog.records)
    assert bus.on(control_channel()) == [{"type": "rotate-all"}]
    # The two rows kept were published after the rotation, in the new epoch; the mark is gone.
    events = bus.events(task_target(task).stream)
    assert events and all(event["epoch"] != start.epoch for event in events)
    assert not OutboxEntry.objects.exists()


def test_while_the_store_is_down_the_lost_mark_waits_and_nothing_newer_goes_out(
    domain: dict[str, Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DRF_LIVE = {"OUTBOX_LIMIT": 3}
    old_rows(5, domain["task"])
    monkeypatch.setattr("notifications.relay.get_store", Unreachable)
    failed = relay.stats.failed

    assert relay.sweep() == 0

    assert len(outbox.losses(DB)) == 1
    assert OutboxEntry.objects.exclude(kind=outbox.LOST).filter(owner="").count() == 2
    assert relay.stats.failed == failed + 1


def test_nothing_newer_than_a_loss_is_published_before_every_epoch_rotates(
    kicks: Any, domain: dict[str, Any], bus: Bus
) -> None:
    task, bob = domain["task"], domain["bob"]
    start = subscribe(task_target(task), bob)
    OutboxEntry.objects.create(txn="lost", created=time.time() - 60, kind=outbox.LOST, data={"dropped": 7})
    task.title = "After the loss"
    task.save()
    [(using, token)] = set(kicks)

    relay.publish_rows(using, outbox.take_transactions(using, [token], relay.owner, 60.0, margin=0.5).rows)

    assert [event for event in bus.events(task_target(task).stream) if event["epoch"] == start.epoch] == []


# The relay's read on SQLite -----------------------------------------------------------------------


def test_deciding_on_sqlite_leaves_the_write_lock_to_writers(domain: dict[str, Any]) -> None:
    import sqlite3

    from django.db import connection

    from api.models import Task
    from notifications.audience import read_snapshot

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's database-wide write lock")
    task = domain["task"]
    with read_snapshot("default"):
        assert Task.objects.filter(pk=task.pk).exists()  # the relay reads
        writer = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.5)
        try:
            # Another process's write, meanwhile: it neither waits for the read nor fails.
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(
                "UPDATE api_task SET title = 'written meanwhile' WHERE id = ?", (Task._meta.pk.get_prep_value(task.pk),)
            )
            writer.commit()
        finally:
            writer.close()
        # The read goes on from the snapshot it started with.
        assert Task.objects.get(pk=task.pk).title == task.title
    task.refresh_from_db()
    assert task.title == "written meanwhile"
