"""A client process: many real WebSocket connections, each subscribed to some tasks, timing every update.

``python -m bench.clients --protocol P --url URL --plan FILE --out FILE``.
The plan lists, per socket, the task ids it subscribes to (for drf-live, an
entry may also be a collection, ``{"filter": {"project": "<id>"}}``) and, for
drf-live, the API token it authenticates with. The process talks to
the runner over stdin/stdout, one JSON object a line:

- it prints ``{"event": "ready", ...}`` once every socket is subscribed (or failed);
- then ``{"event": "progress", "received": N}`` twice a second;
- on ``stop`` (a line on stdin) it writes its results to ``--out`` and exits.

An update is a frame whose title is ``b-<tag>-<write time_ns>-<write index>``
(see ``writer``): its latency is receipt time minus write time. For drf-live it
also checks ``meta.seq``: every event of a target must carry the previous seq + 1
(or, when it carries ``meta.prev``, name the seq the socket holds as ``prev``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .servers import raise_open_file_limit

CONNECT_CONCURRENCY = 64
OPEN_TIMEOUT = 120.0
REPLY_TIMEOUT = 120.0

# Frames are matched, not parsed, to keep the clients' own CPU low; json.dumps puts a space after ":".
SEQ = re.compile(r'"seq":\s*(\d+)')
PREV = re.compile(r'"prev":\s*(\d+)')
ID = re.compile(r'"id":\s*"(\w+)"')


@dataclass
class Results:
    sockets: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    seq_gaps: int = 0
    seq_regressions: int = 0
    errors: int = 0
    other_frames: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0
    latencies_us: array = field(default_factory=lambda: array("q"))

    failed_indexes: list[int] = field(default_factory=list)

    def fail(self, index: int, reason: str) -> None:
        self.failed += 1
        self.failed_indexes.append(index)
        self.failures[reason] = self.failures.get(reason, 0) + 1


# Subscribing, per protocol ----------------------------------------------------


def subscribe_frame(protocol: str, task_id: str | dict[str, Any], request_id: int) -> str:
    if protocol == "drf-live" and isinstance(task_id, dict):  # a collection: {"filter": {...}}
        return json.dumps({"action": "subscribe", "model": "api.task", **task_id, "request_id": request_id})
    if protocol == "drf-live":
        return json.dumps({"action": "subscribe", "model": "api.task", "id": task_id, "request_id": request_id})
    if protocol == "dcrf":
        return json.dumps({"action": "subscribe_instance", "pk": task_id, "request_id": request_id})
    return json.dumps({"action": "subscribe", "id": task_id})


def subscribed_seq(protocol: str, reply: dict[str, Any]) -> int:
    """The seq the subscription starts at (0 where there is none); raises if ``reply`` is not a success."""
    if protocol == "dcrf":
        if reply.get("action") != "subscribe_instance" or reply.get("response_status") != 201:
            raise ValueError(f"dcrf subscribe failed: {str(reply)[:200]}")
        return 0
    if reply.get("type") != "SUBSCRIBED":
        raise ValueError(f"subscribe failed: {str(reply)[:200]}")
    return int(reply.get("meta", {}).get("seq", 0))


# One socket -----------------------------------------------------------------


class Socket:
    def __init__(self, client: Client, task_ids: list[Any], token: str | None) -> None:
        self.client = client
        self.task_ids = task_ids
        self.token = token
        # A socket holding one collection numbers its events by that collection, whatever member changed.
        self.collection = json.dumps(task_ids[0]) if len(task_ids) == 1 and isinstance(task_ids[0], dict) else None
        self.seqs: dict[str, int] = {}
        self.seen: set[int] = set()
        self.ws: ClientConnection | None = None

    async def open(self) -> None:
        client = self.client
        headers = {"Authorization": f"Token {self.token}"} if self.token else None
        self.ws = await connect(
            client.url,
            additional_headers=headers,
            compression="deflate" if client.plan.get("deflate") else None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,
            max_queue=64,
            max_size=2**20,
        )
        if client.plan.get("deflate") and not self.ws.protocol.extensions:
            raise RuntimeError("the server did not accept permessage-deflate")
        for request_id, task_id in enumerate(self.task_ids, 1):
            await self.ws.send(subscribe_frame(client.protocol, task_id, request_id))
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), REPLY_TIMEOUT))
            self.seqs[task_id if isinstance(task_id, str) else json.dumps(task_id)] = subscribed_seq(
                client.protocol, reply
            )

    async def read(self) -> None:
        assert self.ws is not None
        client = self.client
        results = client.results
        title = client.title
        check_seq = client.protocol == "drf-live"
        try:
            async for text in self.ws:
                now = time.time_ns()
                if check_seq and text.startswith('{"type":"UPDATE_'):
                    self.check_seq(text)
                match = title.search(text)
                if match is None:
                    if '"error":true' in text or '"errors":[{' in text:
                        results.errors += 1
                    else:
                        results.other_frames += 1
                    continue
                # Every update frame is a delivery; a repeat of a write already seen (dcrf re-reads the row
                # per subscriber, so it sends the latest state, possibly twice) is counted as a duplicate.
                results.received += 1
                index = int(match.group(2))
                if index in self.seen:
                    results.duplicates += 1
                    continue
                self.seen.add(index)
                results.latencies_us.append((now - int(match.group(1))) // 1000)
                results.first_ns = results.first_ns or now
                results.last_ns = now
        except ConnectionClosed as exc:
            code = str(exc.rcvd.code if exc.rcvd else "none")
            if not client.stopping:
                results.closed[code] = results.closed.get(code, 0) + 1

    def check_seq(self, text: str) -> None:
        seq_match = SEQ.search(text)
        id_match = None if self.collection is not None else ID.search(text)
        if seq_match is None or (id_match is None and self.collection is None):
            return
        seq = int(seq_match.group(1))
        task_id = self.collection if id_match is None else id_match.group(1)
        assert task_id is not None
        prev_match = PREV.search(text)
        prev = int(prev_match.group(1)) if prev_match is not None else seq - 1
        last = self.seqs.get(task_id, 0)
        if seq <= last:
            self.client.results.seq_regressions += 1
        elif prev != last:
            self.client.results.seq_gaps += 1
        self.seqs[task_id] = max(seq, last)


# The process ----------------------------------------------------------------


class Client:
    def __init__(self, protocol: str, url: str, plan: dict[str, Any]) -> None:
        self.protocol = protocol
        self.url = url
        self.plan = plan
        self.title = re.compile(r'"title":\s*"b-' + re.escape(plan["tag"]) + r'-(\d+)-(\d+)"')
        self.results = Results()
        self.sockets: list[Socket] = []
        self.stopping = False

    async def run(self, out: str) -> None:
        limit = raise_open_file_limit()
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one(index: int, socket: Socket) -> None:
            async with gate:
                try:
                    await socket.open()
                except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                    self.results.fail(index, f"{type(exc).__name__}: {str(exc)[:120]}")
                    if socket.ws is not None:
                        await socket.ws.close()
                    return
                self.sockets.append(socket)

        tokens = self.plan.get("tokens") or []
        await asyncio.gather(
            *(
                open_one(index, Socket(self, ids, tokens[index] if tokens else None))
                for index, ids in enumerate(self.plan["sockets"])
            )
        )
        self.results.sockets = len(self.sockets)
        readers = [asyncio.create_task(socket.read()) for socket in self.sockets]
        emit(
            {
                "event": "ready",
                "sockets": len(self.sockets),
                "failed": self.results.failed,
                "failures": self.results.failures,
                "failed_indexes": self.results.failed_indexes,
                "seconds": time.monotonic() - started,
                "nofile": limit,
            }
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(sys.stdin.fileno(), lambda: stop.set())
        while not stop.is_set():
            emit({"event": "progress", "received": self.results.received})
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        self.stopping = True
        self.write(out)
        emit({"event": "done"})
        del readers
        # Closing thousands of sockets one by one would only load the server after the measurement.
        os._exit(0)

    def write(self, out: str) -> None:
        results = self.results
        with open(out + ".lat", "wb") as file:
            results.latencies_us.tofile(file)
        summary = {key: value for key, value in vars(results).items() if key != "latencies_us"}
        with open(out, "w") as file:
            json.dump(summary, file)


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", required=True, choices=["drf-live", "dcrf", "channels", "websockets"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.plan) as file:
        plan = json.load(file)
    client = Client(args.protocol, args.url, plan)
    try:
        import uvloop
    except ImportError:
        asyncio.run(client.run(args.out))
    else:
        uvloop.run(client.run(args.out))


if __name__ == "__main__":
    main()
