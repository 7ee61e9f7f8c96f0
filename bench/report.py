"""The printed table, docs/benchmarks.md and the latency plot, from a run's results."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from .scenarios import Config, Result
from .servers import LOGS, ROOT

SERVER_ORDER = [
    "drf-live",
    "dcrf",
    "channels",
    "websockets",
    "drf-live-deflate",
    "drf-live-daphne",
    "drf-live-undeclared",
    "drf-live-2p",
    "no-drf-live",
    "drf-live-split",
]
# Issue 5's targets for drf-live.
TARGET_CPU_US = 15.0
TARGET_P99_MS = 50.0
TARGET_RSS_KIB = 30.0
TARGET_PATCH_0 = 1.05
TARGET_PATCH_1000 = 1.15
USABLE_CORE = 0.7  # share of a core a process may use before latency suffers (headroom for bursts)


DECISIONS = Path(__file__).with_name("decisions.md")


def fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    value = a / b
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def pick(results: list[Result], scenario: str, server: str, sockets: int | None = None) -> Result | None:
    for result in results:
        if result.scenario == scenario and result.server == server and (sockets is None or result.sockets == sockets):
            return result
    return None


def ordered(results: Iterable[Result]) -> list[Result]:
    return sorted(results, key=lambda r: SERVER_ORDER.index(r.server) if r.server in SERVER_ORDER else 99)


# Tables --------------------------------------------------------------------------


def fanout_rows(results: list[Result], scenario: str) -> list[list[str]]:
    rows = []
    for r in ordered(r for r in results if r.scenario == scenario):
        rows.append(
            [
                r.label,
                f"{r.sockets:,}" + (f" ({r.failed_sockets} failed)" if r.failed_sockets else ""),
                f"{r.received:,} / {r.expected:,}",
                fmt(r.deliveries_per_s),
                fmt(r.cpu_us_per_delivery, 1),
                fmt(r.redis_cpu_us_per_delivery, 1),
                fmt(r.p50_ms, 1),
                fmt(r.p99_ms, 1),
                r.status,
            ]
        )
    return rows


FANOUT_HEADER = [
    "server",
    "sockets",
    "delivered / expected",
    "deliveries/s",
    "server CPU µs/delivery",
    "Redis CPU µs/delivery",
    "p50 ms",
    "p99 ms",
    "status",
]


def memory_rows(results: list[Result]) -> list[list[str]]:
    return [
        [
            r.label,
            f"{r.sockets:,}" + (f" ({r.failed_sockets} failed)" if r.failed_sockets else ""),
            fmt(r.rss_before / 2**20, 1),
            fmt(r.rss_after / 2**20, 1),
            fmt(r.rss_per_socket / 1024 if r.rss_per_socket is not None else None, 1),
            fmt(r.redis_per_socket / 1024 if r.redis_per_socket is not None else None, 2),
            fmt(r.connect_s, 1),
            r.status,
        ]
        for r in ordered(r for r in results if r.scenario == "C")
    ]


MEMORY_HEADER = [
    "server",
    "sockets",
    "RSS before MiB",
    "RSS after MiB",
    "server KiB/socket",
    "Redis KiB/socket",
    "connect+subscribe s",
    "status",
]


def patch_rows(results: list[Result]) -> list[list[str]]:
    base = pick(results, "D", "no-drf-live")
    rows = []
    for r in [r for r in results if r.scenario == "D"]:
        rows.append(
            [
                r.label,
                f"{r.sockets:,}",
                fmt(r.patch_p50_ms, 2),
                fmt(r.patch_p99_ms, 2),
                ratio(r.patch_p50_ms, base.patch_p50_ms if base else None),
                f"{r.received:,} / {r.expected:,}" if r.expected else "–",
                fmt(r.p99_ms, 1),
                r.status,
            ]
        )
    return rows


PATCH_HEADER = [
    "server",
    "subscribers",
    "PATCH p50 ms",
    "PATCH p99 ms",
    "p50 vs without drf-live",
    "pushes delivered",
    "push p99 ms",
    "status",
]


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=False))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def printed(results: list[Result]) -> str:
    parts = []
    for scenario, title in [
        ("A", "A: 1 object, many subscribers"),
        ("B", "B: many objects, 10 per socket"),
        ("scale", "Scale-out, scenario B"),
    ]:
        rows = fanout_rows(results, scenario)
        if rows:
            parts.append(f"{title}\n" + text_table(FANOUT_HEADER, rows))
    if memory_rows(results):
        parts.append("C: idle subscribed sockets\n" + text_table(MEMORY_HEADER, memory_rows(results)))
    if patch_rows(results):
        parts.append("D: REST PATCH latency\n" + text_table(PATCH_HEADER, patch_rows(results)))
    return "\n\n".join(parts)


# Ratios, targets, estimate ----------------------------------------------------------


def ratio_lines(results: list[Result], scenario: str) -> list[str]:
    live = pick(results, scenario, "drf-live")
    if live is None:
        return []
    lines = []
    others = [r for r in ordered(results) if r.scenario == scenario and r.server in {"dcrf", "channels", "websockets"}]
    if live.cpu_us_per_delivery:
        lines.append(
            "drf-live server CPU per delivery = "
            + ", ".join(f"{ratio(live.cpu_us_per_delivery, r.cpu_us_per_delivery)} {r.server}" for r in others)
            + "."
        )
    if live.deliveries_per_s:
        lines.append(
            "drf-live deliveries/s = "
            + ", ".join(f"{ratio(live.deliveries_per_s, r.deliveries_per_s)} {r.server}" for r in others)
            + "."
        )
    if live.p99_ms:
        lines.append(
            "drf-live p99 latency = " + ", ".join(f"{ratio(live.p99_ms, r.p99_ms)} {r.server}" for r in others) + "."
        )
    return lines


def targets(results: list[Result]) -> list[list[str]]:
    rows = []
    a = pick(results, "A", "drf-live")
    if a is not None:
        dcrf, chan = pick(results, "A", "dcrf"), pick(results, "A", "channels")
        rows.append(
            [
                "A: server CPU per delivery",
                f"≤ {TARGET_CPU_US:.0f} µs",
                fmt(a.cpu_us_per_delivery, 1, " µs"),
                yes(a.cpu_us_per_delivery is not None and a.cpu_us_per_delivery <= TARGET_CPU_US),
            ]
        )
        if dcrf is not None and dcrf.cpu_us_per_delivery and a.cpu_us_per_delivery:
            better = dcrf.cpu_us_per_delivery / a.cpu_us_per_delivery
            rows.append(
                ["A: vs djangochannelsrestframework", "≥ 50× better", f"{better:.1f}× better", yes(better >= 50)]
            )
        if chan is not None and chan.cpu_us_per_delivery and a.cpu_us_per_delivery:
            better = chan.cpu_us_per_delivery / a.cpu_us_per_delivery
            rows.append(["A: vs plain Channels", "≥ 5× better", f"{better:.1f}× better", yes(better >= 5)])
        rows.append(
            [
                f"A: p99 write-to-receipt at {a.writer.get('writes', 0) and 'the set'} rate",
                f"≤ {TARGET_P99_MS:.0f} ms",
                fmt(a.p99_ms, 1, " ms"),
                yes(a.p99_ms is not None and a.p99_ms <= TARGET_P99_MS),
            ]
        )
    c = pick(results, "C", "drf-live")
    if c is not None and c.rss_per_socket is not None:
        kib = c.rss_per_socket / 1024
        rows.append(
            [
                f"C: server memory per idle socket ({c.sockets:,} sockets)",
                f"≤ {TARGET_RSS_KIB:.0f} KiB",
                fmt(kib, 1, " KiB"),
                yes(kib <= TARGET_RSS_KIB),
            ]
        )
    base = pick(results, "D", "no-drf-live")
    for server, subscribers, limit, where in [
        ("drf-live", 0, TARGET_PATCH_0, ""),
        ("drf-live", None, TARGET_PATCH_1000, " (same process)"),
        ("drf-live-split", None, TARGET_PATCH_1000, " (on a second process)"),
    ]:
        d = [
            r
            for r in results
            if r.scenario == "D" and r.server == server and ((r.sockets == 0) if subscribers == 0 else (r.sockets > 0))
        ]
        if base is not None and d and base.patch_p50_ms and d[0].patch_p50_ms:
            value = d[0].patch_p50_ms / base.patch_p50_ms
            rows.append(
                [
                    f"D: PATCH p50 with {d[0].sockets:,} subscribers{where} vs without drf-live",
                    f"≤ {limit:.2f}×",
                    f"{value:.2f}×",
                    yes(value <= limit),
                ]
            )
    return rows


def yes(ok: bool) -> str:
    return "met" if ok else "**missed**"


def estimate(results: list[Result]) -> str:
    """Processes and Redis instances for 100k and 1M sockets, from the measured per-delivery costs."""
    b = pick(results, "B", "drf-live") or pick(results, "A", "drf-live")
    c = pick(results, "C", "drf-live")
    if b is None or not b.cpu_us_per_delivery:
        return "No drf-live delivery figure in this run: no estimate."
    cpu = b.cpu_us_per_delivery
    redis_cpu = b.redis_cpu_us_per_delivery or 0.0
    rss = (c.rss_per_socket or 0.0) if c is not None else 0.0
    redis_mem = (c.redis_per_socket or 0.0) if c is not None else 0.0
    lines = [
        f"Inputs, measured above: drf-live server CPU {cpu:.0f} µs and Redis CPU {redis_cpu:.0f} µs per delivery "
        f"(scenario {b.scenario}), {rss / 1024:.0f} KiB of server memory and {redis_mem / 1024:.1f} KiB of Redis "
        "memory "
        "per idle subscribed socket (scenario C). A process (one event loop, one core) or a Redis (single-threaded) "
        f"is counted as full at {USABLE_CORE:.0%} of a core, leaving room for bursts. The load is an assumption: "
        "each socket receives on average 0.1 or 1 event per second.",
        "",
        "| sockets | events/s per socket | deliveries/s | server processes (CPU) "
        "| server processes (memory, 4 GiB each) "
        "| Redis instances (CPU) | Redis memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for sockets in [100_000, 1_000_000]:
        for per_socket in [0.1, 1.0]:
            deliveries = sockets * per_socket
            procs_cpu = math.ceil(deliveries * cpu / 1e6 / USABLE_CORE)
            procs_mem = math.ceil(sockets * rss / (4 * 2**30)) if rss else 0
            redis_n = math.ceil(deliveries * redis_cpu / 1e6 / USABLE_CORE) if redis_cpu else 0
            lines.append(
                f"| {sockets:,} | {per_socket} | {deliveries:,.0f} | {procs_cpu:,} | {procs_mem:,} "
                f"| {max(1, redis_n):,} "
                f"| {sockets * redis_mem / 2**30:.1f} GiB |"
            )
    lines += [
        "",
        "Processes needed = the larger of the CPU and memory columns (plus the REST traffic, not counted here). "
        "Redis works per event and per server process that holds subscribers of the event's target (the seq and "
        "the history entry once per event, one group message per such process), not per delivery: the Redis CPU "
        f"per delivery above is scenario {b.scenario}'s, where an event reaches "
        f"{'10 sockets' if b.scenario == 'B' else 'its subscribers'}, so the Redis column holds for that fan-out "
        "and shrinks in proportion with more subscribers per event"
        + (
            f" (scenario A, 1,000 per event: {a.redis_cpu_us_per_delivery:.1f} µs per delivery)"
            if (a := pick(results, "A", "drf-live")) is not None and a.redis_cpu_us_per_delivery is not None
            else ""
        )
        + ". Sharding (`REDIS_URL` with several hosts) spreads the streams (seq, history, channel) over "
        'instances, each on the host its name hashes to (docs/deployment.md, "Sharding").',
    ]
    return "\n".join(lines)


# Profile --------------------------------------------------------------------------


PROFILE_BUCKETS = [
    # (what, substrings of a frame name that put a sample there); first match wins, so the
    # deepest activities come first (every fan-out sample has Hub._pump below it).
    (
        "the ASGI server's send: uvicorn's `WebSocketsSansIOProtocol.send`, websockets' framing, the socket write",
        ["WebSocketsSansIOProtocol.send (", "(websockets/"],
    ),
    ("channels_redis `receive()`: the hub's one read per group message", ["RedisChannelLayer.receive"]),
    ("drf-live's per-socket work: the hub's loop, `hub_message`, `forward`, `Outgoing`", ["(notifications/"]),
    ("publishing: `group_send`, the event store", ["group_send", "Publisher", "Store"]),
    ("accepting and subscribing sockets, HTTP", ["websocket_connect", "subscribe", "http"]),
]


def _frame_name(frame: str) -> str:
    if " (" not in frame:
        return frame
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})"


def profile_summary(
    path: Path,
    top: int = 15,
    buckets_of: list[tuple[str, list[str]]] = PROFILE_BUCKETS,
    what: str = "samples of the server's main thread while it delivered",
    waits: tuple[str, ...] = (),
) -> str:
    """Where the samples of a py-spy ``--format raw`` file go: by activity, and the hottest functions.

    ``waits``: functions that only wait (``Condition.wait``); a sample whose
    innermost frame is one of them is a thread that was blocked, which py-spy's
    ``--nonblocking`` does not always recognise as idle. Such samples are left
    out and counted apart.
    """
    if not path.exists():
        return ""
    buckets: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = waiting = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if any(frames[-1].startswith(f"{name} (") for name in waits):
            waiting += count
            continue
        total += count
        own[frames[-1]] += count
        for label, needles in buckets_of:
            if any(needle in frame for frame in frames for needle in needles):
                buckets[label] += count
                break
        else:
            buckets["the event loop itself (uvloop: polling, scheduling, socket I/O in C) and the rest"] += count
    if not total:
        return ""
    by_activity = "\n".join(f"| {100 * n / total:.1f}% | {label} |" for label, n in buckets.most_common())
    hottest = "\n".join(f"| {100 * n / total:.1f}% | `{name}` |" for name, n in own.most_common(top))
    blocked = ", ".join(f"`{name}`" for name in waits)
    left_out = f" ({waiting:,} more of threads blocked in {blocked}, left out)" if waiting else ""
    return (
        f"{total:,} {what}{left_out}.\n\n"
        f"By activity (a sample counts for the first activity found on its stack):\n\n"
        f"| share | activity |\n|---|---|\n{by_activity}\n\n"
        f"Hottest functions, self time (time in C, such as uvloop's, shows on the Python frame that called it, "
        f"`Runner.run` for the loop):\n\n| share | function |\n|---|---|\n{hottest}"
    )


# The document -----------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for package in [
        "django",
        "channels",
        "channels-redis",
        "djangorestframework",
        "djangochannelsrestframework",
        "uvicorn",
        "websockets",
        "redis",
        "orjson",
        "uvloop",
    ]:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        redis_version = "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "notifications", "api", "project"], cwd=ROOT, capture_output=True, text=True
    ).stdout.rstrip("\n")
    return {
        "cpu": f"{os.cpu_count()} × {cpu}",
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": ", ".join(versions) + f", redis-server {redis_version.replace('v=', '')}",
        "commit": commit
        + (
            " with uncommitted changes in " + ", ".join(sorted({e[3:].split("/")[0] for e in dirty.splitlines()}))
            if dirty
            else ""
        ),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def observations(results: list[Result]) -> list[str]:
    notes = []
    for r in results:
        where = f"{r.scenario}/{r.server}"
        if r.status != "ok":
            notes.append(f"{where}: {r.status}.")
        if r.failed_sockets:
            notes.append(f"{where}: {r.failed_sockets} sockets failed to connect or subscribe: {r.failures}.")
        if r.seq_gaps or r.seq_regressions:
            notes.append(
                f"{where}: {r.seq_gaps} seq gaps and {r.seq_regressions} repeated/out-of-order seqs seen by clients."
            )
        if r.duplicates:
            notes.append(
                f"{where}: {r.duplicates:,} deliveries repeated a write the socket had already seen "
                "(counted as deliveries; latency taken from the first)"
                + (
                    ": dcrf reads the row when it handles each event, so it sends the latest state."
                    if r.server == "dcrf"
                    else "."
                )
            )
        if r.error_frames:
            notes.append(f"{where}: {r.error_frames} error frames received.")
        if r.closed:
            notes.append(f"{where}: sockets closed by the server during the phase (close codes {r.closed}).")
        if r.writer.get("drained") is False:
            notes.append(f"{where}: the writer's relay had not drained 60 s after the last write.")
        if r.log_errors:
            sample = "; ".join(sorted(set(line.strip()[:160] for line in r.log_errors))[:3])
            notes.append(f"{where}: {len(r.log_errors)} error/warning lines in the server log, e.g. `{sample}`.")
    return notes or ["Nothing: every phase finished, every expected delivery arrived, no seq gap, no server error."]


READING = (
    "Reading the figures. A offers 100,000 deliveries/s (100 writes/s × 1,000 subscribers), more than any "
    "Django server here can do, so its deliveries/s is each server's capacity and its latencies are queueing "
    "delay. B offers only 1,000 deliveries/s (100 writes/s × 10 subscribers), which every server but dcrf keeps "
    "up with: its deliveries/s is the offered rate, its CPU per delivery includes the idle cost of 1,000 sockets "
    "over the phase, and the one-vs-two-process comparison shows cost, not capacity (raise `BENCH_RATE` for that). "
    "channels_redis' core layer keeps one queue per server process (all of its sockets' channels share it) with "
    "`capacity` 1,000 in this project: a group send to 1,000 local sockets fills it, and further sends are dropped "
    "silently until the process drains it, which is how a server that cannot keep up loses deliveries in A."
)


def document(results: list[Result], config: Config, command: str, plot_name: str, database: str) -> str:
    info = machine()
    writer_rows = [
        [
            r.scenario,
            r.label,
            fmt(r.writer.get("save_p50_ms"), 2),
            fmt(r.writer.get("save_p99_ms"), 2),
            fmt(1000 * r.writer["cpu_s"] / r.writer["writes"] if r.writer.get("writes") else None, 2),
        ]
        for r in results
        if r.writer.get("writes")
    ]
    a_writes = config.a_writes
    sections = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); do not edit by hand: rerun it. "
        "Figures come from one run on a shared machine, so they are noisy from run to run: compare the servers "
        "**within** a run (the ratios), not across runs.",
        "",
        f"- Command: `{command}`",
        f"- Date: {info['date']}; drf-live at {info['commit']}",
        f"- Machine: {info['cpu']}, {info['memory']}, {info['os']}, Python {info['python']}",
        f"- Versions: {info['versions']}",
        f"- Database: {database}; one `redis-server` (no persistence) for every server, flushed before each one.",
        f"- Sizes: A {config.a_sockets:,} sockets × {a_writes:,} writes; B {config.b_sockets:,} sockets × "
        f"{config.b_per_socket} of {config.b_objects:,} objects, {config.b_writes:,} writes; C {config.c_sockets:,} "
        f"sockets; D {config.d_patches} PATCHes, {config.d_subscribers:,} subscribers; writes at {config.rate:g}/s; "
        f"{config.clients} client processes; a phase gives up {config.timeout:.0f} s after its first write "
        f"or {config.idle:.0f} s after its last delivery.",
        "",
        "## How it measures",
        "",
        "Redis, each server, the writer and the clients are separate processes on 127.0.0.1 (everything shares the "
        "2 cores, clients included, so the clients' own receive cost limits what the fastest servers can show). "
        "Servers run one at a time, each freshly started for each scenario, with `DEBUG=0`:",
        "",
        "- **drf-live (as shipped)**: "
        "`uvicorn project.asgi:application --ws websockets-sansio --ws-per-message-deflate false` "
        "with `REDIS_URL` (channels_redis core layer), the example project's settings. Clients authenticate with "
        '`Authorization: Token` and subscribe with `{"action": "subscribe", "model": "api.task", "id": ...}`; '
        "every subscription runs the REST API's access checks.",
        "- **djangochannelsrestframework 1.3**: `ObserverModelInstanceMixin` + `GenericAsyncAPIConsumer` on `api.Task` "
        "with `TaskSerializer` (`bench/dcrf_app.py`), `subscribe_instance`; no authentication, `AllowAny`.",
        "- **plain Channels consumer**: `group_add` on subscribe, `send_json` per event (`bench/plain_app.py`); the "
        "writer does `async_to_sync(channel_layer.group_send)` of the `TaskSerializer` output after each save.",
        "- **raw websockets**: `websockets.broadcast` of one pre-encoded frame, fed by one Redis `PUBLISH` per write "
        "(`bench/raw_server.py`): the floor for Python.",
        "",
        "Same models (`api.Task`), same payload (`TaskSerializer` output), same uvicorn flags (plus `--log-level "
        "warning --no-access-log` for all). The writer (`bench/writer.py`, its own process) calls `Task.save()` at "
        "a fixed rate and puts `time.time_ns()` in the title; a client's latency is its receipt time minus that "
        "(write-to-receipt, including the save itself). **Server CPU per delivery** is the server process tree's "
        "utime+stime (from `/proc/<pid>/stat`) over the write phase divided by deliveries received; Redis CPU per "
        "delivery likewise for `redis-server`. **Deliveries/s** is deliveries over the span from the first write to "
        "the last receipt, so a server that cannot keep up shows its own throughput. Memory per socket is the "
        "server's RSS after minus before connecting the idle sockets, divided by their number. drf-live clients "
        "also check `meta.seq` (each event must carry the previous seq + 1).",
        "",
        READING,
        "",
        "## Targets of issue 5",
        "",
        md_table(["target", "goal", "measured", ""], targets(results)) if targets(results) else "No drf-live figures.",
        "",
    ]
    if DECISIONS.exists():
        # Written by hand: the choices made for speed, each with the figure that decided it.
        sections += [DECISIONS.read_text().strip(), ""]
    for scenario, title, intro in [
        (
            "A",
            "Scenario A: one object, many subscribers",
            f"{config.a_sockets:,} sockets subscribed to one task; {a_writes:,} writes of it at {config.rate:g}/s.",
        ),
        (
            "B",
            "Scenario B: many objects",
            f"{config.b_sockets:,} sockets, each subscribed to {config.b_per_socket} of {config.b_objects:,} tasks "
            f"(every task has the same number of subscribers); {config.b_writes:,} writes spread over them.",
        ),
    ]:
        rows = fanout_rows(results, scenario)
        if not rows:
            continue
        sections += [f"## {title}", "", intro, "", md_table(FANOUT_HEADER, rows), ""]
        sections += [f"- {line}" for line in ratio_lines(results, scenario)] + [""]
    if memory_rows(results):
        sections += [
            "## Scenario C: idle subscribed sockets",
            "",
            f"{config.c_sockets:,} sockets, each subscribed to one task, then idle.",
            "",
            md_table(MEMORY_HEADER, memory_rows(results)),
            "",
        ]
        live = pick(results, "C", "drf-live")
        if live is not None and live.rss_per_socket:
            sections += [
                "- drf-live memory per socket = "
                + ", ".join(
                    f"{ratio(live.rss_per_socket, r.rss_per_socket)} {r.server}"
                    for r in ordered(results)
                    if r.scenario == "C" and r.server != "drf-live"
                )
                + ".",
                "",
            ]
    if patch_rows(results):
        sections += [
            "## Scenario D: REST PATCH latency",
            "",
            f"{config.d_patches} sequential `PATCH /api/tasks/<id>/` (httpx, token auth, after 10 warm-up "
            "requests) on the server's own REST API: without drf-live (`bench/settings_nolive.py`: "
            "`notifications` not installed, so `LiveModel.save` publishes nothing), with drf-live and no "
            f"subscriber, with drf-live and {config.d_subscribers:,} sockets subscribed to the task "
            "served by the same process as the PATCHes, and the same with the sockets on a second server "
            "process (same settings and Redis) while the first serves only the PATCHes.",
            "",
            md_table(PATCH_HEADER, patch_rows(results)),
            "",
        ]
    if any(r.scenario == "scale" for r in results):
        one, two = pick(results, "B", "drf-live"), pick(results, "scale", "drf-live-2p")
        sections += [
            "## Scale-out: one port, one or two processes (issue item 3)",
            "",
            "Scenario B again, drf-live served by `uvicorn --workers 2` (two processes accepting on one port) "
            "with the same single Redis; CPU is summed over both workers and their parent.",
            "",
            md_table(FANOUT_HEADER, fanout_rows(results, "B")[:1] + fanout_rows(results, "scale")),
            "",
        ]
        if one is not None and two is not None and one.deliveries_per_s and two.deliveries_per_s:
            sections += [
                f"- Two processes deliver {ratio(two.deliveries_per_s, one.deliveries_per_s)} the deliveries/s "
                "of one (on 2 cores shared with Redis, the writer and the clients).",
                "",
            ]
    sections += ["## Estimate for 100,000 and 1,000,000 subscribed sockets", "", estimate(results), ""]
    if writer_rows:
        sections += [
            "## The writer's side",
            "",
            "Time of `save()` (plus, for plain Channels and raw websockets, the writer's own send) and "
            "writer CPU per write: what publishing costs the code that writes.",
            "",
            md_table(["scenario", "server", "save p50 ms", "save p99 ms", "writer CPU ms/write"], writer_rows),
            "",
        ]
    if plot_name:
        sections += ["## Latency distribution", "", f"![Write-to-receipt latency per server]({plot_name})", ""]
    profile = profile_summary(LOGS / "profile-A-profile-drf-live.txt")
    if profile:
        sections += [
            "## Where drf-live's CPU goes (scenario A, py-spy)",
            "",
            "An extra run of scenario A (not in the tables above) with `py-spy record --nonblocking` "
            "attached to the drf-live server during the write phase.",
            "",
            profile,
            "",
        ]
    sections += ["## Anything that looked wrong", ""] + [f"- {line}" for line in observations(results)] + [""]
    return "\n".join(sections)


def plot(results: list[Result], path: Path) -> bool:
    """CDFs of write-to-receipt latency, one panel per fan-out scenario, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scenarios = [
        s for s in ["A", "B", "scale", "D"] if any(r.scenario == s and r.latencies_ms is not None for r in results)
    ]
    if not scenarios:
        return False
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4.2), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=False):
        for r in [r for r in results if r.scenario == scenario and r.latencies_ms is not None]:
            data = np.sort(np.maximum(r.latencies_ms, 0.01))
            y = np.arange(1, len(data) + 1) / len(data)
            label = f"{r.server}" + (f" ({r.sockets} subs)" if scenario == "D" else "") + f", p99 {r.p99_ms:,.0f} ms"
            axis.plot(data, y, label=label)
        axis.set_xscale("log")
        axis.set_xlabel("write-to-receipt latency (ms, log)")
        axis.set_ylabel("share of deliveries")
        axis.set_title(
            {"A": "A: 1 object", "B": "B: many objects", "scale": "B: 1 vs 2 processes", "D": "D: pushes of PATCHes"}[
                scenario
            ]
        )
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def raw(results: list[Result]) -> list[dict[str, Any]]:
    return [{key: value for key, value in asdict(r).items() if key != "latencies_ms"} for r in results]
