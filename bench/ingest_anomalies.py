"""What usage anomaly detection costs the ingest path: ``ingest_http`` with the detector on and off.

Why this shape: the issue's target is "ingest throughput within 10% of today's with the detector
on", and this host's throughput wanders by more than that from one minute to the next, so a figure
measured on another day cannot be the reference. The same bodies go through a fresh server with
``registry.anomalies`` on, then off, alternately, ``pairs`` times; the cost is the median of the
pairs' relative drops (each pair ran back to back), with the server CPU per event beside it.
The traffic is the bench's (10,000 keys reporting hourly, a day replayed in about 30 s): nearly every
report opens a new hour for its key, the detector's worst case.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Metric, cores, demo_events, log, pin, result
from bench.ingest_http import FULL, QUICK, batch_bodies, measure

NAME = "ingest_anomalies"
OFF = {"registry": {"anomalies": False}}


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL) | {"pairs": 1 if quick else 3}
    server_core, client_core = cores()
    pin(client_core)
    bodies = batch_bodies(demo_events(p["events"]), p["batch"])
    pairs = []
    for n in range(p["pairs"]):
        on = measure(bodies, p, server_core)
        off = measure(bodies, p, server_core, extra=OFF)
        pairs.append({"on": round(on.rate), "off": round(off.rate), "on_cpu_us": round(on.cpu_us, 1),
                      "off_cpu_us": round(off.cpu_us, 1), "drop": 1 - on.rate / off.rate})  # fmt: skip
        log(
            f"{NAME}: pair {n + 1}: on {on.rate:,.0f}/s ({on.cpu_us:.1f} µs/event), off {off.rate:,.0f}/s "
            f"({off.cpu_us:.1f} µs/event)"
        )
    cost = statistics.median(x["drop"] for x in pairs) * 100
    return result(
        [
            Metric("ingest_anomalies_on_events_per_s", statistics.median(x["on"] for x in pairs), "events/s", None),
            Metric("ingest_anomalies_off_events_per_s", statistics.median(x["off"] for x in pairs), "events/s", None),
            Metric("ingest_anomalies_cost_percent", cost, "% of throughput", "<= 10", 1),
        ],
        p | {"server_core": server_core, "client_core": client_core, "events_source": "bench"},
        pairs=[x | {"drop": round(x["drop"], 4)} for x in pairs],
    )
