"""Ingest throughput with /metrics scraped alongside: what scrapes may take from ingest.

Why: /metrics is unauthenticated, and two clients scraping at 84 requests/s once cut ingest
from 11.2k to 4.1k events/s (every scrape waited for the registry, built a snapshot and
formatted it). The same durable NDJSON load as ``bench.ingest_http`` (its feeder and
connections) runs three times on a fresh server each: alone, with two scrapers at 42
requests/s each under the default ``exporter.scrape_cache_seconds`` (1 s), and with the same
scrapers and the cache off (``0``: a render for every scrape, the cost before). Scrapers are
paced (a scrape is due every 1/42 s; a late one is sent at once), like a misconfigured or
hostile Prometheus, not as fast as possible: their figure is the cost of rendering, not of
answering HTTP requests at all.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.common import Metric, cores, cpu_seconds, demo_events, log, pin, result, scratch
from bench.ingest_http import batch_bodies, drive, post
from bench.server import running

NAME = "ingest_scrape"
FULL = {"events": 300_000, "batch": 1000, "connections": 4, "warmup_batches": 8, "max_seconds": 30.0}
FULL |= {"scrapers": 2, "scrapes_per_s_each": 42.0}
QUICK = FULL | {"events": 40_000, "warmup_batches": 4, "max_seconds": 6.0}


def scraper(host: str, port: int, every: float, stop: threading.Event, counts: list[int], errors: list[str]) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    due = time.perf_counter()
    try:
        while not stop.is_set():
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or b"keylife_journal_entries" not in body:
                errors.append(f"scrape: HTTP {response.status}")
                return
            counts[0] += 1
            due += every
            if (wait := due - time.perf_counter()) > 0:
                stop.wait(wait)
    except (OSError, http.client.HTTPException) as exc:
        errors.append(f"scrape: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def phase(p: dict[str, Any], bodies: list[tuple[bytes, int]], server_core: int, scrapers: int, cache: float) -> dict:
    warmup, timed = bodies[: p["warmup_batches"]], bodies[p["warmup_batches"] :]
    label = f"{scrapers} scrapers, cache {cache:g} s" if scrapers else "no scrapes"
    extra = {"exporter": {"scrape_cache_seconds": cache}}
    with scratch(f"{NAME}-{scrapers}-{cache:g}") as tmp, running(tmp, server_core, extra=extra) as server:
        split = urlsplit(server.url)
        host, port = split.hostname or "127.0.0.1", split.port or 80
        headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/x-ndjson"}
        conn = http.client.HTTPConnection(host, port, timeout=60)
        for body, lines in warmup:
            if error := post(conn, headers, body, lines):
                raise RuntimeError(f"warm-up batch refused: {error}")
        conn.close()
        stop, counts, scrape_errors = threading.Event(), [0], []
        scraping = [
            threading.Thread(
                target=scraper, args=(host, port, 1 / p["scrapes_per_s_each"], stop, counts, scrape_errors)
            )
            for _ in range(scrapers)
        ]
        cpu0 = cpu_seconds(server.pid)
        for t in scraping:
            t.start()
        feeder, watch = drive(host, port, headers, timed, p)
        stop.set()
        for t in scraping:
            t.join()
        server_cpu = cpu_seconds(server.pid) - cpu0
    if feeder.errors or scrape_errors:
        raise RuntimeError(f"{label}: {(feeder.errors + scrape_errors)[0]}")
    rate = feeder.acked / watch.wall
    log(f"{NAME}: {label}: {rate:,.0f} events/s, {counts[0] / watch.wall:.1f} scrapes/s")
    return {
        "events_per_s": rate,
        "events_acked": feeder.acked,
        "seconds": round(watch.wall, 3),
        "scrapes": counts[0],
        "scrapes_per_s": round(counts[0] / watch.wall, 1),
        "server_core_utilisation": round(server_cpu / watch.wall, 3),
    }


def run(quick: bool) -> dict[str, Any]:
    p = dict(QUICK if quick else FULL)
    server_core, client_core = cores()
    pin(client_core)
    bodies = batch_bodies(demo_events(p["events"]), p["batch"])
    alone = phase(p, bodies, server_core, 0, 1.0)
    cached = phase(p, bodies, server_core, p["scrapers"], 1.0)
    uncached = phase(p, bodies, server_core, p["scrapers"], 0.0)
    return result(
        [
            Metric("ingest_scrape_events_per_s_alone", alone["events_per_s"], "events/s", None),
            Metric("ingest_scrape_events_per_s_with_scrapes", cached["events_per_s"], "events/s", None),
            Metric(
                "ingest_scrape_share_kept",
                cached["events_per_s"] / alone["events_per_s"],
                "× (with 84 scrapes/s ÷ alone)",
                ">= 0.8",
                2,
            ),
            Metric("ingest_scrape_events_per_s_uncached", uncached["events_per_s"], "events/s", None),
        ],
        p | {"server_core": server_core, "client_core": client_core, "durable": True, "events_source": "bench"},
        alone=alone,
        with_scrapes=cached,
        with_scrapes_uncached=uncached,
    )
