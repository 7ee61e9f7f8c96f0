"""The writes: ``Task.save()`` at a fixed rate from a process of its own, as a worker or a command would.

``python -m bench.writer --mode MODE --plan FILE`` with the Django environment of
the server under test. The plan lists the task ids to write, in order; write
``i`` sets the title to ``b-<tag>-<time_ns>-<i>``, so a client that receives it
knows when it was written (same machine, same clock). How the write reaches the
sockets depends on the server:

- ``drf-live``: nothing more than ``save()``: it appends outbox rows in its transaction, and this
  process's relay thread publishes them after the commit.
- ``dcrf``: nothing more than ``save()``; dcrf's ``post_save`` observer (connected
  by importing ``bench.dcrf_app``) does ``async_to_sync(group_send)``.
- ``channels``: after ``save()``, ``async_to_sync(channel_layer.group_send)`` of the
  ``TaskSerializer`` output, as a hand-written integration would.
- ``websockets``: after ``save()``, one Redis ``PUBLISH`` of the frame, encoded once.

Prints one JSON line: writes done, their span, the writer's CPU and the time
``save()`` (plus the send, where the writer sends) took. With
``BENCH_COUNT_QUERIES=1`` (``bench.collection``), also the SQL statements
drf-live's relay thread ran, by kind, that thread's CPU time and the events it
published.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from collections import Counter
from typing import Any

PAUSE_FOR_DRAIN = 60.0


def title(tag: str, index: int) -> str:
    return f"b-{tag}-{time.time_ns()}-{index}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", required=True, choices=["drf-live", "dcrf", "channels", "websockets"])
    parser.add_argument("--plan", required=True)
    args = parser.parse_args()
    with open(args.plan) as file:
        plan = json.load(file)
    ids: list[str] = plan["ids"]
    rate: float = plan["rate"]
    tag: str = plan["tag"]

    import django

    django.setup()
    from api.models import Task

    relay_statements = count_relay_statements() if os.environ.get("BENCH_COUNT_QUERIES") == "1" else None
    send = sender(args.mode)
    tasks = Task.objects.in_bulk(list(set(ids)))
    durations: list[float] = []
    start = time.monotonic()
    start_ns = time.time_ns()
    for index, task_id in enumerate(ids):
        due = start + index / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        task = tasks[task_id]
        began = time.perf_counter()
        task.title = title(tag, index)
        task.save()
        send(task)
        durations.append(time.perf_counter() - began)
    span = time.monotonic() - start
    drained = True
    relay_cpu = relay_published = None
    if args.mode == "drf-live":
        # drf-live's relay thread may still hold committed transactions: let it publish them before exiting.
        from notifications.relay import relay

        drained = relay.flush(timeout=PAUSE_FOR_DRAIN)
        relay_cpu = thread_cpu(relay._thread.native_id if relay._thread is not None else None)
        relay_published = relay.stats.published
    usage = resource.getrusage(resource.RUSAGE_SELF)
    durations.sort()
    extra: dict[str, Any] = {}
    if relay_statements is not None:
        # Taken together, once the relay drained (or PAUSE_FOR_DRAIN ran out: then fewer events than writes).
        extra = {
            "relay_statements": dict(relay_statements),
            "relay_cpu_s": relay_cpu,
            "relay_published": relay_published,
        }
    print(
        json.dumps(
            {
                **extra,
                "writes": len(ids),
                "start_ns": start_ns,
                "span_s": span,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "save_p50_ms": 1000 * durations[len(durations) // 2] if durations else 0,
                "save_p99_ms": 1000 * durations[min(len(durations) - 1, int(len(durations) * 0.99))]
                if durations
                else 0,
                "drained": drained,
            }
        ),
        flush=True,
    )


RELAY_THREAD = "drf-live-relay"


def statement_kind(sql: str) -> str:
    """``transaction`` (BEGIN, SAVEPOINT, ...), ``outbox`` (the relay's own table) or ``read`` (everything else)."""
    word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if word in {"BEGIN", "SAVEPOINT", "RELEASE", "COMMIT", "ROLLBACK", "SET"}:
        return "transaction"
    return "outbox" if "drf_live_outbox" in sql else "read"


def count_relay_statements() -> Counter[str]:
    """Count the SQL statements of the relay thread from now on, by ``statement_kind``.

    Every statement of every connection goes through
    ``CursorWrapper._execute_with_wrappers`` (where ``connection.execute_wrapper``
    hooks run), so wrapping it once counts the relay's statements whatever
    connection its thread opens; the tests' ``statements`` fixture does the same.
    """
    from django.db.backends.utils import CursorWrapper

    counts: Counter[str] = Counter()
    original = CursorWrapper._execute_with_wrappers

    def counting(self: CursorWrapper, sql: str, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == RELAY_THREAD:
            counts[statement_kind(sql)] += 1
        return original(self, sql, *args, **kwargs)

    CursorWrapper._execute_with_wrappers = counting  # type: ignore[method-assign]
    return counts


def thread_cpu(native_id: int | None) -> float | None:
    """utime + stime of one thread of this process, in seconds."""
    if native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{native_id}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sender(mode: str) -> Any:
    """What the writer does after ``save()`` for this server."""
    if mode == "dcrf":
        import bench.dcrf_app  # noqa: F401  (connects dcrf's post_save observer)
    if mode == "channels":
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        from api.serializers import TaskSerializer
        from bench.plain_app import group_for

        layer = get_channel_layer()

        def send_to_group(task: Any) -> None:
            frame = {"type": "UPDATE_TASK", "payload": TaskSerializer(task).data}
            async_to_sync(layer.group_send)(group_for(str(task.pk)), {"type": "task.update", "frame": frame})

        return send_to_group
    if mode == "websockets":
        import os

        import orjson
        import redis

        from api.serializers import TaskSerializer
        from bench.raw_server import CHANNEL

        client = redis.Redis.from_url(os.environ["REDIS_URL"])

        def publish(task: Any) -> None:
            frame = orjson.dumps({"type": "UPDATE_TASK", "payload": TaskSerializer(task).data})
            client.publish(CHANNEL, str(task.pk).encode() + b" " + frame)

        return publish
    return lambda task: None


if __name__ == "__main__":
    main()
