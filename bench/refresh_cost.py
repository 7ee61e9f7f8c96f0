"""What renewing a process's registrations costs its event loop: ``python -m bench.refresh_cost [--pairs N]``.

Every ``RESUME_WINDOW / 4`` seconds (30 s) each server process renews the
registration of every (stream, user) pair its sockets hold
(``RedisStreamStore.refresh``, from ``Hub._refresh``): one ``ZADD ... GT`` and
two ``EXPIRE`` per pair. Scenario B holds 10,000 pairs in one process. This
times one renewal of ``--pairs`` pairs on a ``redis-server`` of its own, two
ways, each twice: the way drf-live did it before (a redis-py pipeline of three
commands per pair, sent and read back in one go) and the way it does now
(``RedisStreamStore.refresh``: the ``_REFRESH`` script, ``RENEW_CHUNK`` pairs
per call). The process's CPU time is what the event loop cannot spend on
deliveries while the renewal runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000, help="(stream, user) registrations to renew")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from bench.servers import Processes, Redis

    processes = Processes()
    redis = Redis(processes).start()
    try:
        asyncio.run(measure(redis.url, args.pairs))
    finally:
        processes.close()
        redis.remove_dir()


async def measure(url: str, count: int) -> None:
    from notifications.conf import live_settings
    from notifications.redis_store import RENEW_CHUNK, RedisStreamStore, history_ttl, keys

    store = RedisStreamStore(url)
    pairs = [(f"{live_settings.PREFIX}.api.task.o{index}", f"{index % 100}") for index in range(count)]

    async def pipelined(pairs: list[tuple[str, str]]) -> None:
        window = float(live_settings.RESUME_WINDOW)
        until = time.time() + window
        async with store.shards[0].aclient().pipeline(transaction=False) as pipe:
            for stream, user in pairs:
                seq_key, _, subs_key, _ = keys(stream)
                pipe.zadd(subs_key, {user: until}, gt=True)
                pipe.expire(subs_key, int(window * 2) + 1)
                pipe.expire(seq_key, history_ttl(), gt=True)
            await pipe.execute()

    ways: list[tuple[str, Callable[[list[tuple[str, str]]], Awaitable[None]]]] = [
        ("a pipeline of 3 commands per pair (before)", pipelined),
        (f"the _REFRESH script, {RENEW_CHUNK} pairs per call (now)", store.refresh),
    ]
    print(f"`python -m bench.refresh_cost --pairs {count}`: one renewal of {count:,} registrations, one shard")
    print()
    print("| how | CPU ms in the process | wall ms |")
    print("|---|---|---|")
    for name, renew in ways * 2:
        cpu, wall = time.process_time(), time.perf_counter()
        await renew(pairs)
        print(f"| {name} | {1000 * (time.process_time() - cpu):.0f} | {1000 * (time.perf_counter() - wall):.0f} |")


if __name__ == "__main__":
    main()
