"""Ingest-to-sink latency: from a POST being due to its events being acknowledged by Loki.

Why it matters: an alert in the SIEM is only as timely as the forwarder. A real ``keylife
serve`` (pinned to one core) runs its in-process forwarder with a Loki sink (protobuf); the
receiver (``bench/loki_receiver.py``, other core) stamps the arrival of every event id before
it answers. The load is open loop (see ``bench/ack_latency.py``): request ``i`` of
``events_per_request`` events is due at ``t0 + i / requests_per_s`` whatever happened before,
and each event's latency runs from that due time to its arrival at the receiver, which answers
at once: the sink's acknowledgement. Both clocks are this host's wall clock.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.ack_latency import open_loop, request_bodies
from bench.common import Metric, cores, log, percentile, pin, result, scratch
from bench.forward_catchup import loki_receiver
from bench.server import running

NAME = "forward_latency"
FULL = {"requests_per_s": 100, "events_per_request": 10, "seconds": 20.0, "connections": 16, "warmup_requests": 50}
QUICK = {"requests_per_s": 100, "events_per_request": 10, "seconds": 3.0, "connections": 16, "warmup_requests": 20}


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    per = p["events_per_request"]
    warmup, timed = request_bodies(p)
    offered = p["requests_per_s"] * per
    log(f"{NAME}: {len(timed)} requests of {per} events at {p['requests_per_s']}/s ({offered} events/s)")
    due_at: dict[str, float] = {}  # event id -> wall-clock time its request was due
    with scratch(NAME) as tmp, loki_receiver(tmp, client_core, record_arrivals=True) as loki_url:
        sink = {"type": "loki", "name": "loki", "url": loki_url, "batch_wait_seconds": 0.05}
        with running(tmp, server_core, extra={"forwarder": {"sinks": [sink]}}) as server:
            offset = time.time() - time.perf_counter()  # perf_counter -> wall clock
            load = open_loop(server.url, server.token, p, warmup, timed)
            for i, (_body, ids) in enumerate(timed):
                for event_id in ids:
                    due_at[event_id] = load.t0 + i / p["requests_per_s"] + offset
            samples, errors = load.samples, load.errors
            deadline = time.monotonic() + 30
            while True:  # until every timed event reached the receiver (or give up and report)
                arrivals = httpx.get(f"{loki_url}/stats", timeout=10).json()["arrivals"]
                if all(i in arrivals for i in due_at) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    latencies = [(arrivals[i] - due) * 1000 for i, due in due_at.items() if i in arrivals]
    missing = len(due_at) - len(latencies)
    p99, p50 = percentile(latencies, 99), percentile(latencies, 50)
    log(f"{NAME}: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} events, {missing} missing")
    return result(
        [
            Metric("forward_e2e_latency_p99_ms", p99, "ms", "<= 250", 1),
            Metric("forward_e2e_latency_p50_ms", p50, "ms", None, 1),
        ],
        p | {"offered_events_per_s": offered, "server_core": server_core, "client_core": client_core},
        events=len(latencies),
        missing=missing,
        p90_ms=round(percentile(latencies, 90), 1),
        max_ms=round(max(latencies), 1) if latencies else None,
        ack_p99_ms=round(percentile([s[0] * 1000 for s in samples], 99), 2),
    )
