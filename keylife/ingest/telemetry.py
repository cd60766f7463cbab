"""Pipeline counters of the ingest path (the exporter issue adds the registry collectors).

Kept on a private CollectorRegistry so several runtimes (tests) never share state.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)

from keylife.journal.writer import Entry

# `_created` gauges double the series of every counter and no dashboard or rule of ours reads
# them; Prometheus handles counter resets without them.
disable_created_metrics()


# The standard process (process_start_time_seconds, process_resident_memory_bytes, open fds,
# CPU), platform (python_info) and GC collectors, on every registry keylife serves.
STANDARD_COLLECTORS = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)

# Label values exported at 0 from the start: a ratio or sum over a labelled counter that has never
# been incremented reads "No data" on a dashboard, where the true answer is 0. These are the codes
# POST /v1/events answers (keylife/api/app.py) and the auth refusals.
INGEST_CODES = ("200", "400", "409", "413", "415", "422", "503")
AUTH_CODES = ("401", "403")
CLOSE_REASONS = ("idle_timeout", "header_timeout", "body_timeout", "unread_body", "evicted", "refused")


def add_standard_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """Register the process/platform/GC collectors on ``registry`` (they read this process at scrape time)."""
    for collector in STANDARD_COLLECTORS:
        registry.register(collector)
    return registry


class Telemetry:
    def __init__(self) -> None:
        self.registry = add_standard_collectors(CollectorRegistry(auto_describe=True))
        self.events = Counter(
            "keylife_ingest_events",
            "Events answered by ingest, by event type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.requests = Counter(
            "keylife_ingest_requests",
            "Ingest requests by HTTP status code (200, 400, 409, 413, 415, 422, 503 exported at 0 from the start).",
            ["code"],
            registry=self.registry,
        )
        self.invalid_lines = Counter(
            "keylife_ingest_invalid_lines",
            "Lines refused as invalid (the whole request is refused).",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "keylife_auth_failures",
            "Requests refused by authentication (401) or authorization (403); both exported at 0 from the start.",
            ["code"],
            registry=self.registry,
        )
        self.auth_unjournaled = Counter(
            "keylife_auth_failures_unjournaled",
            "Auth failures not journaled one by one because of the rate limit (summarised in the next record).",
            registry=self.registry,
        )
        self.journaled = Counter(
            "keylife_journal_writes",
            "Entries made durable in the journal, by event type.",
            ["type"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "keylife_ingest_ack_seconds",
            "Time from receiving an ingest request to its durable answer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "keylife_http_connections_closed",
            "Client connections closed by the listener's guards: idle_timeout, header_timeout, body_timeout "
            "(408), unread_body (answered before its body was read, and the body went on), evicted (to make room "
            "at listen.max_connections), refused (503: all connections busy).",
            ["reason"],
            registry=self.registry,
        )
        self.log_lines_suppressed = Counter(
            "keylife_log_lines_suppressed",
            "Log lines of asyncio and uvicorn held back by the rate limit (the next line says how many).",
            ["logger"],
            registry=self.registry,
        )
        for code in INGEST_CODES:
            self.requests.labels(code)
        for code in AUTH_CODES:
            self.auth_failures.labels(code)
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)

    def observe_entries(self, entries: list[Entry]) -> None:
        counts: dict[str, int] = {}
        for entry in entries:
            kind = entry.event.get("type", "unknown")
            counts[kind] = counts.get(kind, 0) + 1
        for kind, n in counts.items():
            self.journaled.labels(kind).inc(n)
