"""How long a page of subscribes takes: ``python -m bench.page_subscribe [--targets N] [--rounds R]``.

A client that shows a page of objects subscribes to each at once, and
``client.js`` subscribes again to every target it holds after a reconnect. This
starts one drf-live server (uvicorn, the example project, SQLite with the demo
data, a ``redis-server`` of its own), gives alice ``--targets`` tasks, and times,
over ``--rounds`` fresh sockets each way:

- **at once**: the socket sends its ``--targets`` subscribes without waiting,
  then reads the replies (what ``client.js`` does);
- **one by one**: it sends each subscribe after the reply to the last.

It prints the median and the spread of the time from the first subscribe sent
to the last reply read: compare the two ways within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

import httpx
from websockets.asyncio.client import connect

from devtools.servers import DEMO_PASSWORD, MANAGE, PYTHON, ROOT, Database, django_env

from .servers import SERVERS, Processes, Redis, Server

MAKE_TASKS = """
import json
from api.models import Project, Task, User
alice = User.objects.get(username="alice")
project = Project.objects.create(name="Page of tasks", owner=alice)
Task.objects.bulk_create(Task(project=project, title=f"task {{index}}") for index in range({count}))
print(json.dumps([str(pk) for pk in Task.objects.filter(project=project).values_list("pk", flat=True)]))
"""


async def page(ws_url: str, token: str, ids: list[str], at_once: bool) -> float:
    """Seconds from the first subscribe sent to the last reply read, on a new socket."""
    async with connect(ws_url, additional_headers={"Authorization": f"Token {token}"}, max_size=None) as ws:
        frames = [{"action": "subscribe", "model": "api.task", "id": task, "request_id": task} for task in ids]
        started = time.perf_counter()
        if at_once:
            for frame in frames:
                await ws.send(json.dumps(frame))
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for _ in frames]
        else:
            replies = []
            for frame in frames:
                await ws.send(json.dumps(frame))
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        elapsed = time.perf_counter() - started
    answered = sorted(str(reply["meta"]["request_id"]) for reply in replies if reply["type"] == "SUBSCRIBED")
    if answered != sorted(ids):
        raise RuntimeError(f"not every subscribe was answered SUBSCRIBED: {replies[:3]}")
    return elapsed


async def measure(server: Server, token: str, ids: list[str], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"at once": [], "one by one": []}
    await page(server.ws_url, token, ids, True)  # warm-up: connections, caches
    for _ in range(rounds):
        for way in times:
            times[way].append(await page(server.ws_url, token, ids, way == "at once"))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=30, help="subscribes per page (tasks of one project)")
    parser.add_argument("--rounds", type=int, default=15, help="pages each way, alternating")
    args = parser.parse_args()

    processes = Processes()
    redis = Redis(processes).start()
    database = Database(prefix="drf_live_page")
    try:
        env = django_env(database.url, redis.url, debug=False)
        for argv in (["migrate", "--noinput"], ["load_demo", "--quiet"]):
            subprocess.run([PYTHON, MANAGE, *argv], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
        made = subprocess.run(
            [PYTHON, MANAGE, "shell", "-c", MAKE_TASKS.format(count=args.targets)],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        ids = json.loads(made.stdout.strip().splitlines()[-1])
        server = Server(SERVERS["drf-live"], processes, database.url, redis.url, "page").start()
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            reply = http.post("/api/auth/token/", json={"username": "alice", "password": DEMO_PASSWORD})
            token = str(reply.raise_for_status().json()["token"])
        times = asyncio.run(measure(server, token, ids[: args.targets], args.rounds))
        errors = server.log_errors()
        if errors:
            raise RuntimeError("The server logged errors:\n" + "\n".join(errors[-20:]))
    finally:
        processes.close()
        redis.remove_dir()
        database.drop()

    print(f"{args.targets} subscribes per page, {args.rounds} pages each way (SQLite, one server process):\n")
    print("| way | median ms per page | fastest | slowest |")
    print("|---|---|---|---|")
    for way, values in times.items():
        ms = sorted(value * 1000 for value in values)
        print(f"| {way} | {statistics.median(ms):.1f} | {ms[0]:.1f} | {ms[-1]:.1f} |")
    ratio = statistics.median(times["one by one"]) / statistics.median(times["at once"])
    print(f"\none by one / at once: {ratio:.2f}×")


if __name__ == "__main__":
    main()
