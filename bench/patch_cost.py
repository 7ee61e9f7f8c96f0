"""Where drf-live's share of a REST ``PATCH`` goes, with nobody subscribed: the writer's and the relay's.

``python -m bench.patch_cost [--count N] [--rounds R] [--redis URL]``

Runs ``PATCH /api/tasks/<id>/`` through DRF's test client, in-process (no HTTP
server, so only Django's own work is timed), in four configurations, each in
its own process, on its own SQLite file, against a ``redis-server`` of its own
(started here unless ``--redis`` names one):

- without drf-live (``bench.settings_nolive``);
- drf-live with the relay never told (``relay.kick`` a no-op): the writer's own
  work, all inside the PATCH's transaction: reading the ``FieldTracker``, the
  outbox ``INSERT``, the ``on_commit`` hand-off;
- drf-live as shipped, but each PATCH starts only once the relay has finished
  the previous one (``relay.flush()`` between requests, not timed): the
  writer's share as shipped, without the relay running beside it;
- drf-live as shipped: the relay thread claims the committed rows, plans the
  events, asks Redis whether anyone is subscribed to the task's three streams
  (nobody is) and deletes the rows, while the next PATCH runs.

The difference between the last two is the relay's share of the PATCH's
latency: its work competes with the request for the interpreter lock and, on
SQLite, for the database's write lock. Each configuration also reports the
CPU time of the request's thread and of the relay's thread per PATCH (from
``/proc/self/task/<tid>/stat``) and the SQL statements each thread ran per
PATCH (``CursorWrapper._execute_with_wrappers`` wrapped, as the tests'
``statements`` fixture does). Scenario D of ``make bench`` measures the same
PATCH over HTTP; this splits it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from devtools.servers import ROOT

CONFIGURATIONS = [
    ("without drf-live", "bench.settings_nolive", "nolive"),
    ("drf-live, relay never told (the writer's own work)", "project.settings", "norelay"),
    ("drf-live, relay finished before each PATCH", "project.settings", "flushed"),
    ("drf-live as shipped (relay beside the next PATCH)", "project.settings", "shipped"),
]

RELAY_THREAD = "drf-live-relay"


def thread_cpu(native_id: int | None) -> float:
    """utime + stime of one thread of this process, in seconds (0 if it is gone or unknown)."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_statements() -> Counter[str]:
    """Count every SQL statement from now on, by the name of the thread that ran it."""
    from django.db.backends.utils import CursorWrapper

    counts: Counter[str] = Counter()
    original = CursorWrapper._execute_with_wrappers

    def counting(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        name = threading.current_thread().name
        counts[RELAY_THREAD if name == RELAY_THREAD else "request"] += 1
        return original(self, sql, *args, **kwargs)

    CursorWrapper._execute_with_wrappers = counting  # type: ignore[method-assign]
    return counts


def measure(count: int, variant: str) -> dict[str, float]:
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from api.models import Project, Task, User

    relay: Any = None
    if variant != "nolive":
        from notifications.relay import relay

        if variant == "norelay":
            relay.kick = lambda using, token: None

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="patch-cost")
    project, _ = Project.objects.get_or_create(name="patch-cost", owner=user)
    task, _ = Task.objects.get_or_create(project=project, title="patch-cost")
    client = APIClient()
    client.force_authenticate(user)
    url = f"/api/tasks/{task.pk}/"
    counts = count_statements()
    timings: list[float] = []
    request_cpu = relay_cpu = 0.0
    for index in range(-20, count):  # 20 warm-up requests
        if variant == "flushed":
            relay.flush(timeout=10.0)
        if index == 0:
            counts.clear()
            relay_thread = getattr(relay, "_thread", None) if relay is not None else None
            relay_id = relay_thread.native_id if relay_thread is not None else None
            relay_before = thread_cpu(relay_id)
            request_before = time.thread_time()
        began = time.perf_counter()
        response = client.patch(url, {"title": f"patch {index}"}, format="json")
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, response.content
        if index >= 0:
            timings.append(elapsed * 1000)
    request_cpu = time.thread_time() - request_before
    if relay is not None and variant != "norelay":
        relay.flush(timeout=30.0)
        relay_cpu = thread_cpu(relay_id) - relay_before
    return {
        "p50": statistics.median(timings),
        "mean": statistics.fmean(timings),
        "request_cpu_ms": 1000 * request_cpu / count,
        "relay_cpu_ms": 1000 * relay_cpu / count,
        "request_statements": counts["request"] / count,
        "relay_statements": counts[RELAY_THREAD] / count,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="PATCHes per configuration")
    parser.add_argument("--redis", default="", help="the Redis the relay uses (default: a redis-server of its own)")
    parser.add_argument("--rounds", type=int, default=3, help="times to run every configuration, interleaved")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.count, args.child)))
        return 0
    from .servers import Processes, Redis

    processes = Processes()
    try:
        redis_url = args.redis or Redis(processes).start().url
        rounds = run(args, redis_url)
    finally:
        processes.close()
    base = statistics.median(rounds[CONFIGURATIONS[0][0]]["p50"])
    print(
        f"`python -m bench.patch_cost --count {args.count} --rounds {args.rounds}`, SQLite (WAL), "
        f"{'Redis at ' + args.redis if args.redis else 'a redis-server of its own'}; medians of the rounds"
    )
    print()
    print(
        "| configuration | PATCH p50 ms | vs without drf-live | request thread CPU ms/PATCH | "
        "relay thread CPU ms/PATCH | SQL statements/PATCH: request | relay |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, _, _ in CONFIGURATIONS:
        values = {key: statistics.median(series) for key, series in rounds[label].items()}
        print(
            f"| {label} | {values['p50']:.2f} | {values['p50'] / base:.2f}× | {values['request_cpu_ms']:.2f} | "
            f"{values['relay_cpu_ms']:.2f} | {values['request_statements']:.1f} | {values['relay_statements']:.1f} |"
        )
    print()
    print("Every round's p50 (ms):")
    for label, _, _ in CONFIGURATIONS:
        print(f"- {label}: " + ", ".join(f"{value:.2f}" for value in rounds[label]["p50"]))
    return 0


def run(args: argparse.Namespace, redis_url: str) -> dict[str, dict[str, list[float]]]:
    rounds: dict[str, dict[str, list[float]]] = {label: {} for label, _, _ in CONFIGURATIONS}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for index, (label, settings, variant) in enumerate(CONFIGURATIONS):
                env = {
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": settings,
                    "DATABASE_URL": f"sqlite:///{scratch}/patch-{round_index}-{index}.sqlite3",
                    "REDIS_URL": redis_url,
                    "DEBUG": "0",
                    "ALLOWED_HOSTS": "testserver",
                }
                output = subprocess.run(
                    [sys.executable, "-m", "bench.patch_cost", "--count", str(args.count), "--child", variant],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                measured = json.loads(output.strip().splitlines()[-1])
                for key, value in measured.items():
                    rounds[label].setdefault(key, []).append(value)
    return rounds


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
