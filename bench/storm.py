"""Scenario E, the restart storm: N subscribed sockets through a SIGKILL and restart of the drf-live server.

``python -m bench.storm --sockets N`` (``python -m bench --scenarios E`` runs it
too, with ``--storm-sockets``). In one run:

1. **Fresh subscribe storm.** N sockets connect, authenticate (an
   ``authenticate`` frame, as the JS client does) and subscribe, against the
   plain Channels consumer (``bench/plain_app.py``: a token lookup and
   ``group_add``) and then against drf-live (the REST API's access checks, the
   snapshot, the Redis registration); py-spy records both servers meanwhile.
2. **Restart storm.** Those drf-live sockets stay (a quarter subscribed to a
   project's tasks, the rest to one task each; 25 sockets per user). A writer
   PATCHes task titles through the server, each to a value of its own, and
   retries a write that fails until it is answered. After ``--before`` seconds
   the server is killed with SIGKILL and restarted on the same port; every
   socket reconnects with the JS client's backoff and jitter and resubscribes
   with ``since`` and ``epoch`` (``bench/storm_clients.py``). The writer goes on
   for ``--after`` seconds once every socket is subscribed again.
3. **Verification.** Every socket's state for its target must equal the rows
   as ``GET`` shows them; a seq received twice is a duplicate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devtools.servers import PYTHON, ROOT, listening

from . import report
from .scenarios import SOCKETS_PER_USER, Bench, Config, start_piped
from .servers import LOGS, SERVERS, STARTUP_TIMEOUT, Process, Server, ServerKind

TASKS_PER_PROJECT = 10
CONVERGE_TIMEOUT = 90.0
COLLECTION_EVERY = 4  # every 4th socket subscribes to a project's tasks, the others to one task

# Where the drf-live server's time goes during the fresh subscribe storm (first match wins).
SUBSCRIBE_BUCKETS = [
    (
        "token lookup: `authenticate_token` (DRF's `TokenAuthentication`, one query) or the process's memory of it",
        ["authenticate_token", "Hub.user_of_token"],
    ),
    (
        "access check and snapshot, in one trip (`admit`: the viewset's queryset, permissions and serializer; "
        "`look_up_together`: the objects the subscribes of one user in the trip name, read together)",
        ["NotificationConsumer.admit (", "NotificationConsumer._read_snapshot (", "_look_up_together ("],
    ),
    (
        "checking the request's shape (`SubscriptionSerializer`, no database)",
        ["._validate (", "._validated (", "SubscriptionSerializer"],
    ),
    ("the rest of a trip to the database thread (`notifications/trips.py`, asgiref)", ["trips.py", "asgiref/"]),
    (
        "Redis register: `hub.join` (the group), `store.register` (seq, position, sockets per user)",
        ["_register (", "Hub.join", "Hub.track", "redis/", "channels_redis/"],
    ),
    ("the rest of the subscribe (frames, replies, the replay)", ["NotificationConsumer"]),
    (
        "the handshake: uvicorn's HTTP and WebSocket protocol, drf-live's handshake checks",
        ["uvicorn/", "websockets/", "notifications/handshake", "LiveAuthMiddleware"],
    ),
    ("other drf-live and Django code", ["notifications/", "django/", "rest_framework/"]),
]
# A thread blocked here waits for work (the relay between events); py-spy may sample it all the same.
WAITS = ("Condition.wait",)
PLAIN_BUCKETS = [
    ("token lookup: `user_of` (one query)", ["user_of"]),
    ("`group_add` (channels_redis)", ["group_add", "channels_redis/", "redis/"]),
    ("the handshake: uvicorn's HTTP and WebSocket protocol", ["uvicorn/", "websockets/"]),
    ("other Channels and Django code", ["channels/", "django/", "asgiref/"]),
]


@dataclass
class StormConfig:
    sockets: int = 10000
    clients: int = 2  # client processes
    rate: float = 20.0  # PATCHes per second
    before: float = 3.0  # seconds of writes before the kill
    after: float = 5.0  # seconds of writes after every socket is back
    timeout: float = 300.0  # seconds every socket may take to come back
    profile: bool = True
    database_url: str = ""
    live_settings: str = ""  # JSON: DRF_LIVE settings of the drf-live server, over the per-address cap below


#: The DRF_LIVE settings of the drf-live server (``server_on``), with ``--live-settings`` applied by ``run``.
LIVE_SETTINGS: dict[str, Any] = {"MAX_UNAUTHENTICATED_SOCKETS_PER_ADDRESS": 100}


@dataclass
class StormResult:
    sockets: int
    status: str = "ok"
    fresh_plain_s: float | None = None
    fresh_live_s: float | None = None
    fresh_retries_plain: dict[str, int] = field(default_factory=dict)
    fresh_retries_live: dict[str, int] = field(default_factory=dict)
    down_s: float | None = None  # SIGKILL to listening again
    recovery_s: float | None = None  # listening again to every socket subscribed again
    recovered: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    converged_s: float | None = None  # last write to every socket holding the committed rows
    missed: int | None = None
    sockets_missing: int | None = None
    duplicates: int | None = None
    duplicates_max: int | None = None
    gaps: int = 0
    repeated_states: int = 0
    writes: int = 0
    writes_retried: int = 0
    write_attempts_failed: int = 0
    p99_before_ms: float | None = None
    p99_storm_ms: float | None = None
    p99_after_ms: float | None = None
    samples: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    example_missing: Any = None
    log_errors: list[str] = field(default_factory=list)


# Fixtures ------------------------------------------------------------------------


def fixtures(projects: int, users: int) -> None:
    """Users with tokens, ``projects`` projects of TASKS_PER_PROJECT tasks that every user is a member of."""
    import django

    django.setup()
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from api.models import Project, Task, User

    with transaction.atomic():
        members = User.objects.bulk_create(User(username=f"storm-{index:05d}") for index in range(users))
        tokens = [Token.objects.create(user=user).key for user in members]
        made = []
        for index in range(projects):
            project = Project.objects.create(name=f"Storm {index}", owner=members[0])
            project.members.add(*members[1:])
            Task.objects.bulk_create(Task(project=project, title=f"task {k}") for k in range(TASKS_PER_PROJECT))
            made.append(project)
    tasks = {str(p.pk): [str(pk) for pk in Task.objects.filter(project=p).values_list("pk", flat=True)] for p in made}
    print(json.dumps({"tokens": tokens, "projects": tasks}))


# The run -------------------------------------------------------------------------


class Clients:
    """The client processes of one server, sharing its sockets round-robin."""

    def __init__(self, bench: Bench, name: str, plan: dict[str, Any], count: int) -> None:
        self.procs: list[Process] = []
        self.state: list[dict[str, Any]] = []
        self.replies: list[list[dict[str, Any]]] = []
        for index in range(count):
            part = dict(plan, sockets=plan["sockets"][index::count])
            path = bench.run_dir / f"{name}-{index}.json"
            path.write_text(json.dumps(part))
            argv = [PYTHON, "-m", "bench.storm_clients", "--plan", str(path)]
            self.procs.append(bench.processes.add(Process(f"{name}-{index}", argv, pipes=True)))
            self.state.append({})
            self.replies.append([])

    def start(self) -> Clients:
        start_piped(self.procs, self._listen)
        return self

    def _listen(self, index: int, proc: Process) -> None:
        assert proc.popen is not None and proc.popen.stdout is not None
        for line in proc.popen.stdout:
            message = json.loads(line)
            if message["event"] in ("ready", "verified"):
                self.replies[index].append(message)
            else:
                self.state[index] = message

    def wait(self, event: str, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [next((m for m in replies if m["event"] == event), None) for replies in self.replies]
            if all(found):
                return [m for m in found if m is not None]
            for proc in self.procs:
                if not proc.alive():
                    raise RuntimeError(f"a client process exited; see {proc.log_path}:\n{proc.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"the clients did not answer {event!r} within {timeout:.0f} s")

    def verify(self, path: Path) -> list[dict[str, Any]]:
        for replies in self.replies:
            replies.clear()
        self.tell(f"verify {path}")
        return self.wait("verified", 120)

    def tell(self, line: str) -> None:
        for proc in self.procs:
            assert proc.popen is not None and proc.popen.stdin is not None
            proc.popen.stdin.write(line.encode() + b"\n")
            proc.popen.stdin.flush()

    def total(self, key: str) -> float:
        return sum(state.get(key, 0) for state in self.state)

    def stop(self) -> None:
        try:
            self.tell("stop")
        except OSError:
            pass
        for proc in self.procs:
            proc.stop()


class Writer(threading.Thread):
    """PATCHes task titles through the server at ``rate``; a failed write is retried until it is answered."""

    def __init__(self, url: str, token: str, tasks: list[str], tag: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.tasks, self.tag, self.rate = url, token, tasks, tag, rate
        self.stopping = threading.Event()
        self.writes = self.retried = self.failed_attempts = 0

    def run(self) -> None:
        import httpx

        headers = {"Authorization": f"Token {self.token}"}
        due = time.monotonic()
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            while not self.stopping.is_set():
                index = self.writes
                task = self.tasks[(index * 7919) % len(self.tasks)]
                title = f"b-{self.tag}-{time.time_ns()}-{index}"  # the first attempt's time: latency counts retries
                attempts = 0
                while True:
                    attempts += 1
                    try:
                        if http.patch(f"/api/tasks/{task}/", json={"title": title}).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    self.failed_attempts += 1
                    time.sleep(0.05)
                self.writes += 1
                self.retried += attempts > 1
                due = max(due + 1 / self.rate, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))


def kill(server: Server) -> None:
    assert server.process.popen is not None
    os.killpg(server.process.popen.pid, signal.SIGKILL)
    server.process.popen.wait()


def server_on(bench: Bench, kind: ServerKind, tag: str, port: int | None = None) -> Server:
    """``kind`` on ``port`` (or a free one), not started yet.

    All the clients come from 127.0.0.1, where a deployment's clients come from
    many addresses: drf-live's per-address cap of unauthenticated sockets is set
    to its per-process cap (``MAX_UNAUTHENTICATED_SOCKETS``, 100, kept as shipped).
    """
    assert bench.database is not None and bench.redis is not None
    server = Server(kind, bench.processes, bench.database.url, bench.redis.url, tag)
    if port is not None:
        server.port = port
        server.process.argv = kind.argv(port, bench.redis.url)
    assert server.process.env is not None
    server.process.env["DRF_LIVE"] = json.dumps(LIVE_SETTINGS)
    return server


def restart(bench: Bench, kind: ServerKind, port: int, tag: str) -> Server:
    """The server again on ``port`` (Redis is not flushed); it returns as soon as the port listens."""
    server = server_on(bench, kind, tag, port)
    server.process.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not listening(port):
        if time.monotonic() > deadline or not server.process.alive():
            raise RuntimeError(f"the restarted server did not listen; see {server.process.log_path}")
        time.sleep(0.01)
    return server


def truth(http_url: str, token: str, projects: dict[str, list[str]]) -> dict[str, Any]:
    """The committed rows as ``GET`` shows them: every task, and each project's task ids."""
    import httpx

    tasks: dict[str, Any] = {}
    members: dict[str, list[str]] = {}
    with httpx.Client(base_url=http_url, headers={"Authorization": f"Token {token}"}, timeout=30) as http:
        for project in projects:
            response = http.get("/api/tasks/", params={"project": project})
            response.raise_for_status()
            rows = response.json()["results"]
            members[project] = [row["id"] for row in rows]
            tasks.update((row["id"], row) for row in rows)
    return {"tasks": tasks, "projects": members}


def fresh(
    bench: Bench, kind: ServerKind, plan: dict[str, Any], config: StormConfig, retries: dict[str, int]
) -> tuple[Server, Clients, float]:
    """Start ``kind`` and N sockets on it; the seconds until every socket subscribed (retries in ``retries``)."""
    assert bench.redis is not None
    bench.redis.flush()
    server = server_on(bench, kind, "E").start()
    spy = bench.start_profile(server.pid, f"E-fresh-{kind.name}") if config.profile else None
    clients = Clients(
        bench, f"E-{kind.name}-clients", dict(plan, url=server.ws_url, protocol=kind.protocol), config.clients
    )
    clients.start()
    ready = clients.wait("ready", 600)
    if spy is not None:
        bench.stop_profile(spy)
    failed: dict[str, int] = {}
    for reply in ready:
        for reason, n in reply["failed"].items():
            failed[reason] = failed.get(reason, 0) + n
        for reason, n in reply["events"].items():
            retries[reason] = retries.get(reason, 0) + n
    if failed:
        raise RuntimeError(f"{kind.name}: sockets failed to subscribe: {failed}")
    return server, clients, max(reply["seconds"] for reply in ready)


def percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def run(config: StormConfig, log: Any = print) -> StormResult:
    if config.live_settings:
        LIVE_SETTINGS.update(json.loads(config.live_settings))
    n = config.sockets
    result = StormResult(sockets=n)
    bench = Bench(Config(database_url=config.database_url))
    tag = uuid.uuid4().hex[:8]
    try:
        log(f"Scenario E: {n:,} sockets; setting up Redis and the database; logs in {LOGS}")
        bench.setup_stores()
        users = max(1, math.ceil(n / SOCKETS_PER_USER))
        projects = max(2, math.ceil(n / 5 / TASKS_PER_PROJECT))
        out = bench.django(
            "-m", "bench.storm", "--fixtures", str(projects), str(users), env=bench.env("project.settings")
        )
        made = json.loads(out.strip().splitlines()[-1])
        tokens, by_project = made["tokens"], made["projects"]
        project_ids = list(by_project)
        tasks = [task for ids in by_project.values() for task in ids]
        sockets = [
            {
                "token": tokens[index % len(tokens)],
                "where": {"filter": {"project": project_ids[(index // COLLECTION_EVERY) % len(project_ids)]}}
                if index % COLLECTION_EVERY == COLLECTION_EVERY - 1
                else {"id": tasks[index % len(tasks)]},
            }
            for index in range(n)
        ]
        plan = {"tag": tag, "sockets": sockets}

        log("  fresh subscribe storm: plain Channels consumer")
        plain, plain_clients, result.fresh_plain_s = fresh(
            bench, SERVERS["channels"], plan, config, result.fresh_retries_plain
        )
        plain_clients.stop()
        plain.stop()
        log(f"    {result.fresh_plain_s:.2f} s")
        log("  fresh subscribe storm: drf-live")
        kind = SERVERS["drf-live"]
        server, clients, result.fresh_live_s = fresh(bench, kind, plan, config, result.fresh_retries_live)
        log(f"    {result.fresh_live_s:.2f} s ({result.fresh_live_s / result.fresh_plain_s:.2f}× plain Channels)")

        writer = Writer(server.http_url, tokens[0], tasks, tag, config.rate)
        writer.start()
        time.sleep(config.before)
        killed = time.time()
        kill(server)
        clients.tell(f"mark {killed}")
        server = restart(bench, kind, server.port, "E-restarted")
        listening_at = time.time()
        result.down_s = listening_at - killed
        log(f"  killed; listening again after {result.down_s:.2f} s")
        deadline = time.monotonic() + config.timeout
        while clients.total("again") < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n - clients.total('again'):.0f} sockets not back after {config.timeout:.0f} s")
            time.sleep(0.2)
        back = max(state["last_again"] for state in clients.state)
        result.recovery_s = back - listening_at
        log(f"  every socket subscribed again {result.recovery_s:.2f} s after the restart")
        time.sleep(config.after)
        writer.stopping.set()
        writer.join(60)
        result.writes, result.writes_retried = writer.writes, writer.retried
        result.write_attempts_failed = writer.failed_attempts
        # Compare with GET until every socket holds the committed rows, or CONVERGE_TIMEOUT after the last write
        # (longer than OUTBOX_LEASE, after which a sweep publishes what a killed process had leased).
        writes_done = time.monotonic()
        path = bench.run_dir / "truth.json"
        path.write_text(json.dumps(truth(server.http_url, tokens[0], by_project)))
        while True:
            verified = clients.verify(path)
            if not sum(v["missed"] for v in verified) or time.monotonic() - writes_done > CONVERGE_TIMEOUT:
                break
            time.sleep(1.0)
        result.converged_s = time.monotonic() - writes_done
        collect(result, verified, killed, back)
        result.log_errors = server.log_errors()
        clients.stop()
        server.stop()
        if result.missed or result.duplicates:
            result.status = f"{result.missed} missed, {result.duplicates} duplicated"
    except Exception as exc:  # noqa: BLE001 - reported as the result
        result.status = f"failed: {exc}"
    finally:
        bench.close()
    return result


def collect(result: StormResult, verified: list[dict[str, Any]], killed: float, back: float) -> None:
    result.missed = sum(v["missed"] for v in verified)
    result.sockets_missing = sum(v["sockets_missing"] for v in verified)
    result.duplicates = sum(v["duplicates"] for v in verified)
    result.duplicates_max = max(v["duplicates_max"] for v in verified)
    result.gaps = sum(v["gaps"] for v in verified)
    result.repeated_states = sum(v["repeated_states"] for v in verified)
    result.reconnects = sum(v["reconnects"] for v in verified)
    result.recovered = {key: sum(v["recovered"][key] for v in verified) for key in ("true", "false")}
    for v in verified:
        for key, count in v["events"].items():
            result.events[key] = result.events.get(key, 0) + count
    result.example_missing = next((v["example_missing"] for v in verified if v["example_missing"]), None)
    pairs = np.concatenate([np.fromfile(v["latencies"], dtype=np.int64) for v in verified]).reshape(-1, 2)
    written, latency_ms = pairs[:, 0] / 1e9, pairs[:, 1] / 1000.0
    phases = {
        "before": latency_ms[written < killed],
        "storm": latency_ms[(written >= killed) & (written <= back)],
        "after": latency_ms[written > back],
    }
    result.p99_before_ms = percentile(phases["before"], 99)
    result.p99_storm_ms = percentile(phases["storm"], 99)
    result.p99_after_ms = percentile(phases["after"], 99)
    result.samples = {name: len(values) for name, values in phases.items()}


# The report ------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table(results: list[StormResult]) -> str:
    header = [
        "sockets",
        "fresh subscribe: plain Channels s",
        "drf-live s",
        "ratio",
        "down s",
        "restart → all back s",
        "recovered true / false",
        "last write → all equal GET s",
        "missed",
        "duplicated",
        "writes (retried)",
        "p99 ms before / storm / after",
        "status",
    ]
    rows = [
        [
            f"{r.sockets:,}",
            fmt(r.fresh_plain_s),
            fmt(r.fresh_live_s),
            report.ratio(r.fresh_live_s, r.fresh_plain_s),
            fmt(r.down_s),
            fmt(r.recovery_s),
            f"{r.recovered.get('true', 0):,} / {r.recovered.get('false', 0):,}",
            fmt(r.converged_s, 1),
            f"{r.missed}",
            f"{r.duplicates}",
            f"{r.writes:,} ({r.writes_retried})",
            f"{fmt(r.p99_before_ms, 1)} / {fmt(r.p99_storm_ms, 1)} / {fmt(r.p99_after_ms, 1)}",
            r.status,
        ]
        for r in results
    ]
    return report.md_table(header, rows)


def profiles() -> str:
    live = report.profile_summary(
        LOGS / "profile-E-fresh-drf-live.txt",
        buckets_of=SUBSCRIBE_BUCKETS,
        what="samples of the drf-live server's threads (event loop and database threads) while the N sockets "
        "connected, authenticated and subscribed",
        waits=WAITS,
    )
    plain = report.profile_summary(
        LOGS / "profile-E-fresh-channels.txt",
        top=8,
        buckets_of=PLAIN_BUCKETS,
        what="samples of the plain Channels server's threads during its storm",
        waits=WAITS,
    )
    return "\n\n".join(part for part in [live, plain] if part)


def details(r: StormResult) -> list[str]:
    lines = [
        f"{r.sockets:,} sockets: {r.reconnects:,} reconnects; latency samples before/storm/after: "
        f"{r.samples.get('before', 0):,} / {r.samples.get('storm', 0):,} / {r.samples.get('after', 0):,}; "
        f"seq gaps answered with a resubscribe: {r.gaps}; events repeating a state already shown "
        f"(allowed by docs/protocol.md): {r.repeated_states}; failed write attempts: {r.write_attempts_failed}",
    ]
    for name, retries in [("plain Channels", r.fresh_retries_plain), ("drf-live", r.fresh_retries_live)]:
        if retries:
            lines.append(
                f"fresh storm on {name}, attempts retried: " + ", ".join(f"{k} × {v:,}" for k, v in retries.items())
            )
    if r.events:
        lines.append("client-side events: " + ", ".join(f"{k} × {v:,}" for k, v in sorted(r.events.items())))
    if r.example_missing:
        lines.append(f"a socket whose state differs from GET: `{json.dumps(r.example_missing)[:400]}`")
    if r.log_errors:
        lines.append(f"server log: {len(r.log_errors)} error lines, first: `{r.log_errors[0][:200]}`")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fixtures"]:
        fixtures(int(argv[1]), int(argv[2]))
        return 0
    defaults = StormConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__)
    parser.add_argument("--sockets", type=int, default=defaults.sockets)
    parser.add_argument("--clients", type=int, default=defaults.clients, help="client processes")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="PATCHes per second")
    parser.add_argument("--before", type=float, default=defaults.before, help="seconds of writes before the kill")
    parser.add_argument("--after", type=float, default=defaults.after, help="seconds of writes after recovery")
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True, help="py-spy the servers")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""))
    parser.add_argument("--output", default="", help="the results as JSON (default test-output/bench/storm-N.json)")
    parser.add_argument(
        "--live-settings",
        default="",
        help="JSON: DRF_LIVE settings of the drf-live server, e.g. '{\"MAX_UNAUTHENTICATED_SOCKETS\": null}'",
    )
    args = parser.parse_args(argv)
    config = StormConfig(**{name: getattr(args, name) for name in StormConfig.__dataclass_fields__})
    result = run(config)
    output = Path(args.output) if args.output else LOGS / f"storm-{config.sockets}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(result), indent=1, default=str))
    print("\n" + table([result]) + "\n")
    print("\n".join(f"- {line}" for line in details(result)))
    if config.profile:
        print("\n" + profiles())
    print(f"\nWrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
