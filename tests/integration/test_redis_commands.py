"""Issue 15: at most 3 Redis commands per target per event in the steady state, as MONITOR counts them.

A real server (uvicorn, the example project) on a real Redis, real WebSocket
clients: one socket on a task, one on its project's task list. The counting is
``bench.redis_commands``' (``python -m bench.redis_commands`` reports the same
figures in docs/benchmarks.md), so the test and the benchmark cannot drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from bench.redis_commands import Line, Window, label, measure, parse, table
from tests.servers import AsgiServer, RedisServer, demo_tokens

WRITES = 10


@pytest.fixture(scope="module")
def server(redis_server: RedisServer, demo_databases: Callable[[str | None], dict[str, str]]) -> Iterator[AsgiServer]:
    """One server process on the module's Redis and a database with the demo data."""
    process = AsgiServer(demo_databases(redis_server.url), "redis-commands").start()
    try:
        yield process
    finally:
        process.stop()
    process.assert_no_tracebacks()


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_an_event_costs_at_most_three_commands_sent_per_target(
    server: AsgiServer, redis_server: RedisServer
) -> None:
    token = demo_tokens(server, ("alice",))["alice"]
    measurement = await measure(
        redis_server.port, server.http_url, server.ws_url, token, writes=WRITES, collection=True
    )

    # Every write reached both sockets, once, in order, as written; nothing else arrived.
    assert measurement.targets == 2
    for name, target in [
        ("object", {"id": measurement.task}),
        ("collection", {"filter": {"project": measurement.project}}),
    ]:
        frames = measurement.frames[name]
        assert [frame["type"] for frame in frames] == ["UPDATE_TASK"] * WRITES, frames
        assert [frame["payload"]["title"] for frame in frames] == measurement.titles
        assert all(frame["payload"]["id"] == measurement.task for frame in frames)
        key, value = next(iter(target.items()))
        assert all(frame["meta"][key] == value for frame in frames), frames

    # The count: commands the processes sent (a script call once), periodic ones apart.
    sent, inside = measurement.writing.per_target(measurement.events, measurement.targets)
    assert sent <= 3, table(measurement)
    assert inside > sent  # the scripts do the work: the count inside them is reported, not bounded here
    # Nothing but periodic commands while nothing is written.
    assert not measurement.idle.per_event_sent, measurement.idle.sent
    assert not measurement.idle.in_scripts, measurement.idle.in_scripts


def test_monitor_lines_are_told_apart() -> None:
    """What the count rests on: a script call counts once as sent, its commands as run inside it."""
    claim = parse('+1700000000.000001 [0 127.0.0.1:5001] "EVALSHA" "0123abcd" "3" "drf-live.api.task.o.X:subs" "a"')
    inner = parse('+1700000000.000002 [0 lua] "ZRANGE" "drf-live.api.task.o.X:subs" "0" "-1"')
    quoted = parse('+1700000000.000003 [0 127.0.0.1:5002] "PUBLISH" "chan" "{\\"seq\\":1}"')
    ping = parse('+1700000000.000004 [0 127.0.0.1:5003] "ping"')
    assert claim == Line("127.0.0.1:5001", "EVALSHA", ("0123abcd", "3", "drf-live.api.task.o.X:subs", "a"))
    assert inner is not None and inner.in_script and inner.name == "ZRANGE"
    assert quoted is not None and quoted.args == ("chan", '{\\"seq\\":1}')
    assert parse("+OK") is None
    assert label(claim) == "EVALSHA 0123abcd (object)"
    assert ping is not None and label(ping) == "PING" and label(ping, frozenset({"127.0.0.1:5003"})) == "PING pub/sub"
    window = Window.of([claim, inner, ping], 1.0, frozenset({"127.0.0.1:5003"}))
    assert window.per_event_sent == Counter({"EVALSHA 0123abcd (object)": 1})
    assert window.periodic == Counter({"PING pub/sub": 1})
    assert window.in_scripts == Counter({"ZRANGE": 1})
    assert window.per_target(events=1, targets=1) == (1.0, 1.0)
