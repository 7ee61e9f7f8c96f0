"""The physical limit: a bare ``websockets`` server that broadcasts one pre-encoded frame per event.

``python -m bench.raw_server --port P --redis-url URL``. A client sends
``{"action": "subscribe", "id": "<hashid>"}``; the writer publishes
``"<id> <frame>"`` on the Redis pub/sub channel ``bench.raw`` and this server
hands the frame, encoded once, to ``websockets.broadcast`` for that id's sockets.
No Django, no channel layer, no access checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from collections import defaultdict

import redis.asyncio as redis
import websockets
from websockets.asyncio.server import ServerConnection, serve

CHANNEL = "bench.raw"

subscribers: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def handler(connection: ServerConnection) -> None:
    joined: list[str] = []
    try:
        async for text in connection:
            try:
                task_id = str(json.loads(text)["id"])
            except (ValueError, KeyError, TypeError):
                await connection.send('{"type":"ERROR","payload":{"code":"invalid"}}')
                continue
            subscribers[task_id].add(connection)
            joined.append(task_id)
            await connection.send(json.dumps({"type": "SUBSCRIBED", "meta": {"id": task_id}}))
    finally:
        for task_id in joined:
            subscribers[task_id].discard(connection)


async def relay(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    async for message in pubsub.listen():
        task_id, _, frame = message["data"].decode().partition(" ")
        websockets.broadcast(subscribers.get(task_id, ()), frame)


async def main(port: int, redis_url: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=64, backlog=4096):
        await relay(redis_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.port, args.redis_url))
    else:  # What uvicorn uses too, when installed.
        uvloop.run(main(args.port, args.redis_url))
