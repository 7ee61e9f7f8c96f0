"""A client process of scenario E (``bench/storm.py``): sockets living through a server restart as client.js does.

``python -m bench.storm_clients --plan FILE``. Each socket authenticates with an
``authenticate`` frame and holds one subscription (a task, or a project's tasks),
as ``notifications/static/notifications/client.js`` does: when its connection
goes, it waits ``min(max, initial * factor ** attempt) * (1 - jitter * random())``
ms (the JS client's ``DEFAULT_BACKOFF``; ``attempt`` counts the reconnects since
the last ``AUTHENTICATED``), connects again and resubscribes with ``since`` and
``epoch``. Events are applied as the JS client applies them: one whose ``seq``
is not above the held one is dropped (counted here as a duplicate), one whose
previous seq (``meta.prev``, else ``seq - 1``) is above the held one is a gap,
answered with a resubscribe; ``recovered: false`` replaces the held state with
the snapshot.

The runner talks to it over stdin/stdout, one JSON object a line. It prints
``ready`` once every socket subscribed (or failed), then ``progress`` twice a
second. Commands: ``mark <unix time>`` (progress then counts the sockets
subscribed again after that time), ``verify <file>`` (compare every socket's
state with the committed rows in the file and print ``verified`` with the
counts and latencies) and ``stop``. With ``"protocol": "channels"`` (the plain
consumer of ``bench/plain_app.py``) the sockets only connect, authenticate and
subscribe once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from array import array
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .clients import CONNECT_CONCURRENCY
from .servers import raise_open_file_limit

# client.js: DEFAULT_BACKOFF = { initial: 500, max: 30000, factor: 2, jitter: 0.5 }, requestTimeout 10000.
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
BACKOFF_FACTOR = 2.0
BACKOFF_JITTER = 0.5
REQUEST_TIMEOUT = 10.0
# The first, fresh storm: generous, it measures the server rather than the timeouts.
FRESH_TIMEOUT = 120.0
FRESH_ATTEMPTS = 12
DEBUG = os.environ.get("STORM_DEBUG") == "1"  # every frame to the client log, with its time


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """client.js ``#scheduleReconnect``: seconds before reconnect number ``attempt`` (0 first)."""
    return min(BACKOFF_MAX, BACKOFF_INITIAL * BACKOFF_FACTOR**attempt) * (1 - BACKOFF_JITTER * rng.random())


class Socket:
    """One socket and its one target, with the state a reducer would hold."""

    def __init__(self, client: Client, index: int, spec: dict[str, Any]) -> None:
        self.client = client
        self.index = index
        self.token: str = spec["token"]
        self.where: dict[str, Any] = spec["where"]  # {"id": ...} or {"filter": {"project": ...}}
        self.collection = "filter" in self.where
        self.seq: int | None = None
        self.epoch: str | None = None
        self.state: dict[str, dict[str, Any]] = {}  # member (or the object) id -> payload
        self.subscribed = False
        self.subscribed_at = 0.0  # unix time of the last SUBSCRIBED
        self.subscribes = 0
        self.recovered = {"true": 0, "false": 0}
        self.duplicates = 0  # events whose seq was not above the held one (the JS client drops them)
        self.gaps = 0  # events whose previous seq was above the held one (answered with a resubscribe)
        self.repeated_states = 0  # an applied event carrying a write this target had already shown (allowed)
        self.seen: set[tuple[str, int]] = set()  # (id, write index) shown since the last snapshot
        self.ws: ClientConnection | None = None

    # The wire ------------------------------------------------------------------

    def subscribe_frame(self, request_id: int) -> str:
        client = self.client
        if client.protocol == "channels":
            key = self.where.get("id") or self.where["filter"]["project"]
            return json.dumps({"action": "subscribe", "id": key, "request_id": request_id})
        frame: dict[str, Any] = {"action": "subscribe", "model": "api.task", **self.where, "request_id": request_id}
        if self.seq is not None and self.epoch is not None:
            frame.update(since=self.seq, epoch=self.epoch)
        return json.dumps(frame)

    async def handshake(self, timeout: float) -> ClientConnection:
        ws = await connect(self.client.url, open_timeout=timeout, ping_interval=None, max_queue=256, max_size=2**22)
        self.ws = ws
        await ws.send(json.dumps({"action": "authenticate", "token": self.token, "request_id": "auth"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if reply.get("type") != "AUTHENTICATED":
            raise RuntimeError(f"authenticate: {str(reply)[:200]}")
        return ws

    async def fresh(self) -> None:
        """Connect, authenticate, subscribe: once (the plain consumer, and drf-live's first storm)."""
        ws = await self.handshake(FRESH_TIMEOUT)
        await ws.send(self.subscribe_frame(1))
        reply = json.loads(await asyncio.wait_for(ws.recv(), FRESH_TIMEOUT))
        if reply.get("type") != "SUBSCRIBED":
            raise RuntimeError(f"subscribe: {str(reply)[:200]}")
        if self.client.protocol == "drf-live":
            self.take_snapshot(reply)

    async def live(self) -> None:
        """Read until the connection goes, then reconnect and resubscribe as client.js does, until stopped."""
        client = self.client
        attempt = 0
        rng = random.Random(self.index)
        request_id = 1
        while not client.stopping:
            if self.ws is None:
                try:
                    await self.handshake(REQUEST_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - a failed reconnect is retried after the backoff
                    client.count("reconnect_failed", exc)
                    await self.abandon()
                    await asyncio.sleep(backoff_delay(attempt, rng))
                    attempt += 1
                    continue
                attempt = 0
                client.reconnects += 1
                request_id += 1
                await self.send(self.subscribe_frame(request_id))
            try:
                await self.read(request_id)
            except ConnectionClosed as exc:
                client.count("closed", exc.rcvd.code if exc.rcvd else "none")
            except Exception as exc:  # noqa: BLE001
                client.count("read_failed", exc)
            self.subscribed = False
            await self.abandon()
            if client.stopping:
                return
            await asyncio.sleep(backoff_delay(attempt, rng))
            attempt += 1

    async def send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    async def abandon(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except Exception:  # noqa: BLE001, S110 - it is gone either way
                pass

    async def read(self, request_id: int) -> None:
        """Frames until the connection closes; a subscribe unanswered for REQUEST_TIMEOUT is sent again."""
        assert self.ws is not None
        ws = self.ws
        waiting: int | None = None if self.subscribed else request_id
        deadline = time.monotonic() + REQUEST_TIMEOUT
        buffer: list[dict[str, Any]] = []
        while True:
            timeout = max(0.01, deadline - time.monotonic()) if waiting is not None else None
            try:
                text = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                # client.js: a resubscribe that timed out on a target it holds is sent again.
                self.client.count("subscribe_timeout", "resent")
                request_id += 1000
                waiting = request_id
                deadline = time.monotonic() + REQUEST_TIMEOUT
                await ws.send(self.subscribe_frame(request_id))
                continue
            now = time.time_ns()
            if DEBUG:
                print(self.index, f"{time.time():.2f}", text[:300], file=sys.stderr, flush=True)
            frame = json.loads(text)
            meta = frame.get("meta") or {}
            if "request_id" in meta:
                if meta["request_id"] != waiting:
                    continue  # a late reply to a request given up on
                if frame.get("error"):
                    # client.js would end the target (reason "error"); the bench counts it and retries.
                    self.client.count("subscribe_error", frame["payload"].get("code"))
                    raise RuntimeError("subscribe answered an error")
                waiting = None
                self.on_subscribed(frame)
                for event in sorted(buffer, key=lambda e: e["meta"]["seq"]):
                    self.on_event(event, now)
                buffer.clear()
                continue
            if not isinstance(meta.get("seq"), int):
                if frame.get("type") == "UNSUBSCRIBED":
                    self.client.count("unsubscribed", meta.get("reason"))
                continue
            if waiting is not None:
                buffer.append(frame)
            elif self.on_event(frame, now):
                # A gap: resubscribe with `since` (client.js "gap"); the replay fills it.
                request_id += 1000
                waiting = request_id
                deadline = time.monotonic() + REQUEST_TIMEOUT
                await ws.send(self.subscribe_frame(request_id))

    # The state -----------------------------------------------------------------

    def on_subscribed(self, reply: dict[str, Any]) -> None:
        meta = reply["meta"]
        self.subscribed = True
        self.subscribed_at = time.time()
        self.subscribes += 1
        if meta.get("recovered") is True:
            self.recovered["true"] += 1  # the held state stands; the replay follows
            return
        if "recovered" in meta:
            self.recovered["false"] += 1
        self.take_snapshot(reply)

    def take_snapshot(self, reply: dict[str, Any]) -> None:
        meta, payload = reply["meta"], reply["payload"]
        self.seq, self.epoch = meta.get("seq"), meta.get("epoch")
        rows = (payload.get("results", payload) if isinstance(payload, dict) and self.collection else payload) or []
        if not self.collection:
            rows = [rows]
        self.state = {row["id"]: row for row in rows}
        self.seen.clear()
        self.subscribed = True
        self.subscribed_at = time.time()

    def on_event(self, event: dict[str, Any], now_ns: int) -> bool:
        """Apply ``event`` as client.js does; True when it reveals a gap (resubscribe)."""
        meta = event["meta"]
        seq = meta["seq"]
        if self.seq is not None and seq <= self.seq:
            self.duplicates += 1
            return False
        previous = meta.get("prev", seq - 1)
        if self.seq is not None and previous > self.seq:
            self.gaps += 1
            return True
        self.seq = seq
        member = meta.get("id") or event["payload"]["id"]
        if event["type"].startswith("DELETE_"):
            self.state.pop(member, None)
            return False
        self.state[member] = event["payload"]
        match = self.client.title.match(str(event["payload"].get("title", "")))
        if match is not None:
            key = (member, int(match.group(2)))
            if key in self.seen:
                self.repeated_states += 1
            else:
                self.seen.add(key)
                self.client.latencies.extend((int(match.group(1)), (now_ns - int(match.group(1))) // 1000))
        return False

    def missed(self, truth: dict[str, Any]) -> int:
        """Rows this socket holds differently from the committed ones (for a collection: and members missing)."""
        if self.collection:
            expected = {
                task_id: truth["tasks"][task_id] for task_id in truth["projects"][self.where["filter"]["project"]]
            }
        else:
            expected = {self.where["id"]: truth["tasks"][self.where["id"]]}
        return sum(self.state.get(key) != row for key, row in expected.items()) + len(self.state.keys() - expected)


class Client:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.url: str = plan["url"]
        self.protocol: str = plan["protocol"]
        self.title = re.compile(r"b-" + re.escape(plan["tag"]) + r"-(\d+)-(\d+)$")
        self.sockets = [Socket(self, index, spec) for index, spec in enumerate(plan["sockets"])]
        self.latencies = array("q")  # pairs: write time_ns, latency µs
        self.reconnects = 0
        self.events: dict[str, int] = {}
        self.stopping = False
        self.mark = float("inf")

    def count(self, kind: str, detail: Any) -> None:
        key = f"{kind}: {type(detail).__name__ if isinstance(detail, BaseException) else detail}"
        if isinstance(detail, InvalidStatus):
            key = f"{kind}: HTTP {detail.response.status_code}"
        self.events[key] = self.events.get(key, 0) + 1

    async def run(self) -> None:
        raise_open_file_limit()
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failed: dict[str, int] = {}

        async def fresh(socket: Socket) -> None:
            # A refused or failed attempt is retried after client.js's backoff, as a browser would.
            rng = random.Random(socket.index)
            for attempt in range(FRESH_ATTEMPTS):
                async with gate:
                    try:
                        await socket.fresh()
                        return
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        self.count("fresh_retry", exc)
                        await socket.abandon()
                        reason = f"{type(exc).__name__}: {str(exc)[:100]}"
                await asyncio.sleep(backoff_delay(attempt, rng))
            failed[reason] = failed.get(reason, 0) + 1

        await asyncio.gather(*(fresh(socket) for socket in self.sockets))
        emit({"event": "ready", "seconds": time.monotonic() - started, "failed": failed, "events": self.events})
        tasks = []
        if self.protocol == "drf-live":
            tasks = [asyncio.create_task(socket.live()) for socket in self.sockets if socket.ws is not None]
        commands: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: commands.put_nowait(sys.stdin.readline()))
        while True:
            try:
                line = await asyncio.wait_for(commands.get(), 0.5)
            except TimeoutError:
                emit(self.progress())
                continue
            word, _, rest = line.strip().partition(" ")
            if word == "mark":
                self.mark = float(rest)
            elif word == "verify":
                emit(self.verify(rest))
            elif word in ("stop", ""):
                break
        self.stopping = True
        del tasks
        os._exit(0)  # closing thousands of sockets one by one would only load the server

    def progress(self) -> dict[str, Any]:
        again = [s.subscribed_at for s in self.sockets if s.subscribed and s.subscribed_at > self.mark]
        return {
            "event": "progress",
            "subscribed": sum(s.subscribed for s in self.sockets),
            "again": len(again),
            "last_again": max(again, default=0.0),
            "received": len(self.latencies) // 2,
        }

    def verify(self, path: str) -> dict[str, Any]:
        with open(path) as file:
            truth = json.load(file)
        missed = [socket.missed(truth) for socket in self.sockets]
        with open(path + f".{os.getpid()}.lat", "wb") as file:
            self.latencies.tofile(file)
        total = {"true": 0, "false": 0}
        for socket in self.sockets:
            total["true"] += socket.recovered["true"]
            total["false"] += socket.recovered["false"]
        return {
            "event": "verified",
            "sockets": len(self.sockets),
            "missed": sum(missed),
            "sockets_missing": sum(1 for n in missed if n),
            "missed_max": max(missed, default=0),
            "duplicates": sum(s.duplicates for s in self.sockets),
            "duplicates_max": max((s.duplicates for s in self.sockets), default=0),
            "gaps": sum(s.gaps for s in self.sockets),
            "repeated_states": sum(s.repeated_states for s in self.sockets),
            "recovered": total,
            "reconnects": self.reconnects,
            "events": self.events,
            "latencies": path + f".{os.getpid()}.lat",
            "example_missing": next(
                (
                    {"where": s.where, "held": s.state, "seq": s.seq}
                    for s, n in zip(self.sockets, missed, strict=True)
                    if n
                ),
                None,
            ),
        }


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan", required=True)
    args = parser.parse_args()
    with open(args.plan) as file:
        client = Client(json.load(file))
    try:
        import uvloop
    except ImportError:
        asyncio.run(client.run())
    else:
        uvloop.run(client.run())


if __name__ == "__main__":
    main()
