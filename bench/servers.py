"""The processes under test: Redis, a database, and the four WebSocket servers, each on a free port.

Every process is started by a ``Process`` and stopped by ``Processes.close()``
(SIGTERM, then SIGKILL), which the runner calls in a ``finally``, so Ctrl-C or a
failure leaves nothing behind. CPU time and RSS come from ``/proc``, summed over
the process and its children (uvicorn ``--workers``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from devtools.servers import PYTHON, ROOT, django_env, free_port, listening, redis_argv, redis_command

LOGS = ROOT / "test-output" / "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def raise_open_file_limit() -> int:
    """Soft limit of open files up to the hard limit (each process calls it for itself); the new limit."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# /proc ------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (threads' children included)."""
    pids = [pid]
    for index in range(len(pids) * 1000):
        if index >= len(pids):
            break
        try:
            tasks = os.listdir(f"/proc/{pids[index]}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{pids[index]}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            pids.extend(int(child) for child in children if int(child) not in pids)
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants (and the children they reaped)."""
    total = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields 14-17 of proc(5): utime, stime, cutime, cstime (counted after the ")" as 11-14).
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants."""
    total = 0
    for each in process_tree(pid):
        try:
            total += int(Path(f"/proc/{each}/statm").read_text().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


# Processes --------------------------------------------------------------------


class Process:
    """One child process with its log under test-output/bench/."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT, pipes: bool = False
    ) -> None:
        self.name = name
        self.pipes = pipes
        self.argv = argv
        self.env = env
        self.cwd = cwd
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> Process:
        self._log = self.log_path.open("wb")
        # With pipes, the runner talks to the process over stdin/stdout; stderr goes to the log.
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.pipes else self._log,
            stderr=self._log if self.pipes else subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            # The whole session: uvicorn --workers' children go too.
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Processes:
    """Everything started in one run, stopped in reverse order by ``close()``."""

    def __init__(self) -> None:
        self.items: list[Process] = []

    def add(self, process: Process) -> Process:
        self.items.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.items):
            process.stop()
        self.items.clear()


class Redis:
    """``redis-server`` without persistence, on 127.0.0.1 and a free port."""

    def __init__(self, processes: Processes) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not on PATH: apt-get install redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="drf-live-bench-redis-"))
        argv = redis_argv(executable, self.port, self.dir, extra=["--maxclients", "20000"])
        self.process = processes.add(Process(f"redis-{self.port}", argv, cwd=self.dir))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.command("PING").startswith("+PONG"):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer; see {self.process.log_path}")

    def command(self, *words: str) -> str:
        """A command in the inline protocol; the raw reply (enough for PING, FLUSHALL, INFO)."""
        return redis_command(self.port, *words)

    def remove_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def used_memory(self) -> int:
        for line in self.command("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        return 0

    def flush(self) -> None:
        self.command("FLUSHALL")


# The servers under test -------------------------------------------------------


@dataclass(frozen=True)
class ServerKind:
    """How to start one server under test and which wire protocol its clients speak."""

    name: str
    label: str
    app: str  # the ASGI application, or "" for the raw websockets server
    path: str  # the WebSocket path
    settings: str  # Django settings of the server and of its writer
    protocol: str  # drf-live, dcrf, channels or websockets (see clients and writer)
    workers: int = 1
    server: str = "uvicorn"  # or "daphne" (one of the levers measured for drf-live)
    deflate: bool = False  # permessage-deflate offered by the clients and accepted by the server

    def argv(self, port: int, redis_url: str) -> list[str]:
        if not self.app:
            return [PYTHON, "-m", "bench.raw_server", "--port", str(port), "--redis-url", redis_url]
        if self.server == "daphne":
            return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", self.app]
        # The README's command; access logs off for every server alike.
        argv = [
            PYTHON,
            "-m",
            "uvicorn",
            self.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            "websockets-sansio",
            "--ws-per-message-deflate",
            "true" if self.deflate else "false",
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
            "--timeout-graceful-shutdown",
            "2",
        ]
        if self.protocol == "drf-live":
            # As `make run` serves drf-live (and the REST API it is compared with):
            # a deadline for request headers, WebSocket pings.
            argv += ["--http", "notifications.handshake:HttpProtocol", "--timeout-keep-alive", "5"]
            argv += ["--ws-ping-interval", "20", "--ws-ping-timeout", "20"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        return argv


SERVERS: dict[str, ServerKind] = {
    kind.name: kind
    for kind in [
        ServerKind(
            "drf-live",
            "drf-live (as shipped)",
            "project.asgi:application",
            "/ws/notifications/",
            "project.settings",
            "drf-live",
        ),
        ServerKind(
            "dcrf",
            "djangochannelsrestframework 1.3",
            "bench.dcrf_app:application",
            "/ws/dcrf/",
            "bench.settings_nolive",
            "dcrf",
        ),
        ServerKind(
            "channels",
            "plain Channels consumer",
            "bench.plain_app:application",
            "/ws/plain/",
            "bench.settings_nolive",
            "channels",
        ),
        ServerKind("websockets", "raw websockets broadcast", "", "/", "bench.settings_nolive", "websockets"),
        # Issue item 3: one port, two processes, one Redis.
        ServerKind(
            "drf-live-2p",
            "drf-live, 2 processes (uvicorn --workers 2)",
            "project.asgi:application",
            "/ws/notifications/",
            "project.settings",
            "drf-live",
            workers=2,
        ),
        # Levers of issue 5, measured against drf-live as shipped: compression, another ASGI server.
        ServerKind(
            "drf-live-deflate",
            "drf-live, permessage-deflate on",
            "project.asgi:application",
            "/ws/notifications/",
            "project.settings",
            "drf-live",
            deflate=True,
        ),
        ServerKind(
            "drf-live-daphne",
            "drf-live on daphne",
            "project.asgi:application",
            "/ws/notifications/",
            "project.settings",
            "drf-live",
            server="daphne",
        ),
        # Issue 10: the task registration without its subscribable_by (the relay asks the viewset per user).
        ServerKind(
            "drf-live-undeclared",
            "drf-live, task registration without subscribable_by",
            "project.asgi:application",
            "/ws/notifications/",
            "bench.settings_undeclared",
            "drf-live",
        ),
        # Scenario D's baseline: the same REST API with "notifications" not installed.
        ServerKind(
            "no-drf-live",
            "REST API without drf-live",
            "project.asgi:application",
            "/ws/notifications/",
            "bench.settings_nolive",
            "drf-live",
        ),
    ]
}


class Server:
    """One server under test, started for one scenario and stopped after it."""

    def __init__(
        self,
        kind: ServerKind,
        processes: Processes,
        database_url: str,
        redis_url: str,
        tag: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.port = free_port()
        env = django_env(database_url, redis_url, settings=kind.settings, debug=False, **(env or {}))
        self.process = processes.add(Process(f"{kind.name}-{tag}-{self.port}", kind.argv(self.port, redis_url), env))

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.kind.path}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> Server:
        self.process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"{self.kind.name} exited; see {self.process.log_path}:\n{self.process.log_tail()}")
            if listening(self.port):
                # uvicorn --workers: the parent listens before every worker is up.
                time.sleep(1.0 if self.kind.workers > 1 else 0.1)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind.name} did not listen within {STARTUP_TIMEOUT} s")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        self.process.stop()

    def log_mark(self) -> int:
        """The log's size now: errors after it (clients vanishing at the end) are not the server's."""
        try:
            return self.process.log_path.stat().st_size
        except OSError:
            return 0

    def log_errors(self, upto: int | None = None) -> list[str]:
        """Lines of the server's log (up to byte ``upto``) that look like errors."""
        try:
            text = self.process.log_path.read_bytes()[:upto].decode(errors="replace")
        except OSError:
            return []
        return [
            line
            for line in text.splitlines()
            if any(word in line for word in ("Traceback", "ERROR", "Error", "WARNING"))
        ]
