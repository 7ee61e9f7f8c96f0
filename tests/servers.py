"""Real processes for the integration and end-to-end tests: Redis, the ASGI server, a database.

Helpers, not tests: each class starts a process (or a database) on a free port
of its own and knows how to stop it, so fixtures can ``yield`` it and clean up.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from devtools.servers import (
    DEMO_PASSWORD,
    MANAGE,
    PYTHON,
    ROOT,
    Database,
    django_env,
    free_port,
    listening,
    redis_argv,
    redis_ping,
)

OUTPUT = ROOT / "test-output"
STARTUP_TIMEOUT = 30.0
# Seconds a connection has to send its request headers (and to stay idle between requests).
KEEP_ALIVE_TIMEOUT = 5
STOP_TIMEOUT = 10.0


def require_executable(name: str, hint: str) -> str:
    """The path of ``name``; fail in CI (where it must be installed), skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed. {hint}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _stop_process(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def _log_file(name: str) -> tuple[Path, IO[bytes]]:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{name}.log"
    return path, path.open("wb")


class RedisServer:
    """``redis-server`` on a free port; restartable on the same port.

    Without persistence by default: a restart comes back empty. With
    ``appendonly=True`` it keeps an append-only file, synced on every write
    (``--appendfsync always``), in a directory kept across ``stop``/``start``
    (and ``kill``): a restart comes back with every write it acknowledged.
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False, extra_args: Sequence[str] = ()) -> None:
        self.executable = require_executable(
            "redis-server", "Install it (`apt-get install redis-server`, `brew install redis`) to run these tests."
        )
        self.port = port or free_port()
        self.appendonly = appendonly
        # More redis-server options (``["--replicaof", "127.0.0.1", "6379"]``, say).
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="drf-live-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path, self._log = _log_file(f"redis-{self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            [*redis_argv(self.executable, self.port, self.dir, appendonly=self.appendonly), *self.extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.log_path}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT} s; see {self.log_path}")

    def ping(self) -> bool:
        return redis_ping(self.port)

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM); without persistence, every key is gone."""
        _stop_process(self.process, signal.SIGTERM)

    def kill(self) -> None:
        """Die at once (SIGKILL), as in a crash."""
        _stop_process(self.process, signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelServer:
    """A Redis Sentinel on a free port, watching the master at ``master_port`` as ``name``.

    ``redis-sentinel`` (Debian's package) when it is installed, else
    ``redis-server --sentinel``, which is the same program. Quick to act: the
    master counts as down after ``down_after_ms`` milliseconds without answering.
    """

    def __init__(self, master_port: int, name: str = "mymaster", *, quorum: int = 1, down_after_ms: int = 500) -> None:
        server = require_executable(
            "redis-server", "Install it (`apt-get install redis-server redis-sentinel`) to run these tests."
        )
        sentinel = shutil.which("redis-sentinel")
        self.command = [sentinel] if sentinel else [server]
        self.name = name
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="drf-live-sentinel-"))
        # Sentinel rewrites its configuration file as it learns the deployment: it must be its own.
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path, self._log = _log_file(f"sentinel-{self.port}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SentinelServer:
        command = [*self.command, str(self.config)]
        if not command[0].endswith("redis-sentinel"):
            command.append("--sentinel")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {self.process.returncode}; see {self.log_path}")
            if self.master() is not None:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-sentinel did not answer within {STARTUP_TIMEOUT} s; see {self.log_path}")

    def master(self) -> tuple[str, int] | None:
        """The address this sentinel gives for the master now (None: it does not answer)."""
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                reply = client.execute_command("SENTINEL", "get-master-addr-by-name", self.name)
            finally:
                client.close()
        except redis.RedisError:
            return None
        if not reply:
            return None
        return reply[0].decode(), int(reply[1])

    def sentinels_known(self) -> int:
        """How many other sentinels this one has discovered for the master."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return len(client.execute_command("SENTINEL", "sentinels", self.name))
        finally:
            client.close()

    def close(self) -> None:
        _stop_process(self.process, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_failover(sentinel: SentinelServer, old_port: int, timeout: float = 30.0) -> tuple[str, int]:
    """Wait until ``sentinel`` names a master other than ``old_port`` and that master says it is one."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        master = sentinel.master()
        if master is not None and master[1] != old_port:
            client = redis.Redis(host=master[0], port=master[1], socket_timeout=1)
            try:
                if client.execute_command("ROLE")[0] == b"master":
                    return master
            except redis.RedisError:
                pass
            finally:
                client.close()
        time.sleep(0.1)
    raise AssertionError(f"No failover within {timeout} s; see {sentinel.log_path}")


class ServerDatabase(Database):
    """The database the server processes of a test share: a temp SQLite file, or a fresh PostgreSQL database.

    PostgreSQL when ``DATABASE_URL`` points at a PostgreSQL server (CI's second
    run): a database of our own on that server, dropped by ``drop()``.
    """

    def __init__(self) -> None:
        super().__init__(os.environ.get("DATABASE_URL", ""), prefix="drf_live_e2e")


def process_env(database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a server or management command: this project's settings, our DB and Redis."""
    return django_env(database_url, redis_url, **extra)


def manage(*args: str, env: Mapping[str, str], timeout: float = 60.0) -> str:
    """Run ``manage.py <args>`` in its own process; its stdout, or a failure with its output."""
    result = subprocess.run(
        [PYTHON, MANAGE, *args], check=False, env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"manage.py {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


# What the shell process runs: each stdin line is a JSON string of code, executed in one
# namespace kept between blocks; the reply line carries the value the code left in `result`.
_SHELL_LOOP = """
import json, sys, traceback
namespace = {}
for line in sys.stdin:
    namespace.pop("result", None)
    try:
        exec(json.loads(line), namespace)
        reply = {"ok": True, "result": namespace.get("result")}
    except BaseException:
        reply = {"ok": False, "error": traceback.format_exc()}
    print("drf-live-shell " + json.dumps(reply, default=str), flush=True)
"""
_SHELL_REPLY = "drf-live-shell "


class Shell:
    """A ``manage.py shell`` process that runs the code it is sent, one block at a time.

    One Django start-up for many writes from another process: ``run`` executes
    its code in the process's namespace (kept between blocks, so a block may
    define what later ones use) and returns what the code left in ``result``.
    Its stderr (the relay's log lines among them) goes to ``test-output/<name>-*.log``.
    """

    def __init__(self, env: Mapping[str, str], name: str = "shell") -> None:
        self.env = dict(env)
        self.name = name
        self.process: subprocess.Popen[str] | None = None
        self.log_path, self._log = _log_file(f"{name}-{uuid.uuid4().hex[:6]}")
        self._replies: queue.Queue[str | None] = queue.Queue()

    def start(self) -> Shell:
        self.process = subprocess.Popen(
            [PYTHON, MANAGE, "shell", "-c", _SHELL_LOOP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self.env,
            cwd=ROOT,
            text=True,
        )
        threading.Thread(target=self._read, name=f"{self.name}-stdout", daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(_SHELL_REPLY):
                self._replies.put(line[len(_SHELL_REPLY) :])
        self._replies.put(None)

    def run(self, code: str, timeout: float = 60.0) -> Any:
        """Execute ``code`` in the shell; the value it assigned to ``result`` (None if it did not)."""
        assert self.process is not None and self.process.stdin is not None, "start() the shell first"
        self.process.stdin.write(json.dumps(code) + "\n")
        self.process.stdin.flush()
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"The shell did not answer within {timeout} s; see {self.log_path}", pytrace=False)
        if line is None:
            pytest.fail(f"The shell exited with {self.process.wait()}; see {self.log_path}", pytrace=False)
        reply = json.loads(line)
        if not reply["ok"]:
            pytest.fail(f"The shell raised:\n{reply['error']}", pytrace=False)
        return reply["result"]

    async def arun(self, code: str, timeout: float = 60.0) -> Any:
        """``run`` from a test's event loop (in a thread, so that sockets keep being read)."""
        return await asyncio.to_thread(self.run, code, timeout)

    def close(self) -> None:
        """End the process as a command ends (its relay publishes what it holds, then it exits)."""
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._log.close()


class AsgiServer:
    """``uvicorn project.asgi:application`` in its own process, on a free port."""

    def __init__(self, env: Mapping[str, str], name: str = "asgi", extra_args: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.port = free_port()
        self.name = name
        # More uvicorn options, after the defaults (``["--ws-max-size", "65536"]``, say).
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path, self._log = _log_file(f"{name}-{self.port}")

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications/"

    def start(self) -> AsgiServer:
        return self.spawn().wait_ready()

    def spawn(self) -> AsgiServer:
        """Start the process without waiting (start several, then ``wait_ready`` each)."""
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ws",
                "websockets-sansio",
                "--ws-per-message-deflate",
                "false",
                # As `make run`: a deadline for the request headers (half-open handshakes), pings.
                "--http",
                "notifications.handshake:HttpProtocol",
                "--timeout-keep-alive",
                str(KEEP_ALIVE_TIMEOUT),
                "--ws-ping-interval",
                "20",
                "--ws-ping-timeout",
                "20",
                "--timeout-graceful-shutdown",
                "3",
                *self.extra_args,
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self) -> AsgiServer:
        assert self.process is not None, "spawn() the server first"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The ASGI server exited with {self.process.returncode}; see {self.log_path}")
            if listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"The ASGI server did not listen within {STARTUP_TIMEOUT} s; see {self.log_path}")

    def stop(self) -> None:
        _stop_process(self.process, signal.SIGTERM)
        self._log.close()

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed or killed process: nothing of it is cleaned up."""
        _stop_process(self.process, signal.SIGKILL)
        self._log.close()

    def assert_no_tracebacks(self) -> None:
        """After ``stop()``: fail if the server logged an unhandled error (a 500, a failed publish)."""
        log = self.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"The server logged an error; see {self.log_path}:\n{log[-3000:]}"

    def assert_only_expected_tracebacks(self, *expected: str) -> list[str]:
        """After ``stop()``: fail if a traceback was logged under a message containing none of ``expected``.

        For tests that break something on purpose (kill Redis): the failures they
        cause are logged with a traceback under a known message ("Could not
        publish ..."), and anything else is still an error. Returns the messages
        of the expected ones.
        """
        log = self.log_path.read_text(errors="replace")
        seen, unexpected = [], []
        for message in _traceback_messages(log):
            (seen if any(text in message for text in expected) else unexpected).append(message)
        assert not unexpected, f"The server logged unexpected errors {unexpected}; see {self.log_path}:\n{log[-3000:]}"
        return seen


def demo_tokens(server: AsgiServer, names: Sequence[str] = ("alice", "bob")) -> dict[str, str]:
    """The demo users' API tokens, from ``POST /api/auth/token/`` on ``server`` (password hashing is slow: once)."""
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        tokens = {}
        for name in names:
            response = http.post("/api/auth/token/", json={"username": name, "password": DEMO_PASSWORD})
            assert response.status_code == 200, response.text
            tokens[name] = str(response.json()["token"])
        return tokens


_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def _traceback_messages(log: str) -> list[str]:
    """The log line each traceback of ``log`` was printed under (chained tracebacks count once)."""
    lines = log.splitlines()
    messages = []
    for index, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        message = lines[before] if before >= 0 else ""
        if not message.startswith(_CHAINED):
            messages.append(message)
    return messages


# Talking to a server ------------------------------------------------------------

RECV_TIMEOUT = 10.0
QUIET_PERIOD = 0.5


async def send_json(ws: Any, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def recv_json(ws: Any, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    """The next frame, decoded; fails the test if none arrives within ``timeout``."""
    try:
        text = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        pytest.fail(f"No frame arrived within {timeout} s", pytrace=False)
    frame = json.loads(text)
    assert isinstance(frame, dict), frame
    return frame


async def receive_nothing(ws: Any, timeout: float = QUIET_PERIOD) -> None:
    """Assert that no frame arrives within ``timeout``."""
    try:
        text = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return
    pytest.fail(f"Expected no frame, got {text}", pytrace=False)


async def subscribe(ws: Any, model: str, request_id: Any = 1, **target: Any) -> dict[str, Any]:
    """Subscribe to ``model`` ``id=...`` or ``filter=...``; the ``SUBSCRIBED`` reply."""
    await send_json(ws, {"action": "subscribe", "model": model, "request_id": request_id, **target})
    reply = await recv_json(ws)
    assert reply["type"] == "SUBSCRIBED", reply
    assert reply["meta"]["request_id"] == request_id
    return reply


async def obtain_token(http: Any, username: str, password: str) -> str:
    """``POST /api/auth/token/`` on the server ``http`` (an ``httpx.AsyncClient``) talks to."""
    response = await http.post("/api/auth/token/", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])
