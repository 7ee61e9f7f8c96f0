"""The metrics of real servers, scraped over HTTP after real traffic: each value is what the clients saw.

A uvicorn process with ``DRF_LIVE["METRICS"]`` on, on a real Redis: sockets
subscribe, the REST API writes, a client sends a malformed frame, reconnects
and recovers, is closed by the server; then ``GET /metrics`` must count
exactly the frames the clients received, the events behind them, the error,
the recoveries and the closes. Redis stopped shows in the outbox's backlog,
the publish failures and the 4031 closes. Several worker processes in
prometheus-client's multiprocess mode add up to the same totals, whichever
worker answers the scrape, and a killed worker's sockets stop counting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.clients import (
    Client,
    Replica,
    client,
    create_task,
    frames_until_closed,
    get,
    patch_task,
    project_tasks,
    recovering,
    rest,
    unique,
    website,
)
from tests.integration.conftest import OUTAGE_TRACEBACKS
from tests.servers import AsgiServer, RedisServer, demo_tokens

pytestmark = pytest.mark.e2e

#: The servers' DRF_LIVE: metrics on, and a frame limit below uvicorn's, so that drf-live closes with 1009.
SETTINGS = {"METRICS": True, "MAX_FRAME_BYTES": 4096}
TASKS = {"model": "api.task"}


# Scraping -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """One answer of ``GET /metrics``: every sample, by name and labels."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def since(self, before: Scrape, name: str, **labels: str) -> float:
        return self(name, **labels) - before(name, **labels)


async def scrape(server: AsgiServer, **headers: str) -> Scrape:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return Scrape(
        {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
    )


async def scrape_until(server: AsgiServer, done: Callable[[Scrape], bool], timeout: float = 20.0) -> Scrape:
    """Scrape until ``done`` holds (what a server does after a client left takes a moment); the last scrape."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        scraped = await scrape(server)
        if done(scraped):
            return scraped
        if loop.time() > deadline:
            pytest.fail(f"The metrics did not get there within {timeout} s: {scraped.values}", pytrace=False)
        await asyncio.sleep(0.1)


def counted(start: Scrape, frames: int, events: int, sends: int) -> Callable[[Scrape], bool]:
    """Whether a scrape counts ``frames`` deliveries, ``events`` publishes and ``sends`` latencies since ``start``.

    A client may read a frame before its server has recorded it, and before the relay has
    counted the publish (it counts once the commit returned): the test waits for both.
    """

    def done(now: Scrape) -> bool:
        return (
            now.since(start, "drf_live_deliveries_total") >= frames
            and now.since(start, "drf_live_commit_to_publish_seconds_count") >= events
            and now.since(start, "drf_live_commit_to_send_seconds_count") >= sends
        )

    return done


async def empty_outbox(server: AsgiServer) -> Scrape:
    """Wait until every change written so far is published (the outbox's rows, read when scraped)."""
    return await scrape_until(server, lambda now: now("drf_live_outbox_rows", database="default") == 0)


# Servers ---------------------------------------------------------------------------------------


@dataclass
class Metered:
    redis: RedisServer
    server: AsgiServer
    tokens: dict[str, str]
    directory: Path | None = None  # PROMETHEUS_MULTIPROC_DIR with several workers
    replicas: list[Replica] = field(default_factory=list)


@pytest.fixture
def metered(demo_databases: Callable[[str], dict[str, str]], tmp_path: Path) -> Iterator[Callable[..., Metered]]:
    """Makes a Redis, a database with the demo data and a uvicorn on them with metrics on (``workers`` processes)."""
    made: list[Metered] = []

    def make(name: str, workers: int = 1) -> Metered:
        redis = RedisServer().start()
        env = {**demo_databases(redis.url), "DRF_LIVE": json.dumps(SETTINGS)}
        extra: list[str] = []
        directory = None
        if workers > 1:
            directory = tmp_path / f"{name}-prometheus"
            directory.mkdir()  # empty at start, as prometheus-client requires
            env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
            extra = ["--workers", str(workers)]
        server = AsgiServer(env, name, extra_args=extra)
        made.append(Metered(redis, server, {}, directory))
        server.start()
        made[-1].tokens = demo_tokens(server)
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            one.server.stop()
            one.redis.close()
    for one in made:
        one.server.assert_only_expected_tracebacks(*OUTAGE_TRACEBACKS)


async def new_task(live: Metered) -> tuple[str, dict[str, Any]]:
    """A task in alice's Website, published (to nobody yet) before anyone subscribes; its project and it."""
    async with rest(live.server, live.tokens["alice"]) as alice:
        project = await website(alice)
        task = await create_task(alice, project, unique("measured"))
    await empty_outbox(live.server)
    return project, task


def frames_received(replicas: list[Replica]) -> int:
    return sum(len(replica.events) for replica in replicas)


def events_received(replicas: list[Replica]) -> set[tuple[Any, int]]:
    """The distinct events behind the frames: (target, seq), whatever the number of sockets that got each."""
    return {(replica.key, event["meta"]["seq"]) for replica in replicas for event in replica.events}


# One process ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_metrics_of_a_server_count_what_its_clients_saw(metered: Callable[..., Metered]) -> None:
    live = await asyncio.to_thread(metered, "metrics")
    server, bob_token = live.server, live.tokens["bob"]
    project, task = await new_task(live)
    start = await scrape(server)
    assert start("drf_live_sockets_open") == 0
    assert start("drf_live_subscriptions", **TASKS) == 0
    replicas: list[Replica] = []

    def replica(**target: Any) -> Replica:
        replicas.append(Replica("api.task", **target))
        return replicas[-1]

    async with rest(server, live.tokens["alice"]) as alice, rest(server, bob_token) as bob_http:

        async def now(row: Replica, listed: Replica) -> dict[Replica, Any]:
            """What bob's REST API shows now, for his replicas."""
            return {
                row: await get(bob_http, f"/api/tasks/{task['id']}/"),
                listed: await project_tasks(bob_http, project),
            }

        async with client(server, bob_token) as first, client(server, bob_token) as second:
            pairs = [(replica(id=task["id"]), replica(filter={"project": project})) for _ in range(2)]
            for socket, (row, listed) in zip((first, second), pairs, strict=True):
                await socket.subscribe(row)
                await socket.subscribe(listed)
            subscribed = await scrape(server)
            assert subscribed("drf_live_sockets_open") == 2
            assert subscribed("drf_live_subscriptions", **TASKS) == 4

            # Two writes through the REST API: every socket gets each, for the task and for the list.
            for title in ("first", "second"):
                await patch_task(alice, task["id"], title=title)
            for socket, pair in zip((first, second), pairs, strict=True):
                await socket.settle(await now(*pair))
            assert frames_received(replicas) == 8
            events = len(events_received(replicas))
            written = await scrape_until(server, counted(start, frames_received(replicas), events, events))
            assert written.since(start, "drf_live_deliveries_total") == frames_received(replicas)
            assert written.since(start, "drf_live_events_published_total", kind="update", **TASKS) == events == 4
            assert written.since(start, "drf_live_commit_to_publish_seconds_count") == events
            # One process: each event was handed to its sockets once, so one latency per event.
            assert written.since(start, "drf_live_commit_to_send_seconds_count") == events
            latency = written.since(start, "drf_live_commit_to_send_seconds_sum")
            assert 0 < latency / events < 5
            assert written.since(start, "drf_live_commit_to_send_seconds_bucket", le="+Inf") == events

            # A malformed frame: an error, and the socket stays.
            await first.ws.send("not json")
            assert (await first.receive())["payload"]["code"] == "parse_error"

            # The second client goes away, misses a write and comes back with `since`.
            await second.ws.close()
        await patch_task(alice, task["id"], title="third")
        row, listed = pairs[1]
        async with recovering(server, bob_token, [row]) as third:
            assert row.replies[-1]["meta"]["recovered"] is True
            await third.settle({row: (await now(row, listed))[row]})
            # A client whose epoch is not the stream's: a fresh snapshot.
            stale = replica(id=task["id"], seq=row.seq, epoch="an-epoch-long-gone")
            await third.subscribe(stale, recover=True)
            assert stale.replies[-1]["meta"]["recovered"] is False
            # (The first two sockets closed; the server may take a moment to see it.)
            recovered = await scrape_until(server, lambda now: now("drf_live_sockets_open") == 1)

    assert recovered.since(start, "drf_live_recoveries_total", recovered="true") == 1
    assert recovered.since(start, "drf_live_recoveries_total", recovered="false") == 1
    assert recovered.since(start, "drf_live_errors_total", code="parse_error") == 1
    assert recovered.since(start, "drf_live_deliveries_total") == frames_received(replicas)
    assert recovered("drf_live_sockets_open") == 1
    assert recovered("drf_live_subscriptions", **TASKS) == 1  # the stale one replaced the recovered one

    # The server closes a socket: a frame over MAX_FRAME_BYTES is 1009.
    async with client(server, bob_token) as fourth:
        await fourth.ws.send(json.dumps({"action": "ping", "request_id": "x" * 5000}))
        assert await frames_until_closed(fourth.ws) == ([], 1009)
    # A handshake with a wrong token is refused.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws_url, additional_headers={"Authorization": "Token wrong"}, proxy=None):
            pass
    assert refused.value.response.status_code == 403

    end = await scrape_until(server, lambda now: now("drf_live_sockets_open") == 0)
    assert end("drf_live_subscriptions", **TASKS) == 0
    assert end.since(start, "drf_live_sockets_opened_total") == 4
    assert end.since(start, "drf_live_closes_total", code="1009") == 1
    assert end.since(start, "drf_live_handshakes_refused_total", status="403") == 1
    assert end.since(start, "drf_live_errors_total", code="parse_error") == 1
    assert end.since(start, "drf_live_deliveries_total") == frames_received(replicas)
    assert end.since(start, "drf_live_publish_failures_total", reason="transient") == 0
    assert end.since(start, "drf_live_publish_failures_total", reason="lost") == 0
    assert end("drf_live_outbox_rows", database="default") == 0
    assert end("drf_live_outbox_oldest_age_seconds", database="default") == 0
    # Through a proxy (a forwarding header), loopback is not enough.
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
        assert (await http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})).status_code == 403


@pytest.mark.asyncio
async def test_redis_down_shows_in_the_backlog_the_failures_and_the_4031_closes(
    metered: Callable[..., Metered],
) -> None:
    live = await asyncio.to_thread(metered, "metrics-outage")
    server = live.server
    _project, task = await new_task(live)
    start = await scrape(server)

    async with rest(server, live.tokens["alice"]) as alice:
        async with client(server, live.tokens["bob"]) as bob:
            await bob.subscribe(Replica("api.task", id=task["id"]))
            live.redis.stop()
            assert await frames_until_closed(bob.ws) == ([], 4031)
        await patch_task(alice, task["id"], title="while Redis is down")
        down = await scrape_until(
            server, lambda now: now.since(start, "drf_live_publish_failures_total", reason="transient") >= 1
        )
        assert down("drf_live_outbox_rows", database="default") >= 1
        await asyncio.sleep(1.1)
        waited = await scrape(server)
        assert waited("drf_live_outbox_oldest_age_seconds", database="default") > 1
        assert waited.since(start, "drf_live_closes_total", code="4031") == 1

        live.redis.start()
        back = await empty_outbox(server)
    assert back("drf_live_outbox_oldest_age_seconds", database="default") == 0
    assert back.since(start, "drf_live_publish_failures_total", reason="lost") == 0


# Several worker processes ---------------------------------------------------------------------


def open_sockets_by_worker(directory: Path) -> dict[int, float]:
    """Each worker's own count of open sockets, read from its file in PROMETHEUS_MULTIPROC_DIR."""
    counts = {}
    for path in directory.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "drf_live_sockets_open":
                    counts[pid] = sample.value
    return counts


async def workers_ready(directory: Path, workers: int, timeout: float = 30.0) -> None:
    """Each worker made its metrics when Django started (its file appears): all of them take connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(open_sockets_by_worker(directory)) < workers:
        if loop.time() > deadline:
            pytest.fail(f"Fewer than {workers} workers started within {timeout} s", pytrace=False)
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_worker_processes_add_up_whichever_answers_and_a_killed_one_stops_counting(
    metered: Callable[..., Metered],
) -> None:
    live = await asyncio.to_thread(metered, "metrics-workers", 2)
    assert live.directory is not None
    server, directory = live.server, live.directory
    await workers_ready(directory, 2)
    _project, task = await new_task(live)
    start = await scrape(server)

    async with AsyncExitStack() as stack:
        clients: list[Client] = []
        replicas: list[Replica] = []
        # The kernel hands each connection to one worker: open sockets until both hold some.
        while len(clients) < 40 and (len(clients) < 6 or min(open_sockets_by_worker(directory).values()) < 2):
            socket = await stack.enter_async_context(client(server, live.tokens["bob"]))
            replicas.append(Replica("api.task", id=task["id"]))
            await socket.subscribe(replicas[-1])
            clients.append(socket)
        by_worker = open_sockets_by_worker(directory)
        assert len(by_worker) == 2 and min(by_worker.values()) >= 1, by_worker
        count = len(clients)

        # Whichever worker answers, it reports every worker's sockets.
        for _ in range(6):
            scraped = await scrape(server)
            assert scraped("drf_live_sockets_open") == count
            assert scraped("drf_live_subscriptions", **TASKS) == count

        async with rest(server, live.tokens["alice"]) as alice:
            await patch_task(alice, task["id"], title="to every worker")
        for socket in clients:
            frame = await socket.receive()
            assert frame["type"] == "UPDATE_TASK", frame
        written = await scrape_until(server, counted(start, count, 1, 2))
        assert written.since(start, "drf_live_deliveries_total") == count == frames_received(replicas)
        assert written.since(start, "drf_live_events_published_total", kind="update", **TASKS) == 1
        # One event, handed to sockets by each of the two workers: one latency each.
        assert written.since(start, "drf_live_commit_to_send_seconds_count") == 2

        # A worker killed: its sockets are gone, its gauges forgotten, its counters kept.
        pid, held = max(open_sockets_by_worker(directory).items(), key=lambda item: item[1])
        os.kill(pid, signal.SIGKILL)
        after = await scrape_until(server, lambda now: now("drf_live_sockets_open") == count - held)
        assert after("drf_live_subscriptions", **TASKS) == count - held
        assert after.since(start, "drf_live_deliveries_total") == count
