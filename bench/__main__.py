"""``python -m bench``: run the scenarios, print the table, write the report and the plot.

Sizes default to issue 5's full size; every option also reads an environment
variable (``BENCH_SCALE=0.1`` shrinks every size, ``BENCH_SERVERS=drf-live,channels``
picks servers, and so on: see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from . import redis_commands, report
from .scenarios import Bench, Config, Result
from .servers import LOGS, ROOT, SERVERS


def parse(argv: list[str]) -> tuple[argparse.Namespace, Config]:
    env = os.environ.get
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=env("BENCH_SERVERS", ",".join(defaults.servers)),
        help="comma-separated: drf-live, dcrf, channels, websockets (and the variants drf-live-deflate, "
        "drf-live-daphne, drf-live-undeclared)",
    )
    parser.add_argument(
        "--scenarios",
        default=env("BENCH_SCENARIOS", ",".join(defaults.scenarios)),
        help="comma-separated: A, B, C, D, scale",
    )
    parser.add_argument(
        "--scale", type=float, default=float(env("BENCH_SCALE", "1")), help="multiplies every socket and write count"
    )
    parser.add_argument(
        "--sockets",
        type=int,
        default=int(env("BENCH_SOCKETS", "0")),
        help="if set: the socket count of A, B, C and D's subscribers (overrides --scale for them)",
    )
    parser.add_argument(
        "--writes",
        type=int,
        default=int(env("BENCH_WRITES", "0")),
        help="if set: the write count of A and B and D's PATCH count",
    )
    parser.add_argument("--rate", type=float, default=float(env("BENCH_RATE", str(defaults.rate))), help="writes/s")
    parser.add_argument(
        "--clients", type=int, default=int(env("BENCH_CLIENTS", str(defaults.clients))), help="client processes"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(env("BENCH_TIMEOUT", str(defaults.timeout))),
        help="seconds a delivery phase may last after its first write",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=float(env("BENCH_IDLE", str(defaults.idle))),
        help="seconds without a delivery, after the last write, that end a phase",
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=env("BENCH_PROFILE", "0") == "1",
        help="py-spy the drf-live server in an extra run of scenario A",
    )
    parser.add_argument(
        "--profile-writer",
        action="store_true",
        help="py-spy the writer process of A and B during the writes, per thread and idle time included "
        "(drf-live's relay thread runs there): test-output/bench/profile-<scenario>-<server>-writer.txt",
    )
    parser.add_argument("--output", default=env("BENCH_OUTPUT", "docs/benchmarks.md"))
    parser.add_argument("--plot", default=env("BENCH_PLOT", "docs/benchmarks.png"))
    parser.add_argument(
        "--require-deliveries", action="store_true", help="exit 1 if any server delivered nothing (the CI smoke run)"
    )
    parser.add_argument(
        "--database-url",
        default=env("BENCH_DATABASE_URL", ""),
        help="a PostgreSQL server URL to create the run's database on (default: SQLite)",
    )
    parser.add_argument(
        "--from-results",
        default="",
        help="rewrite the report from a run's saved results (test-output/bench/<name>-results.json) "
        "instead of running; the plot of that run is kept",
    )
    args = parser.parse_args(argv)
    config = Config(
        servers=[s for s in args.servers.split(",") if s],
        scenarios=[s for s in args.scenarios.split(",") if s],
        rate=args.rate,
        clients=args.clients,
        timeout=args.timeout,
        idle=args.idle,
        profile=args.profile,
        profile_writer=args.profile_writer,
        database_url=args.database_url,
    )
    config.scaled(args.scale)
    if args.sockets:
        config.a_sockets = config.b_sockets = config.c_sockets = config.d_subscribers = args.sockets
        config.b_objects = max(config.b_per_socket, args.sockets)
    if args.writes:
        config.a_writes = config.b_writes = config.d_patches = args.writes
    for name in config.servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    return args, config


def run(bench: Bench, config: Config, log: callable) -> list[Result]:  # type: ignore[valid-type]
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        log(
            f"  {result.scenario:5} {result.server:12} {result.status}: {result.received:,}/{result.expected:,} "
            f"delivered, {report.fmt(result.deliveries_per_s)}/s, CPU {report.fmt(result.cpu_us_per_delivery, 1)} "
            f"µs/delivery, p99 {report.fmt(result.p99_ms, 1)} ms"
        )

    kinds = [SERVERS[name] for name in config.servers]
    if "A" in config.scenarios:
        log("Scenario A")
        for kind in kinds:
            record(bench.scenario_a(kind))
    if "B" in config.scenarios:
        log("Scenario B")
        for kind in kinds:
            record(bench.scenario_b(kind))
    if "scale" in config.scenarios and "drf-live" in config.servers:
        log("Scale-out (scenario B, uvicorn --workers 2)")
        record(bench.scenario_b(SERVERS["drf-live-2p"], scenario="scale"))
    if "C" in config.scenarios:
        log("Scenario C")
        for kind in kinds:
            result = bench.scenario_c(kind)
            results.append(result)
            log(
                f"  C     {kind.name:12} {result.status}: {result.sockets:,} sockets, "
                f"{report.fmt((result.rss_per_socket or 0) / 1024, 1)} KiB/socket"
            )
    if "D" in config.scenarios:
        log("Scenario D")
        for kind, subscribers, split in [
            (SERVERS["no-drf-live"], 0, False),
            (SERVERS["drf-live"], 0, False),
            (SERVERS["drf-live"], config.d_subscribers, False),
            (SERVERS["drf-live"], config.d_subscribers, True),
        ]:
            result = bench.scenario_d(kind, subscribers, split)
            results.append(result)
            log(
                f"  D     {result.server:12} {subscribers:>5} subscribers {result.status}: PATCH p50 "
                f"{report.fmt(result.patch_p50_ms, 2)} ms, p99 {report.fmt(result.patch_p99_ms, 2)} ms"
            )
    if config.profile and "drf-live" in config.servers:
        log("Profile: scenario A again, py-spy on the drf-live server")
        profiled = bench.scenario_a(SERVERS["drf-live"], profile=True)
        log(f"  {profiled.status}; samples in {LOGS / 'profile-A-profile-drf-live.txt'}")
    return results


def shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it (``--output /tmp/x.md`` is fine too)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


#: Sections of the report that another command or a person wrote, kept when ``make bench`` rewrites
#: it: each goes back before "Scale-out", in this order (their order in docs/benchmarks.md).
KEPT_SECTIONS = (
    "## Scenario E: restart storm",
    redis_commands.HEADING,
    "## Issue 10: the outbox's cost and per-user collections",
)


def write_report(output: Path, text: str) -> None:
    """Write the report, keeping the sections of ``KEPT_SECTIONS`` that the old one has."""
    old = output.read_text() if output.exists() else ""
    for heading in KEPT_SECTIONS:
        kept = redis_commands.extract_section(old, heading)
        if kept:
            text = redis_commands.insert_section(text, kept, heading)
    output.write_text(text)


def rewrite(args: argparse.Namespace, config: Config, command: str) -> int:
    """Write the report again from saved results (after the doc generator or bench/decisions.md changed)."""
    saved = json.loads((ROOT / args.from_results).read_text())
    if isinstance(saved, list):  # runs before the command and database were saved
        saved = {"results": saved}
    results = [Result(**entry) for entry in saved["results"]]
    command = saved.get("command", command)
    output = ROOT / args.output
    plot_name = Path(args.plot).name if args.plot and (ROOT / args.plot).exists() else ""
    database = saved.get("database", "SQLite")
    write_report(output, report.document(results, config, command, plot_name, database))
    print(f"Rewrote {shown(output)} from {args.from_results}")
    return 0


def main(argv: list[str]) -> int:
    args, config = parse(argv)
    command = "make bench" if os.environ.get("BENCH_VIA_MAKE") else "python -m bench " + shlex.join(argv)
    if args.from_results:
        return rewrite(args, config, command)
    # SIGTERM ends the run like Ctrl-C: the finally below stops every process.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.monotonic()
    bench = Bench(config)
    try:
        log(f"Setting up Redis and the database; logs in {LOGS}")
        bench.setup()
        results = run(bench, config, log)
    except KeyboardInterrupt:
        log("Interrupted: stopping every process.")
        return 130
    finally:
        bench.close()
    # Profile runs are not part of the tables.
    results = [r for r in results if r.scenario != "A-profile"]
    log(f"\nDone in {time.monotonic() - started:.0f} s.\n")
    log(report.printed(results))
    output = ROOT / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_path = ROOT / args.plot if args.plot else None
    plotted = report.plot(results, plot_path) if plot_path else False
    database = bench.database.kind if bench.database else "?"
    text = report.document(results, config, command, plot_path.name if plotted and plot_path else "", database)
    write_report(output, text)
    saved = {"command": command, "database": database, "results": report.raw(results)}
    (LOGS / f"{output.stem}-results.json").write_text(json.dumps(saved, indent=1, default=str))
    log(f"\nWrote {shown(output)}" + (f" and {shown(plot_path)}" if plotted and plot_path else ""))
    notes = report.observations(results)
    log("\nObservations:\n" + "\n".join(f"- {line}" for line in notes))
    if args.require_deliveries:
        empty = [
            f"{r.scenario}/{r.server}"
            for r in results
            if (r.scenario != "C" and r.expected and not r.received) or r.status.startswith("failed")
        ]
        if empty:
            log(f"\nFAILED: delivered nothing or failed: {', '.join(empty)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
