"""Ingest throughput through the HTTP API: NDJSON batches, several connections, durable answers.

Why this shape: it is how producers feed keylife (the demo poster, ``keylife ingest``), and
every answer waits for the shared fdatasync, so the figure is what a deployment can absorb
with its normal guarantees. The server runs alone on one core and the load generator on the
other, so the figure is the server's and its CPU seconds per event can be read from /proc.
Bodies are serialised with orjson before the clock starts: the client only sends and checks.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.common import Metric, Stopwatch, cores, cpu_seconds, demo_events, log, percentile, pin, result, scratch
from bench.server import running

NAME = "ingest_http"
FULL = {"events": 600_000, "batch": 1000, "connections": 4, "warmup_batches": 8, "max_seconds": 120.0}
QUICK = {"events": 24_000, "batch": 1000, "connections": 4, "warmup_batches": 4, "max_seconds": 10.0}


class Feeder:
    """Hands pre-serialised bodies to the connections until they run out or time is up."""

    def __init__(self, bodies: list[tuple[bytes, int]], deadline: float) -> None:
        self.bodies, self.deadline = bodies, deadline
        self.next = 0
        self.lock = threading.Lock()
        self.acked = 0
        self.latencies: list[float] = []
        self.acks: list[tuple[float, int]] = []  # (when, lines): the rate over the run
        self.errors: list[str] = []

    def take(self) -> tuple[bytes, int] | None:
        with self.lock:
            if self.next >= len(self.bodies) or time.perf_counter() > self.deadline or self.errors:
                return None
            self.next += 1
            return self.bodies[self.next - 1]


def post(conn: http.client.HTTPConnection, headers: dict[str, str], body: bytes, lines: int) -> str | None:
    """One durable POST; None when every line was accepted, else what went wrong."""
    conn.request("POST", "/v1/events", body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        return f"HTTP {response.status}: {data[:300]!r}"
    answer = orjson.loads(data)
    if answer["accepted"] != lines:
        return f"{answer['accepted']} of {lines} accepted"
    return None


def connection_loop(host: str, port: int, headers: dict[str, str], feeder: Feeder) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        while (item := feeder.take()) is not None:
            body, lines = item
            started = time.perf_counter()
            error = post(conn, headers, body, lines)
            took = time.perf_counter() - started
            with feeder.lock:
                if error:
                    feeder.errors.append(error)
                else:
                    feeder.acked += lines
                    feeder.latencies.append(took)
                    feeder.acks.append((started + took, lines))
    except (OSError, http.client.HTTPException) as exc:
        with feeder.lock:
            feeder.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def batch_bodies(events: list[dict[str, Any]], batch: int) -> list[tuple[bytes, int]]:
    """NDJSON bodies of ``batch`` events each, with their line counts."""
    return [
        (b"".join(orjson.dumps(e) + b"\n" for e in events[i : i + batch]), len(events[i : i + batch]))
        for i in range(0, len(events), batch)
    ]


def drive(
    host: str, port: int, headers: dict[str, str], timed: list[tuple[bytes, int]], p: dict[str, Any]
) -> tuple[Feeder, Stopwatch]:
    """Send ``timed`` over ``p["connections"]`` kept-alive connections as fast as they are acked."""
    feeder = Feeder(timed, time.perf_counter() + p["max_seconds"])
    watch = Stopwatch()
    threads = [
        threading.Thread(target=connection_loop, args=(host, port, headers, feeder)) for _ in range(p["connections"])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watch.stop()
    return feeder, watch


def by_fifth(acks: list[tuple[float, int]], t0: float, wall: float) -> list[int]:
    """Events/s acknowledged in each fifth of the run: shows whether the rate holds as the
    registry and journal grow, which one overall figure hides."""
    counts = [0] * 5
    for when, lines in acks:
        counts[min(4, int((when - t0) / wall * 5))] += lines
    return [round(c / (wall / 5)) for c in counts]


@dataclass
class Measured:
    """One server run: what the load generator saw and what the server spent."""

    feeder: Feeder
    watch: Any
    server_cpu: float
    journal_bytes: int

    @property
    def rate(self) -> float:
        return self.feeder.acked / self.watch.wall

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.feeder.acked * 1e6


def measure(
    bodies: list[tuple[bytes, int]], p: dict[str, Any], server_core: int, extra: dict[str, Any] | None = None
) -> Measured:
    """Start a fresh server (``extra``: config sections on top of the bench's), warm it up, drive the
    timed bodies through it, stop it."""
    warmup, timed = bodies[: p["warmup_batches"]], bodies[p["warmup_batches"] :]
    with scratch(NAME) as tmp, running(tmp, server_core, extra=extra) as server:
        split = urlsplit(server.url)
        host, port = split.hostname or "127.0.0.1", split.port or 80
        headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/x-ndjson"}
        conn = http.client.HTTPConnection(host, port, timeout=60)
        for body, lines in warmup:  # imports, caches, first segment: not part of the figure
            if error := post(conn, headers, body, lines):
                raise RuntimeError(f"warm-up batch refused: {error}")
        conn.close()
        server_cpu0 = cpu_seconds(server.pid)
        feeder, watch = drive(host, port, headers, timed, p)
        server_cpu = cpu_seconds(server.pid) - server_cpu0
        journal_bytes = sum(f.stat().st_size for f in (server.data_dir / "journal").rglob("*") if f.is_file())
    if feeder.errors:
        raise RuntimeError(f"ingest failed: {feeder.errors[0]}")
    return Measured(feeder, watch, server_cpu, journal_bytes)


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    bodies = batch_bodies(demo_events(p["events"]), p["batch"])
    log(f"{NAME}: {p['events']} demo events in {len(bodies)} bodies; server on core {server_core}")
    m = measure(bodies, p, server_core)
    feeder, watch = m.feeder, m.watch
    log(f"{NAME}: {feeder.acked} events in {watch.wall:.1f} s = {m.rate:,.0f}/s")
    return result(
        [
            Metric("ingest_http_events_per_s", m.rate, "events/s", ">= 20000"),
            Metric("ingest_http_server_cpu_us_per_event", m.cpu_us, "µs CPU/event", None, 1),
        ],
        p | {"server_core": server_core, "client_core": client_core, "durable": True, "events_source": "bench"},
        events_acked=feeder.acked,
        seconds=round(watch.wall, 3),
        server_cpu_seconds=round(m.server_cpu, 3),
        server_cpu_seconds_per_event=m.server_cpu / feeder.acked,
        server_core_utilisation=round(m.server_cpu / watch.wall, 3),
        client_cpu_seconds=round(watch.cpu, 3),
        events_per_s_by_fifth=by_fifth(feeder.acks, watch.wall0, watch.wall),
        request_latency_ms_p50=round(percentile(feeder.latencies, 50) * 1000, 2),
        request_latency_ms_p99=round(percentile(feeder.latencies, 99) * 1000, 2),
        journal_bytes=m.journal_bytes,
    )
