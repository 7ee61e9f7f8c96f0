"""Where drf-live's share of a REST ``PATCH`` goes, with nobody subscribed.

``python -m bench.patch_cost [--count N] [--redis URL]``

Runs ``PATCH /api/tasks/<id>/`` through DRF's test client, in-process (no HTTP
server, so only Django's own work is timed), in four configurations, each in
its own process:

- without drf-live (``bench.settings_nolive``);
- drf-live, but ``publisher.publish`` replaced by a no-op: what the writer's
  thread does itself (reading the ``FieldTracker``, serializing the payload per
  audience, building the deliveries);
- drf-live with the payload serializer replaced by a constant: the publishing
  thread's share (seq, history, group sends on Redis) plus the rest;
- drf-live as shipped, with ``REDIS_URL`` (the publishing thread).

Scenario D of ``make bench`` measures the same thing over HTTP; this splits it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from devtools.servers import ROOT

CONFIGURATIONS = [
    ("without drf-live", "bench.settings_nolive", ""),
    ("drf-live, publishing a no-op (the writer's own work)", "project.settings", "noop"),
    ("drf-live, constant payload (no serializer run)", "project.settings", "constant"),
    ("drf-live as shipped", "project.settings", ""),
]


def measure(count: int, variant: str) -> dict[str, float]:
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from api.models import Project, Task, User

    if variant == "noop":
        from notifications.publisher import publisher

        publisher.publish = lambda deliveries: None  # type: ignore[method-assign]
    elif variant == "constant":
        from notifications.registration import Registration

        Registration.serialize_audiences = lambda self, instance: {a: {"id": 1} for a in self.audiences}  # type: ignore[method-assign]

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="patch-cost")
    project, _ = Project.objects.get_or_create(name="patch-cost", owner=user)
    task, _ = Task.objects.get_or_create(project=project, title="patch-cost")
    client = APIClient()
    client.force_authenticate(user)
    url = f"/api/tasks/{task.pk}/"
    timings = []
    for index in range(-20, count):  # 20 warm-up requests
        began = time.perf_counter()
        response = client.patch(url, {"title": f"patch {index}"}, format="json")
        elapsed = time.perf_counter() - began
        assert response.status_code == 200, response.content
        if index >= 0:
            timings.append(elapsed * 1000)
    if variant != "noop":
        from notifications.publisher import publisher

        publisher.flush()
    return {"p50": statistics.median(timings), "mean": statistics.fmean(timings)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="PATCHes per configuration")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="the Redis the publisher uses")
    parser.add_argument("--rounds", type=int, default=2, help="times to run every configuration, interleaved")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.count, args.child)))
        return 0
    medians: dict[str, list[float]] = {label: [] for label, _, _ in CONFIGURATIONS}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for index, (label, settings, variant) in enumerate(CONFIGURATIONS):
                env = {
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": settings,
                    "DATABASE_URL": f"sqlite:///{scratch}/patch-{index}.sqlite3",
                    "REDIS_URL": args.redis,
                    "DEBUG": "0",
                    "ALLOWED_HOSTS": "testserver",
                }
                output = subprocess.run(
                    [sys.executable, "-m", "bench.patch_cost", "--count", str(args.count), "--child", variant],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                medians[label].append(json.loads(output.strip().splitlines()[-1])["p50"])
    base = statistics.median(medians[CONFIGURATIONS[0][0]])
    print(f"`python -m bench.patch_cost --count {args.count}`, SQLite, Redis at {args.redis}")
    print()
    print("| configuration | PATCH p50 ms (median of rounds) | vs without drf-live |")
    print("|---|---|---|")
    for label, _, _ in CONFIGURATIONS:
        value = statistics.median(medians[label])
        print(f"| {label} | {value:.2f} | {value / base:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
