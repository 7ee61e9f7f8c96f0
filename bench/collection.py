"""Scenario F: one project's task list held by many sockets of many users, with and without ``subscribable_by``.

``python -m bench.collection [--sockets 1000] [--users 100] [--writes 34] [--rate 0.5] [--rounds 3]``

The fixtures (made here, without drf-live, so that nothing is published):
``--users`` users with API tokens, the first the owner of one project and every
other a member; ``--tasks`` tasks in it, every ``--private-every``-th private
(seen only by the owner and its assignee, a member). Every socket subscribes to
the project's task list, ``{"action": "subscribe", "model": "api.task",
"filter": {"project": <hashid>}}``; socket i authenticates as user i mod
``--users``. A writer process (``bench.writer``) then saves ``--writes`` tasks
of the project at ``--rate`` per second, private ones among them; its relay
thread decides and publishes each event (drf-live's relay runs in the writing
process). Each case runs twice, alternated, per round: with the task
registration's declaration (``project.settings``, as shipped) and without it
(``bench.settings_undeclared``, the registration's ``subscribable_by`` set
back to the default); the server and the writer use the same settings.

Measured:

- **server CPU per delivery**: the server's utime+stime over the write phase
  over the deliveries received (the server only fans out here: it decides
  nothing, and it runs with ``DRF_LIVE={"OUTBOX_SWEEP": false}``, so that it
  does not sweep up rows the busy relay has not claimed within
  ``OUTBOX_GRACE``);
- **relay CPU per event**: the writer's relay thread's utime+stime (from
  ``/proc/self/task/<tid>/stat``) over the writes;
- **SQL statements per event**: every statement the relay thread ran (counted in
  the writer with ``BENCH_COUNT_QUERIES=1``, which wraps
  ``CursorWrapper._execute_with_wrappers``, where ``connection.execute_wrapper``
  hooks run: every statement of every connection of that thread, and no other
  thread's) over the writes, by kind: ``read`` (users, visibility, the rows, the
  serializer), ``outbox`` (claiming and deleting the rows) and ``transaction``
  (BEGIN, SAVEPOINT ...). The server's own sweeps are not counted: they are
  periodic, not per event;
- deliveries, and write-to-receipt p50 and p99 (as in scenarios A and B).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import fmt, md_table
from .scenarios import Bench, Config, Result
from .servers import LOGS, SERVERS

DECLARED = SERVERS["drf-live"]
UNDECLARED = SERVERS["drf-live-undeclared"]


@dataclass
class Fixtures:
    project: str
    tokens: list[str]
    tasks: list[dict[str, Any]]  # {"id", "private", "assignee": user index or None}

    def sees(self, user: int, task: dict[str, Any]) -> bool:
        """Whether user ``user`` (an index; 0 owns the project, every other is a member) may see ``task``."""
        return user == 0 or not task["private"] or task["assignee"] == user


@dataclass
class Run:
    declared: bool
    sockets: int
    users: int
    result: Result
    writer: dict[str, Any] = field(default_factory=dict)
    events: int = 0

    def statements(self, kind: str | None = None) -> float | None:
        counts = self.writer.get("relay_statements")
        if counts is None or not self.events:
            return None
        total = sum(counts.values()) if kind is None else counts.get(kind, 0)
        return total / self.events

    def relay_cpu_ms(self) -> float | None:
        cpu = self.writer.get("relay_cpu_s")
        return None if cpu is None or not self.events else 1000 * cpu / self.events


# The fixtures (a child process with the Django environment) ------------------------


def make_fixtures(users: int, tasks: int, private_every: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from api.models import Project, Task, User

    with transaction.atomic():
        User.objects.bulk_create(User(username=f"collection-{index:04d}") for index in range(users))
        people = list(User.objects.filter(username__startswith="collection-").order_by("username"))
        tokens = [Token.objects.create(user=user).key for user in people]
        project = Project.objects.create(name="Collection", owner=people[0])
        project.members.add(*people[1:])
        rows = []
        for index in range(tasks):
            private = private_every > 0 and index % private_every == private_every - 1
            assignee = 1 + (index * 7) % (users - 1) if private and users > 1 else None
            rows.append(
                Task(
                    project=project,
                    title=f"task {index}",
                    private=private,
                    assignee=people[assignee] if assignee is not None else None,
                )
            )
        Task.objects.bulk_create(rows)
    created = list(Task.objects.filter(project=project).order_by("id"))
    index_of = {user.pk: index for index, user in enumerate(people)}
    return {
        "project": str(project.pk),
        "tokens": tokens,
        "tasks": [
            {"id": str(task.pk), "private": task.private, "assignee": index_of.get(task.assignee_id)}
            for task in created
        ],
    }


# The run ----------------------------------------------------------------------------


class CollectionBench(Bench):
    def fixtures(self, users: int, tasks: int, private_every: int) -> Fixtures:
        out = self.django(
            "-m",
            "bench.collection",
            "--fixtures",
            "--users",
            str(users),
            "--tasks",
            str(tasks),
            "--private-every",
            str(private_every),
            env=self.env("bench.settings_nolive"),
        )
        return Fixtures(**json.loads(out.strip().splitlines()[-1]))

    def run_case(self, fixtures: Fixtures, declared: bool, sockets: int, users: int, writes: int) -> Run:
        kind = DECLARED if declared else UNDECLARED
        written = [fixtures.tasks[index % len(fixtures.tasks)] for index in range(writes)]

        def expected(failed: set[int]) -> int:
            live = [index for index in range(sockets) if index not in failed]
            return sum(1 for task in written for index in live if fixtures.sees(index % users, task))

        result = self.run_fanout(
            "F",
            kind,
            [[{"filter": {"project": fixtures.project}}]] * sockets,
            [task["id"] for task in written],
            name=f"F-{'declared' if declared else 'undeclared'}-{sockets}x{users}",
            tokens=fixtures.tokens[:users],
            expected=expected,
            writer_env={"BENCH_COUNT_QUERIES": "1"},
            # The server does not sweep: a decide takes longer than OUTBOX_GRACE here, and a
            # sweeping server would take (and publish) the rows the writer's relay had not
            # claimed yet, putting relay work into the server's CPU and out of the counts.
            server_env={"DRF_LIVE": json.dumps({"OUTBOX_SWEEP": False})},
        )
        # Per event: the events the writer's relay published (one per write once it drained).
        events = result.writer.get("relay_published")
        return Run(declared, sockets, users, result, result.writer, int(events or 0))


# The report ---------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def table(runs: list[Run]) -> str:
    header = [
        "subscribable_by",
        "sockets",
        "users",
        "rounds",
        "delivered / expected",
        "server CPU µs/delivery",
        "relay CPU ms/event",
        "SQL/event: all",
        "read",
        "outbox",
        "transaction",
        "p50 ms",
        "p99 ms",
        "status",
    ]
    rows = []
    cases: dict[tuple[bool, int, int], list[Run]] = {}
    for run in runs:
        cases.setdefault((run.declared, run.sockets, run.users), []).append(run)
    for (declared, sockets, users), group in cases.items():
        received = [run.result.received for run in group]
        expected = [run.result.expected for run in group]
        statuses = sorted({run.result.status for run in group})
        rows.append(
            [
                "declared (as shipped)" if declared else "not declared",
                f"{sockets:,}",
                f"{users:,}",
                str(len(group)),
                " ".join(f"{r:,}/{e:,}" for r, e in zip(received, expected, strict=True)),
                fmt(median([run.result.cpu_us_per_delivery for run in group]), 1),
                fmt(median([run.relay_cpu_ms() for run in group]), 2),
                fmt(median([run.statements() for run in group]), 2),
                fmt(median([run.statements("read") for run in group]), 2),
                fmt(median([run.statements("outbox") for run in group]), 2),
                fmt(median([run.statements("transaction") for run in group]), 2),
                fmt(median([run.result.p50_ms for run in group]), 1),
                fmt(median([run.result.p99_ms for run in group]), 1),
                "; ".join(statuses),
            ]
        )
    return md_table(header, rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000, help="sockets, all on the project's task list")
    parser.add_argument("--users", type=int, default=100, help="distinct users the sockets sign in as")
    parser.add_argument("--tasks", type=int, default=100, help="tasks in the project")
    parser.add_argument("--private-every", type=int, default=5, help="every n-th task is private (0: none)")
    parser.add_argument("--writes", type=int, default=34, help="task saves, spread over the project's tasks")
    parser.add_argument("--rate", type=float, default=0.5, help="writes per second")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case (declared, not declared), alternated")
    parser.add_argument("--only", choices=["declared", "undeclared"], default=None, help="run one case only")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--database-url", default="", help="a PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--output", default="", help="also write the table (markdown) to this file")
    parser.add_argument(
        "--profile-writer",
        action="store_true",
        help="py-spy the writer (its relay thread) during the writes: test-output/bench/profile-F-...-writer.txt",
    )
    parser.add_argument("--fixtures", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fixtures:
        print(json.dumps(make_fixtures(args.users, args.tasks, args.private_every)))
        return 0
    # SIGTERM ends the run like Ctrl-C: the finally below stops every process.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    config = Config(
        rate=args.rate,
        clients=args.clients,
        timeout=180.0,
        idle=20.0,
        database_url=args.database_url,
        profile_writer=args.profile_writer,
    )
    bench = CollectionBench(config)
    cases = [
        declared
        for declared in (True, False)
        if args.only is None or args.only == ("declared" if declared else "undeclared")
    ]
    runs: list[Run] = []
    started = time.monotonic()
    try:
        print(f"Setting up Redis and the database; logs in {LOGS}", flush=True)
        bench.setup_stores()
        fixtures = bench.fixtures(max(args.users, 2), args.tasks, args.private_every)
        for round_index in range(args.rounds):
            for declared in cases:
                run = bench.run_case(fixtures, declared, args.sockets, args.users, args.writes)
                runs.append(run)
                print(
                    f"  round {round_index + 1} {'declared' if declared else 'not declared':13} "
                    f"{run.result.status}: {run.result.received:,}/{run.result.expected:,} delivered, "
                    f"server CPU {fmt(run.result.cpu_us_per_delivery, 1)} µs/delivery, "
                    f"relay {fmt(run.relay_cpu_ms(), 2)} ms/event, SQL {fmt(run.statements(), 2)}/event "
                    f"({run.writer.get('relay_statements')}), p99 {fmt(run.result.p99_ms, 1)} ms",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("Interrupted: stopping every process.")
        return 130
    finally:
        bench.close()
    command = "python -m bench.collection " + " ".join(argv)
    text = table(runs)
    print(f"\nDone in {time.monotonic() - started:.0f} s. `{command.strip()}`\n\n{text}")
    raw = [
        {
            "declared": run.declared,
            "sockets": run.sockets,
            "users": run.users,
            "events": run.events,
            "writer": run.writer,
            "result": {key: value for key, value in vars(run.result).items() if key != "latencies_ms"},
        }
        for run in runs
    ]
    saved = LOGS / f"collection-{args.sockets}x{args.users}-results.json"
    saved.write_text(json.dumps({"command": command, "runs": raw}, indent=1, default=str))
    if args.output:
        Path(args.output).write_text(f"`{command.strip()}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
