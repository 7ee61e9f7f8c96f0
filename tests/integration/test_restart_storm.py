"""Scenario E of the bench at a small size: sockets through a SIGKILL and restart of a real server, on a real Redis.

``bench/storm.py`` starts its own Redis, a SQLite database, the plain Channels
consumer and drf-live (uvicorn); its clients reconnect with the JS client's
backoff and resubscribe with ``since`` and ``epoch`` while a writer PATCHes
task titles through the server, retrying what fails while it is down. Every
socket must be subscribed again and hold, for its task or its project's tasks,
exactly the rows ``GET`` shows, with no seq received twice. No timing is
asserted: the machine is shared.
"""

from __future__ import annotations

import pytest

from bench.storm import StormConfig, run
from tests.servers import require_executable

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_every_socket_recovers_the_committed_rows_after_a_restart() -> None:
    require_executable("redis-server", "apt-get install redis-server")
    result = run(StormConfig(sockets=30, clients=1, rate=10, before=1.5, after=1.5, profile=False), log=lambda _: None)

    assert result.status == "ok", result
    assert result.missed == 0 and result.sockets_missing == 0, result.example_missing
    assert result.duplicates == 0
    # Every socket subscribed again with `since`, and was told whether it recovered.
    assert result.recovered["true"] + result.recovered["false"] >= 30
    assert result.writes > 0
    assert result.samples["after"] > 0  # events flowed after the restart
