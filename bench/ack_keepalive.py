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

from bench.ack_latency import measure

NAME = "ack_keepalive"
FULL = {"requests_per_s": 100, "events_per_request": 10, "seconds": 20.0, "connections": 4, "warmup_requests": 50}
QUICK = FULL | {"seconds": 3.0, "warmup_requests": 20}


def run(quick: bool) -> dict[str, Any]:
    return measure(NAME, dict(QUICK if quick else FULL), "<= 5", "httpx", {"client": "httpx.Client, kept alive"})
