"""POST-to-durable-ack latency over kept-alive httpx connections, open loop at 1,000 events/s.

Why a second latency benchmark: ``ack_latency`` sends each request in one write (http.client),
which hid a 40 ms stall that real producers hit. ``keylife ingest`` and the demo poster use
httpx, which writes headers and body separately and keeps connections alive; without
TCP_NODELAY on the server's connections every request after the first on a connection waited
for a delayed ACK (~40 ms, so at most ~23 requests/s per connection). Here 4 connections each
carry 25 requests/s of 10 events, so a stall of that kind would show in every percentile. The
open-loop generator and its accounting (latency from the due time) are ``bench.ack_latency``'s.
"""

from __future__ import annotations

from typing import Any

from bench.ack_latency import open_loop, request_bodies
from bench.common import Metric, cores, cpu_seconds, log, percentile, pin, result, scratch
from bench.server import running

NAME = "ack_keepalive"
FULL = {"requests_per_s": 100, "events_per_request": 10, "seconds": 20.0, "connections": 4, "warmup_requests": 50}
QUICK = FULL | {"seconds": 3.0, "warmup_requests": 20}


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    per = p["events_per_request"]
    warmup, timed = request_bodies(p)
    offered = p["requests_per_s"] * per
    log(f"{NAME}: {len(timed)} requests of {per} events at {p['requests_per_s']}/s ({offered} events/s), httpx")
    with scratch(NAME) as tmp, running(tmp, server_core) as server:
        cpu0 = cpu_seconds(server.pid)
        load = open_loop(server.url, server.token, p, warmup, timed, client="httpx")
        server_cpu = cpu_seconds(server.pid) - cpu0
    if load.errors:
        raise RuntimeError(f"{len(load.errors)} requests failed, e.g. {load.errors[0]}")
    due_ms = [s[0] * 1000 for s in load.samples]
    sent_ms = [s[1] * 1000 for s in load.samples]
    p99, p50 = percentile(due_ms, 99), percentile(due_ms, 50)
    log(f"{NAME}: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(due_ms)} requests")
    return result(
        [
            Metric("ack_keepalive_p99_ms", p99, "ms", "<= 5", 2),
            Metric("ack_keepalive_p50_ms", p50, "ms", None, 2),
        ],
        p
        | {"offered_events_per_s": offered, "server_core": server_core, "client_core": client_core}
        | {"client": "httpx.Client, kept alive", "latency_from": "scheduled send time (open loop)"},
        requests=len(due_ms),
        p90_ms=round(percentile(due_ms, 90), 2),
        p999_ms=round(percentile(due_ms, 99.9), 2),
        max_ms=round(max(due_ms), 2),
        service_p50_ms=round(percentile(sent_ms, 50), 2),
        service_p99_ms=round(percentile(sent_ms, 99), 2),
        scheduler_max_late_ms=round(load.late * 1000, 2),
        server_core_utilisation=round(server_cpu / load.wall, 3),
    )
