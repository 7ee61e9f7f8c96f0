"""Does a subscribe's ``not_found`` take longer for an object that exists than for one that does not?

``python -m bench.timing_oracle --postgres postgres://postgres@127.0.0.1:5432/test [--samples 400]``

Both answers are the same frame, ``not_found``, so that nobody can enumerate
objects; the time to compute them must not tell them apart either. This script
creates a database of its own on that PostgreSQL server (dropped at the end),
with an attacker, a victim and ``--projects`` projects of the victim's, and
measures, each time interleaving the two cases in random order:

1. in this process, the validation a subscribe runs (``SubscriptionSerializer``,
   which calls ``Registration.get_visible``), for a task that exists but that
   the attacker may not see and for one that does not exist, as drf-live does
   it now ("as is") and with the change recommended in docs/security.md
   ("equalised"); the lookup of such a task together with one of the
   attacker's own (``Registration.get_visible_many``, what subscribes of one
   user waiting for the database together share); and the ``EXPLAIN ANALYZE``
   of both single lookups;
2. unless ``--no-socket``: what an attacker measures, the round trip of a
   ``subscribe`` frame to a real uvicorn on that database, for both versions.

It prints medians, their difference and a Mann-Whitney U test's two-sided p.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from devtools.servers import ROOT, Database, free_port, listening

PASSWORD = "timing-oracle"


# The change recommended to the lookup (docs/security.md, "Timing") ------------------------------


def equalised_get_visible(self: Any, user: Any, pk: Any, *, host: str | None = None) -> Any:
    """``Registration.get_visible``, testing the viewset's rules on a row that exists whether or not ``pk`` does.

    As is, the database looks ``pk`` up in the primary key's index first, and
    evaluates the viewset's visibility rules (here a subquery over projects and
    members) only for a row it found: a missing object skips that work. Here the
    lookup names the target if it exists, else a stand-in (the table's first
    row), so the rules are evaluated once in both cases, and reads back only
    whether the row it found is the target; a stand-in is never returned. A
    visible target is then read whole, by a second query.
    """
    from django.db.models import Case, IntegerField, Subquery, Value, When
    from django.db.models.functions import Coalesce

    view = self.get_view(user, host=host)
    if not self.has_permission(view):
        return None
    visible = view.filter_queryset(view.get_queryset())
    rows = self.model._default_manager.order_by()
    candidate = Coalesce(
        Subquery(rows.filter(pk=pk).values("pk")[:1]),
        Subquery(rows.order_by("pk").values("pk")[:1]),
    )
    # Only whether the row found is the target: a plain integer, no model instance and no key
    # (a hashid key costs its encoding), so that a visible stand-in costs what an invisible target does.
    hit = Case(When(pk=pk, then=Value(1)), default=Value(0), output_field=IntegerField())
    if visible.filter(pk=candidate).annotate(hit=hit).values_list("hit", flat=True).first() != 1:
        return None
    obj = visible.filter(pk=pk).first()
    if obj is None or not self.has_permission(view, obj):
        return None
    return obj


def equalised_application() -> Any:
    """The example project's ASGI application with ``equalised_get_visible`` (``uvicorn --factory``)."""
    from notifications.registration import Registration

    Registration.get_visible = equalised_get_visible  # type: ignore[method-assign]
    from project.asgi import application

    return application


# Statistics --------------------------------------------------------------------------------------


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p of the Mann-Whitney U test (normal approximation, tie-corrected)."""
    pooled = sorted([(value, 0) for value in a] + [(value, 1) for value in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        count = j - i + 1
        ties += count**3 - count
        i = j + 1
    n1, n2 = len(a), len(b)
    rank_sum = sum(rank for rank, (_value, group) in zip(ranks, pooled, strict=True) if group == 0)
    u = rank_sum - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (u - n1 * n2 / 2) / sigma
    return math.erfc(abs(z) / math.sqrt(2))


def summary(name: str, forbidden: list[float], missing: list[float]) -> str:
    f, m = statistics.median(forbidden) * 1e6, statistics.median(missing) * 1e6
    p = mann_whitney_p(forbidden, missing)
    return f"| {name} | {len(forbidden)} + {len(missing)} | {f:.0f} | {m:.0f} | {f - m:+.0f} | {p:.2g} |"


HEADER = (
    "| version | samples (forbidden + missing) | forbidden, median µs | missing, median µs | difference µs | p |\n"
    "|---|---|---|---|---|---|"
)


def interleaved(samples: int, measure: Callable[[str], float]) -> tuple[list[float], list[float]]:
    """``samples`` timings of each case, in random order (so drift hits both alike)."""
    order = ["forbidden", "missing"] * samples
    random.Random(11).shuffle(order)
    times: dict[str, list[float]] = {"forbidden": [], "missing": []}
    for case in order:
        times[case].append(measure(case))
    return times["forbidden"], times["missing"]


# Set-up ------------------------------------------------------------------------------------------


def build(projects: int) -> dict[str, str]:
    """The attacker, the victim's projects and tasks; the ids and token the measurements use."""
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from api.models import Project, Task, User

    attacker = User.objects.create_user("mallory", password=PASSWORD)
    victim = User.objects.create_user("victim", password=PASSWORD)
    others = [User.objects.create_user(f"member-{n}", password=None) for n in range(20)]
    own = Project.objects.create(name="Mallory's", owner=attacker)
    own_task = Task.objects.create(project=own, title="Mallory's task")
    last = None
    for n in range(projects):
        project = Project.objects.create(name=f"Victim's {n}", owner=victim)
        project.members.add(*others[n % 20 : n % 20 + 2])
        for m in range(5):
            last = Task.objects.create(project=project, title=f"Secret {n}.{m}")
    assert last is not None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(id) FROM {Task._meta.db_table}")
        (largest,) = cursor.fetchone()
    field: Any = Task._meta.pk
    missing = str(field.get_hashid(largest + 1_000_000))  # a well-formed id that names no task
    return {
        "forbidden": str(last.pk),
        "missing": missing,
        "own": str(own_task.pk),
        "token": Token.objects.create(user=attacker).key,
    }


def in_process(ids: dict[str, str], samples: int) -> list[str]:
    """Time the subscribe validation in this process, as is and equalised; EXPLAIN both lookups."""
    from django.db import connection

    from api.models import User
    from notifications.registration import Registration
    from notifications.registry import site
    from notifications.subscriptions import SubscriptionSerializer

    attacker = User.objects.get(username="mallory")
    registration = site.get_by_label("api.task")
    assert registration is not None

    def measure(case: str) -> float:
        data = {"model": "api.task", "id": ids[case]}
        context = {"registry": site, "user": attacker, "host": None}
        started = time.perf_counter()
        serializer = SubscriptionSerializer(data=data, context=context)
        valid = serializer.is_valid()
        elapsed = time.perf_counter() - started
        assert not valid, serializer.validated_data
        return elapsed

    lines = [HEADER]
    original = Registration.get_visible
    plans = []
    try:
        for name, lookup in [("as is", original), ("equalised", equalised_get_visible)]:
            Registration.get_visible = lookup  # type: ignore[method-assign]
            interleaved(50, measure)  # warm-up: caches, plans
            lines.append(summary(f"{name}, in process", *interleaved(samples, measure)))
            for case in ("forbidden", "missing"):
                plans.append(f"--- {name}, {case}:")
                with connection.execute_wrapper(explaining(plans)):
                    registration.get_visible(attacker, registration.decode_id(ids[case]))
    finally:
        Registration.get_visible = original  # type: ignore[method-assign]

    # Subscribes of one user that wait for the database together are looked up together
    # (`get_visible_many`): the attacker's own task and the case's id, in one lookup.
    own = registration.decode_id(ids["own"])

    def measure_shared(case: str) -> float:
        keys = [registration.decode_id(ids[case]), own]
        started = time.perf_counter()
        found = registration.get_visible_many(attacker, keys)
        elapsed = time.perf_counter() - started
        assert found[keys[0]] is None and found[own] is not None, found
        return elapsed

    interleaved(50, measure_shared)
    lines.append(
        summary("shared lookup of it and a task of the attacker's, in process", *interleaved(samples, measure_shared))
    )
    return lines + ["", "EXPLAIN (ANALYZE) of the lookup:", *plans]


def explaining(plans: list[str]) -> Callable[..., Any]:
    """A connection wrapper that runs ``EXPLAIN (ANALYZE, COSTS OFF)`` of each SELECT before it."""

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if sql.startswith("SELECT"):
            cursor = context["cursor"]
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params)
            plans.extend("    " + row[0] for row in cursor.fetchall())
        return execute(sql, params, many, context)

    return wrapper


def over_a_socket(database_url: str, ids: dict[str, str], samples: int, factory: str | None) -> str:
    """Start uvicorn on the database; time ``subscribe`` round trips as the attacker sees them."""
    port = free_port()
    app = ["--factory", factory] if factory else ["project.asgi:application"]
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "0", "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    env["DRF_LIVE"] = json.dumps({"SUBSCRIBE_RATE": 1e6, "SUBSCRIBE_BURST": 1e6, "ERROR_BURST": 1e6})
    argv = [sys.executable, "-m", "uvicorn", *app, "--port", str(port), "--log-level", "warning"]
    argv += ["--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "--no-access-log"]
    server = subprocess.Popen(argv, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("uvicorn did not start")
            time.sleep(0.05)
        forbidden, missing = asyncio.run(_round_trips(port, ids, samples))
        return summary(f"{'equalised' if factory else 'as is'}, over a socket", forbidden, missing)
    finally:
        server.terminate()
        server.wait(10)


async def _round_trips(port: int, ids: dict[str, str], samples: int) -> tuple[list[float], list[float]]:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Token {ids['token']}"}
    async with connect(f"ws://127.0.0.1:{port}/ws/notifications/", additional_headers=headers, proxy=None) as ws:

        async def one(case: str) -> float:
            frame = json.dumps({"action": "subscribe", "model": "api.task", "id": ids[case]})
            started = time.perf_counter()
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            elapsed = time.perf_counter() - started
            assert reply["payload"]["code"] == "not_found", reply
            return elapsed

        order = ["forbidden", "missing"] * (samples + 50)
        random.Random(7).shuffle(order)
        times: dict[str, list[float]] = {"forbidden": [], "missing": []}
        for index, case in enumerate(order):
            elapsed = await one(case)
            if index >= 100:  # warm-up
                times[case].append(elapsed)
        return times["forbidden"], times["missing"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL server URL (a database is created on it)")
    parser.add_argument("--samples", type=int, default=400, help="measurements of each case per version")
    parser.add_argument("--projects", type=int, default=200, help="the victim's projects (5 tasks each)")
    parser.add_argument("--no-socket", action="store_true", help="skip the measurements over a real socket")
    args = parser.parse_args()

    database = Database(args.postgres, prefix="drf_live_timing")
    try:
        os.environ["DATABASE_URL"] = database.url
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        os.environ["DEBUG"] = "0"
        os.environ.pop("REDIS_URL", None)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        ids = build(args.projects)
        lines = in_process(ids, args.samples)
        connections.close_all()
        if not args.no_socket:
            lines[1:1] = [
                over_a_socket(database.url, ids, args.samples, factory)
                for factory in (None, "bench.timing_oracle:equalised_application")
            ]
        print(f"PostgreSQL, {args.projects} projects of the victim's, {args.samples} samples per case:\n")
        print("\n".join(lines))
    finally:
        from django.db import connections

        connections.close_all()
        database.drop()


if __name__ == "__main__":
    main()
