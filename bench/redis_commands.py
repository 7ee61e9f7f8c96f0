"""``python -m bench.redis_commands``: the Redis commands drf-live sends per target per event (issue 15).

Counted as Redis' ``MONITOR`` shows them: a line per command a process sends
(a script call, ``EVALSHA``, counts once) and a line per command a script runs
inside (``[0 lua]``), reported apart. The run starts its own ``redis-server``,
a SQLite database with the demo data and one drf-live server (uvicorn, the
example project, ``REDIS_URL`` on that Redis: the channel layer and drf-live's
store). Real WebSocket clients subscribe as alice; after a few warm-up writes,
``MONITOR`` records while ``--writes`` REST PATCHes change the task's title and
every event reaches every socket; then it records an idle window of the same
length (nothing written) for the commands that come on a timer, not per event.

Two cases: a task with one socket on the task and one on its project's task
list (2 targets per event), and a task of another project with a socket on the
task only (1 target). ``tests/integration/test_redis_commands.py`` runs the
same ``measure`` and ``Window.per_target`` against its own server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from devtools.servers import DEMO_PASSWORD, MANAGE, PYTHON, ROOT, Database, django_env, redis_command
from notifications.redis_store import _ASYNC_SCRIPTS, _SCRIPTS

from .servers import SERVERS, Processes, Redis, Server

#: The script each ``EVALSHA`` names, by its SHA1 (as redis-py's ``register_script`` sends it).
SCRIPT_NAMES = {
    hashlib.sha1(source.encode()).hexdigest(): name for name, source in {**_SCRIPTS, **_ASYNC_SCRIPTS}.items()
}

#: Commands a server sends on a timer, whatever is written (labels of ``label``), and where they come from.
PERIODIC = {
    "PING pub/sub": "keep-alive, every `KEEPALIVE` = 15 s per pub/sub connection (notifications/redis_pubsub.py)",
    "ZADD subs": "registration refresh, every `RESUME_WINDOW` / 4 = 30 s (`RedisStreamStore.refresh`, from "
    "`Hub._refresh`): one ZADD and two EXPIREs per (stream, user) the process holds",
    "EXPIRE subs": "the same refresh",
    "EXPIRE seq": "the same refresh",
    "ZADD sockets": "socket-lease renewal, every `SOCKET_LEASE` / 4 = 15 s (`RedisStreamStore.renew_sockets`): "
    "one ZADD and one EXPIRE per (user, socket)",
    "EXPIRE sockets": "the same renewal",
}

#: The kind of stream a key belongs to (``Target.stream``: ``<prefix>.<model>.o.<id>``, ``.c.<filter>``, ``.all``).
_STREAM_KINDS = [
    (re.compile(r"\.o\.[^:]*:"), "object"),
    (re.compile(r"\.c\.[^:]*:"), "list"),
    (re.compile(r"\.all:"), "all"),
]
_LINE = re.compile(r"^\+?(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Line:
    """One ``MONITOR`` line: who ran the command (``lua`` inside a script, else the client's address) and what."""

    client: str
    name: str
    args: tuple[str, ...]

    @property
    def in_script(self) -> bool:
        return self.client == "lua"


def parse(text: str) -> Line | None:
    """A ``MONITOR`` line (``+1700000000.123 [0 127.0.0.1:5000] "EVALSHA" "..."``), or None if it is not one."""
    match = _LINE.match(text.strip())
    if match is None:
        return None
    words = _ARG.findall(match.group(4))
    if not words:
        return None
    return Line(match.group(3), words[0].upper(), tuple(words[1:]))


def stream_kind(keys: tuple[str, ...]) -> str:
    """Whether the keys are those of an object's stream, a filtered list's or the unfiltered list's."""
    for key in keys:
        for pattern, kind in _STREAM_KINDS:
            if pattern.search(key):
                return kind
    return "?"


def label(line: Line, pubsub: frozenset[str] = frozenset()) -> str:
    """What a command is: its name, the script (and stream) of an ``EVALSHA``, the kind of key of a renewal.

    ``pubsub``: the addresses of the pub/sub connections, whose ``PING`` is
    their keep-alive (any other ``PING`` is redis-py's health check).
    """
    if line.name == "EVALSHA" and line.args:
        return f"EVALSHA {SCRIPT_NAMES.get(line.args[0], line.args[0][:8])} ({stream_kind(line.args[2:])})"
    if line.name == "PING":
        return "PING pub/sub" if line.client in pubsub else "PING"
    if line.name in ("ZADD", "EXPIRE") and line.args:
        key = line.args[0]
        if ":sockets:" in key:
            return f"{line.name} sockets"
        for suffix in ("subs", "seq"):
            if key.endswith(f":{suffix}"):
                return f"{line.name} {suffix}"
    return line.name


@dataclass
class Window:
    """What ``MONITOR`` showed over ``seconds``: commands sent by processes (by ``label``) and run in scripts."""

    seconds: float
    sent: Counter[str] = field(default_factory=Counter)
    in_scripts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, lines: list[Line], seconds: float, pubsub: frozenset[str] = frozenset()) -> Window:
        window = cls(seconds)
        for line in lines:
            if line.in_script:
                window.in_scripts[line.name] += 1
            else:
                window.sent[label(line, pubsub)] += 1
        return window

    @property
    def per_event_sent(self) -> Counter[str]:
        """The commands sent that are not periodic (``PERIODIC``): those the events caused."""
        return Counter({name: count for name, count in self.sent.items() if name not in PERIODIC})

    @property
    def periodic(self) -> Counter[str]:
        return Counter({name: count for name, count in self.sent.items() if name in PERIODIC})

    def per_target(self, events: int, targets: int) -> tuple[float, float]:
        """Commands sent (periodic ones left out) and commands run inside scripts, per target per event."""
        units = events * targets
        return sum(self.per_event_sent.values()) / units, sum(self.in_scripts.values()) / units


# Watching Redis ----------------------------------------------------------------------


class Monitor:
    """A ``MONITOR`` connection, from ``start`` to ``stop``; ``stop`` returns every line in between.

    ``stop`` sends ``ECHO <marker>`` on another connection and reads until the
    marker: every command run before it is in, none after.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[Line] = []
        self.marker = ""
        self.started = 0.0
        self.pubsub: frozenset[str] = frozenset()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    async def start(self) -> Monitor:
        self.pubsub = await asyncio.to_thread(pubsub_clients, self.port)
        self.marker = f"drf-live-monitor-end-{uuid.uuid4().hex}"
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer.write(b"MONITOR\r\n")
        await self._writer.drain()
        reply = await asyncio.wait_for(self._reader.readline(), 10)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR answered {reply!r}")
        self.started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            raw = await self._reader.readline()
            if not raw:
                raise RuntimeError("Redis closed the MONITOR connection")
            text = raw.decode(errors="replace")
            if self.marker in text:
                return
            line = parse(text)
            if line is not None:
                self.lines.append(line)

    async def stop(self) -> Window:
        assert self._task is not None and self._writer is not None
        seconds = time.monotonic() - self.started
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"ECHO {self.marker}\r\n".encode())
        await writer.drain()
        await reader.readline()
        writer.close()
        await asyncio.wait_for(self._task, 30)
        self._writer.close()
        return Window.of(self.lines, seconds, self.pubsub)


def pubsub_clients(port: int) -> frozenset[str]:
    """The addresses of the connections subscribed to a channel (``CLIENT LIST``: ``sub`` or ``psub`` above 0)."""
    found = set()
    for entry in redis_command(port, "CLIENT", "LIST").splitlines():
        fields = dict(word.split("=", 1) for word in entry.split() if "=" in word)
        if fields.get("sub", "0") != "0" or fields.get("psub", "0") != "0":
            found.add(fields["addr"])
    return frozenset(found)


# Driving the server --------------------------------------------------------------------


@dataclass
class Measurement:
    """One case: ``events`` writes to ``task``, seen by ``targets`` subscribed targets."""

    case: str
    task: str
    project: str
    events: int
    targets: int
    writing: Window
    idle: Window
    titles: list[str]
    #: Every frame each socket received after the warm-up, until it closed.
    frames: dict[str, list[dict[str, Any]]]


def listed(page: Any) -> list[dict[str, Any]]:
    return list(page["results"] if isinstance(page, dict) else page)


async def _read_frames(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    async for text in ws:
        into.append(json.loads(text))


async def _wait_for(frames: dict[str, list[dict[str, Any]]], count: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(len(received) < count for received in frames.values()):
        if loop.time() > deadline:
            got = {name: len(received) for name, received in frames.items()}
            raise TimeoutError(f"Expected {count} frames on every socket within {timeout} s, got {got}")
        await asyncio.sleep(0.02)


async def _subscribe(ws: ClientConnection, target: dict[str, Any]) -> None:
    await ws.send(json.dumps({"action": "subscribe", "model": "api.task", "request_id": 1, **target}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if reply["type"] != "SUBSCRIBED":
        raise RuntimeError(f"Could not subscribe to {target}: {reply}")


async def measure(
    redis_port: int,
    http_url: str,
    ws_url: str,
    token: str,
    *,
    writes: int,
    collection: bool,
    idle: float | None = None,
    warmup: int = 3,
    settle: float = 1.0,
    quiet: float = 0.5,
    timeout: float = 60.0,
) -> Measurement:
    """Subscribe, warm up, then count what ``writes`` PATCHes of the task's title cost, and an idle window.

    ``collection``: alice's "Website" task, watched by a socket on it and one on
    the project's task list; otherwise the "Mobile app" task, a socket on it
    only. The idle window lasts as long as the writes did, or ``idle`` seconds.
    """
    project_name = "Website" if collection else "Mobile app"
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=http_url, headers=headers, timeout=30) as http:
        projects = listed((await http.get("/api/projects/")).raise_for_status().json())
        project = next(str(p["id"]) for p in projects if p["name"] == project_name)
        tasks = listed((await http.get("/api/tasks/", params={"project": project})).raise_for_status().json())
        task = str(min(tasks, key=lambda t: t["title"])["id"])
        targets = {"object": {"id": task}}
        if collection:
            targets["collection"] = {"filter": {"project": project}}
        tag = uuid.uuid4().hex[:6]

        async def patch(title: str) -> None:
            (await http.patch(f"/api/tasks/{task}/", json={"title": title})).raise_for_status()

        sockets = [connect(ws_url, additional_headers=headers, open_timeout=30, proxy=None) for _ in targets]
        connections = [await socket.__aenter__() for socket in sockets]
        frames: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        readers: list[asyncio.Task[None]] = []
        try:
            for ws, target in zip(connections, targets.values(), strict=True):
                await _subscribe(ws, target)
            for ws, name in zip(connections, targets, strict=True):
                readers.append(asyncio.get_running_loop().create_task(_read_frames(ws, frames[name])))
            # Warm-up: scripts loaded, connections made, then quiet.
            for index in range(warmup):
                await patch(f"warm-up {tag} {index}")
                await _wait_for(frames, index + 1, timeout)
            await asyncio.sleep(settle)
            for received in frames.values():
                del received[:warmup]

            titles = [f"counted {tag} {index}" for index in range(writes)]
            monitor = await Monitor(redis_port).start()
            for index, title in enumerate(titles):
                # One event at a time: its payload is the row as committed by this write (the relay
                # reads the row when it publishes; a write that came meanwhile would show instead).
                await patch(title)
                await _wait_for(frames, index + 1, timeout)
            writing = await monitor.stop()

            monitor = await Monitor(redis_port).start()
            await asyncio.sleep(writing.seconds if idle is None else idle)
            quiet_window = await monitor.stop()
            await asyncio.sleep(quiet)  # anything else that would still arrive
        finally:
            for reader in readers:
                reader.cancel()
            for socket in sockets:
                await socket.__aexit__(None, None, None)
    return Measurement(
        "task and its project's task list" if collection else "task only",
        task,
        project,
        writes,
        len(targets),
        writing,
        quiet_window,
        titles,
        frames,
    )


def problems(measurement: Measurement) -> list[str]:
    """How the frames differ from one ``UPDATE_TASK`` per write per socket, each with the title written."""
    found = []
    for name, received in measurement.frames.items():
        seen = [(frame.get("type"), (frame.get("payload") or {}).get("title")) for frame in received]
        expected = [("UPDATE_TASK", title) for title in measurement.titles]
        if seen != expected:
            found.append(f"{measurement.case}, socket on the {name}: expected {expected}, received {seen}")
    return found


# The report ----------------------------------------------------------------------------


def _per(count: int, units: int) -> str:
    return f"{count / units:.2f}"


def table(measurement: Measurement) -> str:
    """The commands of one case: per event and per target per event, sent apart from run inside scripts."""
    window, events, targets = measurement.writing, measurement.events, measurement.targets
    rows = ["| command | counted as | in all | per event | per target per event |", "|---|---|---|---|---|"]
    for name, count in sorted(window.per_event_sent.items()):
        rows.append(f"| `{name}` | sent | {count} | {_per(count, events)} | {_per(count, events * targets)} |")
    sent = sum(window.per_event_sent.values())
    rows.append(f"| **all** | **sent** | {sent} | {_per(sent, events)} | **{_per(sent, events * targets)}** |")
    for name, count in sorted(window.in_scripts.items()):
        rows.append(
            f"| `{name}` | inside a script | {count} | {_per(count, events)} | {_per(count, events * targets)} |"
        )
    inside = sum(window.in_scripts.values())
    rows.append(
        f"| **all** | **inside scripts** | {inside} | {_per(inside, events)} | **{_per(inside, events * targets)}** |"
    )
    return "\n".join(rows)


def periodic_table(measurements: list[Measurement]) -> str:
    """Commands that come on a timer: in each write window (left out above) and each idle window."""
    rows = ["| case | window | seconds | commands sent | inside scripts |", "|---|---|---|---|---|"]
    for measurement in measurements:
        for name, window, commands in [
            ("writes", measurement.writing, measurement.writing.periodic),
            ("idle", measurement.idle, measurement.idle.sent),
        ]:
            listed_commands = ", ".join(f"`{label}` × {count}" for label, count in sorted(commands.items())) or "none"
            inside = sum(window.in_scripts.values()) if name == "idle" else "–"
            rows.append(f"| {measurement.case} | {name} | {window.seconds:.1f} | {listed_commands} | {inside} |")
    return "\n".join(rows)


EXPLAINED = (
    "What each command is. `EVALSHA claim_all` (`_CLAIM_ALL` in notifications/redis_store.py, one call per "
    "shard for all the streams a transaction concerns) drops expired subscribers from each stream's `S:subs` "
    "sorted set, reads who is left and, if anyone, takes the stream's hold (`SET S:hold NX PX`) and reads the "
    "subscriber-set version (`HGET S:seq ver`): a target nobody subscribes to costs its share of this one call "
    "and nothing else. The same script for one stream, called again until the hold is free, is how the relay "
    "claims a stream another relay held at the first call's time, or decides again. `EVALSHA commit` (`_COMMIT`) "
    "checks and drops the hold, checks the version, reads the epoch, takes the next seq (`HINCRBY`), appends "
    "the event to the history (`XADD ... MAXLEN ~`), renews the keys' TTLs (`EXPIRE`) and publishes it on the "
    "stream's channel (`PUBLISH`), which the servers' pub/sub connections receive without sending anything. "
    "A task's write concerns three streams: the task's, its project's task list's and the unfiltered task "
    "list's (`{}`, `Registration.collections_of`). `EVALSHA release` (not seen here) gives a hold back when "
    "the subscribers got nothing. The periodic commands are the pub/sub keep-alive `PING`, the registration "
    "refresh (`ZADD ... GT` and `EXPIRE` of `S:subs`, `EXPIRE ... GT` of `S:seq`, per stream and user) and "
    "the socket-lease renewal (`ZADD` and `EXPIRE` of `drf-live:sockets:<user>`, per socket)."
)


#: Issue 15's goal: commands sent per target per event in the steady state.
GOAL = 3


def verdict(measurement: Measurement) -> str:
    """The case against the goal, and the claims that found nobody subscribed."""
    sent, _ = measurement.writing.per_target(measurement.events, measurement.targets)
    claims = sum(
        count for name, count in measurement.writing.per_event_sent.items() if name.startswith("EVALSHA claim")
    )
    commits = sum(
        count for name, count in measurement.writing.per_event_sent.items() if name.startswith("EVALSHA commit")
    )
    return (
        f"- {sent:.2f} commands sent per target per event: goal (≤ {GOAL}) {'met' if sent <= GOAL else '**missed**'}. "
        f"{claims / measurement.events:g} claim calls per event (`claim_all`, one per shard, and `claim`); "
        f"{commits / measurement.events:g} events committed per write."
    )


def section(measurements: list[Measurement], command: str, database: str) -> str:
    """The "Redis commands per event" section of docs/benchmarks.md."""
    parts = [
        "## Redis commands per event",
        "",
        f"Generated by `{command}` (`bench/redis_commands.py`): one drf-live server (uvicorn, the example "
        f"project, `REDIS_URL` on its own `redis-server`), {database}, the demo data, real WebSocket clients "
        "(alice) and REST `PATCH`es of a task's title. Counted with `MONITOR` after 3 warm-up writes, from the "
        "first write until every socket received every event: **sent** is a line of a process's command (a "
        "script call, `EVALSHA`, counts once), **inside a script** a `[0 lua]` line. Commands that come on a "
        "timer are not per event: they are left out of these tables and listed below, with those of an idle "
        "window (sockets open, nothing written) of the same length. Issue 15's goal: at most 3 commands sent "
        "per target per event.",
        "",
    ]
    for measurement in measurements:
        parts += [
            f"**{measurement.case.capitalize()}**: {measurement.events} writes, {measurement.targets} "
            f"subscribed target{'s' if measurement.targets > 1 else ''} per event.",
            "",
            table(measurement),
            "",
            verdict(measurement),
            "",
        ]
    parts += [
        "Periodic commands, seen in the write window (left out above) and in an idle window:",
        "",
        periodic_table(measurements),
        "",
        "Their periods: "
        + "; ".join(f"`{name}`: {where}" for name, where in PERIODIC.items() if "same" not in where)
        + ".",
        "",
        EXPLAINED,
        "",
    ]
    return "\n".join(parts)


HEADING = "## Redis commands per event"
#: The sections of docs/benchmarks.md this one goes before, the first found.
BEFORE = ("## Scale-out", "## Estimate for")


def extract_section(document: str, heading: str = HEADING) -> str | None:
    """The section ``heading`` ("Redis commands per event") of ``document`` (up to the next heading), if any."""
    start = document.find(f"\n{heading}\n")
    if start < 0:
        return None
    end = document.find("\n## ", start + 1)
    return document[start + 1 : end + 1 if end >= 0 else len(document)]


def insert_section(document: str, text: str, heading: str = HEADING) -> str:
    """``document`` with ``text`` as its section ``heading``: in place, or before "Scale-out"."""
    text = text.rstrip("\n") + "\n\n"
    old = extract_section(document, heading)
    if old is not None:
        return document.replace(old, text, 1)
    for before in BEFORE:
        at = document.find(f"\n{before}")
        if at >= 0:
            return document[: at + 1] + text + document[at + 1 :]
    return document.rstrip("\n") + "\n\n" + text


# The run -------------------------------------------------------------------------------


async def run(writes: int, idle: float | None) -> tuple[list[Measurement], str]:
    processes = Processes()
    database = None
    redis = None
    try:
        redis = Redis(processes).start()
        database = Database(prefix="drf_live_redis_commands")
        env = django_env(database.url, redis.url, debug=False)
        for args in (["migrate", "--noinput"], ["load_demo", "--quiet"]):
            subprocess.run([PYTHON, MANAGE, *args], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
        server = Server(SERVERS["drf-live"], processes, database.url, redis.url, "redis-commands").start()
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            reply = await http.post("/api/auth/token/", json={"username": "alice", "password": DEMO_PASSWORD})
            token = str(reply.raise_for_status().json()["token"])
        measurements = [
            await measure(
                redis.port, server.http_url, server.ws_url, token, writes=writes, collection=collection, idle=idle
            )
            for collection in (True, False)
        ]
        errors = server.log_errors()
        if errors:
            raise RuntimeError("The server logged errors:\n" + "\n".join(errors[-20:]))
        return measurements, database.kind
    finally:
        processes.close()
        if redis is not None:
            redis.remove_dir()
        if database is not None:
            database.drop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_commands", description=__doc__)
    parser.add_argument("--writes", type=int, default=50, help="counted writes per case")
    parser.add_argument(
        "--idle", type=float, default=None, help="seconds of the idle window (default: as long as the writes took)"
    )
    parser.add_argument(
        "--output",
        default="",
        help="also write the section (markdown) to this file; into an existing one (docs/benchmarks.md) "
        "as its section, in place of the old one or before the scale-out section",
    )
    args = parser.parse_args(argv)
    command = "python -m bench.redis_commands " + shlex.join(argv) if argv else "python -m bench.redis_commands"
    measurements, database = asyncio.run(run(args.writes, args.idle))
    text = section(measurements, command.strip(), database)
    print(text)
    if args.output:
        # Into an existing document (docs/benchmarks.md), as its section; else a file of its own.
        output = ROOT / args.output
        output.write_text(insert_section(output.read_text(), text) if output.exists() else text)
    found = [problem for measurement in measurements for problem in problems(measurement)]
    for problem in found:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
