"""What the database side of one subscribe costs, with and without a connection pool.

``python -m bench.db_hops [--postgres URL] [--count N]``

A subscribe makes three trips to the database thread, each through channels'
``database_sync_to_async`` exactly as the consumer makes them: authenticate the
token, check that the user may see the task (the REST API's queryset and
permissions), serialize the snapshot. ``database_sync_to_async`` closes the
thread's connection after each trip (with ``CONN_MAX_AGE = 0``, as Django under
ASGI needs), so without a pool every trip opens a new connection. This prints
the mean time per subscribe for SQLite and, given a PostgreSQL server, for
PostgreSQL without and with Django's pool (``DATABASE_POOL``, see
``project/settings.py``). Each configuration runs in its own process, since
settings are read once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from devtools.servers import ROOT, Database


def measure(count: int) -> dict[str, float]:
    """In this process (settings from the environment): the mean ms per subscribe."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from channels.db import database_sync_to_async
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from api.models import Project, Task, User
    from notifications.auth import authenticate_token
    from notifications.registry import site

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="db-hops")
    key = Token.objects.get_or_create(user=user)[0].key
    project, _ = Project.objects.get_or_create(name="db-hops", owner=user)
    task, _ = Task.objects.get_or_create(project=project, title="db-hops")
    registration = site.get_for(Task)
    assert registration is not None
    connection.close()

    async def subscribe() -> None:
        who = await authenticate_token(key)
        found = await database_sync_to_async(registration.get_visible)(who, task.pk)
        assert found is not None
        await database_sync_to_async(registration.serialize)(found, who)

    async def run() -> float:
        for _ in range(20):  # warm-up
            await subscribe()
        began = time.perf_counter()
        for _ in range(count):
            await subscribe()
        return (time.perf_counter() - began) / count * 1000

    return {"ms": asyncio.run(run())}


def child(env: dict[str, str], count: int) -> float:
    output = subprocess.run(
        [sys.executable, "-m", "bench.db_hops", "--child", "--count", str(count)],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "0", **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1])["ms"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("BENCH_DATABASE_URL", ""), help="a PostgreSQL URL")
    parser.add_argument("--count", type=int, default=500, help="subscribes per configuration")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.count)))
        return 0
    rows = []
    sqlite = Database(prefix="drf_live_db_hops")
    try:
        rows.append(("SQLite", "no (not available)", child({"DATABASE_URL": sqlite.url}, args.count)))
    finally:
        sqlite.drop()
    if args.postgres:
        postgres = Database(args.postgres, prefix="drf_live_db_hops")
        try:
            rows.append(("PostgreSQL", "no", child({"DATABASE_URL": postgres.url, "DATABASE_POOL": "0"}, args.count)))
            rows.append(("PostgreSQL", "yes", child({"DATABASE_URL": postgres.url, "DATABASE_POOL": "1"}, args.count)))
        finally:
            postgres.drop()
    command = "python -m bench.db_hops" + (f" --postgres {args.postgres}" if args.postgres else "")
    print(f"`{command}`, {args.count} subscribes")
    print()
    print("| database | pool | ms per subscribe (database trips) |")
    print("|---|---|---|")
    for database, pool, ms in rows:
        print(f"| {database} | {pool} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
