"""Print what a socket receives: ``python -m notifications.watch URL MODEL ID [--token KEY]``.

A debugging aid for the terminal: it subscribes to one object (or, with
``--filter field=value``, one collection) and prints every frame as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


async def watch(url: str, model: str, id: str | None, filters: dict[str, str], token: str | None) -> None:
    import websockets

    headers = {"Authorization": f"Token {token}"} if token else {}
    async with websockets.connect(url, additional_headers=headers) as socket:
        request: dict[str, object] = {"action": "subscribe", "model": model, "request_id": 1}
        if filters:
            request["filter"] = filters
        else:
            request["id"] = id
        await socket.send(json.dumps(request))
        async for frame in socket:
            print(frame, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m notifications.watch", description=__doc__)
    parser.add_argument("url", help="ws://host:port/ws/notifications/")
    parser.add_argument("model", help="a model label, e.g. api.task")
    parser.add_argument("id", nargs="?", help="the object's id (hashid)")
    parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--token", help="an API token (sent as 'Authorization: Token ...')")
    args = parser.parse_args(argv)
    filters = dict(item.split("=", 1) for item in args.filter)
    if not args.id and not filters:
        parser.error("give an id or at least one --filter")
    try:
        asyncio.run(watch(args.url, args.model, args.id, filters, args.token))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
