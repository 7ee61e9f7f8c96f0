"""The scenarios (A to D of issue 5, plus the scale-out run) and the measurements taken around them.

A ``Bench`` owns the shared parts (Redis, the database, the fixtures); each
``run_*`` method starts one fresh server, connects the client processes,
drives the writes, measures and stops it again, returning a ``Result``.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devtools.servers import PYTHON, ROOT, Database, django_env

from .servers import (
    LOGS,
    Process,
    Processes,
    Redis,
    Server,
    ServerKind,
    cpu_seconds,
    raise_open_file_limit,
)

# drf-live (as shipped) closes a user's 51st socket in one process with 4029: the clients
# spread their sockets over users, this many each.
SOCKETS_PER_USER = 25


@dataclass
class Config:
    """Sizes and limits; the defaults are issue 5's full size."""

    servers: list[str] = field(default_factory=lambda: ["drf-live", "dcrf", "channels", "websockets"])
    scenarios: list[str] = field(default_factory=lambda: ["A", "B", "C", "D", "scale"])
    rate: float = 100.0  # writes per second
    clients: int = 2  # client processes
    a_sockets: int = 1000
    a_writes: int = 200
    b_sockets: int = 1000
    b_objects: int = 1000
    b_per_socket: int = 10
    b_writes: int = 2000
    c_sockets: int = 10000
    d_patches: int = 300
    d_subscribers: int = 1000
    timeout: float = 180.0  # seconds a delivery phase may take after the first write
    idle: float = 20.0  # seconds without a new delivery, after the last write, that end a phase
    connect_timeout: float = 300.0
    profile: bool = False  # py-spy the drf-live server in an extra run of scenario A
    profile_writer: bool = False  # py-spy the writer process (drf-live: its relay thread) during A and B's writes
    database_url: str = ""

    def scaled(self, scale: float) -> Config:
        for name in ["a_sockets", "a_writes", "b_sockets", "b_writes", "c_sockets", "d_patches", "d_subscribers"]:
            setattr(self, name, max(1, int(getattr(self, name) * scale)))
        self.b_objects = max(self.b_per_socket, int(self.b_objects * scale))
        return self


@dataclass
class Result:
    scenario: str
    server: str
    label: str
    sockets: int = 0
    failed_sockets: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    connect_s: float = 0.0
    expected: int = 0
    received: int = 0
    duplicates: int = 0
    seq_gaps: int = 0
    seq_regressions: int = 0
    error_frames: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    deliveries_per_s: float = 0.0
    server_cpu_s: float = 0.0
    cpu_us_per_delivery: float | None = None
    redis_cpu_us_per_delivery: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_before: int = 0
    rss_after: int = 0
    rss_per_socket: float | None = None
    redis_per_socket: float | None = None
    patch_p50_ms: float | None = None
    patch_p99_ms: float | None = None
    patches: int = 0
    writer: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    log_errors: list[str] = field(default_factory=list)
    latencies_ms: Any = None  # numpy array, for the plot; not saved


# Client processes -------------------------------------------------------------


def start_piped(procs: list[Process], listen: Callable[[int, Process], None]) -> None:
    """Start client processes, each with a thread reading its stdout lines into ``listen(index, proc)``."""
    for index, proc in enumerate(procs):
        proc.start()
        threading.Thread(target=listen, args=(index, proc), daemon=True).start()


class ClientGroup:
    """``count`` client processes sharing the sockets of one phase round-robin."""

    def __init__(
        self,
        processes: Processes,
        run_dir: Path,
        name: str,
        protocol: str,
        url: str,
        tokens: list[str],
        sockets: list[list[str]],
        tag: str,
        count: int,
        deflate: bool = False,
    ) -> None:
        count = max(1, min(count, len(sockets)))
        self.sockets = sockets
        self.parts = [list(range(index, len(sockets), count)) for index in range(count)]
        self.outs: list[Path] = []
        self.procs: list[Process] = []
        self.state: list[dict[str, Any]] = [{"received": 0} for _ in range(count)]
        for index, part in enumerate(self.parts):
            plan = run_dir / f"{name}-clients-{index}.json"
            plan.write_text(
                json.dumps(
                    {
                        "tag": tag,
                        "deflate": deflate,
                        "sockets": [sockets[i] for i in part],
                        # Socket i authenticates as user i mod len(tokens): fewer than MAX_SOCKETS_PER_USER each.
                        "tokens": [tokens[i % len(tokens)] for i in part] if tokens else [],
                    }
                )
            )
            out = run_dir / f"{name}-clients-{index}.out.json"
            argv = [
                PYTHON,
                "-m",
                "bench.clients",
                "--protocol",
                protocol,
                "--url",
                url,
                "--plan",
                str(plan),
                "--out",
                str(out),
            ]
            self.outs.append(out)
            self.procs.append(processes.add(Process(f"{name}-clients-{index}", argv, env=None, pipes=True)))

    def start(self) -> ClientGroup:
        start_piped(self.procs, self._listen)
        return self

    def _listen(self, index: int, proc: Process) -> None:
        assert proc.popen is not None and proc.popen.stdout is not None
        for line in proc.popen.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message["event"] == "ready":
                self.state[index]["ready"] = message
            elif message["event"] == "progress":
                self.state[index]["received"] = message["received"]
            elif message["event"] == "done":
                self.state[index]["done"] = True

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("ready" in state for state in self.state):
                break
            for proc in self.procs:
                if not proc.alive():
                    raise RuntimeError(f"A client process exited; see {proc.log_path}:\n{proc.log_tail()}")
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the clients did not connect and subscribe within {timeout:.0f} s")
        ready = [state["ready"] for state in self.state]
        failed_indexes = {part[i] for part, r in zip(self.parts, ready, strict=False) for i in r["failed_indexes"]}
        failures: dict[str, int] = {}
        for r in ready:
            for reason, n in r["failures"].items():
                failures[reason] = failures.get(reason, 0) + n
        return {
            "sockets": sum(r["sockets"] for r in ready),
            "failed": len(failed_indexes),
            "failed_indexes": failed_indexes,
            "failures": failures,
            "seconds": max(r["seconds"] for r in ready),
        }

    def received(self) -> int:
        return sum(state["received"] for state in self.state)

    def stop(self, timeout: float = 60.0) -> tuple[dict[str, Any], np.ndarray]:
        for proc in self.procs:
            if proc.alive() and proc.popen is not None and proc.popen.stdin is not None:
                try:
                    proc.popen.stdin.write(b"stop\n")
                    proc.popen.stdin.flush()
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            assert proc.popen is not None
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.stop()
        totals: dict[str, Any] = {
            "received": 0,
            "duplicates": 0,
            "seq_gaps": 0,
            "seq_regressions": 0,
            "errors": 0,
            "other_frames": 0,
            "closed": {},
            "first_ns": 0,
            "last_ns": 0,
        }
        latencies = []
        for out in self.outs:
            if not out.exists():
                continue
            summary = json.loads(out.read_text())
            for key in ["received", "duplicates", "seq_gaps", "seq_regressions", "errors", "other_frames"]:
                totals[key] += summary[key]
            for code, n in summary["closed"].items():
                totals["closed"][code] = totals["closed"].get(code, 0) + n
            if summary["first_ns"]:
                totals["first_ns"] = min(filter(None, [totals["first_ns"], summary["first_ns"]]))
            totals["last_ns"] = max(totals["last_ns"], summary["last_ns"])
            latencies.append(np.fromfile(str(out) + ".lat", dtype=np.int64))
        merged = np.concatenate(latencies) / 1000.0 if latencies else np.array([])
        for proc in self.procs:
            proc.stop()
        return totals, merged


# The bench -------------------------------------------------------------------


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.processes = Processes()
        self.run_dir = Path(tempfile.mkdtemp(prefix="drf-live-bench-"))
        self.redis: Redis | None = None
        self.database: Database | None = None
        self.tokens: list[str] = []
        self.tasks: list[str] = []
        self.results: list[Result] = []

    # Shared parts ---------------------------------------------------------------

    def setup(self) -> None:
        self.setup_stores()
        # Created without drf-live, so that no create event is published.
        objects = max(self.config.b_objects, 1)
        most = max(self.config.a_sockets, self.config.b_sockets, self.config.c_sockets, self.config.d_subscribers)
        users = max(1, -(-most // SOCKETS_PER_USER))
        out = self.django("-m", "bench.fixtures", str(objects), str(users), env=self.env("bench.settings_nolive"))
        fixtures = json.loads(out.strip().splitlines()[-1])
        self.tokens, self.tasks = fixtures["tokens"], fixtures["tasks"]

    def setup_stores(self) -> None:
        """Redis and the migrated database, without the fixtures (scenario E makes its own)."""
        raise_open_file_limit()
        self.redis = Redis(self.processes).start()
        self.database = Database(self.config.database_url, prefix="drf_live_bench")
        self.django("manage.py", "migrate", "--noinput", env=self.env("project.settings"))

    def env(self, settings: str) -> dict[str, str]:
        assert self.redis is not None and self.database is not None
        return django_env(self.database.url, self.redis.url, settings=settings, debug=False)

    def django(self, *args: str, env: dict[str, str]) -> str:
        result = subprocess.run([PYTHON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def close(self) -> None:
        self.processes.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.redis is not None:
            self.redis.remove_dir()
        if self.database is not None:
            self.database.drop()

    # Building blocks ----------------------------------------------------------

    def start_server(self, kind: ServerKind, tag: str, env: dict[str, str] | None = None) -> Server:
        assert self.redis is not None and self.database is not None
        self.redis.flush()
        return Server(kind, self.processes, self.database.url, self.redis.url, tag, env).start()

    def clients(
        self, server: Server, name: str, sockets: list[list[Any]], tag: str, tokens: list[str] | None = None
    ) -> ClientGroup:
        # Only drf-live checks who a socket is; the others get no credentials. Socket i signs in
        # as user i mod len(tokens) (the bench's users unless ``tokens`` names others).
        tokens = (self.tokens if tokens is None else tokens) if server.kind.protocol == "drf-live" else []
        return ClientGroup(
            self.processes,
            self.run_dir,
            name,
            server.kind.protocol,
            server.ws_url,
            tokens,
            sockets,
            tag,
            self.config.clients,
            deflate=server.kind.deflate,
        ).start()

    def writer(
        self, kind: ServerKind, name: str, ids: list[str], tag: str, env: dict[str, str] | None = None
    ) -> Process:
        plan = self.run_dir / f"{name}-writes.json"
        plan.write_text(json.dumps({"ids": ids, "rate": self.config.rate, "tag": tag}))
        argv = [PYTHON, "-m", "bench.writer", "--mode", kind.protocol, "--plan", str(plan)]
        return self.processes.add(
            Process(f"{name}-writer", argv, env={**self.env(kind.settings), **(env or {})})
        ).start()

    # Scenarios A and B (and scale-out): fan-out of writes --------------------------

    def run_fanout(
        self,
        scenario: str,
        kind: ServerKind,
        sockets: list[list[Any]],
        writes: list[str],
        profile: bool = False,
        *,
        name: str = "",
        tokens: list[str] | None = None,
        expected: Callable[[set[int]], int] | None = None,
        writer_env: dict[str, str] | None = None,
        server_env: dict[str, str] | None = None,
    ) -> Result:
        """Start ``kind``, subscribe ``sockets``, write ``writes``, measure the deliveries.

        By default every socket expects every write of a task it subscribed to;
        ``expected(failed socket indexes)`` counts otherwise (scenario F: who
        may see the task). ``tokens``, ``writer_env`` and ``server_env`` go to
        ``clients``, the writer's environment and the server's.
        """
        config = self.config
        assert self.redis is not None
        tag = uuid.uuid4().hex[:8]
        name = name or f"{scenario}-{kind.name}"
        result = Result(scenario, kind.name, kind.label)
        server = self.start_server(kind, scenario, server_env)
        mark = None
        try:
            group = self.clients(server, name, sockets, tag, tokens)
            ready = group.wait_ready(config.connect_timeout)
            result.sockets, result.failed_sockets = ready["sockets"], ready["failed"]
            result.failures, result.connect_s = ready["failures"], ready["seconds"]
            if expected is not None:
                result.expected = expected(ready["failed_indexes"])
            else:
                subscribers: dict[str, int] = {}
                for index, ids in enumerate(sockets):
                    if index not in ready["failed_indexes"]:
                        for task_id in ids:
                            subscribers[task_id] = subscribers.get(task_id, 0) + 1
                result.expected = sum(subscribers.get(task_id, 0) for task_id in writes)
            spy = self.start_profile(server.pid, name) if profile else None
            cpu_before, redis_before = server.cpu(), cpu_seconds(self.redis.process.pid)
            writer = self.writer(kind, name, writes, tag, writer_env)
            writer_spy = (
                self.start_profile(writer.pid, f"{name}-writer", threads=True) if config.profile_writer else None
            )
            result.status = self.wait_for_deliveries(group, writer, result.expected)
            result.server_cpu_s = server.cpu() - cpu_before
            redis_cpu = cpu_seconds(self.redis.process.pid) - redis_before
            mark = server.log_mark()
            if spy is not None:
                self.stop_profile(spy)
            if writer_spy is not None:
                self.stop_profile(writer_spy)
            writer_out = self.finish_writer(writer)
            totals, latencies = group.stop()
            self.fill_deliveries(result, totals, latencies, writer_out, redis_cpu)
        except Exception as exc:  # noqa: BLE001 - one server's failure is a result, not the end of the run
            result.status = f"failed: {exc}"
        finally:
            server.stop()
            result.log_errors = server.log_errors(mark)
        return result

    def wait_for_deliveries(self, group: ClientGroup, writer: Process, expected: int) -> str:
        config = self.config
        started = time.monotonic()
        last_count, last_change = -1, started
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            received = group.received()
            if received != last_count:
                last_count, last_change = received, now
            writing = writer.alive()
            if received >= expected and not writing:
                return "ok"
            if now - started > config.timeout:
                return f"did not finish in {config.timeout:.0f} s"
            if not writing and now - last_change > config.idle:
                return f"stalled: nothing delivered for {config.idle:.0f} s"

    def finish_writer(self, writer: Process) -> dict[str, Any]:
        assert writer.popen is not None
        try:
            writer.popen.wait(5)
        except subprocess.TimeoutExpired:
            writer.stop()
            return {"error": "still writing at the end of the phase"}
        writer.stop()
        for line in reversed(writer.log_tail(20000).splitlines()):
            if line.startswith("{"):
                return dict(json.loads(line))
        return {"error": writer.log_tail(1000)}

    def fill_deliveries(
        self, result: Result, totals: dict[str, Any], latencies: np.ndarray, writer: dict[str, Any], redis_cpu: float
    ) -> None:
        result.received = totals["received"]
        result.duplicates = totals["duplicates"]
        result.seq_gaps = totals["seq_gaps"]
        result.seq_regressions = totals["seq_regressions"]
        result.error_frames = totals["errors"]
        result.closed = totals["closed"]
        result.writer = writer
        if result.received:
            start_ns = writer.get("start_ns") or totals["first_ns"]
            result.elapsed_s = (totals["last_ns"] - start_ns) / 1e9
            result.deliveries_per_s = result.received / result.elapsed_s if result.elapsed_s > 0 else 0.0
            result.cpu_us_per_delivery = 1e6 * result.server_cpu_s / result.received
            result.redis_cpu_us_per_delivery = 1e6 * redis_cpu / result.received
            result.p50_ms = float(np.percentile(latencies, 50))
            result.p99_ms = float(np.percentile(latencies, 99))
            result.latencies_ms = latencies
        if result.status == "ok" and result.received < result.expected:
            result.status = f"{result.expected - result.received} missing"

    def start_profile(self, pid: int, name: str, threads: bool = False) -> subprocess.Popen[bytes]:
        """py-spy on ``pid`` into test-output/bench/profile-<name>.txt; ``threads``: per thread, idle time too."""
        out = LOGS / f"profile-{name}.txt"
        argv = [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            *(["--threads", "--idle"] if threads else []),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "-o",
            str(out),
        ]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(LOGS / f"profile-{name}.log").open("wb"))
        time.sleep(1.0)
        return spy

    def stop_profile(self, spy: subprocess.Popen[bytes]) -> None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()

    # The scenarios ------------------------------------------------------------

    def scenario_a(self, kind: ServerKind, profile: bool = False) -> Result:
        """One object, ``a_sockets`` subscribers, ``a_writes`` writes."""
        task = self.tasks[0]
        scenario = "A-profile" if profile else "A"
        return self.run_fanout(scenario, kind, [[task]] * self.config.a_sockets, [task] * self.config.a_writes, profile)

    def scenario_b(self, kind: ServerKind, scenario: str = "B") -> Result:
        """``b_sockets`` sockets, each subscribed to ``b_per_socket`` of ``b_objects`` objects; writes spread."""
        config = self.config
        objects = self.tasks[: config.b_objects]
        # Socket i takes objects i*k .. i*k+k-1 (mod n): every object gets the same number of subscribers.
        sockets = [
            [objects[(index * config.b_per_socket + k) % len(objects)] for k in range(config.b_per_socket)]
            for index in range(config.b_sockets)
        ]
        rng = random.Random(5)
        writes = [objects[index % len(objects)] for index in range(config.b_writes)]
        rng.shuffle(writes)
        return self.run_fanout(scenario, kind, sockets, writes)

    def scenario_c(self, kind: ServerKind) -> Result:
        """``c_sockets`` idle sockets, one subscription each: server (and Redis) memory per socket."""
        config = self.config
        assert self.redis is not None
        result = Result("C", kind.name, kind.label)
        server = self.start_server(kind, "C")
        mark = None
        try:
            # A few sockets first, so that lazy imports and first connections are not counted as per-socket cost.
            warm = self.clients(server, f"C-{kind.name}-warmup", [[self.tasks[0]]] * 10, "warmup")
            warm.wait_ready(config.connect_timeout)
            time.sleep(1.0)
            result.rss_before, redis_before = server.rss(), self.redis.used_memory()
            sockets = [[self.tasks[index % len(self.tasks)]] for index in range(config.c_sockets)]
            group = self.clients(server, f"C-{kind.name}", sockets, "idle")
            ready = group.wait_ready(config.connect_timeout)
            result.sockets, result.failed_sockets = ready["sockets"], ready["failed"]
            result.failures, result.connect_s = ready["failures"], ready["seconds"]
            time.sleep(2.0)
            result.rss_after, redis_after = server.rss(), self.redis.used_memory()
            mark = server.log_mark()
            if result.sockets:
                result.rss_per_socket = (result.rss_after - result.rss_before) / result.sockets
                result.redis_per_socket = (redis_after - redis_before) / result.sockets
            group.stop()
            warm.stop()
            if result.failed_sockets:
                result.status = f"{result.failed_sockets} sockets failed"
        except Exception as exc:  # noqa: BLE001
            result.status = f"failed: {exc}"
        finally:
            server.stop()
            result.log_errors = server.log_errors(mark)
        return result

    def scenario_d(self, kind: ServerKind, subscribers: int, split: bool = False) -> Result:
        """``d_patches`` sequential REST PATCHes of one task, with ``subscribers`` sockets subscribed to it.

        With ``split`` the sockets are served by a second server process (same
        settings, same Redis) and the PATCHes by the first, as a deployment
        that keeps REST and WebSocket traffic apart would run it.
        """
        import httpx

        config = self.config
        tag = uuid.uuid4().hex[:8]
        name = f"D-{kind.name}-{subscribers}" + ("-split" if split else "")
        label = f"{kind.label}, sockets on a second process" if split else kind.label
        result = Result("D", kind.name + ("-split" if split else ""), label, sockets=subscribers)
        task = self.tasks[0]
        server = self.start_server(kind, f"D{subscribers}")
        sockets_server = server
        group = None
        mark = None
        try:
            if split:
                assert self.redis is not None and self.database is not None
                sockets_server = Server(kind, self.processes, self.database.url, self.redis.url, "Dws").start()
            if subscribers:
                group = self.clients(sockets_server, name, [[task]] * subscribers, tag)
                ready = group.wait_ready(config.connect_timeout)
                result.sockets, result.failed_sockets = ready["sockets"], ready["failed"]
                result.expected = result.sockets * config.d_patches
            headers = {"Authorization": f"Token {self.tokens[0]}"}
            timings = []
            with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
                for index in range(-10, config.d_patches):  # 10 warm-up requests, not counted
                    title = f"b-{tag}-{time.time_ns()}-{index}" if index >= 0 else f"warm-up {index}"
                    began = time.perf_counter()
                    response = http.patch(f"/api/tasks/{task}/", json={"title": title})
                    elapsed = time.perf_counter() - began
                    if response.status_code != 200:
                        raise RuntimeError(f"PATCH answered {response.status_code}: {response.text[:300]}")
                    if index >= 0:
                        timings.append(elapsed * 1000)
            result.patches = len(timings)
            result.patch_p50_ms = float(np.percentile(timings, 50))
            result.patch_p99_ms = float(np.percentile(timings, 99))
            if group is not None:
                writer_stub = Process(f"{name}-none", ["true"])  # the PATCHes were the writes
                result.status = self.wait_for_deliveries(group, writer_stub, result.expected)
                mark = server.log_mark()
                totals, latencies = group.stop()
                self.fill_deliveries(result, totals, latencies, {}, 0.0)
                result.redis_cpu_us_per_delivery = None
                result.cpu_us_per_delivery = None
        except Exception as exc:  # noqa: BLE001
            result.status = f"failed: {exc}"
        finally:
            server.stop()
            result.log_errors = server.log_errors(mark if mark is not None else server.log_mark())
            if sockets_server is not server:
                sockets_server.stop()
                result.log_errors += sockets_server.log_errors()
        return result
